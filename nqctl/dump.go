package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/nqlite/nqlite/service/api"
)

// dumpOptions are the options of .dump and nqctl dump.
type dumpOptions struct {
	// dataOnly prints only the rows (no CREATE statements).
	dataOnly bool
	// noTransaction omits BEGIN TRANSACTION/COMMIT, so that nqctl can load
	// a dump larger than one request in chunks.
	noTransaction bool
	// patterns limit the dump to the tables (and their indexes and
	// triggers) whose names match one of these LIKE patterns.
	patterns []string
}

// dumpPageBytes is the size of the row pages dump reads: well under the
// NATS max payload (1 MiB by default) that bounds a response, since the
// node estimates a response's size generously. A page the node still
// finds too large is read again in smaller pages.
const dumpPageBytes = 128 << 10

// schemaObject is a row of sqlite_schema.
type schemaObject struct {
	typ, name, tblName, sql string
}

// tableInfo is what dump needs to know of a table.
type tableInfo struct {
	kind         string // "table", "virtual" or "shadow" (PRAGMA table_list)
	withoutRowid bool
	cols         []string // columns to dump (not generated, not hidden)
	generated    bool     // some column is generated: name the columns
	pk           []string // primary key columns of a WITHOUT ROWID table
	allCols      map[string]bool
}

// dump writes the database, or the tables matching o.patterns, as SQL
// text like sqlite3's .dump: BEGIN TRANSACTION, each table's CREATE
// statement and its rows as INSERTs, the AUTOINCREMENT counters
// (sqlite_sequence), then the indexes, triggers and views, and COMMIT.
// SQLite's own tables and nqlite's _nqlite_* tables are left out, and so
// is sqlite3's "PRAGMA foreign_keys=OFF;" line: nqlite never enforces
// foreign keys and refuses the pragma, so the dump loads into nqlite as
// well as into sqlite3.
//
// The rows are read in pages of about dumpPageBytes, each request reading
// after the sequence of the previous one; a table written during the dump
// may be dumped partly before and partly after the write.
func dump(ctx context.Context, s *session, w *bufio.Writer, o dumpOptions) error {
	resp, err := s.query(ctx, api.Statement{SQL: "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid"})
	if err != nil {
		return wrapErr(".dump", err)
	}
	var objs []schemaObject
	for _, row := range resp.Results[0].Values {
		objs = append(objs, schemaObject{typ: str(row[0]), name: str(row[1]), tblName: str(row[2]), sql: str(row[3])})
	}
	kinds := tableKinds(ctx, s)

	match := func(name string) bool {
		if len(o.patterns) == 0 {
			return true
		}
		for _, p := range o.patterns {
			if likeMatch(p, name) {
				return true
			}
		}
		return false
	}
	own := func(name string) bool {
		l := strings.ToLower(name)
		return strings.HasPrefix(l, "sqlite_") || strings.HasPrefix(l, "_nqlite_")
	}

	if !o.noTransaction {
		w.WriteString("BEGIN TRANSACTION;\n")
	}
	hasSequence := false
	for _, obj := range objs {
		if obj.typ != "table" {
			continue
		}
		if strings.EqualFold(obj.name, "sqlite_sequence") {
			hasSequence = true
			continue
		}
		if own(obj.name) || !match(obj.name) {
			continue
		}
		k := kinds[obj.name]
		if k.kind == "shadow" {
			continue // a virtual table's storage: its CREATE VIRTUAL TABLE rebuilds it
		}
		if !o.dataOnly {
			w.WriteString(obj.sql)
			w.WriteString(";\n")
		}
		if k.kind == "" && strings.HasPrefix(strings.ToUpper(obj.sql), "CREATE VIRTUAL") {
			k.kind = "virtual"
		}
		if err := dumpRows(ctx, s, w, obj, k); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return failedf(".dump: write: %v", err)
		}
	}
	if hasSequence && len(o.patterns) == 0 {
		resp, err := s.query(ctx, api.Statement{SQL: "SELECT name, seq FROM sqlite_sequence"})
		if err != nil {
			return wrapErr(".dump", err)
		}
		w.WriteString("DELETE FROM sqlite_sequence;\n")
		for _, row := range resp.Results[0].Values {
			fmt.Fprintf(w, "INSERT INTO sqlite_sequence VALUES(%s,%s);\n", sqlLiteral(row[0]), sqlLiteral(row[1]))
		}
	}
	if !o.dataOnly {
		for _, obj := range objs {
			if obj.typ == "table" || own(obj.name) || own(obj.tblName) || !match(obj.tblName) {
				continue
			}
			w.WriteString(obj.sql)
			w.WriteString(";\n")
		}
	}
	if !o.noTransaction {
		w.WriteString("COMMIT;\n")
	}
	if err := w.Flush(); err != nil {
		return failedf(".dump: write: %v", err)
	}
	return nil
}

