package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/nqlite/nqlite/service/api"
)

// render prints one result in mode with the printer's defaults, adjusted
// by set.
func render(mode string, res *api.Result, set func(*printer)) string {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	p := newPrinter(w, mode)
	if set != nil {
		set(p)
	}
	p.result(res)
	w.Flush()
	return b.String()
}

var sample = &api.Result{
	Columns: []string{"id", "name", "score", "data"},
	Values: [][]any{
		{int64(1), "alice", 1.5, []byte{0, 0xff}},
		{int64(2), "bob, \"jr\"", nil, nil},
		{int64(3), "", 10.0, nil},
	},
}

func TestOutputModes(t *testing.T) {
	for _, tc := range []struct {
		mode string
		set  func(*printer)
		want string
	}{
		{modeTable, nil, `+----+-----------+-------+---------+
| id | name      | score | data    |
+----+-----------+-------+---------+
|  1 | alice     |   1.5 | x'00ff' |
|  2 | bob, "jr" |  NULL | NULL    |
|  3 |           |  10.0 | NULL    |
+----+-----------+-------+---------+
`},
		{modeBox, nil, `┌────┬───────────┬───────┬─────────┐
│ id │ name      │ score │ data    │
├────┼───────────┼───────┼─────────┤
│  1 │ alice     │   1.5 │ x'00ff' │
│  2 │ bob, "jr" │  NULL │ NULL    │
│  3 │           │  10.0 │ NULL    │
└────┴───────────┴───────┴─────────┘
`},
		{modeBox, func(p *printer) { p.headers = false }, `┌───┬───────────┬──────┬─────────┐
│ 1 │ alice     │  1.5 │ x'00ff' │
│ 2 │ bob, "jr" │ NULL │ NULL    │
│ 3 │           │ 10.0 │ NULL    │
└───┴───────────┴──────┴─────────┘
`},
		{modeColumn, nil, `id  name       score  data
--  ---------  -----  -------
 1  alice        1.5  x'00ff'
 2  bob, "jr"   NULL  NULL
 3              10.0  NULL
(3 rows)
`},
		{modeCSV, nil, `id,name,score,data
1,alice,1.5,x'00ff'
2,"bob, ""jr""",,
3,"",10.0,
`},
		{modeCSV, func(p *printer) { p.headers = false; null := "\\N"; p.nullValue = &null }, `1,alice,1.5,x'00ff'
2,"bob, ""jr""",\N,\N
3,"",10.0,\N
`},
		{modeJSON, nil, `[{"id":1,"name":"alice","score":1.5,"data":{"base64":"AP8="}},
{"id":2,"name":"bob, \"jr\"","score":null,"data":null},
{"id":3,"name":"","score":10.0,"data":null}]
`},
		{modeLine, nil, `   id = 1
 name = alice
score = 1.5
 data = x'00ff'

   id = 2
 name = bob, "jr"
score = NULL
 data = NULL

   id = 3
 name = 
score = 10.0
 data = NULL
`},
		{modeList, nil, `id|name|score|data
1|alice|1.5|x'00ff'
2|bob, "jr"|NULL|NULL
3||10.0|NULL
`},
		{modeList, func(p *printer) { p.separator = "\t"; p.headers = false }, "1\talice\t1.5\tx'00ff'\n2\tbob, \"jr\"\tNULL\tNULL\n3\t\t10.0\tNULL\n"},
	} {
		got := render(tc.mode, sample, tc.set)
		if got != tc.want {
			t.Errorf("mode %s: got\n%s\nwant\n%s", tc.mode, got, tc.want)
		}
	}

	// Writes print "N rows affected" except in machine modes, unless asked.
	w := &api.Result{Write: true, RowsAffected: 2, LastInsertID: 7}
	if got := render(modeTable, w, nil); got != "2 rows affected, last insert id 7\n" {
		t.Errorf("write in table mode: %q", got)
	}
	if got := render(modeCSV, w, nil); got != "" {
		t.Errorf("write in csv mode: %q", got)
	}
	on := true
	if got := render(modeJSON, w, func(p *printer) { p.changes = &on }); got != "2 rows affected, last insert id 7\n" {
		t.Errorf("write in json mode with changes on: %q", got)
	}
	// An empty result still shows its columns in table modes.
	empty := &api.Result{Columns: []string{"a"}}
	if got := render(modeTable, empty, nil); got != "+---+\n| a |\n+---+\n" {
		t.Errorf("empty table: %q", got)
	}
	if got := render(modeJSON, empty, nil); got != "[]\n" {
		t.Errorf("empty json: %q", got)
	}
	// NULL is dimmed on a color terminal, the padding unchanged.
	got := render(modeTable, &api.Result{Columns: []string{"x"}, Values: [][]any{{nil}}}, func(p *printer) { p.color = true })
	if !strings.Contains(got, "| \x1b[2mNULL\x1b[0m |") {
		t.Errorf("dim NULL: %q", got)
	}
}

