package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeReader is a lineReader fed from a list: "^C" is Ctrl-C. It records
// the prompts and the history.
type fakeReader struct {
	lines   []string
	prompts []string
	history []string
}

func (f *fakeReader) readLine(prompt string) (string, error) {
	f.prompts = append(f.prompts, prompt)
	if len(f.lines) == 0 {
		return "", io.EOF
	}
	l := f.lines[0]
	f.lines = f.lines[1:]
	if l == "^C" {
		return "", errInterrupted
	}
	return l, nil
}

func (f *fakeReader) addHistory(e string) { f.history = append(f.history, e) }
func (f *fakeReader) close() error        { return nil }

// interactive runs the interactive shell on lines, as typed.
func interactive(t *testing.T, url string, lines ...string) (outcome, *fakeReader) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	e.opts.conn = defaultConnOptions()
	e.opts.conn.server = url
	e.opts.headers = true
	fr := &fakeReader{lines: lines}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := e.interactive(ctx, modeTable, func(*shell) lineReader { return fr })
	if err != nil && errorMessage(err) != "" {
		errOut.WriteString("nqctl: " + errorMessage(err) + "\n")
	}
	return outcome{code: exitCode(err), stdout: out.String(), stderr: errOut.String()}, fr
}

func TestShellInteractive(t *testing.T) {
	url := startNode(t)
	o, fr := interactive(t, url,
		"CREATE TABLE t(id INTEGER PRIMARY KEY,",
		"   name TEXT);",
		"INSERT INTO t(name) VALUES ('a;b'), ('multi",
		"line');",
		"SELECT id,",
		"  name FROM t",
		"^C", // drops the unfinished SELECT
		"-- only a comment",
		"SELECT id, name FROM t ORDER BY id; SELECT count(*) AS n FROM t;",
		".mode csv",
		".headers off",
		"SELECT name FROM t WHERE id = 1;",
		".db other",
		"",
		".db main",
		"SELECT nope",
		"  FROM t;",
	)
	if o.code != exitFailed {
		t.Errorf("exit %d, want 1 after a failed statement; stderr:\n%s", o.code, o.stderr)
	}
	want := `0 rows affected
2 rows affected, last insert id 2
+----+-------------+
| id | name        |
+----+-------------+
|  1 | a;b         |
|  2 | multi\nline |
+----+-------------+

+---+
| n |
+---+
| 2 |
+---+
a;b
`
	if o.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", o.stdout, want)
	}
	// Prompts show the database, a continuation prompt while a statement
	// is unfinished, and the switched database.
	wantPrompts := []string{
		"nqlite:main> ", "        ...> ",
		"nqlite:main> ", "        ...> ",
		"nqlite:main> ", "        ...> ", "        ...> ", // ^C
		"nqlite:main> ", "nqlite:main> ", "nqlite:main> ", "nqlite:main> ", "nqlite:main> ", "nqlite:main> ",
		"nqlite:other> ", "nqlite:other> ", "nqlite:main> ", "        ...> ", "nqlite:main> ",
	}
	if strings.Join(fr.prompts, "|") != strings.Join(wantPrompts, "|") {
		t.Errorf("prompts:\n%q\nwant\n%q", fr.prompts, wantPrompts)
	}
	// A multi-line statement is one history entry.
	wantHist := []string{
		"CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT);",
		"INSERT INTO t(name) VALUES ('a;b'), ('multi line');",
		"SELECT id, name FROM t ORDER BY id; SELECT count(*) AS n FROM t;",
		".mode csv", ".headers off",
		"SELECT name FROM t WHERE id = 1;",
		".db other", ".db main",
		"SELECT nope FROM t;",
	}
	if strings.Join(fr.history, "\n") != strings.Join(wantHist, "\n") {
		t.Errorf("history:\n%s\nwant\n%s", strings.Join(fr.history, "\n"), strings.Join(wantHist, "\n"))
	}
	// The error shows SQLite's message, its position and a caret.
	wantErr := "Error: no such column: nope (line 1, column 8)\n  SELECT nope\n         ^--- error here\n"
	if !strings.Contains(o.stderr, wantErr) {
		t.Errorf("stderr lacks\n%s\ngot:\n%s", wantErr, o.stderr)
	}
	if !strings.Contains(o.stderr, `warning: no nqlite node serves this database "other"`) {
		t.Errorf("no warning about database other:\n%s", o.stderr)
	}

	// .exit sets the exit code; what follows is not read.
	o, fr = interactive(t, url, "SELECT 1;", ".exit 4", "SELECT 2;")
	if o.code != 4 || len(fr.lines) != 1 {
		t.Errorf(".exit 4: exit %d, %d lines left", o.code, len(fr.lines))
	}
	// Ctrl-D with nothing failed exits 0.
	if o, _ := interactive(t, url, ".mode list", "SELECT 1 AS one;"); o.code != 0 || o.stdout != "one\n1\n" {
		t.Errorf("clean exit: %d %q %q", o.code, o.stdout, o.stderr)
	}
}

