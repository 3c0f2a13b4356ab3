package apply

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sort"
	"strings"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// ContentHash is a hash of a database's content, independent of its page
// layout (in the spirit of SQLite's dbhash tool): what nqctl check
// compares across nodes. It catches what the running digest cannot, such
// as an edit made to one node's file outside the stream.
//
// Per table (Tables, by name): SHA-256 of the sqlite_schema rows whose
// tbl_name is the table (the table, its indexes and triggers: type, name
// and SQL; never rootpage) and of its rows in rowid order (the rowid
// first) or, WITHOUT ROWID, in primary-key order (BINARY), each value
// with its storage class; generated columns are left out (the schema
// computes them), so are a virtual table's rows (its shadow tables, real
// tables, are hashed). A view is an entry with its schema alone.
// sqlite_sequence and sqlite_stat1/stat4 are included (replicated
// state); nqlite's own _nqlite_* tables are not (applied sequence,
// digest, change counts: node bookkeeping). The pseudo-table
// "sqlite_header" (no table can have that name: SQLite reserves
// sqlite_) holds user_version and application_id. Hash is SHA-256 of
// the tables' names and digests in name order.
type ContentHash struct {
	// Seq is the applied sequence the content is as of (_nqlite_meta; 0
	// for a file without one).
	Seq    uint64
	Hash   Digest
	Tables map[string]Digest
}

// HeaderTable is the ContentHash.Tables key of the file header's values
// (user_version, application_id).
const HeaderTable = "sqlite_header"

// ErrPassed is wrapped by ContentHashAt's error when the database already
// applied entries past the sequence asked for: the caller asks again for
// a later one.
var ErrPassed = errors.New("the database has applied entries past that sequence")

// HashFile returns the content hash of the SQLite file at path, which no
// DB has open (a snapshot just written or downloaded). It reads the file
// in one read transaction on a connection of its own; a -wal beside it is
// recovered.
func HashFile(ctx context.Context, path string) (ContentHash, error) {
	c, err := openHashConn(path, sqlite.OpenReadWrite|sqlite.OpenWAL)
	if err != nil {
		return ContentHash{}, fmt.Errorf("hash %s: %w", path, err)
	}
	defer closeSQLite(c)
	if err := beginRead(c); err != nil {
		return ContentHash{}, fmt.Errorf("hash %s: %w", path, err)
	}
	defer sqlitex.ExecuteTransient(c, "ROLLBACK", nil)
	h, err := hashContent(ctx, c)
	if err != nil {
		return h, fmt.Errorf("hash %s: %w", path, err)
	}
	return h, nil
}

// ContentHashAt returns the content hash of the database exactly as of
// applied sequence seq, computed on a read connection of its own while
// the apply goes on (WAL keeps the read transaction's version):
//   - applied == seq: the read transaction starts now;
//   - applied < seq: it waits (until ctx is done: ctx.Err()) for the
//     apply to reach seq, which stops its batch there and starts the read
//     transaction before it applies anything further;
//   - applied > seq (or the apply went past seq meanwhile: a batch that
//     began before the call, a load, a gap in the stream at seq): an
//     error wrapping ErrPassed.
//
// Reading a large database takes time (about as long as a snapshot's
// copy); the apply is not held up meanwhile.
func (db *DB) ContentHashAt(ctx context.Context, seq uint64) (ContentHash, error) {
	if db.closed.Load() {
		return ContentHash{}, ErrClosed
	}
	if a := db.applied.Load(); a > seq {
		return ContentHash{}, fmt.Errorf("content hash at %d: %w (applied %d)", seq, ErrPassed, a)
	}
	db.fileMu.RLock() // not while a Replace swaps the file
	c, err := openHashConn(db.path, sqlite.OpenReadOnly|sqlite.OpenWAL)
	db.fileMu.RUnlock()
	if err != nil {
		return ContentHash{}, fmt.Errorf("content hash at %d: %w", seq, err)
	}
	defer closeSQLite(c)
	p := &pin{seq: seq, c: c, done: make(chan error, 1)}
	db.pinMu.Lock()
	a := db.applied.Load()
	if a < seq {
		db.pins = append(db.pins, p)
	}
	db.pinMu.Unlock()
	switch {
	case a > seq:
		return ContentHash{}, fmt.Errorf("content hash at %d: %w (applied %d)", seq, ErrPassed, a)
	case a == seq:
		err = beginRead(c)
	default:
		select {
		case err = <-p.done:
		case <-ctx.Done():
			db.pinMu.Lock()
			waiting := db.unpin(p)
			db.pinMu.Unlock()
			if !waiting {
				<-p.done // the apply is using c: wait for it to let go
			}
			return ContentHash{}, ctx.Err()
		}
	}
	if err != nil {
		return ContentHash{}, fmt.Errorf("content hash at %d: %w", seq, err)
	}
	defer sqlitex.ExecuteTransient(c, "ROLLBACK", nil)
	h, err := hashContent(ctx, c)
	if err != nil {
		return h, fmt.Errorf("content hash at %d: %w", seq, err)
	}
	if h.Seq != seq {
		return ContentHash{}, fmt.Errorf("content hash at %d: %w (the read saw %d)", seq, ErrPassed, h.Seq)
	}
	return h, nil
}

