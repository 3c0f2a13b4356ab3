package apply

import (
	lib "modernc.org/sqlite/lib"
)

// Read snapshots. A read connection keeps the read transaction of its
// last read open after the read (the connection's snapshot), for as long
// as this node applies nothing: the next read on it runs in the same
// transaction instead of opening and closing one of its own. In WAL mode
// every read transaction takes and releases a WAL read lock (fcntl system
// calls on the -shm file) and checks the WAL index; on this project's
// machine a point SELECT on a bare connection took 3.3-5.3 us alone and
// 0.7 us inside an open transaction (11-12 us against 7.5 us after a
// millisecond idle). The snapshot is exactly the state of the sequence
// applied when it began (snapSeq: applied is stored after the commit, so
// the transaction sees at least that sequence, and it is dropped as soon
// as applied differs), so a read gives the answer a fresh transaction
// would:
//
//   - takeReader ends a connection's snapshot when the node applied
//     anything since it began, before the request prepares a statement
//     (the schema it sees is the snapshot's);
//   - Run begins one (BEGIN, deferred: the transaction starts at the
//     first read) when the connection has none, and ends it when a
//     statement failed or SQLite ended the transaction itself;
//   - every batch the node applies ends the snapshots of the idle read
//     connections once it is committed and applied is stored
//     (releaseSnapshots), so that an old snapshot never keeps the WAL
//     from being checkpointed and restarted while no reads come. The
//     cost moves to the apply: one COMMIT of a read transaction per idle
//     snapshot, only when there is one (db.held counts them).
//
// Several statements of a request therefore read one snapshot, as they
// did in their explicit transaction before.

// freshen ends c's snapshot if this node applied anything since it
// began.
func (db *DB) freshen(c *conn) {
	if c.snap && c.snapSeq != db.applied.Load() {
		db.endSnapshot(c)
	}
}

// beginSnapshot opens a read transaction on c for the state of sequence
// seq (the applied sequence, loaded before).
func (db *DB) beginSnapshot(c *conn, seq uint64) error {
	if err := c.exec("BEGIN"); err != nil {
		return err
	}
	c.snap, c.snapSeq = true, seq
	db.held.Add(1)
	return nil
}

// endSnapshot ends c's snapshot, if it holds one.
func (db *DB) endSnapshot(c *conn) {
	if !c.snap {
		return
	}
	if !c.autocommit() && c.exec("COMMIT") != nil {
		c.exec("ROLLBACK")
	}
	c.snap = false
	db.held.Add(-1)
}

// autocommit reports whether c has no transaction open
// (sqlite3_get_autocommit).
func (c *conn) autocommit() bool { return lib.Xsqlite3_get_autocommit(c.tls, c.handle) != 0 }

// releaseSnapshots ends the snapshots of the read connections idle in
// the pool; it runs after each applied batch. Connections in use keep
// theirs until their next take (freshen) or the next batch.
func (db *DB) releaseSnapshots() {
	if db.held.Load() == 0 {
		return
	}
	db.fileMu.RLock()
	readers := db.readers
	db.fileMu.RUnlock()
	if readers == nil {
		return
	}
	var buf [8]*conn // on the stack for the usual pool sizes
	idle := buf[:0]
take:
	for len(idle) < cap(readers) {
		select {
		case c := <-readers:
			idle = append(idle, c)
		default:
			break take
		}
	}
	for _, c := range idle {
		db.endSnapshot(c)
		readers <- c
	}
}