// script runs a script through "nqctl shell" with stdin not a terminal.
func script(t *testing.T, url, text string, args ...string) outcome {
	t.Helper()
	return nqctl(t, strings.NewReader(text), append([]string{"shell", "--server", url}, args...)...)
}

func TestShellScript(t *testing.T) {
	url := startNode(t)
	dir := t.TempDir()
	inc := filepath.Join(dir, "inc.sql")
	if err := os.WriteFile(inc, []byte("INSERT INTO t2 VALUES (3, 'three');\nSELECT * FROM nope;\n.mode list\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := script(t, url, `.changes off
CREATE TABLE t1(a INTEGER PRIMARY KEY, b TEXT);
CREATE TABLE t2(a INTEGER PRIMARY KEY, b TEXT);
CREATE INDEX t1b ON t1(b);
CREATE VIEW v1 AS SELECT * FROM t1;
INSERT INTO t1 VALUES (1, 'one'), (2, NULL);
.tables
.tables t%
.indexes
.schema t1
.read `+inc+`
SELECT a, b FROM t2;
.nullvalue (null)
.headers off
SELECT * FROM t1 ORDER BY a;
.level strong
.mode csv
SELECT * FROM t1 WHERE a = 2;
.backup `+filepath.Join(dir, "snap.db")+`
.bogus
.level
`)
	if o.code != exitFailed {
		t.Errorf("exit %d, want 1", o.code)
	}
	want := `t1  t2  v1
t1  t2
t1b
CREATE TABLE t1(a INTEGER PRIMARY KEY, b TEXT);
CREATE INDEX t1b ON t1(b);
a|b
3|three
1|one
2|(null)
2,(null)
current level: strong
`
	if o.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", o.stdout, want)
	}
	for _, w := range []string{
		inc + ":2: statement 2 (SELECT * FROM nope): no such table: nope",
		"backup of main as of sequence",
		"unknown command .bogus",
	} {
		if !strings.Contains(o.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, o.stderr)
		}
	}

	// .bail on stops at the first failed statement.
	o = script(t, url, ".bail on\nSELECT * FROM nope;\nSELECT 'not reached';\n")
	if o.code != exitFailed || strings.Contains(o.stdout, "not reached") {
		t.Errorf(".bail on: exit %d, stdout %q", o.code, o.stdout)
	}
	// .exit in a script.
	o = script(t, url, "SELECT 1;\n.exit 7\nSELECT 2;\n")
	if o.code != 7 {
		t.Errorf(".exit 7: exit %d", o.code)
	}
	// .timer prints the node's time and the round trip.
	o = script(t, url, ".timer on\nSELECT 1;\n")
	if !strings.Contains(o.stdout, "Run Time: node ") || !strings.Contains(o.stdout, " ms, round trip ") {
		t.Errorf(".timer: %q", o.stdout)
	}
	// Dot-commands work in input piped to plain nqctl too.
	o = nqctl(t, strings.NewReader(".mode json\nSELECT 1 AS one;\n"), "--server", url)
	if o.code != 0 || o.stdout != "[{\"one\":1}]\n" {
		t.Errorf("piped to nqctl: exit %d %q %q", o.code, o.stdout, o.stderr)
	}
	// .help lists the commands.
	o = script(t, url, ".help\n.help dump\n")
	for _, w := range []string{".import [--skip N] FILE TABLE", ".nodes", ".dump [--data-only]"} {
		if !strings.Contains(o.stdout, w) {
			t.Errorf(".help lacks %q", w)
		}
	}
}

// TestErrorCodes: a request-level error names its code, in the shell
// ("Error (forbidden): ...") and on the command line ("nqctl: error
// (read_timeout): ..."), and exits 1.
func TestErrorCodes(t *testing.T) {
	url := startNode(t)
	o, _ := interactive(t, url, "ATTACH 'x.db' AS x;")
	if want := "Error (forbidden): statement 1: ATTACH and DETACH are not allowed"; o.code != exitFailed || !strings.Contains(o.stderr, want) {
		t.Errorf("shell: exit %d, stderr %q; want exit 1 and %q", o.code, o.stderr, want)
	}
	o = nqctl(t, nil, "--server", url, "--timeout", "200ms", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c")
	if want := "nqctl: error (read_timeout): statement 1 interrupted"; o.code != exitFailed || !strings.HasPrefix(o.stderr, want) {
		t.Errorf("command line: exit %d, stderr %q; want exit 1 and %q", o.code, o.stderr, want)
	}
}
