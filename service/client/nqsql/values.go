package nqsql

import (
	"database/sql/driver"
	"fmt"
	"io"
	"strings"
	"time"
)

// Level is a per-call option: the read consistency of one call (see the
// package doc, "Per-call options").
type Level string

// The read consistency levels, as per-call options.
const (
	// None reads whatever the node has applied (after the connector's
	// sequence).
	None Level = "none"
	// Strong first waits until the node has applied every entry the
	// stream held when the request arrived.
	Strong Level = "strong"
)

// AfterSeq is a per-call option: the node first applies this stream
// sequence (in addition to the connector's own).
type AfterSeq uint64

// Timeout is a per-call option: this call's timeout (1ms to 10m).
type Timeout time.Duration

// IdempotencyKey is a per-call option of a write outside a transaction:
// the request's id (Nats-Msg-Id), so that a retry with the same key within
// the stream's duplicate window (2 minutes) is stored once. A duplicate
// Exec returns a Result whose methods return ErrDuplicate.
type IdempotencyKey string

// Seq is a per-call option when passed as a *Seq: it receives the stream
// sequence of the response (for a write, its entry's; for a read, what
// the node had applied).
type Seq uint64

// callOptions are the per-call options given to one call.
type callOptions struct {
	level    string
	afterSeq uint64
	timeout  time.Duration
	id       string
	seqOut   *Seq
	set      bool
}

// option records nv as a per-call option if it is one.
func (o *callOptions) option(v any) (bool, error) {
	switch x := v.(type) {
	case Level:
		if x != None && x != Strong {
			return true, fmt.Errorf("nqsql: level %q: use nqsql.None or nqsql.Strong", string(x))
		}
		o.level = string(x)
	case AfterSeq:
		o.afterSeq = max(o.afterSeq, uint64(x))
	case Timeout:
		d := time.Duration(x)
		if d < time.Millisecond || d > 10*time.Minute {
			return true, fmt.Errorf("nqsql: timeout %v: give 1ms to 10m", d)
		}
		o.timeout = d
	case IdempotencyKey:
		if x == "" {
			return true, fmt.Errorf("nqsql: empty IdempotencyKey")
		}
		o.id = string(x)
	case *Seq:
		if x == nil {
			return true, fmt.Errorf("nqsql: nil *Seq")
		}
		o.seqOut = x
	default:
		return false, nil
	}
	o.set = true
	return true, nil
}

// TimeFormat is the layout of a time.Time parameter, stored as TEXT in UTC
// (mattn/go-sqlite3's first layout): "2006-01-02 15:04:05.999999999-07:00".
const TimeFormat = "2006-01-02 15:04:05.999999999-07:00"

// timeLayouts are the layouts of TEXT read back as time.Time from DATE,
// DATETIME and TIMESTAMP columns, tried in order ("Z07:00" also takes Z).
var timeLayouts = []string{
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04Z07:00",
	"2006-01-02T15:04Z07:00",
	"2006-01-02 15:04",
	"2006-01-02T15:04",
	"2006-01-02",
}

// paramValue converts a parameter, after database/sql's default
// conversion, to a value the API binds: nil, int64, float64, string or
// []byte.
func paramValue(v any) (any, error) {
	v, err := driver.DefaultParameterConverter.ConvertValue(v)
	if err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case []byte:
		if x == nil {
			return nil, nil // a nil []byte is NULL, as in mattn/go-sqlite3 and lib/pq
		}
		return x, nil
	case nil, int64, float64, string:
		return x, nil
	case bool:
		if x {
			return int64(1), nil
		}
		return int64(0), nil
	case time.Time:
		return x.UTC().Format(TimeFormat), nil
	}
	return nil, fmt.Errorf("nqsql: unsupported parameter type %T", v)
}

// isTimeType reports whether a declared type reads TEXT back as
// time.Time.
func isTimeType(decl string) bool {
	switch decl {
	case "DATE", "DATETIME", "TIMESTAMP":
		return true
	}
	return false
}

// parseTime reads SQLite date text; ok is false when s is not one.
func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, layout := range timeLayouts {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			if _, off := t.Zone(); off == 0 {
				t = t.UTC()
			}
			return t, true
		}
	}
	return time.Time{}, false
}

// typeName is a declared type as DatabaseTypeName reports it: upper case,
// without a length or precision.
func typeName(decl string) string {
	if i := strings.IndexByte(decl, '('); i >= 0 {
		decl = decl[:i]
	}
	return strings.ToUpper(strings.TrimSpace(decl))
}

// rows are the rows of one result, already received whole (nqlite answers
// a read in one response).
type rows struct {
	columns []string
	types   []string // typeName of each column's declared type
	values  [][]any
	next    int
}

func newRows(columns, decl []string, values [][]any) *rows {
	r := &rows{columns: columns, values: values, types: make([]string, len(columns))}
	for i := range r.types {
		if i < len(decl) {
			r.types[i] = typeName(decl[i])
		}
	}
	return r
}

// Columns returns the column names in order (duplicates kept).
func (r *rows) Columns() []string { return r.columns }

// Close drops the remaining rows.
func (r *rows) Close() error {
	r.values, r.next = nil, 0
	return nil
}

// Next fills dest with the next row: int64, float64, string, []byte, nil,
// or time.Time for date text in a DATE/DATETIME/TIMESTAMP column.
func (r *rows) Next(dest []driver.Value) error {
	if r.next >= len(r.values) {
		return io.EOF
	}
	row := r.values[r.next]
	r.next++
	for i := range dest {
		var v any
		if i < len(row) {
			v = row[i]
		}
		if s, ok := v.(string); ok && isTimeType(r.types[i]) {
			if t, ok := parseTime(s); ok {
				v = t
			}
		}
		dest[i] = v
	}
	return nil
}

// ColumnTypeDatabaseTypeName returns column i's declared type in upper
// case without a length (VARCHAR(20) is VARCHAR), "" for an expression.
func (r *rows) ColumnTypeDatabaseTypeName(i int) string { return r.types[i] }
