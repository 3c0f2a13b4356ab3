package service_test

// The sqllogictest script format and result rules, as implemented by the
// reference runner (sqllogictest.c and slt_sqlite.c,
// https://sqlite.org/sqllogictest/doc/trunk/about.wiki):
//
//   - Lines have a trailing \r removed; a line of only white space is
//     blank; a line starting with '#' is a comment and is skipped as if it
//     were not there. Records are separated by blank lines.
//   - A record may start with "skipif <engine>" / "onlyif <engine>" lines;
//     we are the engine "sqlite" (compared case-insensitively).
//   - "statement ok|error" is followed by SQL, run as sqlite3_exec runs it
//     (every statement of the text in turn, stopping at the first error).
//   - "query <types> [nosort|rowsort|valuesort] [label]" is followed by SQL
//     (only its first statement is prepared), an optional "----" line and
//     the expected values, one per line. A result column of type I prints
//     sqlite3_column_int ("%d", 32 bits), R prints sqlite3_column_double
//     with SQLite's own "%.3f", T prints sqlite3_column_text with "" shown
//     as "(empty)" and every byte outside ' '..'~' as '@'; NULL prints as
//     "NULL" whatever the type. rowsort sorts rows, valuesort sorts single
//     values, both with strcmp. The type string must have one character per
//     result column or the query fails. A step error ends the result set
//     early without failing the query.
//   - When there are more values than the hash threshold (default 8,
//     "hash-threshold N" changes it, 0 disables hashing), the expected
//     result is the single line "N values hashing to <md5>", the md5 of
//     every value followed by "\n". A labelled query's hash must agree with
//     every earlier query of the same label.
//   - "halt" ends the script.

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strings"

	"zombiezen.com/go/sqlite"
)

// sltDefaultHashThreshold is the reference runner's DEFAULT_HASH_THRESHOLD.
const sltDefaultHashThreshold = 8

// sltRecord is one record of a script.
type sltRecord struct {
	Line int    // line number of the record's command line (1-based)
	Kind string // "statement", "query", "hash-threshold", "halt" or another word (unknown)
	Skip bool   // skipped by skipif/onlyif for the engine "sqlite"

	// statement
	ExpectError bool

	// query
	Types    string
	SortMode string // "nosort", "rowsort" or "valuesort"
	Label    string
	Expected []string // the lines after "----"

	// hash-threshold
	Threshold int

	SQL string // the SQL lines joined with "\n"
}

