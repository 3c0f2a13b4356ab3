package main

import (
	"fmt"
	"github.com/nqlite/nqlite/apply"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"zombiezen.com/go/sqlite"

	"github.com/nqlite/nqlite/service/api"
)

// plainDB runs script in a new plain SQLite database (no nqlite) the way
// the sqlite3 shell does: statement after statement, as SQLite's own
// parser finds them.
func plainDB(t *testing.T, script string) *sqlite.Conn {
	t.Helper()
	apply.SQLiteRandomness().Lock() // SQLite beside nodes in this process (apply.SQLiteRandomness)
	defer apply.SQLiteRandomness().Unlock()
	conn, err := sqlite.OpenConn(filepath.Join(t.TempDir(), "plain.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// SQLite parses each statement from the rest of the script; pieces of
	// whole statements (ends found by api.Scanner) keep that linear.
	var sc api.Scanner
	var piece strings.Builder
	run := func(rest string) {
		for strings.TrimSpace(rest) != "" {
			stmt, trailing, err := conn.PrepareTransient(rest)
			if err != nil {
				t.Fatalf("plain SQLite: %v\nat: %.200s", err, rest)
			}
			rest = rest[len(rest)-trailing:]
			if stmt == nil {
				continue // only a comment
			}
			for {
				row, err := stmt.Step()
				if err != nil {
					stmt.Finalize()
					t.Fatalf("plain SQLite: %v", err)
				}
				if !row {
					break
				}
			}
			stmt.Finalize()
		}
	}
	for _, line := range strings.SplitAfter(script, "\n") {
		piece.WriteString(line)
		sc.Feed(line)
		if sc.Complete() && piece.Len() > 64<<10 {
			run(piece.String())
			piece.Reset()
			sc.Reset()
		}
	}
	run(piece.String())
	return conn
}

// plainQuery returns the rows of query as strings with each value's
// storage class, e.g. "integer:1|text:\"x\"".
func plainQuery(t *testing.T, conn *sqlite.Conn, query string) []string {
	t.Helper()
	stmt, _, err := conn.PrepareTransient(query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer stmt.Finalize()
	var rows []string
	for {
		ok, err := stmt.Step()
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		if !ok {
			return rows
		}
		vals := make([]string, stmt.ColumnCount())
		for i := range vals {
			switch stmt.ColumnType(i) {
			case sqlite.TypeNull:
				vals[i] = "null"
			case sqlite.TypeInteger:
				vals[i] = fmt.Sprintf("integer:%d", stmt.ColumnInt64(i))
			case sqlite.TypeFloat:
				f := stmt.ColumnFloat(i)
				vals[i] = fmt.Sprintf("real:%v:%x", f, math.Float64bits(f))
			case sqlite.TypeText:
				vals[i] = fmt.Sprintf("text:%q", stmt.ColumnText(i))
			case sqlite.TypeBlob:
				b := make([]byte, stmt.ColumnLen(i))
				stmt.ColumnBytes(i, b)
				vals[i] = fmt.Sprintf("blob:%x", b)
			}
		}
		rows = append(rows, strings.Join(vals, "|"))
	}
}

// compareDBs fails unless got has the schema (sqlite_schema's type, name,
// table and SQL) and, table by table, the rows of want; sqlite_sequence
// included.
func compareDBs(t *testing.T, want, got *sqlite.Conn) {
	t.Helper()
	const schema = "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name"
	ws, gs := plainQuery(t, want, schema), plainQuery(t, got, schema)
	if strings.Join(ws, "\n") != strings.Join(gs, "\n") {
		t.Errorf("schema differs:\n%s\nwant:\n%s", strings.Join(gs, "\n"), strings.Join(ws, "\n"))
	}
	tables := plainQuery(t, want, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
	if len(tables) == 0 {
		t.Fatal("no tables to compare")
	}
	total := 0
	for _, tv := range tables {
		name := strings.TrimSuffix(strings.TrimPrefix(tv, `text:"`), `"`)
		q := "SELECT * FROM " + quoteIdent(name)
		wr, gr := plainQuery(t, want, q), plainQuery(t, got, q)
		sort.Strings(wr)
		sort.Strings(gr)
		total += len(wr)
		if strings.Join(wr, "\n") != strings.Join(gr, "\n") {
			t.Errorf("table %s: %d rows differ from %d rows:\n%.2000s\nwant:\n%.2000s", name, len(gr), len(wr), strings.Join(gr, "\n"), strings.Join(wr, "\n"))
		}
	}
	t.Logf("compared %d tables, %d rows", len(tables), total)
}

// chinookSQL returns the Chinook script, or skips the test.
func chinookSQL(t *testing.T) string {
	t.Helper()
	path := filepath.Join(repoRoot(t), "..", "shared", "testdata", "chinook", "Chinook_Sqlite.sql")
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		t.Skipf("Chinook script not found at %s: the shared test data is not checked out next to the repository", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestDumpChinook(t *testing.T) {
	chinook := chinookSQL(t)
	url := startNode(t)
	mustRun(t, strings.NewReader(chinook), "--server", url)

	o := mustRun(t, nil, "dump", "--server", url)
	dump := o.stdout
	if !strings.HasPrefix(dump, "BEGIN TRANSACTION;\nCREATE TABLE [Album]") || !strings.HasSuffix(dump, "COMMIT;\n") {
		t.Errorf("dump is not wrapped like sqlite3's:\n%.300s\n...\n%s", dump, dump[max(0, len(dump)-300):])
	}
	if strings.Contains(dump, "_nqlite_") {
		t.Error("the dump holds nqlite's own tables")
	}
	compareDBs(t, plainDB(t, chinook), plainDB(t, dump))

	// .dump in the shell prints the same.
	o = script(t, url, ".dump\n")
	if o.stdout != dump {
		t.Errorf(".dump differs from nqctl dump")
	}
	// One table and its indexes.
	o = mustRun(t, nil, "dump", "--server", url, "artist")
	want := "BEGIN TRANSACTION;\nCREATE TABLE [Artist]\n(\n    [ArtistId] INTEGER  NOT NULL,\n    [Name] NVARCHAR(120),\n    CONSTRAINT [PK_Artist] PRIMARY KEY  ([ArtistId])\n);\nINSERT INTO Artist VALUES(1,'AC/DC');\n"
	if !strings.HasPrefix(o.stdout, want) || strings.Count(o.stdout, "INSERT INTO Artist") != 275 || strings.Contains(o.stdout, "Album") {
		t.Errorf("dump artist:\n%.500s", o.stdout)
	}
}

// oddSQL has values and schema objects that are easy to dump wrong.
const oddSQL = `CREATE TABLE "odd table"(id INTEGER PRIMARY KEY AUTOINCREMENT, "select" TEXT, r REAL, b BLOB, n NUMERIC, anyv);
INSERT INTO "odd table"("select", r, b, n, anyv) VALUES
 ('it''s', 0.1, x'00ff10', 1, NULL),
 ('line1
line2', 1e300, x'', '12', 9223372036854775807),
 ('', -0.0, NULL, 1.5, -9223372036854775808),
 (NULL, 1e999, zeroblob(3), 'abc', 'text'),
 ('tab	and "quotes"', -1e999, x'41', 2.5e-10, 3.0),
 ('ünïcødé ☃ 𝄞', 5e-324, NULL, NULL, x'dead'),
 ('x', 0.30000000000000004, NULL, 123456789012345678, 1.7976931348623157e308),
 ('a' || char(0) || 'b', 2.0, NULL, NULL, NULL);
DELETE FROM "odd table" WHERE id = 7;
CREATE TABLE wr(a TEXT, b INTEGER, c, PRIMARY KEY(a, b)) WITHOUT ROWID;
INSERT INTO wr VALUES ('x', 2, 'two'), ('x', 1, 'one'), ('a', 9, NULL);
CREATE TABLE gen(a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL, c TEXT GENERATED ALWAYS AS ('c' || a) STORED);
INSERT INTO gen(a) VALUES (1), (2);
CREATE TABLE names(rowid TEXT, oid TEXT, _rowid_ TEXT);
INSERT INTO names VALUES ('a', 'b', 'c'), ('d', 'e', 'f');
CREATE TABLE "values"("order" INTEGER);
INSERT INTO "values" VALUES (1);
CREATE INDEX odd_r ON "odd table"(r);
CREATE VIEW v AS SELECT id, r FROM "odd table";
CREATE TRIGGER trg AFTER INSERT ON wr BEGIN UPDATE wr SET c = upper(c) WHERE a = new.a AND b = new.b; END;
`

func TestDumpValues(t *testing.T) {
	url := startNode(t)
	mustRun(t, strings.NewReader(oddSQL), "--server", url)
	// Many rows in small pages: more than one page per table.
	var b strings.Builder
	b.WriteString("CREATE TABLE many(id INTEGER PRIMARY KEY, s TEXT);\n")
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&b, "INSERT INTO many(s) VALUES ('%s');\n", strings.Repeat("m", i%300))
	}
	many := b.String()
	mustRun(t, strings.NewReader(many), "--server", url)

	o := mustRun(t, nil, "dump", "--server", url)
	for _, w := range []string{
		`INSERT INTO "odd table" VALUES(1,'it''s',0.1,X'00ff10',1,NULL);`,
		"VALUES(2,'line1\nline2',1e+300,X'',12,9223372036854775807);",
		"-1e999",
		"INSERT INTO gen(a) VALUES(1);",
		"INSERT INTO wr VALUES('a',9,NULL);",
		`INSERT INTO "values" VALUES(1);`,
		"DELETE FROM sqlite_sequence;\nINSERT INTO sqlite_sequence VALUES('odd table',8);",
		"CAST(X'610062' AS TEXT)",
	} {
		if !strings.Contains(o.stdout, w) {
			t.Errorf("dump lacks %q", w)
		}
	}
	compareDBs(t, plainDB(t, oddSQL+many), plainDB(t, o.stdout))

	// The dump loads back into nqlite (without BEGIN/COMMIT, in chunks),
	// and dumps the same again.
	o2 := mustRun(t, nil, "dump", "--no-transaction", "--server", url)
	url2 := startNode(t)
	mustRun(t, strings.NewReader(o2.stdout), "--server", url2)
	if again := mustRun(t, nil, "dump", "--server", url2); again.stdout != o.stdout {
		t.Errorf("dump of the reloaded database differs")
	}
	// --data-only: rows only.
	o = mustRun(t, nil, "dump", "--data-only", "--no-transaction", "--server", url, "wr")
	if o.stdout != "INSERT INTO wr VALUES('a',9,NULL);\nINSERT INTO wr VALUES('x',1,'one');\nINSERT INTO wr VALUES('x',2,'two');\n" {
		t.Errorf("data-only dump of wr:\n%s", o.stdout)
	}
}