// pin is a ContentHashAt call waiting for the apply to commit seq: the
// apply then starts a read transaction on c (beginRead) and sends its
// error, or one wrapping ErrPassed, on done.
type pin struct {
	seq  uint64
	c    *sqlite.Conn
	done chan error
}

// unpin removes p from the pins; false if the apply took it already. The
// caller holds pinMu.
func (db *DB) unpin(p *pin) bool {
	for i, q := range db.pins {
		if q == p {
			db.pins = append(db.pins[:i], db.pins[i+1:]...)
			return true
		}
	}
	return false
}

// pinCut returns the index of the first message of msgs but the last
// whose sequence a pin waits for (the batch must stop there), or -1.
func (db *DB) pinCut(msgs []Msg) int {
	db.pinMu.Lock()
	defer db.pinMu.Unlock()
	if len(db.pins) == 0 {
		return -1
	}
	cut := -1
	for _, p := range db.pins {
		for i := range msgs[:len(msgs)-1] {
			if msgs[i].Seq == p.seq && (cut < 0 || i < cut) {
				cut = i
			}
		}
	}
	return cut
}

// servePins starts the read transaction of every pin waiting for
// applied, which was just committed (the caller holds applyMu, so nothing
// commits meanwhile), and fails those it went past.
func (db *DB) servePins(applied uint64) {
	db.pinMu.Lock()
	var serve []*pin
	keep := db.pins[:0]
	for _, p := range db.pins {
		if p.seq <= applied {
			serve = append(serve, p)
		} else {
			keep = append(keep, p)
		}
	}
	db.pins = keep
	db.pinMu.Unlock()
	for _, p := range serve {
		if p.seq < applied {
			p.done <- fmt.Errorf("%w (applied %d at once)", ErrPassed, applied)
			continue
		}
		p.done <- beginRead(p.c)
	}
}

// openHashConn opens a connection for hashing (prngMu held, as every
// open): temporary b-trees in memory (a sort must not name a temporary
// file from SQLite's generator), no writes.
func openHashConn(path string, flags sqlite.OpenFlags) (*sqlite.Conn, error) {
	c, err := openConn(path, flags|sqlite.OpenNoMutex)
	if err != nil {
		return nil, err
	}
	for _, q := range []string{"PRAGMA temp_store=MEMORY", "PRAGMA query_only=1"} {
		if err := sqlitex.ExecuteTransient(c, q, nil); err != nil {
			closeSQLite(c)
			return nil, err
		}
	}
	return c, nil
}

// beginRead starts a read transaction on c and reads from the file, so
// the transaction holds the database's current version from now on.
func beginRead(c *sqlite.Conn) error {
	if err := sqlitex.ExecuteTransient(c, "BEGIN", nil); err != nil {
		return err
	}
	if err := sqlitex.ExecuteTransient(c, "SELECT count(*) FROM sqlite_schema", nil); err != nil {
		sqlitex.ExecuteTransient(c, "ROLLBACK", nil)
		return err
	}
	return nil
}

// schemaRow is one row of sqlite_schema.
type schemaRow struct {
	typ, name, tbl, sql string
	null                bool // sql is NULL (an automatic index)
}

// hashContent computes the content hash in c's open read transaction.
func hashContent(ctx context.Context, c *sqlite.Conn) (ContentHash, error) {
	c.SetInterrupt(ctx.Done())
	defer c.SetInterrupt(nil)
	out, err := hashContentTables(ctx, c)
	if err != nil && ctx.Err() != nil {
		return out, ctx.Err()
	}
	return out, err
}

