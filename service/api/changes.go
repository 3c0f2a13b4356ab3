package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The change feed: every row change committed by a write, published by
// the nodes into the JetStream stream ChangesStreamName(db), once each, in
// stream order (see service/feed).

// ChangesStreamName returns the change stream of db: NQLITE_CHANGES_<db>.
func ChangesStreamName(db string) string { return "NQLITE_CHANGES_" + db }

// ChangesSubject returns the subject of db's feed events that concern no
// table (reset, lost): nqlite.changes.<db>. Row changes are on
// ChangeSubject(db, table) below it; nqlite.changes.<db>.> matches them
// all.
func ChangesSubject(db string) string { return "nqlite.changes." + db }

// ChangeSubject returns the subject of the row changes of table in db:
// nqlite.changes.<db>.<token>, the token being SubjectToken(table).
func ChangeSubject(db, table string) string { return ChangesSubject(db) + "." + SubjectToken(table) }

// SubjectToken returns a table name as one NATS subject token: ASCII
// letters in lower case (SQLite's names are case-insensitive: "Orders" and
// "orders" are one table), digits, '_' and '-' as they are, every other
// byte as %XX (upper-case hex), so "Order Items" is "order%20items" and
// "a.b" is "a%2Eb". Two tables never share a token.
func SubjectToken(name string) string {
	ok := true
	for i := 0; i < len(name) && ok; i++ {
		ok = tokenByte(name[i]) && !(name[i] >= 'A' && name[i] <= 'Z')
	}
	if ok && name != "" {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 'A' && c <= 'Z' {
			b.WriteByte(c + 'a' - 'A')
		} else if tokenByte(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		}
	}
	if b.Len() == 0 {
		return "%" // the empty name, which SQLite allows ("")
	}
	return b.String()
}

func tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// Operations of change events.
const (
	OpInsert = "insert"
	OpUpdate = "update"
	OpDelete = "delete"
	// OpReset: a load or restore replaced the whole database (nqctl
	// restore): rows from before it are gone.
	OpReset = "reset"
	// OpLost: the change at this position of the feed is lost: every node
	// that could publish it stopped, or the nodes that could were behind a
	// snapshot that skipped it (see service/feed).
	OpLost = "lost"
)

// Change is one event of a change feed, a JSON object:
//
//	{"seq": 42, "index": 0, "time": 1700000000000, "table": "t", "op": "update",
//	 "rowid": 7, "pk": {"id": 7}, "old": {"id": 7, "n": 1}, "new": {"id": 7, "n": 2}}
//
// seq is the stream sequence of the entry (the write) that made the
// change and index its place among the entry's changes (from 0, triggers'
// changes included; with a table filter some indexes are not published),
// time the entry's time in Unix milliseconds. rowid is the row's rowid
// (before an update; new_rowid follows when the update changed it; no
// rowid for a WITHOUT ROWID table); pk holds the primary-key columns and
// their values (before an update), absent when the rowid alone identifies
// the row. old (update, delete) and new (insert, update) hold every
// column but generated ones, values as in the API's values format:
// integers exact, a REAL always with '.' or an exponent, BLOBs as
// {"base64": "..."}, so each keeps its SQLite storage class. A reset has
// seq, index 0, time and op; a lost event only op.
type Change struct {
	Seq   uint64
	Index int
	Time  int64
	Op    string
	Table string
	// RowID and NewRowID are set unless WithoutRowID (row changes only).
	RowID, NewRowID int64
	WithoutRowID    bool
	// PK names the primary-key columns, in key order.
	PK []string
	// Columns are the row's columns in table order; Old and New one value
	// per column (nil, int64, float64, string or []byte), or nil.
	Columns  []string
	Old, New []any
	// Position is the event's sequence in the change stream (from the
	// JetStream message, not the JSON).
	Position uint64
}

