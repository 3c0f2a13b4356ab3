package apply

import (
	"fmt"
	"sync"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
	"zombiezen.com/go/sqlite"
)

// SQLite has one pseudo-random generator per process (sqlite3_randomness),
// shared by every connection to every database. Besides random() and
// randomblob() it feeds values that reach the database file: the rowid
// OP_NewRowid picks once the largest rowid 9223372036854775807 is taken,
// and the names CREATE TABLE ... AS SELECT gives to its fifth and later
// columns of the same name (sqlite3ColumnsFromExprList). It also draws for
// things that never reach the file but move the generator on: temporary
// file names, WAL salts, rollback journal nonces, FTS5's per-connection
// locale header (every connection open), VACUUM's scratch name.
//
// nqlite makes the first kind identical on every node and keeps the second
// kind from interleaving with it:
//
//   - each statement on the apply connection runs with prngMu held and the
//     generator seeded from the entry's seed and the statement's index
//     (sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED)); after it the
//     generator goes back to the VFS's true randomness;
//   - everything else nqlite does that could draw runs with prngMu held too
//     (opening any connection, the apply connection's own statements,
//     preparing statements on read connections) or does not draw at all:
//     read connections have Go random() and randomblob(), every connection
//     keeps temporary files in memory (temp_store=MEMORY), and each batch
//     writes its first WAL frame before any statement runs (flushFirstFrame).
//
// See DESIGN.md ("SQLite's pseudo-random generator") for every caller of
// sqlite3_randomness and why it cannot draw in the middle of a statement.
var prngMu sync.Mutex

// seedPRNG calls sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, x, NULL):
// the next draw re-initialises SQLite's generator from x alone (x != 0), or
// from the VFS's randomness (x == 0). The caller holds prngMu.
func seedPRNG(tls *libc.TLS, x int32) {
	va := libc.NewVaList(x, uintptr(0))
	lib.Xsqlite3_test_control(tls, lib.SQLITE_TESTCTRL_PRNG_SEED, va)
	libc.Xfree(tls, va)
}

// lockPRNG takes prngMu for c unless c already holds it (c is used by one
// goroutine at a time, so the depth needs no synchronisation).
func (c *conn) lockPRNG() {
	if c.prngDepth == 0 {
		prngMu.Lock()
	}
	c.prngDepth++
}

func (c *conn) unlockPRNG() {
	c.prngDepth--
	if c.prngDepth == 0 {
		prngMu.Unlock()
	}
}

// openConn opens a SQLite connection with prngMu held: every open runs
// FTS5's initialisation, which draws 16 bytes from the generator.
func openConn(path string, flags sqlite.OpenFlags) (*sqlite.Conn, error) {
	prngMu.Lock()
	defer prngMu.Unlock()
	return sqlite.OpenConn(path, flags)
}

// beginStatement prepares the apply connection for statement j of e: 'now'
// and random() from the entry (entryClock), and SQLite's own generator
// seeded for this statement alone, with prngMu held until endStatement.
// Seeding per statement keeps the values independent of whether earlier
// statements ran or drew (a failed statement, a cached prepare).
func (db *DB) beginStatement(time, seed int64, j int) {
	db.clock.reset(time, seed, j)
	w := db.w
	w.lockPRNG()
	w.lastUser = nil
	seedPRNG(w.tls, db.clock.prngSeed())
}

// endStatement ends what beginStatement began. After a statement that
// changed the schema or the statistics, the connection reads both again
// (resetPlanner); an error there fails the batch, which is retried.
func (db *DB) endStatement() error {
	w := db.w
	var err error
	if cs := w.lastUser; cs != nil && cs.info.planner {
		err = w.resetPlanner()
	}
	w.lastUser = nil
	seedPRNG(w.tls, 0)
	w.unlockPRNG()
	return err
}

// flushFirstFrame starts a batch transaction by storing the batch's last
// sequence and writing it to the WAL (sqlite3_db_cacheflush), with prngMu
// held. The first WAL frame of a write transaction is where SQLite draws a
// new salt (walRestartLog after a complete checkpoint, or a WAL that is
// new): without this, a cache spill inside some statement would do it,
// on one node and not another (spills depend on the batch and the cache),
// and shift that statement's random rowids.
func (db *DB) flushFirstFrame(last uint64) error {
	w := db.w
	w.lockPRNG()
	defer w.unlockPRNG()
	if err := w.exec("UPDATE _nqlite_meta SET value = ? WHERE key = 'applied_seq'", int64(last)); err != nil {
		return err
	}
	if rc := lib.Xsqlite3_db_cacheflush(w.tls, w.handle); rc != lib.SQLITE_OK {
		return fmt.Errorf("flush the first WAL frame: %w", sqlite.ResultCode(rc).ToError())
	}
	return nil
}

// SQLiteRandomness returns the lock that guards SQLite's process-wide
// pseudo-random generator (see prngMu). A program (or a test) that uses
// SQLite itself, outside this package, in a process that runs nqlite
// nodes must hold it while it opens connections and runs statements that
// write: SQLite draws from the one generator for journal nonces, WAL salts
// and random rowids, and a draw in the middle of an apply statement would
// make this node's outcome differ from the others'.
func SQLiteRandomness() sync.Locker { return &prngMu }