// tableKinds reads PRAGMA table_list: the kind of each table of the main
// schema and whether it is WITHOUT ROWID. An error leaves it empty (dump
// then looks at the CREATE statements).
func tableKinds(ctx context.Context, s *session) map[string]tableInfo {
	out := map[string]tableInfo{}
	resp, err := s.query(ctx, api.Statement{SQL: "PRAGMA table_list"})
	if err != nil {
		return out
	}
	r := resp.Results[0]
	idx := map[string]int{}
	for i, c := range r.Columns {
		idx[c] = i
	}
	for _, row := range r.Values {
		if str(row[idx["schema"]]) != "main" {
			continue
		}
		wr, _ := row[idx["wr"]].(int64)
		out[str(row[idx["name"]])] = tableInfo{kind: str(row[idx["type"]]), withoutRowid: wr == 1}
	}
	return out
}

var withoutRowidRE = regexp.MustCompile(`(?i)\bWITHOUT\s+ROWID\s*$`)

// dumpRows writes the INSERT statements of a table's rows, read in pages.
func dumpRows(ctx context.Context, s *session, w *bufio.Writer, obj schemaObject, k tableInfo) error {
	resp, err := s.query(ctx, api.Statement{SQL: "PRAGMA table_xinfo(" + quoteIdent(obj.name) + ")"})
	if err != nil {
		return wrapErr(".dump "+obj.name, err)
	}
	r := resp.Results[0]
	idx := map[string]int{}
	for i, c := range r.Columns {
		idx[c] = i
	}
	type pkCol struct {
		name string
		n    int64
	}
	var pks []pkCol
	k.allCols = map[string]bool{}
	for _, row := range r.Values {
		name := str(row[idx["name"]])
		hidden, _ := row[idx["hidden"]].(int64)
		pk, _ := row[idx["pk"]].(int64)
		k.allCols[strings.ToLower(name)] = true
		switch hidden {
		case 0:
			k.cols = append(k.cols, name)
		case 2, 3:
			k.generated = true
		}
		if pk > 0 {
			pks = append(pks, pkCol{name, pk})
		}
	}
	if len(k.cols) == 0 {
		return nil
	}
	if k.kind == "" && withoutRowidRE.MatchString(obj.sql) {
		k.withoutRowid = true
	}
	for n := int64(1); n <= int64(len(pks)); n++ {
		for _, p := range pks {
			if p.n == n {
				k.pk = append(k.pk, p.name)
			}
		}
	}

	quoted := make([]string, len(k.cols))
	for i, c := range k.cols {
		quoted[i] = quoteIdent(c)
	}
	colList := strings.Join(quoted, ",")
	prefix := "INSERT INTO " + quoteName(obj.name)
	if k.generated {
		names := make([]string, len(k.cols))
		for i, c := range k.cols {
			names[i] = quoteName(c)
		}
		prefix += "(" + strings.Join(names, ",") + ")"
	}
	prefix += " VALUES("

	// How to page: by rowid, by the primary key of a WITHOUT ROWID table,
	// or (virtual tables) by offset.
	var key []string // the key columns selected before the values
	switch {
	case k.kind == "virtual":
	case k.withoutRowid:
		key = k.pk
	default:
		for _, alias := range []string{"rowid", "_rowid_", "oid"} {
			if !k.allCols[alias] {
				key = []string{alias}
				break
			}
		}
	}
	table := quoteIdent(obj.name)
	limit := int64(200)
	var after []any
	offset := int64(0)
	for {
		var q api.Statement
		if len(key) > 0 {
			qk := make([]string, len(key))
			for i, c := range key {
				qk[i] = quoteIdent(c)
			}
			if key[0] == "rowid" || key[0] == "_rowid_" || key[0] == "oid" {
				qk[0] = key[0]
			}
			keys := strings.Join(qk, ",")
			q.SQL = "SELECT " + keys + "," + colList + " FROM " + table
			if after != nil {
				if len(key) == 1 {
					q.SQL += " WHERE " + keys + " > ?"
				} else {
					q.SQL += " WHERE (" + keys + ") > (" + strings.TrimSuffix(strings.Repeat("?,", len(key)), ",") + ")"
				}
				q.Params = after
			}
			q.SQL += " ORDER BY " + keys + " LIMIT " + strconv.FormatInt(limit, 10)
		} else {
			q.SQL = "SELECT " + colList + " FROM " + table + " LIMIT " + strconv.FormatInt(limit, 10) + " OFFSET " + strconv.FormatInt(offset, 10)
		}
		req := s.request([]api.Statement{q}, reqOptions{})
		req.Format = api.FormatValues
		raw, resp, _, err := s.do(ctx, req)
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeTooLarge && limit > 1 {
			// The page is over what the node sends in one message (its
			// estimate of the size may be well above the real one).
			limit = max(1, limit/4)
			continue
		}
		if err != nil {
			return wrapErr(".dump "+obj.name, err)
		}
		if len(resp.Results) != 1 {
			return failedf(".dump %s: %d results for one statement", obj.name, len(resp.Results))
		}
		if e := resp.Results[0].Error; e != "" {
			return failedf(".dump %s: %s", obj.name, e)
		}
		rows := resp.Results[0].Values
		var b []byte
		for _, row := range rows {
			vals := row[len(key):]
			b = append(b[:0], prefix...)
			for i, v := range vals {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendLiteral(b, v)
			}
			b = append(b, ");\n"...)
			w.Write(b)
		}
		if int64(len(rows)) < limit {
			return nil
		}
		if len(key) > 0 {
			after = append([]any(nil), rows[len(rows)-1][:len(key)]...)
		}
		offset += int64(len(rows))
		// Size the next page from this one's bytes per row.
		perRow := max(1, int64(len(raw))/int64(len(rows)))
		limit = min(max(dumpPageBytes/perRow, 1), 100000)
	}
}

