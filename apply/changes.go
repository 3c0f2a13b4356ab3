package apply

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// Row-change capture: every row an entry inserts, updates or deletes
// (triggers, upserts and REPLACE included), as SQLite's pre-update hook
// reports it (https://sqlite.org/c3ref/preupdate_blobwrite.html), kept
// only for changes that commit: a failed statement's changes are dropped
// when SQLite's statement journal undoes them (not for OR FAIL, whose
// earlier changes stay), a savepoint rolled back drops what followed it,
// and a batch replayed after a statement ended the transaction starts its
// capture afresh. The hook is the one the budget's byte count uses
// (budget.go); see DESIGN.md.

// Op is the kind of a row change.
type Op uint8

// The row changes SQLite's pre-update hook reports.
const (
	Insert Op = 1 + iota
	Update
	Delete
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	}
	return "op(" + utoa(uint64(o)) + ")"
}

// Change is one row change an entry committed, in the order SQLite made
// it (a statement's own rows and its triggers' interleaved as they ran).
// Tables of SQLite (sqlite_*) and of nqlite (_nqlite_*) are left out.
type Change struct {
	// Table is the table's name as its schema spells it.
	Table string
	Op    Op
	// RowID is the row's rowid before the change (Update, Delete) or
	// after it (Insert); NewRowID is the rowid after an Update (equal to
	// RowID unless the update changed it). Both are 0 for a WITHOUT ROWID
	// table, whose rows the primary key identifies.
	RowID, NewRowID int64
	WithoutRowID    bool
	// Columns are the table's columns in table order, generated columns
	// left out (they are computed from the others). Old and New hold one
	// value per column (nil, int64, float64, string or []byte: the
	// storage class SQLite holds): Old for Update and Delete, New for
	// Insert and Update; the other is nil. They are filled only when
	// Options.OnChanges is set.
	Columns  []string
	Old, New []any
	// PK are the indexes in Columns of the table's primary key, in key
	// order: the INTEGER PRIMARY KEY column, the declared PRIMARY KEY, or
	// none (the rowid alone identifies the row).
	PK []int
}

// EntryChanges are the row changes one entry committed, or, for a load
// entry, the replacement of the whole database (Reset).
type EntryChanges struct {
	Seq     uint64 // the entry's stream sequence
	Time    int64  // the entry's time, Unix milliseconds
	Node    string // the node that accepted the entry (Entry.Node)
	Reset   bool   // a load entry: the database was replaced (no Changes)
	Changes []Change
}

// ChangeCounts count the row changes and resets committed by entries in
// format version 3 or later: per table (by its name at the time of the
// change) and resets (load entries). They are replicated state, stored in
// the database with the applied sequence, so every node holds the same
// counts at the same sequence, whatever it restarted from: a change feed
// can number its events by them (see ChangesFunc). Entries of versions 1
// and 2 count nothing (nodes before version 3 did not count).
type ChangeCounts struct {
	Resets uint64
	Tables map[string]uint64
}

// Count returns the resets plus the changes of the tables match accepts
// (nil: every table).
func (c ChangeCounts) Count(match func(table string) bool) uint64 {
	n := c.Resets
	for t, k := range c.Tables {
		if match == nil || match(t) {
			n += k
		}
	}
	return n
}

func (c ChangeCounts) clone() ChangeCounts {
	out := ChangeCounts{Resets: c.Resets, Tables: make(map[string]uint64, len(c.Tables))}
	for t, k := range c.Tables {
		out.Tables[t] = k
	}
	return out
}

// add counts what entries changed.
func (c *ChangeCounts) add(e *EntryChanges) {
	if e.Reset {
		c.Resets++
	}
	for i := range e.Changes {
		c.Tables[e.Changes[i].Table]++
	}
}

// ChangesFunc receives the row changes of a batch of entries in format
// version 3 or later, in stream order: the entries that changed rows or
// reset the database, each with its changes in order. before are the
// counts committed before the batch (the function must not modify or keep
// them; entries may not be kept past the call either). So the first
// change of the batch is number before.Count()+1 in the database's
// history of counted changes, and so on, on every node alike.
//
// It is called after the batch's statements ran and before the batch
// commits: an error rolls the batch back and ApplyBatch returns it, and
// the same entries come again on the next try, perhaps batched
// differently: the function must be idempotent. ctx is the batch's.
type ChangesFunc func(ctx context.Context, before ChangeCounts, entries []EntryChanges) error

