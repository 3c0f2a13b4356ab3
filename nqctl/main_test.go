package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/servicetest"
)

// outcome is what one nqctl run produced.
type outcome struct {
	code           int
	stdout, stderr string
}

// nqctl runs the command in-process with stdin and args.
func nqctl(t *testing.T, stdin io.Reader, args ...string) outcome {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, stdin, &out, &errOut)
	return outcome{code: code, stdout: out.String(), stderr: errOut.String()}
}

// startNode starts a nats-server with JetStream and one node serving
// "main"; it returns the server's client URL.
func startNode(t *testing.T) string {
	t.Helper()
	ns := servicetest.StartServer(t)
	servicetest.StartNode(t, ns.ClientURL(), service.Config{
		NodeID: "n1",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	return ns.ClientURL()
}

// mustRun runs nqctl and fails the test unless it exits 0.
func mustRun(t *testing.T, stdin io.Reader, args ...string) outcome {
	t.Helper()
	o := nqctl(t, stdin, args...)
	if o.code != exitOK {
		t.Fatalf("nqctl %q: exit %d\nstdout:\n%s\nstderr:\n%s", args, o.code, o.stdout, o.stderr)
	}
	return o
}

// queryJSON runs one SQL request with --format json and decodes the
// response.
func queryJSON(t *testing.T, url, sql string) *api.Response {
	t.Helper()
	o := mustRun(t, nil, "--server", url, "--format", "json", sql)
	resp, err := api.DecodeResponse([]byte(strings.TrimSpace(o.stdout)), 0)
	if err != nil {
		t.Fatalf("decode %q: %v", o.stdout, err)
	}
	return resp
}

// scalar runs a query returning one row and one column named v.
func scalar(t *testing.T, url, sql string) any {
	t.Helper()
	resp := queryJSON(t, url, sql)
	if len(resp.Results) != 1 || len(resp.Results[0].Rows) != 1 {
		t.Fatalf("%s: want one row, got %+v", sql, resp.Results)
	}
	v, ok := resp.Results[0].Rows[0]["v"]
	if !ok {
		t.Fatalf("%s: no column v in %v", sql, resp.Results[0].Rows[0])
	}
	return v
}

const setupSQL = `CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB);
INSERT INTO t(name, score, data) VALUES ('alice', 1.5, x'00ff');
INSERT INTO t(name, score, data) VALUES ('bob', NULL, NULL);
INSERT INTO t(name, score, data) VALUES ('carol' || char(10) || 'x', 10.0, NULL)`

func TestTableOutput(t *testing.T) {
	url := startNode(t)
	o := mustRun(t, strings.NewReader(setupSQL), "--server", url)
	wantWrites := "0 rows affected\n1 row affected, last insert id 1\n1 row affected, last insert id 2\n1 row affected, last insert id 3\n"
	if o.stdout != wantWrites {
		t.Errorf("writes: got\n%s\nwant\n%s", o.stdout, wantWrites)
	}

	o = mustRun(t, nil, "--server", url, "SELECT id, name, score, data FROM t ORDER BY id;", "SELECT count(*) AS n FROM t")
	want := `id  name      score  data
--  --------  -----  -------
 1  alice       1.5  x'00ff'
 2  bob        NULL  NULL
 3  carol\nx   10.0  NULL
(3 rows)

n
-
3
(1 row)
`
	if o.stdout != want {
		t.Errorf("table: got\n%s\nwant\n%s", o.stdout, want)
	}
	if o.stderr != "" {
		t.Errorf("stderr: %q", o.stderr)
	}

	// A write with RETURNING prints its rows and the write line.
	o = mustRun(t, nil, "--server", url, "UPDATE t SET score = 2.0 WHERE id = 2 RETURNING id, score")
	want = "id  score\n--  -----\n 2    2.0\n(1 row)\n1 row affected\n"
	if o.stdout != want {
		t.Errorf("returning: got\n%s\nwant\n%s", o.stdout, want)
	}
}

func TestJSONOutput(t *testing.T) {
	url := startNode(t)
	mustRun(t, strings.NewReader(setupSQL), "--server", url)
	o := mustRun(t, nil, "--server", url, "--format", "json", "SELECT id, name, score, data FROM t WHERE id <= 2 ORDER BY id")
	lines := strings.Split(strings.TrimSuffix(o.stdout, "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one JSON document, got %d lines:\n%s", len(lines), o.stdout)
	}
	if !strings.HasPrefix(lines[0], `{"results":[{"rows":[{"id":1,"name":"alice","score":1.5,"data":{"base64":"AP8="}},{"id":2,"name":"bob","score":null,"data":null}]}],"seq":`) {
		t.Errorf("unexpected JSON: %s", lines[0])
	}
	resp, err := api.DecodeResponse([]byte(lines[0]), 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Node != "n1" || resp.Seq == 0 {
		t.Errorf("node %q seq %d: want n1 and the applied sequence", resp.Node, resp.Seq)
	}
	row := resp.Results[0].Rows[0]
	if row["id"] != int64(1) || row["name"] != "alice" || row["score"] != 1.5 || !bytes.Equal(row["data"].([]byte), []byte{0, 0xff}) {
		t.Errorf("row 1 decodes to %#v", row)
	}

	// A write's result, and one document per request.
	o = mustRun(t, strings.NewReader("INSERT INTO t(name) VALUES ('dave')"), "--server", url, "--format", "json")
	if !strings.HasPrefix(o.stdout, `{"results":[{"last_insert_id":4,"rows_affected":1}],"seq":`) || strings.Count(o.stdout, "\n") != 1 {
		t.Errorf("write JSON: %s", o.stdout)
	}
}

func TestStatementError(t *testing.T) {
	url := startNode(t)
	o := nqctl(t, nil, "--server", url, "CREATE TABLE a(x); INSERT INTO nope VALUES (1); INSERT INTO a VALUES (2)")
	if o.code != exitFailed {
		t.Fatalf("exit %d, want %d; stderr: %s", o.code, exitFailed, o.stderr)
	}
	if !strings.Contains(o.stderr, "statement 2 (INSERT INTO nope VALUES (1)): no such table: nope") {
		t.Errorf("stderr lacks the statement number and SQLite's message: %q", o.stderr)
	}
	// The other statements ran and printed.
	if o.stdout != "0 rows affected\n1 row affected, last insert id 1\n" {
		t.Errorf("stdout: %q", o.stdout)
	}

	// A read error, in JSON mode too.
	o = nqctl(t, nil, "--server", url, "--format", "json", "SELECT * FROM missing")
	if o.code != exitFailed || !strings.Contains(o.stderr, "statement 1 (SELECT * FROM missing): no such table: missing") {
		t.Errorf("read error: exit %d, stderr %q", o.code, o.stderr)
	}
	if !strings.Contains(o.stdout, `"error":"no such table: missing"`) {
		t.Errorf("JSON output lacks the error: %s", o.stdout)
	}

	// A request-level failure (a policy violation) exits 1 too.
	o = nqctl(t, nil, "--server", url, "ATTACH DATABASE 'x.db' AS x")
	if o.code != exitFailed || !strings.Contains(o.stderr, "ATTACH and DETACH are not allowed") || !strings.HasPrefix(o.stderr, "nqctl: error (forbidden): ") {
		t.Errorf("request error: exit %d, stderr %q", o.code, o.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"unknown flag", "", []string{"--nope", "SELECT 1"}, "flag provided but not defined"},
		{"bad format", "", []string{"--format", "xml", "SELECT 1"}, `--format "xml"`},
		{"bad db", "", []string{"--db", "a.b", "SELECT 1"}, `--db "a.b"`},
		{"bad timeout", "", []string{"--timeout", "0s", "SELECT 1"}, "--timeout"},
		{"missing creds", "", []string{"--creds", filepath.Join(t.TempDir(), "none.creds"), "SELECT 1"}, "--creds"},
		{"empty stdin", "", nil, "no SQL statement given"},
		{"only comments", "-- nothing\n/* here */ ;", nil, "no SQL statement given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The server is never contacted: a usage error comes first.
			args := append([]string{"--server", "nats://127.0.0.1:1"}, tc.args...)
			o := nqctl(t, strings.NewReader(tc.stdin), args...)
			if o.code != exitUsage {
				t.Errorf("exit %d, want %d; stderr: %s", o.code, exitUsage, o.stderr)
			}
			if !strings.Contains(o.stderr, tc.want) {
				t.Errorf("stderr %q lacks %q", o.stderr, tc.want)
			}
		})
	}
	if o := nqctl(t, nil, "--help"); o.code != exitOK || !strings.Contains(o.stderr, "Usage: nqctl") {
		t.Errorf("--help: exit %d, stderr %q", o.code, o.stderr)
	}
}

func TestConnectionErrors(t *testing.T) {
	// A loopback port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := fmt.Sprintf("nats://%s", l.Addr())
	l.Close()
	o := nqctl(t, nil, "--server", closed, "SELECT 1")
	if o.code != exitConn || !strings.Contains(o.stderr, "connect to "+closed) {
		t.Errorf("closed port: exit %d, stderr %q", o.code, o.stderr)
	}

	// A NATS server, but no node serving the database.
	ns := servicetest.StartServer(t)
	o = nqctl(t, nil, "--server", ns.ClientURL(), "--db", "other", "SELECT 1")
	if o.code != exitConn || !strings.Contains(o.stderr, `no nqlite node serves this database "other"`) {
		t.Errorf("no responders: exit %d, stderr %q", o.code, o.stderr)
	}
}

func TestSplitChunks(t *testing.T) {
	stmts := []string{"A1", "A2", "BEGIN", "B1", "B2", "B3", "COMMIT", "C1", "SAVEPOINT s", "D1", "D2", "RELEASE SAVEPOINT s", "E1"}
	// Each statement encodes as 4-6 bytes plus a comma: a limit of 12
	// fits two short statements.
	var got []string
	for _, c := range splitChunks(stmts, 12) {
		got = append(got, fmt.Sprintf("%d:%s:%v", c.first, strings.Join(c.stmts, ","), c.tx))
	}
	want := []string{
		"0:A1,A2:false",
		"2:BEGIN,B1,B2,B3,COMMIT:true",
		"7:C1:false",
		"8:SAVEPOINT s,D1,D2,RELEASE SAVEPOINT s:true",
		"12:E1:false",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("chunks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	var tx txTracker
	for _, s := range []string{"begin immediate transaction", "savepoint a", "rollback transaction to savepoint a"} {
		tx.update(s)
	}
	if !tx.open() {
		t.Error("ROLLBACK TO closed the transaction")
	}
	tx.update("end transaction")
	if tx.open() {
		t.Error("END left the transaction open")
	}
}

// bigScript returns n inserts of about 140 bytes each, wrapped in
// BEGIN/COMMIT when tx.
func bigScript(n int, tx bool) string {
	var b strings.Builder
	b.WriteString("CREATE TABLE IF NOT EXISTS big(id INTEGER PRIMARY KEY, s TEXT);\n")
	if tx {
		b.WriteString("BEGIN;\n")
	}
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "INSERT INTO big(s) VALUES ('%s');\n", strings.Repeat("x", 110))
	}
	if tx {
		b.WriteString("COMMIT;\n")
	}
	return b.String()
}

func TestStdinChunks(t *testing.T) {
	url := startNode(t)
	// 2500 inserts are about 350 KB: more than one chunk.
	script := bigScript(2500, false) + "INSERT INTO nope VALUES (1);\n"
	o := nqctl(t, strings.NewReader(script), "--server", url, "--format", "json")
	if o.code != exitFailed {
		t.Fatalf("exit %d, want %d; stderr: %s", o.code, exitFailed, o.stderr)
	}
	if n := strings.Count(o.stdout, "\n"); n < 2 {
		t.Errorf("%d requests for %d bytes of SQL: want it sent in chunks", n, len(script))
	}
	// The failing statement is numbered within the whole input.
	if !strings.Contains(o.stderr, "statement 2502 (INSERT INTO nope VALUES (1)): no such table: nope") {
		t.Errorf("stderr: %q", o.stderr)
	}
	if n := scalar(t, url, "SELECT count(*) AS v FROM big"); n != int64(2500) {
		t.Errorf("big has %v rows, want 2500", n)
	}

	// A transaction larger than a chunk stays in one request, so it commits.
	o = mustRun(t, strings.NewReader(bigScript(2500, true)), "--server", url, "--format", "json")
	if n := strings.Count(o.stdout, "\n"); n != 1 {
		t.Errorf("transaction sent in %d requests, want 1", n)
	}
	if n := scalar(t, url, "SELECT count(*) AS v FROM big"); n != int64(5000) {
		t.Errorf("big has %v rows, want 5000", n)
	}
}

// repoRoot is the directory holding go.mod, found from the working
// directory upwards.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

func TestChinook(t *testing.T) {
	path := filepath.Join(repoRoot(t), "..", "shared", "testdata", "chinook", "Chinook_Sqlite.sql")
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		t.Skipf("Chinook script not found at %s: the shared test data is not checked out next to the repository", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	url := startNode(t)

	o := mustRun(t, f, "--server", url)
	if o.stderr != "" {
		t.Errorf("load wrote to stderr: %s", o.stderr)
	}

	for _, tc := range []struct {
		sql  string
		want int64
	}{
		{"SELECT count(*) AS v FROM Track", 3503},
		{"SELECT count(*) AS v FROM InvoiceLine", 2240},
		{"SELECT count(*) AS v FROM sqlite_schema WHERE type = 'table' AND name NOT GLOB 'sqlite_*' AND name NOT GLOB '_nqlite_*'", 11},
	} {
		if got := scalar(t, url, tc.sql); got != tc.want {
			t.Errorf("%s = %v, want %d", tc.sql, got, tc.want)
		}
	}
	sum, ok := scalar(t, url, "SELECT SUM(UnitPrice * Quantity) AS v FROM InvoiceLine").(float64)
	if !ok || math.Round(sum*100) != 232860 {
		t.Errorf("SUM(UnitPrice*Quantity) = %v, want 2328.6", sum)
	}

	// And the table output of a query over the loaded data.
	o = mustRun(t, nil, "--server", url, "SELECT ArtistId, Name FROM Artist WHERE ArtistId <= 2 ORDER BY ArtistId")
	want := "ArtistId  Name\n--------  ------\n       1  AC/DC\n       2  Accept\n(2 rows)\n"
	if o.stdout != want {
		t.Errorf("got\n%s\nwant\n%s", o.stdout, want)
	}
}