func TestTruncateToWidth(t *testing.T) {
	long := strings.Repeat("abcdefghij", 10)
	res := &api.Result{Columns: []string{"id", "text", "other"}, Values: [][]any{{int64(1), long, "short"}, {int64(22), "x", strings.Repeat("y", 50)}}}
	for _, mode := range []string{modeTable, modeBox, modeColumn} {
		for _, width := range []int{80, 40, 25} {
			out := render(mode, res, func(p *printer) { p.maxWidth = width })
			for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
				if n := len([]rune(line)); n > width {
					t.Errorf("mode %s width %d: line of %d: %q", mode, width, n, line)
				}
			}
			if !strings.Contains(out, "…") {
				t.Errorf("mode %s width %d: nothing truncated:\n%s", mode, width, out)
			}
			// Narrow columns are kept whole.
			if !strings.Contains(out, "22") || !strings.Contains(out, "short") && width >= 40 {
				t.Errorf("mode %s width %d: a narrow column was cut:\n%s", mode, width, out)
			}
		}
	}
	// Column names stay whole when the table fits that way.
	wide := &api.Result{Columns: []string{"identifier", "description"}, Values: [][]any{{int64(1), long}}}
	out := render(modeTable, wide, func(p *printer) { p.maxWidth = 40 })
	if !strings.Contains(out, "| identifier | description") || !strings.Contains(out, "…") {
		t.Errorf("header cut:\n%s", out)
	}
	// Without a width nothing is cut.
	if out := render(modeTable, res, nil); !strings.Contains(out, long) {
		t.Errorf("no width: cut:\n%s", out)
	}
}

func TestStmtScanner(t *testing.T) {
	for _, tc := range []struct {
		sql      string
		complete bool
	}{
		{"SELECT 1;", true},
		{"SELECT 1", false},
		{"SELECT 1; -- done", true},
		{"SELECT 1; /* open", false},
		{"SELECT 1; /* closed */", true},
		{"SELECT ';'", false},
		{"SELECT ';';", true},
		{"SELECT 'it''s;'", false},
		{"SELECT 'it''s;';", true},
		{`SELECT "a;b" FROM t;`, true},
		{"SELECT [a;b]", false},
		{"SELECT [a;b];", true},
		{"SELECT `a;b`;", true},
		{"SELECT 1 -- ;", false},
		{"SELECT 1; SELECT 2", false},
		{"SELECT 1; SELECT 2;", true},
		{"/* x */ -- y", false},
		{"CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO u VALUES(1);", false},
		{"CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO u VALUES(1); END", false},
		{"CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO u VALUES(1); END;", true},
		{"create temp trigger tr after insert on t begin select 1; select 2; end;", true},
		{"SELECT 1/*;*/", false},
		{"SELECT 1 /*/ ; */", false},
		{"SELECT 1 /*/ ; */;", true},
		{"SELECT 1 -- ;\n;", true},
		{"SELECT 'a\n;\nb'\n", false},
		{"SELECT 'a\n;\nb'\n;\n", true},
		{"SELECT 1 /*\n;*/\n", false},
		{"SELECT 1 /*\n*\n/;*/;", true},
		{"CREATE TRIGGER tr AFTER INSERT ON t\nBEGIN\n  INSERT INTO u VALUES(1);\n  DELETE FROM v;\nEND;\n", true},
		{"CREATE TRIGGER tr AFTER INSERT ON t\nBEGIN\n  INSERT INTO u VALUES(1);\n", false},
	} {
		if got := api.Complete(tc.sql); got != tc.complete {
			t.Errorf("api.Complete(%q) = %v, want %v", tc.sql, got, tc.complete)
		}
		// Fed a line at a time, as the shell does, the answer is the same.
		var s api.Scanner
		for _, part := range strings.SplitAfter(tc.sql, "\n") {
			s.Feed(part)
		}
		if s.Complete() != tc.complete {
			t.Errorf("line by line %q: complete = %v, want %v", tc.sql, s.Complete(), tc.complete)
		}
	}
}