// AppendJSON appends the JSON encoding of c.
func (c *Change) AppendJSON(b []byte) []byte {
	if c.Op == OpLost {
		return append(b, `{"op":"lost"}`...)
	}
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, c.Seq, 10)
	b = append(b, `,"index":`...)
	b = strconv.AppendInt(b, int64(c.Index), 10)
	b = append(b, `,"time":`...)
	b = strconv.AppendInt(b, c.Time, 10)
	if c.Op == OpReset {
		return append(b, `,"op":"reset"}`...)
	}
	b = append(b, `,"table":`...)
	b = AppendString(b, c.Table)
	b = append(b, `,"op":`...)
	b = AppendString(b, c.Op)
	if !c.WithoutRowID {
		b = append(b, `,"rowid":`...)
		b = strconv.AppendInt(b, c.RowID, 10)
		if c.Op == OpUpdate && c.NewRowID != c.RowID {
			b = append(b, `,"new_rowid":`...)
			b = strconv.AppendInt(b, c.NewRowID, 10)
		}
	}
	if len(c.PK) > 0 {
		key := c.Old
		if key == nil {
			key = c.New
		}
		b = append(b, `,"pk":{`...)
		for i, name := range c.PK {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendString(b, name)
			b = append(b, ':')
			for j, col := range c.Columns {
				if col == name && j < len(key) {
					b = AppendValue(b, key[j])
					break
				}
			}
		}
		b = append(b, '}')
	}
	row := func(name string, vals []any) {
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":{`...)
		for i, col := range c.Columns {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendString(b, col)
			b = append(b, ':')
			if i < len(vals) {
				b = AppendValue(b, vals[i])
			} else {
				b = append(b, "null"...)
			}
		}
		b = append(b, '}')
	}
	if c.Old != nil {
		row("old", c.Old)
	}
	if c.New != nil {
		row("new", c.New)
	}
	return append(b, '}')
}

// DecodeChange decodes a change event (see Change), keeping the column
// order of old and new and every value's storage class.
func DecodeChange(data []byte) (*Change, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	c := &Change{WithoutRowID: true}
	err := decodeObject(dec, func(key string) error {
		var err error
		switch key {
		case "seq":
			var n json.Number
			if err = dec.Decode(&n); err == nil {
				c.Seq, err = strconv.ParseUint(string(n), 10, 64)
			}
		case "index":
			err = dec.Decode(&c.Index)
		case "time":
			err = dec.Decode(&c.Time)
		case "op":
			err = dec.Decode(&c.Op)
		case "table":
			err = dec.Decode(&c.Table)
		case "rowid":
			c.WithoutRowID = false
			err = dec.Decode(&c.RowID)
			if c.NewRowID == 0 {
				c.NewRowID = c.RowID
			}
		case "new_rowid":
			err = dec.Decode(&c.NewRowID)
		case "pk":
			err = decodeObject(dec, func(name string) error {
				c.PK = append(c.PK, name)
				var v any
				return dec.Decode(&v)
			})
		case "old", "new":
			var cols []string
			var vals []any
			err = decodeObject(dec, func(name string) error {
				var v any
				if err := dec.Decode(&v); err != nil {
					return err
				}
				cols = append(cols, name)
				vals = append(vals, decodeValue(v))
				return nil
			})
			if vals == nil {
				vals = []any{}
			}
			if c.Columns == nil {
				c.Columns = cols
			}
			if key == "old" {
				c.Old = vals
			} else {
				c.New = vals
			}
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("decode change: %w", err)
	}
	if c.Op == "" {
		return nil, errors.New("decode change: no op")
	}
	if c.Op == OpReset || c.Op == OpLost {
		c.WithoutRowID = false
	}
	return c, nil
}

// decodeObject reads a JSON object from dec, calling f for each key with
// the decoder positioned at its value (which f must read).
func decodeObject(dec *json.Decoder, f func(key string) error) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("want an object, got %v", t)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := t.(string)
		if !ok {
			return fmt.Errorf("want a key, got %v", t)
		}
		if err := f(key); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil && err != io.EOF {
		return err
	}
	return nil
}