// ChangeCounts returns the counts committed so far (a copy).
func (db *DB) ChangeCounts() ChangeCounts {
	db.countsMu.Lock()
	defer db.countsMu.Unlock()
	return db.counts.clone()
}

// The counts live in a table of their own, _nqlite_changes(tbl, n): one
// row per table and one, countResetsKey, for resets. Each entry updates
// the rows of the tables it changed, so the file holds the same bytes
// however the entries were batched (as every statement of an entry, the
// updates are the same on every node); the table is created by the first
// entry that counts a change, or by a load.
const (
	countsTable    = "_nqlite_changes"
	countResetsKey = "_nqlite_resets"
	countsDDL      = "CREATE TABLE IF NOT EXISTS " + countsTable + "(tbl TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID"
)

// readCounts loads the counts stored in the database of c.
func readCounts(c *conn) (counts ChangeCounts, exists bool, err error) {
	counts = ChangeCounts{Tables: map[string]uint64{}}
	cs, err := c.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '" + countsTable + "'")
	if err != nil {
		return counts, false, err
	}
	row, err := cs.stmt.Step()
	exists = err == nil && row && cs.stmt.ColumnInt64(0) > 0
	cs.release()
	if err != nil || !exists {
		return counts, false, err
	}
	cs, err = c.prepare("SELECT tbl, n FROM " + countsTable)
	if err != nil {
		return counts, true, err
	}
	defer cs.release()
	for {
		row, err := cs.stmt.Step()
		if err != nil {
			return counts, true, err
		}
		if !row {
			return counts, true, nil
		}
		k, v := cs.stmt.ColumnText(0), uint64(cs.stmt.ColumnInt64(1))
		if k == countResetsKey {
			counts.Resets = v
		} else {
			counts.Tables[k] = v
		}
	}
}

// countsSQL returns the statements that make counts the database's counts
// in place of whatever it held (a loaded file may hold another
// database's), tables in name order.
func countsSQL(counts ChangeCounts) string {
	var b strings.Builder
	b.WriteString(countsDDL + ";\nDELETE FROM " + countsTable + ";\n")
	if counts.Resets > 0 {
		b.WriteString("INSERT INTO " + countsTable + "(tbl, n) VALUES('" + countResetsKey + "', " + utoa(counts.Resets) + ");\n")
	}
	names := make([]string, 0, len(counts.Tables))
	for t := range counts.Tables {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		b.WriteString("INSERT INTO " + countsTable + "(tbl, n) VALUES(" + quoteString(t) + ", " + utoa(counts.Tables[t]) + ");\n")
	}
	return b.String()
}

func quoteString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func utoa(n uint64) string { return strconv.FormatUint(n, 10) }

// countEntry adds what the entry changed to the stored counts, tables in
// the order the entry first changed them.
func (db *DB) countEntry(counted bool, changes []Change) error {
	if !counted || len(changes) == 0 {
		return nil
	}
	if !db.countsExist {
		if err := db.w.exec(countsDDL); err != nil {
			return err
		}
		db.countsExist = true
	}
	var order []string
	n := map[string]int64{}
	for i := range changes {
		t := changes[i].Table
		if n[t] == 0 {
			order = append(order, t)
		}
		n[t]++
	}
	for _, t := range order {
		if err := db.w.exec("INSERT INTO "+countsTable+"(tbl, n) VALUES(?, ?) ON CONFLICT(tbl) DO UPDATE SET n = n + excluded.n", t, n[t]); err != nil {
			return fmt.Errorf("count changes: %w", err)
		}
	}
	return nil
}

// capture collects the row changes of the statement being stepped (the
// pre-update hook appends to it), with the values when values is set. enc
// holds the changes' digest encoding (digest.go), always, one after the
// other: ends[i] is where changes[i]'s ends, so truncating the changes
// truncates the encoding.
type capture struct {
	values  bool
	changes []Change
	enc     []byte
	ends    []int
	tables  []*tableInfo // tables seen by this statement, by their Table*
	colbuf  []int        // backs the tables' cols (reused: only this statement uses them)
}

// tableInfo is what a change records of its table: read from SQLite's own
// Table object (the schema as it is when the change is made).
type tableInfo struct {
	pTab         uintptr
	name         string
	skip         bool  // sqlite_* or _nqlite_*
	cols         []int // the table's column indexes that are not generated
	names        []string
	real         []bool // per name: REAL affinity (see realValue)
	pk           []int  // indexes into names
	withoutRowID bool
}

