package apply

import (
	"context"
	"fmt"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Request ids (format version 4). A coalesced entry carries several
// requests, so the stream's Nats-Msg-Id deduplication (one key per
// message) no longer covers a retried request: every node records the id
// of each request it applies, in the batch's transaction, with the
// sequence of its entry, and skips a later request with a recorded id
// (Outcome.Duplicate). Records expire at entry Time + 2*Keep and are
// deleted by the first version 4 entry applied with a later Time: the
// time is the entry's, never a node's clock, so every node holds the same
// rows at every sequence. The table is created by the first entry with a
// request id, at the same sequence on every node. The new file of a load
// entry in format version 6 or later holds the records of the database it
// replaces that have not expired at the load entry's time (liveRequests,
// writeRequests), never the ones the loaded file brought (prepareFile
// drops its table): a retry of a request applied before the load is still
// a duplicate after it, as JetStream's Nats-Msg-Id deduplication would
// answer it had the request had its entry to itself. A load in an
// earlier version starts without records (nodes of that version did).
const (
	requestsTable = "_nqlite_requests"
	requestsDDL   = "CREATE TABLE IF NOT EXISTS " + requestsTable + "(id TEXT PRIMARY KEY, seq INTEGER NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID"
	requestsIndex = "CREATE INDEX IF NOT EXISTS " + requestsTable + "_expires ON " + requestsTable + "(expires)"
)

// requestsSchema is the request ids table and its index, in creation
// order: what recordRequest (on the apply connection) and writeRequests
// (on a load's new file) run before the first record.
var requestsSchema = [...]string{requestsDDL, requestsIndex}

// tableExists reports whether the database of c holds table name.
func tableExists(c *conn, name string) (bool, error) {
	cs, err := c.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?")
	if err != nil {
		return false, err
	}
	defer cs.release()
	cs.stmt.BindText(1, name)
	row, err := cs.stmt.Step()
	if err != nil {
		return false, err
	}
	n := row && cs.stmt.ColumnInt64(0) > 0
	cs.stmt.Reset()
	return n, nil
}

// pruneRequests deletes the request records expired at entry time t.
func (db *DB) pruneRequests(t int64) error {
	if !db.requestsExist {
		return nil
	}
	if err := db.w.exec("DELETE FROM "+requestsTable+" WHERE expires < ?", t); err != nil {
		return fmt.Errorf("prune request ids: %w", err)
	}
	return nil
}

// requestSeq returns the sequence recorded for request id, if any, on
// the apply connection (inside the batch's transaction).
func (db *DB) requestSeq(id string) (uint64, bool, error) {
	if !db.requestsExist {
		return 0, false, nil
	}
	w := db.w
	w.rec.internal = true
	defer func() { w.rec.internal = false }()
	return lookupRequest(w, id)
}

// lookupRequest reads the sequence recorded for request id on c, whose
// database holds the requests table.
func lookupRequest(c *conn, id string) (uint64, bool, error) {
	cs, err := c.prepare("SELECT seq FROM " + requestsTable + " WHERE id = ?")
	if err != nil {
		return 0, false, fmt.Errorf("look up request id: %w", err)
	}
	defer cs.release()
	cs.stmt.BindText(1, id)
	row, err := cs.stmt.Step()
	if err != nil {
		return 0, false, fmt.Errorf("look up request id: %w", err)
	}
	var seq uint64
	if row {
		seq = uint64(cs.stmt.ColumnInt64(0))
	}
	cs.stmt.Reset()
	return seq, row, nil
}

// recordRequest records request id as applied at seq, until expires.
func (db *DB) recordRequest(id string, seq uint64, expires int64) error {
	if !db.requestsExist {
		for _, q := range requestsSchema {
			if err := db.w.exec(q); err != nil {
				return fmt.Errorf("create the request ids table: %w", err)
			}
		}
		db.requestsExist = true
	}
	if err := db.w.exec("INSERT INTO "+requestsTable+"(id, seq, expires) VALUES(?, ?, ?)", id, int64(seq), expires); err != nil {
		return fmt.Errorf("record request id: %w", err)
	}
	return nil
}

// RequestSeq returns the sequence of the entry that applied the request
// with idempotency key id, from the records format 4 entries keep
// (_nqlite_requests), as of the sequence this node has applied: ok is
// false when no record is held (the request was not applied up to there,
// or its record expired). It reads on a read connection (ctx bounds the
// wait for one).
//
// The service needs it because JetStream's own duplicate answer is not
// always right about the original's sequence: a clustered stream answers
// a duplicate of a message still being proposed with the sequence it
// expects the message to get (nats-server's stream.go: "replace our
// estimate from the cluster layer"), which a leader change can make wrong.
func (db *DB) RequestSeq(ctx context.Context, id string) (seq uint64, ok bool, err error) {
	c, pool, err := db.takeReader(ctx)
	if err != nil {
		return 0, false, err
	}
	defer func() { pool <- c }()
	exists, err := tableExists(c, requestsTable)
	if err != nil || !exists {
		return 0, false, err
	}
	return lookupRequest(c, id)
}

// requestRecord is one row of the request ids table.
type requestRecord struct {
	id           string
	seq, expires int64
}

// liveRequests returns the request records held by the apply connection
// (inside the batch's transaction: the state before the entry being
// applied) that have not expired at entry time t, in id order; nil when
// the database holds none. They are at most the requests of two
// duplicate windows of entries (tens of bytes each).
func (db *DB) liveRequests(t int64) ([]requestRecord, error) {
	if !db.requestsExist {
		return nil, nil
	}
	w := db.w
	w.rec.internal = true
	defer func() { w.rec.internal = false }()
	cs, err := w.prepare("SELECT id, seq, expires FROM " + requestsTable + " WHERE expires >= ? ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("read request ids: %w", err)
	}
	defer cs.release()
	cs.stmt.BindInt64(1, t)
	defer cs.stmt.Reset()
	var recs []requestRecord
	for {
		row, err := cs.stmt.Step()
		if err != nil {
			return nil, fmt.Errorf("read request ids: %w", err)
		}
		if !row {
			return recs, nil
		}
		recs = append(recs, requestRecord{id: cs.stmt.ColumnText(0), seq: cs.stmt.ColumnInt64(1), expires: cs.stmt.ColumnInt64(2)})
	}
}

// writeRequests creates the request ids table in the database of c and
// inserts recs, in one savepoint; nothing when recs is empty (the table
// is then created by the next entry with an id, as on a database that
// never held one). The caller holds prngMu (the writes may start a WAL).
func writeRequests(c *sqlite.Conn, recs []requestRecord) (err error) {
	if len(recs) == 0 {
		return nil
	}
	defer sqlitex.Save(c)(&err)
	for _, q := range requestsSchema {
		if err := sqlitex.ExecuteTransient(c, q, nil); err != nil {
			return fmt.Errorf("create the request ids table: %w", err)
		}
	}
	stmt, _, err := c.PrepareTransient("INSERT INTO " + requestsTable + "(id, seq, expires) VALUES(?, ?, ?)")
	if err != nil {
		return fmt.Errorf("record request ids: %w", err)
	}
	defer stmt.Finalize()
	for _, r := range recs {
		stmt.BindText(1, r.id)
		stmt.BindInt64(2, r.seq)
		stmt.BindInt64(3, r.expires)
		if _, err := stmt.Step(); err != nil {
			return fmt.Errorf("record request id: %w", err)
		}
		if err := stmt.Reset(); err != nil {
			return fmt.Errorf("record request id: %w", err)
		}
	}
	return nil
}