// sltParse reads a script and returns its records, halt included.
func sltParse(path string) ([]sltRecord, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type line struct {
		n    int
		text string
	}
	var block []line
	var blocks [][]line
	for i, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSuffix(l, "\r")
		if strings.TrimSpace(l) == "" {
			if len(block) > 0 {
				blocks = append(blocks, block)
				block = nil
			}
			continue
		}
		if l[0] == '#' {
			continue
		}
		block = append(block, line{i + 1, l})
	}
	if len(block) > 0 {
		blocks = append(blocks, block)
	}

	var recs []sltRecord
	for _, b := range blocks {
		skip := false
		for len(b) > 1 {
			f := strings.Fields(b[0].text)
			if f[0] != "skipif" && f[0] != "onlyif" {
				break
			}
			match := len(f) > 1 && strings.EqualFold(f[1], "sqlite")
			if (f[0] == "skipif") == match {
				skip = true
			}
			b = b[1:]
		}
		f := strings.Fields(b[0].text)
		r := sltRecord{Line: b[0].n, Kind: f[0], Skip: skip}
		rest := make([]string, len(b)-1)
		for i, l := range b[1:] {
			rest[i] = l.text
		}
		switch r.Kind {
		case "statement":
			if len(f) < 2 || (f[1] != "ok" && f[1] != "error") {
				return nil, fmt.Errorf("%s:%d: statement argument should be 'ok' or 'error'", path, r.Line)
			}
			r.ExpectError = f[1] == "error"
			r.SQL = strings.Join(rest, "\n")
		case "query":
			if len(f) < 2 {
				return nil, fmt.Errorf("%s:%d: missing type string", path, r.Line)
			}
			r.Types = f[1]
			if strings.Trim(r.Types, "TIR") != "" {
				return nil, fmt.Errorf("%s:%d: unknown type character in type string %q", path, r.Line, r.Types)
			}
			r.SortMode = "nosort"
			if len(f) > 2 {
				r.SortMode = f[2]
			}
			switch r.SortMode {
			case "nosort", "rowsort", "valuesort":
			default:
				return nil, fmt.Errorf("%s:%d: unknown sort method %q", path, r.Line, r.SortMode)
			}
			if len(f) > 3 {
				r.Label = f[3]
			}
			sqlLines := rest
			for i, l := range rest {
				if l == "----" {
					sqlLines = rest[:i]
					r.Expected = rest[i+1:]
					break
				}
			}
			r.SQL = strings.Join(sqlLines, "\n")
		case "hash-threshold":
			if len(f) < 2 {
				return nil, fmt.Errorf("%s:%d: hash-threshold needs a number", path, r.Line)
			}
			if _, err := fmt.Sscanf(f[1], "%d", &r.Threshold); err != nil {
				return nil, fmt.Errorf("%s:%d: hash-threshold %q: %v", path, r.Line, f[1], err)
			}
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// sltFormatter renders result values the way slt_sqlite.c does, asking
// SQLite itself for every conversion that is not trivially exact
// (sqlite3_column_int of a REAL or TEXT, text of a REAL, SQLite's "%.3f").
type sltFormatter struct {
	conn  *sqlite.Conn
	value *sqlite.Stmt // SELECT ?1
	real  *sqlite.Stmt // SELECT printf('%.3f', ?1)
}

func newSLTFormatter() (*sltFormatter, error) {
	conn, err := sqlite.OpenConn(":memory:", sqlite.OpenReadWrite|sqlite.OpenMemory)
	if err != nil {
		return nil, err
	}
	f := &sltFormatter{conn: conn}
	if f.value, _, err = conn.PrepareTransient("SELECT ?1"); err == nil {
		f.real, _, err = conn.PrepareTransient("SELECT printf('%.3f', ?1)")
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (f *sltFormatter) Close() {
	for _, s := range []*sqlite.Stmt{f.value, f.real} {
		if s != nil {
			s.Finalize()
		}
	}
	f.conn.Close()
}

// eval binds v to s's only parameter and steps it to its row.
func (f *sltFormatter) eval(s *sqlite.Stmt, v any) error {
	s.Reset()
	sltBind(s, 1, v)
	row, err := s.Step()
	if err == nil && !row {
		err = fmt.Errorf("no row")
	}
	return err
}

// Format renders one non-NULL or NULL value for a column of type typ.
func (f *sltFormatter) Format(typ byte, v any) (string, error) {
	if v == nil {
		return "NULL", nil
	}
	switch typ {
	case 'I':
		if i, ok := v.(int64); ok {
			return fmt.Sprint(int32(i)), nil // sqlite3_column_int keeps the low 32 bits
		}
		if err := f.eval(f.value, v); err != nil {
			return "", err
		}
		return fmt.Sprint(f.value.ColumnInt32(0)), nil
	case 'R':
		if err := f.eval(f.real, v); err != nil {
			return "", err
		}
		return f.real.ColumnText(0), nil
	case 'T':
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case int64:
			s = fmt.Sprint(x)
		default:
			if err := f.eval(f.value, v); err != nil {
				return "", err
			}
			s = f.value.ColumnText(0)
		}
		if i := strings.IndexByte(s, 0); i >= 0 {
			s = s[:i] // a C string ends at its first NUL
		}
		if s == "" {
			return "(empty)", nil
		}
		b := []byte(s)
		for i, c := range b {
			if c < ' ' || c > '~' {
				b[i] = '@'
			}
		}
		return string(b), nil
	}
	return "", fmt.Errorf("unknown type character %q", typ)
}

// FormatRows renders rows for the type string types (one character per
// column) and returns the values in order, rows one after the other.
func (f *sltFormatter) FormatRows(types string, rows [][]any) ([]string, error) {
	out := make([]string, 0, len(rows)*len(types))
	for _, row := range rows {
		if len(row) != len(types) {
			return nil, fmt.Errorf("row has %d values for type string %q", len(row), types)
		}
		for j, v := range row {
			s, err := f.Format(types[j], v)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// sltSort applies a record's sort mode to formatted values of ncol columns
// in place.
func sltSort(mode string, ncol int, vals []string) {
	switch mode {
	case "rowsort":
		rows := make([][]string, 0, len(vals)/ncol)
		for i := 0; i+ncol <= len(vals); i += ncol {
			rows = append(rows, vals[i:i+ncol:i+ncol])
		}
		sort.SliceStable(rows, func(a, b int) bool {
			for k := range rows[a] {
				if c := strings.Compare(rows[a][k], rows[b][k]); c != 0 {
					return c < 0
				}
			}
			return false
		})
		sorted := make([]string, 0, len(vals))
		for _, r := range rows {
			sorted = append(sorted, r...)
		}
		copy(vals, sorted)
	case "valuesort":
		sort.Strings(vals)
	}
}

// sltHash is the runner's "N values hashing to <md5>" line for vals.
func sltHash(vals []string) string {
	h := md5.New()
	for _, v := range vals {
		h.Write([]byte(v))
		h.Write([]byte{'\n'})
	}
	return fmt.Sprintf("%d values hashing to %s", len(vals), hex.EncodeToString(h.Sum(nil)))
}

// sltBind binds a wire value (nil, int64, float64, string, []byte).
func sltBind(s *sqlite.Stmt, i int, v any) {
	switch x := v.(type) {
	case nil:
		s.BindNull(i)
	case int64:
		s.BindInt64(i, x)
	case float64:
		s.BindFloat(i, x)
	case string:
		s.BindText(i, x)
	case []byte:
		s.BindBytes(i, x)
	default:
		panic(fmt.Sprintf("sltBind: unexpected %T", v))
	}
}

// sltColumn reads result column i of the current row as a wire value.
func sltColumn(s *sqlite.Stmt, i int) any {
	switch s.ColumnType(i) {
	case sqlite.TypeInteger:
		return s.ColumnInt64(i)
	case sqlite.TypeFloat:
		return s.ColumnFloat(i)
	case sqlite.TypeText:
		return s.ColumnText(i)
	case sqlite.TypeBlob:
		b := make([]byte, s.ColumnLen(i))
		s.ColumnBytes(i, b)
		return b
	default:
		return nil
	}
}