// table returns the info of the table the pre-update hook reports.
func (c *capture) table(tls *libc.TLS, db, zTbl uintptr) *tableInfo {
	pTab := (*lib.TPreUpdate)(cptr((*lib.Tsqlite3)(cptr(db)).FpPreUpdate)).FpTab
	for _, t := range c.tables {
		if t.pTab == pTab {
			return t
		}
	}
	t := &tableInfo{pTab: pTab, name: libc.GoString(zTbl)}
	lower := strings.ToLower(t.name)
	t.skip = strings.HasPrefix(lower, "sqlite_") || strings.HasPrefix(lower, reservedPrefix)
	if !t.skip {
		t.describe(c.values, &c.colbuf)
	}
	c.tables = append(c.tables, t)
	return t
}

// describe reads the table's columns from SQLite's Table: which are not
// generated, WITHOUT ROWID (what the digest needs), and, with names, the
// names and the primary key (from the INTEGER PRIMARY KEY or the
// primary-key Index). TestCapture_Schema guards the layout.
func (t *tableInfo) describe(names bool, buf *[]int) {
	tab := (*lib.TTable)(cptr(t.pTab))
	t.withoutRowID = tab.FtabFlags&lib.TF_WithoutRowid != 0
	start := len(*buf)
	for i := 0; i < int(tab.FnCol); i++ {
		col := (*lib.TColumn)(cptr(tab.FaCol + uintptr(i)*unsafe.Sizeof(lib.TColumn{})))
		if col.FcolFlags&lib.COLFLAG_GENERATED != 0 {
			continue
		}
		*buf = append(*buf, i)
	}
	t.cols = (*buf)[start:len(*buf):len(*buf)]
	if !names {
		return
	}
	pos := map[int]int{} // table column index -> index in names
	for j, i := range t.cols {
		col := (*lib.TColumn)(cptr(tab.FaCol + uintptr(i)*unsafe.Sizeof(lib.TColumn{})))
		pos[i] = j
		t.names = append(t.names, libc.GoString(col.FzCnName))
		t.real = append(t.real, col.Faffinity == lib.SQLITE_AFF_REAL)
	}
	if tab.FiPKey >= 0 {
		t.pk = []int{pos[int(tab.FiPKey)]}
		return
	}
	for idx := tab.FpIndex; idx != 0; idx = (*lib.TIndex)(cptr(idx)).FpNext {
		ix := (*lib.TIndex)(cptr(idx))
		if ix.F__ccgo100&3 != lib.SQLITE_IDXTYPE_PRIMARYKEY {
			continue
		}
		for k := 0; k < int(ix.FnKeyCol); k++ {
			c := int(*(*int16)(cptr(ix.FaiColumn + uintptr(k)*2)))
			if p, ok := pos[c]; ok {
				t.pk = append(t.pk, p)
			}
		}
		return
	}
}

// valueOf converts a sqlite3_value to Go: nil, int64, float64, string or
// []byte (a copy), keeping SQLite's storage class.
func valueOf(tls *libc.TLS, v uintptr) any {
	switch lib.Xsqlite3_value_type(tls, v) {
	case lib.SQLITE_INTEGER:
		return lib.Xsqlite3_value_int64(tls, v)
	case lib.SQLITE_FLOAT:
		return lib.Xsqlite3_value_double(tls, v)
	case lib.SQLITE_TEXT:
		p := lib.Xsqlite3_value_text(tls, v)
		n := lib.Xsqlite3_value_bytes(tls, v)
		if n == 0 {
			return ""
		}
		return string(unsafe.Slice((*byte)(cptr(p)), n))
	case lib.SQLITE_BLOB:
		p := lib.Xsqlite3_value_blob(tls, v)
		n := lib.Xsqlite3_value_bytes(tls, v)
		b := make([]byte, n)
		if n > 0 {
			copy(b, unsafe.Slice((*byte)(cptr(p)), n))
		}
		return b
	}
	return nil
}

// realValue returns v as a REAL if the column has REAL affinity and v is
// an integer. SQLite stores an integral REAL as an integer in the record
// and makes it a REAL again when a column is read (OP_RealAffinity), and
// so does sqlite3_preupdate_old, but sqlite3_preupdate_new hands an
// insert's new values over as the record holds them: without this an
// event would say INTEGER where every SELECT says REAL
// (TestCapture_RealAffinity). The conversion is SQLite's own, (double)i.
// The digest's encoding keeps what the hook gives (it is the same on
// every node, and changing it would change the digest).
func realValue(isReal bool, v any) any {
	if i, ok := v.(int64); ok && isReal {
		return float64(i)
	}
	return v
}