func TestParseScript(t *testing.T) {
	script := `-- a comment
.mode csv
CREATE TABLE t(a);
INSERT INTO t VALUES('.not a command
.still text');  SELECT 1;
  .tables
SELECT
  2;
SELECT 3`
	items, n := parseScript(script)
	var got []string
	for _, it := range items {
		if it.dot != "" {
			got = append(got, fmt.Sprintf("%d dot %s", it.line, it.dot))
			continue
		}
		for _, st := range it.stmts {
			got = append(got, fmt.Sprintf("%d sql %s", st.line, strings.ReplaceAll(st.sql, "\n", "|")))
		}
	}
	want := []string{
		"2 dot .mode csv",
		"3 sql CREATE TABLE t(a)",
		"4 sql INSERT INTO t VALUES('.not a command|.still text')",
		"5 sql SELECT 1",
		"6 dot .tables",
		"7 sql SELECT|  2",
		"9 sql SELECT 3",
	}
	if !reflect.DeepEqual(got, want) || n != 5 {
		t.Errorf("parseScript: %d statements\n%s\nwant\n%s", n, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDotArgs(t *testing.T) {
	got, err := dotArgs(`.import --skip 1 'my file.csv' "tbl x"  t2`)
	want := []string{".import", "--skip", "1", "my file.csv", "tbl x", "t2"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("dotArgs: %q, %v", got, err)
	}
	if _, err := dotArgs(".read 'x"); err == nil {
		t.Error("unterminated quote accepted")
	}
	if c, err := findDot(".hea"); err != nil || c.name != ".headers" {
		t.Errorf(".hea: %v %v", c, err)
	}
	if _, err := findDot(".he"); err == nil {
		t.Error(".he is ambiguous (.headers, .help)")
	}
	if _, err := findDot(".t"); err == nil {
		t.Error(".t is ambiguous (.tables, .timeout, .timer)")
	}
}

func TestCaret(t *testing.T) {
	// The tab counts to column 9, as the server counts.
	got := caretLines("SELECT *\n\tFROM nope", 2, 14)
	if want := "          FROM nope\n               ^--- error here\n"; got != want {
		t.Errorf("caret:\n%q\nwant\n%q", got, want)
	}
	long := "SELECT " + strings.Repeat("x, ", 40) + "nope FROM t"
	got = caretLines(long, 1, 128)
	lines := strings.Split(got, "\n")
	if i := strings.Index(lines[1], "^"); i < 0 || lines[0][i:i+4] != "nope" {
		t.Errorf("caret in a long line:\n%s", got)
	}
	if l, c, ok := errorPosition("no such table: nope (line 2, column 14)"); !ok || l != 2 || c != 14 {
		t.Errorf("errorPosition: %d %d %v", l, c, ok)
	}
	if _, _, ok := errorPosition("no such table: nope"); ok {
		t.Error("position without one")
	}
}

func TestLiterals(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{nil, "NULL"},
		{int64(-9223372036854775808), "-9223372036854775808"},
		{1.0, "1.0"},
		{0.1, "0.1"},
		{1e300, "1e+300"},
		{math.Inf(1), "1e999"},
		{math.Inf(-1), "-1e999"},
		{"it's", "'it''s'"},
		{"a\nb", "'a\nb'"},
		{"a\x00b", "CAST(X'610062' AS TEXT)"},
		{[]byte{0, 0xab}, "X'00ab'"},
	} {
		if got := sqlLiteral(tc.v); got != tc.want {
			t.Errorf("sqlLiteral(%#v) = %s, want %s", tc.v, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name, want string
	}{{"Album", "Album"}, {"order", `"order"`}, {"my table", `"my table"`}, {`a"b`, `"a""b"`}, {"_x1", "_x1"}, {"1x", `"1x"`}} {
		if got := quoteName(tc.name); got != tc.want {
			t.Errorf("quoteName(%q) = %s, want %s", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		p, s string
		ok   bool
	}{{"al%", "Album", true}, {"%track", "PlaylistTrack", true}, {"a_b", "aXb", true}, {"a_b", "ab", false}, {"t", "tt", false}, {"%", "", true}} {
		if likeMatch(tc.p, tc.s) != tc.ok {
			t.Errorf("likeMatch(%q, %q) != %v", tc.p, tc.s, tc.ok)
		}
	}
}

func TestParamValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want any
	}{
		{"5", int64(5)}, {"1.5", 1.5}, {`"5"`, "5"}, {"null", nil}, {"abc", "abc"}, {"true", int64(1)},
		{`{"base64":"AP8="}`, []byte{0, 0xff}}, {"5 6", "5 6"}, {"{", "{"},
	} {
		if got := paramValue(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("paramValue(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
	}
}