// str is a value as text ("" for NULL).
func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	default:
		return formatValue(x)
	}
}

// sqlLiteral is v as a SQL literal.
func sqlLiteral(v any) string { return string(appendLiteral(nil, v)) }

// appendLiteral appends v as a SQL literal that reads back as the same
// value and type: NULL, an integer, a REAL with a '.' or an exponent
// (shortest digits that round-trip; ±1e999 for infinities), 'text' with
// quotes doubled (CAST(X'..' AS TEXT) when it holds a NUL), X'hex' for a
// BLOB.
func appendLiteral(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "NULL"...)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case float64:
		switch {
		case math.IsInf(x, 1):
			return append(b, "1e999"...)
		case math.IsInf(x, -1):
			return append(b, "-1e999"...)
		case math.IsNaN(x):
			return append(b, "NULL"...)
		}
		n := len(b)
		b = strconv.AppendFloat(b, x, 'g', -1, 64)
		if !strings.ContainsAny(string(b[n:]), ".e") {
			b = append(b, ".0"...)
		}
		return b
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			b = append(b, "CAST(X'"...)
			b = hex.AppendEncode(b, []byte(x))
			return append(b, "' AS TEXT)"...)
		}
		b = append(b, '\'')
		for {
			i := strings.IndexByte(x, '\'')
			if i < 0 {
				break
			}
			b = append(b, x[:i+1]...)
			b = append(b, '\'')
			x = x[i+1:]
		}
		b = append(b, x...)
		return append(b, '\'')
	case []byte:
		b = append(b, "X'"...)
		b = hex.AppendEncode(b, x)
		return append(b, '\'')
	default:
		return appendLiteral(b, fmt.Sprint(x))
	}
}

// quoteIdent always quotes an identifier with double quotes.
func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

var plainIdentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// quoteName quotes an identifier only when it needs it (like sqlite3's
// dump): when it is not a plain identifier or is a keyword.
func quoteName(name string) string {
	if plainIdentRE.MatchString(name) && !sqlKeywords[strings.ToUpper(name)] {
		return name
	}
	return quoteIdent(name)
}

// likeMatch is SQLite's LIKE for ASCII: case-insensitive, % any run, _
// one character.
func likeMatch(pattern, s string) bool {
	p, t := []rune(strings.ToLower(pattern)), []rune(strings.ToLower(s))
	var match func(i, j int) bool
	match = func(i, j int) bool {
		for i < len(p) {
			switch p[i] {
			case '%':
				for i < len(p) && p[i] == '%' {
					i++
				}
				if i == len(p) {
					return true
				}
				for k := j; k <= len(t); k++ {
					if match(i, k) {
						return true
					}
				}
				return false
			case '_':
				if j >= len(t) {
					return false
				}
			default:
				if j >= len(t) || p[i] != t[j] {
					return false
				}
			}
			i++
			j++
		}
		return j == len(t)
	}
	return match(0, 0)
}

// sqlKeywords are SQLite's keywords (https://sqlite.org/lang_keywords.html).
var sqlKeywords = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range strings.Fields(`ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC
	ATTACH AUTOINCREMENT BEFORE BEGIN BETWEEN BY CASCADE CASE CAST CHECK COLLATE COLUMN
	COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME
	CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE DEFERRED DELETE DESC DETACH DISTINCT
	DO DROP EACH ELSE END ESCAPE EXCEPT EXCLUDE EXCLUSIVE EXISTS EXPLAIN FAIL FILTER
	FIRST FOLLOWING FOR FOREIGN FROM FULL GENERATED GLOB GROUP GROUPS HAVING IF IGNORE
	IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT INSTEAD INTERSECT INTO IS ISNULL
	JOIN KEY LAST LEFT LIKE LIMIT MATCH MATERIALIZED NATURAL NO NOT NOTHING NOTNULL
	NULL NULLS OF OFFSET ON OR ORDER OTHERS OUTER OVER PARTITION PLAN PRAGMA PRECEDING
	PRIMARY QUERY RAISE RANGE RECURSIVE REFERENCES REGEXP REINDEX RELEASE RENAME
	REPLACE RESTRICT RETURNING RIGHT ROLLBACK ROW ROWS SAVEPOINT SELECT SET TABLE TEMP
	TEMPORARY THEN TIES TO TRANSACTION TRIGGER UNBOUNDED UNION UNIQUE UPDATE USING
	VACUUM VALUES VIEW VIRTUAL WHEN WHERE WINDOW WITH WITHOUT`) {
		m[k] = true
	}
	return m
}()