// record appends the change the pre-update hook reports to the capture
// (its digest encoding always, its values when the capture keeps them)
// and returns the size of its new values (what the byte budget counts:
// every new value of an insert or update, nqlite's tables and generated
// columns included, as before there was a capture).
func (m *meter) record(tls *libc.TLS, db uintptr, op int32, zTbl uintptr, key1, key2 int64) uint64 {
	c := &m.capture
	t := c.table(tls, db, zTbl)
	if t.skip {
		if op == lib.SQLITE_DELETE {
			return 0
		}
		var size uint64
		n := int(lib.Xsqlite3_preupdate_count(tls, db))
		for i := 0; i < n; i++ {
			if lib.Xsqlite3_preupdate_new(tls, db, int32(i), m.pValue) != lib.SQLITE_OK {
				continue
			}
			switch v := libc.AtomicLoadPUintptr(m.pValue); lib.Xsqlite3_value_type(tls, v) {
			case lib.SQLITE_INTEGER, lib.SQLITE_FLOAT:
				size += 8
			case lib.SQLITE_TEXT, lib.SQLITE_BLOB:
				size += uint64(lib.Xsqlite3_value_bytes(tls, v))
			}
		}
		return size
	}
	c.enc = appendChangeHead(c.enc, t, op, key1, key2)
	c.enc = binary.BigEndian.AppendUint32(c.enc, uint32(len(t.cols)))
	ch := Change{Table: t.name}
	var size uint64
	if op != lib.SQLITE_DELETE {
		// The new values: encoded (not generated columns), and sized (all).
		if c.values {
			ch.New = make([]any, len(t.cols))
		}
		n := int(lib.Xsqlite3_preupdate_count(tls, db))
		j := 0
		for i := 0; i < n; i++ {
			kept := j < len(t.cols) && t.cols[j] == i
			if lib.Xsqlite3_preupdate_new(tls, db, int32(i), m.pValue) != lib.SQLITE_OK {
				if kept {
					c.enc = append(c.enc, valNone)
					j++
				}
				continue
			}
			v := libc.AtomicLoadPUintptr(m.pValue)
			if !kept {
				switch lib.Xsqlite3_value_type(tls, v) {
				case lib.SQLITE_INTEGER, lib.SQLITE_FLOAT:
					size += 8
				case lib.SQLITE_TEXT, lib.SQLITE_BLOB:
					size += uint64(lib.Xsqlite3_value_bytes(tls, v))
				}
				continue
			}
			var sz uint64
			c.enc, sz = appendSQLiteValue(c.enc, tls, v)
			size += sz
			if ch.New != nil {
				ch.New[j] = realValue(t.real[j], valueOf(tls, v))
			}
			j++
		}
		for ; j < len(t.cols); j++ {
			c.enc = append(c.enc, valNone)
		}
	} else {
		// The old values of a delete.
		for _, i := range t.cols {
			if lib.Xsqlite3_preupdate_old(tls, db, int32(i), m.pValue) != lib.SQLITE_OK {
				c.enc = append(c.enc, valNone)
				continue
			}
			c.enc, _ = appendSQLiteValue(c.enc, tls, libc.AtomicLoadPUintptr(m.pValue))
		}
	}
	c.ends = append(c.ends, len(c.enc))
	m.appendChange(t, &ch, op, key1, key2)
	return size
}

// appendChange completes ch (op, rowids, old values, columns) and appends
// it to the statement's capture.
func (m *meter) appendChange(t *tableInfo, ch *Change, op int32, key1, key2 int64) {
	c := &m.capture
	switch op {
	case lib.SQLITE_INSERT:
		ch.Op, ch.RowID, ch.NewRowID = Insert, key2, key2
	case lib.SQLITE_UPDATE:
		ch.Op, ch.RowID, ch.NewRowID = Update, key1, key2
	default:
		ch.Op, ch.RowID = Delete, key1
	}
	if c.values {
		ch.Columns, ch.PK, ch.WithoutRowID = t.names, t.pk, t.withoutRowID
		if t.withoutRowID {
			ch.RowID, ch.NewRowID = 0, 0
		}
		if op != lib.SQLITE_INSERT {
			ch.Old = make([]any, len(t.cols))
			for j, i := range t.cols {
				if lib.Xsqlite3_preupdate_old(m.tls, m.db, int32(i), m.pValue) == lib.SQLITE_OK {
					ch.Old[j] = valueOf(m.tls, libc.AtomicLoadPUintptr(m.pValue))
				}
			}
		}
	}
	c.changes = append(c.changes, *ch)
}