func hashContentTables(ctx context.Context, c *sqlite.Conn) (ContentHash, error) {
	out := ContentHash{Tables: map[string]Digest{}}
	var objs []schemaRow
	if err := queryRows(c, "SELECT type, name, tbl_name, sql, sql IS NULL FROM sqlite_schema", func(s *sqlite.Stmt) error {
		objs = append(objs, schemaRow{s.ColumnText(0), s.ColumnText(1), s.ColumnText(2), s.ColumnText(3), s.ColumnInt(4) != 0})
		return nil
	}); err != nil {
		return out, err
	}
	byTable := map[string][]schemaRow{}
	meta := false
	for _, o := range objs {
		if strings.HasPrefix(strings.ToLower(o.tbl), reservedPrefix) {
			meta = meta || (o.typ == "table" && o.name == "_nqlite_meta")
			continue
		}
		byTable[o.tbl] = append(byTable[o.tbl], o)
	}
	if meta {
		if err := queryRows(c, "SELECT value FROM _nqlite_meta WHERE key = 'applied_seq'", func(s *sqlite.Stmt) error {
			out.Seq = uint64(s.ColumnInt64(0))
			return nil
		}); err != nil {
			return out, err
		}
	}
	h := sha256.New()
	var buf []byte
	for name, rows := range byTable {
		sort.Slice(rows, func(i, j int) bool {
			if rows[i].typ != rows[j].typ {
				return rows[i].typ < rows[j].typ
			}
			return rows[i].name < rows[j].name
		})
		h.Reset()
		buf = buf[:0]
		var table *schemaRow
		for k := range rows {
			o := &rows[k]
			buf = appendHashStr(append(buf, 'O'), o.typ)
			buf = appendHashStr(buf, o.name)
			if o.null {
				buf = append(buf, valNull)
			} else {
				buf = appendGoValue(buf, o.sql)
			}
			if o.typ == "table" && o.name == name {
				table = o
			}
		}
		h.Write(buf)
		if table != nil && !strings.HasPrefix(strings.ToUpper(strings.TrimSpace(table.sql)), "CREATE VIRTUAL") {
			if err := hashRows(ctx, c, h, name); err != nil {
				return out, fmt.Errorf("table %s: %w", name, err)
			}
		}
		var d Digest
		h.Sum(d[:0])
		out.Tables[name] = d
	}
	// The header's replicated values.
	h.Reset()
	buf = buf[:0]
	for _, q := range []string{"PRAGMA user_version", "PRAGMA application_id"} {
		if err := queryRows(c, q, func(s *sqlite.Stmt) error {
			buf = appendGoValue(appendHashStr(buf, q), s.ColumnInt64(0))
			return nil
		}); err != nil {
			return out, err
		}
	}
	h.Write(buf)
	var hd Digest
	h.Sum(hd[:0])
	out.Tables[HeaderTable] = hd
	names := make([]string, 0, len(out.Tables))
	for n := range out.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	h.Reset()
	h.Write([]byte("nqlite content 1\x00"))
	for _, n := range names {
		d := out.Tables[n]
		h.Write(appendHashStr(nil, n))
		h.Write(d[:])
	}
	h.Sum(out.Hash[:0])
	return out, nil
}

// hashRows writes the rows of table name into h: 'r', the rowid (rowid
// tables), then the values of the columns that are not generated, in
// table order.
func hashRows(ctx context.Context, c *sqlite.Conn, h hash.Hash, name string) error {
	q := quoteIdent(name)
	var cols, pk, all []string
	err := queryRows(c, "SELECT name, hidden, pk FROM pragma_table_xinfo("+quoteString(name)+") ORDER BY cid", func(s *sqlite.Stmt) error {
		all = append(all, strings.ToLower(s.ColumnText(0)))
		if s.ColumnInt(1) == 0 {
			cols = append(cols, quoteIdent(s.ColumnText(0)))
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = queryRows(c, "SELECT name FROM pragma_table_info("+quoteString(name)+") WHERE pk > 0 ORDER BY pk", func(s *sqlite.Stmt) error {
		pk = append(pk, quoteIdent(s.ColumnText(0))+" COLLATE BINARY")
		return nil
	})
	if err != nil {
		return err
	}
	withoutRowID := false
	err = queryRows(c, "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = "+quoteString(name), func(s *sqlite.Stmt) error {
		withoutRowID = s.ColumnInt(0) != 0
		return nil
	})
	if err != nil {
		return err
	}
	order := ""
	if withoutRowID {
		order = " ORDER BY " + strings.Join(pk, ", ")
	} else {
		// The first name of the rowid no column takes (a table with
		// columns named rowid, _rowid_ and oid hides it: natural order).
		for _, r := range []string{"rowid", "_rowid_", "oid"} {
			taken := false
			for _, a := range all {
				taken = taken || a == r
			}
			if !taken {
				cols = append([]string{r}, cols...)
				order = " ORDER BY " + r
				break
			}
		}
	}
	if len(cols) == 0 {
		return nil
	}
	var buf []byte
	n := 0
	return queryRows(c, "SELECT "+strings.Join(cols, ", ")+" FROM main."+q+order, func(s *sqlite.Stmt) error {
		buf = append(buf[:0], 'r')
		for i := range cols {
			switch s.ColumnType(i) {
			case sqlite.TypeInteger:
				buf = appendGoValue(buf, s.ColumnInt64(i))
			case sqlite.TypeFloat:
				buf = appendGoValue(buf, s.ColumnFloat(i))
			case sqlite.TypeText:
				buf = appendGoValue(buf, s.ColumnText(i))
			case sqlite.TypeBlob:
				b := make([]byte, s.ColumnLen(i))
				s.ColumnBytes(i, b)
				buf = appendGoValue(buf, b)
			default:
				buf = append(buf, valNull)
			}
		}
		h.Write(buf)
		if n++; n%4096 == 0 {
			return ctx.Err()
		}
		return nil
	})
}

// appendHashStr appends a u32 length and s.
func appendHashStr(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

// queryRows runs nqlite's own query q on c, calling fn for each row; the
// statement is prepared with prngMu held (see prng.go: a prepare may
// draw).
func queryRows(c *sqlite.Conn, q string, fn func(*sqlite.Stmt) error) error {
	prngMu.Lock()
	s, _, err := c.PrepareTransient(q)
	prngMu.Unlock()
	if err != nil {
		return err
	}
	defer s.Finalize()
	for {
		row, err := s.Step()
		if err != nil {
			return err
		}
		if !row {
			return nil
		}
		if err := fn(s); err != nil {
			return err
		}
	}
}
