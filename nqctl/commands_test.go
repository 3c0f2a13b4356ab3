package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/servicetest"
)

func TestImport(t *testing.T) {
	url := startNode(t)
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "people.csv")
	var b strings.Builder
	b.WriteString("\uFEFFname,age,note\n")
	for i := 1; i <= 6000; i++ {
		fmt.Fprintf(&b, "person %d,%d,\"says \"\"hi\"\", twice\"\n", i, 20+i%50)
	}
	b.WriteString("short,1\n")              // filled with NULL
	b.WriteString("long,2,x,extra\n")       // extra dropped
	b.WriteString("\"multi\nline\",3,ok\n") // a quoted newline
	if err := os.WriteFile(csvPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	// A missing table is created from the header; 6003 rows go in a few
	// requests of at most 256 KiB.
	o := script(t, url, ".import "+csvPath+" people\nSELECT count(*) AS n, sum(age) AS s FROM people;\nSELECT * FROM people WHERE name IN ('short', 'long') OR name LIKE 'multi%' ORDER BY age;\n", "--mode", "csv")
	if o.code != 0 {
		t.Fatalf("import: exit %d\n%s", o.code, o.stderr)
	}
	sum := 0
	for i := 1; i <= 6000; i++ {
		sum += 20 + i%50
	}
	want := fmt.Sprintf("n,s\n6003,%d\nname,age,note\nshort,1,\nlong,2,x\n\"multi\nline\",3,ok\n", sum+6)
	if o.stdout != want {
		t.Errorf("stdout:\n%s\nwant\n%s", o.stdout, want)
	}
	m := regexp.MustCompile(`imported 6003 rows into people \(created\) in (\d+) requests`).FindStringSubmatch(o.stderr)
	if m == nil || m[1] == "1" || len(m[1]) > 1 {
		t.Errorf("want the rows in a few requests (more than one, under 10):\n%s", o.stderr)
	}
	for _, w := range []string{"people.csv:6002: expected 3 columns but found 2: filling the rest with NULL", "people.csv:6003: expected 3 columns but found 4: extras ignored"} {
		if !strings.Contains(o.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, o.stderr)
		}
	}
	// The columns are TEXT, as sqlite3 creates them.
	if got := scalar(t, url, "SELECT typeof(age) AS v FROM people LIMIT 1"); got != "text" {
		t.Errorf("typeof(age) = %v", got)
	}

	// Into an existing table every row is data: --skip 1 drops the header.
	// A row breaking a constraint fails alone, with its line.
	mustRun(t, nil, "--server", url, "CREATE TABLE typed(name TEXT UNIQUE, age INTEGER, note TEXT)")
	small := filepath.Join(dir, "small.csv")
	os.WriteFile(small, []byte("name,age,note\na,1,x\nb,2,y\na,3,dup\n"), 0o644)
	o = nqctl(t, nil, "import", "--server", url, "--skip", "1", small, "typed")
	if o.code != exitFailed || !strings.Contains(o.stderr, "small.csv:4: INSERT failed: UNIQUE constraint failed: typed.name") ||
		!strings.Contains(o.stderr, "imported 2 rows into typed in 1 requests") {
		t.Errorf("import into typed: exit %d\n%s", o.code, o.stderr)
	}
	if got := scalar(t, url, "SELECT sum(age) AS v FROM typed"); got != int64(3) {
		t.Errorf("sum(age) = %v, want 3 (integers by the column's affinity)", got)
	}
	// From standard input, and usage errors.
	o = nqctl(t, strings.NewReader("c,9,z\n"), "import", "--server", url, "-", "typed")
	if o.code != 0 || scalar(t, url, "SELECT count(*) AS v FROM typed") != int64(3) {
		t.Errorf("import from stdin: exit %d %s", o.code, o.stderr)
	}
	if o = nqctl(t, nil, "import", "--server", url, small); o.code != exitUsage {
		t.Errorf("import without table: exit %d", o.code)
	}
	if o = script(t, url, ".import "+filepath.Join(dir, "none.csv")+" x\n"); o.code != exitFailed || !strings.Contains(o.stderr, "no such file") {
		t.Errorf("import of a missing file: exit %d %s", o.code, o.stderr)
	}
}

func TestImportBatches(t *testing.T) {
	url := startNode(t)
	nc := servicetest.Connect(t, url)
	conn := defaultConnOptions()
	s := newSession(nc, &conn, nil, io.Discard, modeColumn)
	dir := t.TempDir()
	path := filepath.Join(dir, "n.csv")
	var b strings.Builder
	b.WriteString("n\n")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	os.WriteFile(path, []byte(b.String()), 0o644)
	var errb strings.Builder
	// Batches of at most 2 KiB: each row is its statement and a value.
	err := importCSV(context.Background(), s, &errb, importOptions{file: path, table: "n", batchBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`imported 500 rows into n \(created\) in (\d+) requests`).FindStringSubmatch(errb.String())
	if m == nil {
		t.Fatalf("import: %s", errb.String())
	}
	if n, _ := strconv.Atoi(m[1]); n < 10 {
		t.Fatalf("500 rows in %d requests of at most 2 KiB", n)
	}
	if got := scalar(t, url, "SELECT count(DISTINCT n) AS v FROM n"); got != int64(500) {
		t.Errorf("%v distinct rows, want 500", got)
	}
}

func TestNodes(t *testing.T) {
	ns := servicetest.StartServer(t)
	url := ns.ClientURL()
	var nodes []*servicetest.Node
	for _, id := range []string{"n1", "n2"} {
		nodes = append(nodes, servicetest.StartNode(t, url, service.Config{NodeID: id, Databases: []string{"main", "other"},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	}
	mustRun(t, nil, "--server", url, "CREATE TABLE t(x); INSERT INTO t VALUES (1)")
	for _, n := range nodes {
		// The node that did not answer applies the entry a moment later.
		servicetest.WaitFor(t, 10*time.Second, n.ID()+" to apply the entry", func() bool { return n.DB("main").Applied() >= 1 })
	}

	// Every node answers, not only the first.
	o := mustRun(t, nil, "nodes", "--server", url, "--mode", "json", "--expect", "2")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(o.stdout), &rows); err != nil {
		t.Fatalf("nodes --mode json: %v\n%s", err, o.stdout)
	}
	var got []string
	for _, r := range rows {
		got = append(got, fmt.Sprintf("%v/%v v%v", r["node"], r["db"], r["version"]))
		if r["uptime"] == "" || r["stream_last_seq"] == nil {
			t.Errorf("row lacks uptime or stream_last_seq: %v", r)
		}
		if r["db"] == "main" && r["stream_last_seq"] != 1.0 {
			t.Errorf("main: stream_last_seq %v, want 1 (one request, one entry): %v", r["stream_last_seq"], r)
		}
	}
	want := "n1/main v" + service.Version + ",n1/other v" + service.Version + ",n2/main v" + service.Version + ",n2/other v" + service.Version
	if strings.Join(got, ",") != want {
		t.Errorf("nodes: %s, want %s", strings.Join(got, ","), want)
	}

	// --db filters; the table has the columns the issue asks for.
	o = mustRun(t, nil, "nodes", "--server", url, "--db", "main", "--expect", "2")
	for _, w := range []string{"node", "version", "applied", "lag", "uptime", "n1", "n2", "(2 rows)"} {
		if !strings.Contains(o.stdout, w) {
			t.Errorf("nodes --db main lacks %q:\n%s", w, o.stdout)
		}
	}
	if strings.Contains(o.stdout, "other") {
		t.Errorf("nodes --db main shows other:\n%s", o.stdout)
	}
	// And in the shell.
	o = script(t, url, ".nodes\n.databases\n.status\n", "--mode", "list")
	if strings.Count(o.stdout, "|main|") != 2 || !strings.Contains(o.stdout, "* main: n1, n2") ||
		!strings.Contains(o.stdout, "nodes:     2 serving main (n1, n2)") {
		t.Errorf("shell .nodes/.databases/.status:\n%s", o.stdout)
	}
	// No node at all: exit 3.
	bare := servicetest.StartServer(t)
	if o = nqctl(t, nil, "nodes", "--server", bare.ClientURL(), "--wait", "2s"); o.code != exitConn {
		t.Errorf("nodes without nodes: exit %d %s", o.code, o.stderr)
	}
}

// writeContext writes a nats CLI context under dir (XDG_CONFIG_HOME).
func writeContext(t *testing.T, dir, name string, fields map[string]any) {
	t.Helper()
	cdir := filepath.Join(dir, "nats", "context")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(fields)
	if err := os.WriteFile(filepath.Join(cdir, name+".json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestNatsContext(t *testing.T) {
	// A server that needs a user and password, and a node on it.
	ns := servicetest.StartServer(t) // where the node's stream lives
	_ = ns
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, Username: "app", Password: "s3cret"}
	auth, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go auth.Start()
	if !auth.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(auth.Shutdown)
	authURL := fmt.Sprintf("nats://app:s3cret@%s", strings.TrimPrefix(auth.ClientURL(), "nats://"))
	servicetest.StartNode(t, authURL, service.Config{NodeID: "ctx1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("NATS_URL", "")
	t.Setenv("NATS_CONTEXT", "")
	for _, k := range []string{"NATS_CREDS", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY", "NATS_CERT", "NATS_KEY", "NATS_CA"} {
		t.Setenv(k, "")
	}
	writeContext(t, cfg, "prod", map[string]any{"url": auth.ClientURL(), "user": "app", "password": "s3cret", "description": "test"})
	writeContext(t, cfg, "wrongpw", map[string]any{"url": auth.ClientURL(), "user": "app", "password": "nope"})
	writeContext(t, cfg, "badcreds", map[string]any{"url": auth.ClientURL(), "creds": "~/missing.creds"})

	// --context NAME.
	o := mustRun(t, nil, "--context", "prod", "SELECT 40 + 2 AS v")
	if !strings.Contains(o.stdout, "42") {
		t.Errorf("--context prod: %q", o.stdout)
	}
	// The selected context (context.txt), when no --server or NATS_URL.
	if err := os.WriteFile(filepath.Join(cfg, "nats", "context.txt"), []byte("prod\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o = mustRun(t, nil, "query", "SELECT 'selected' AS v")
	if !strings.Contains(o.stdout, "selected") {
		t.Errorf("selected context: %q", o.stdout)
	}
	// NATS_CONTEXT picks another; a wrong password is a connection error.
	t.Setenv("NATS_CONTEXT", "wrongpw")
	if o = nqctl(t, nil, "SELECT 1"); o.code != exitConn || !strings.Contains(o.stderr, "nats context wrongpw") {
		t.Errorf("NATS_CONTEXT=wrongpw: exit %d %s", o.code, o.stderr)
	}
	t.Setenv("NATS_CONTEXT", "")
	// Flags win over the context: --user/--password given explicitly.
	if o = nqctl(t, nil, "--context", "wrongpw", "--password", "s3cret", "SELECT 1"); o.code != 0 {
		t.Errorf("--password over the context: exit %d %s", o.code, o.stderr)
	}
	// --server (or NATS_URL) instead of the selected context: no user, so
	// the server refuses.
	if o = nqctl(t, nil, "--server", auth.ClientURL(), "SELECT 1"); o.code != exitConn {
		t.Errorf("--server without credentials: exit %d %s", o.code, o.stderr)
	}
	t.Setenv("NATS_URL", authURL)
	if o = nqctl(t, nil, "SELECT 1"); o.code != 0 {
		t.Errorf("NATS_URL over the selected context: exit %d %s", o.code, o.stderr)
	}
	t.Setenv("NATS_URL", "")
	// Context errors are usage errors.
	if o = nqctl(t, nil, "--context", "none", "SELECT 1"); o.code != exitUsage || !strings.Contains(o.stderr, `nats context "none"`) {
		t.Errorf("missing context: exit %d %s", o.code, o.stderr)
	}
	if o = nqctl(t, nil, "--context", "badcreds", "SELECT 1"); o.code != exitUsage || !strings.Contains(o.stderr, "missing.creds") {
		t.Errorf("context with missing creds: exit %d %s", o.code, o.stderr)
	}
	if o = nqctl(t, nil, "--context", "../x", "SELECT 1"); o.code != exitUsage {
		t.Errorf("bad context name: exit %d %s", o.code, o.stderr)
	}
}

func TestSubcommands(t *testing.T) {
	url := startNode(t)
	// query with parameters.
	mustRun(t, nil, "exec", "--server", url, "CREATE TABLE kv(k TEXT PRIMARY KEY, v)")
	o := mustRun(t, nil, "exec", "--server", url, "-p", "a", "-p", "1.5", "INSERT INTO kv VALUES(?, ?)")
	if o.stdout != "1 row affected, last insert id 1\n" {
		t.Errorf("exec -p: %q", o.stdout)
	}
	o = mustRun(t, nil, "query", "--server", url, "--mode", "csv", "-p", `"a"`, "SELECT k, v, typeof(v) FROM kv WHERE k = ?")
	if o.stdout != "k,v,typeof(v)\na,1.5,real\n" {
		t.Errorf("query -p: %q", o.stdout)
	}
	if o = nqctl(t, nil, "query", "--server", url, "-p", "1", "SELECT ?; SELECT ?"); o.code != exitUsage {
		t.Errorf("-p with two statements: exit %d", o.code)
	}
	// exec --transaction: all or nothing.
	o = nqctl(t, nil, "exec", "--server", url, "--transaction", "INSERT INTO kv VALUES('b', 2); INSERT INTO kv VALUES('a', 3)")
	if o.code != exitFailed || scalar(t, url, "SELECT count(*) AS v FROM kv") != int64(1) {
		t.Errorf("exec --transaction: exit %d, %s", o.code, o.stderr)
	}
	// exec --id: a retry is applied once.
	for i := 0; i < 2; i++ {
		o = mustRun(t, nil, "exec", "--server", url, "--id", "once-1", "INSERT INTO kv VALUES('c', 3)")
	}
	if !strings.Contains(o.stdout, "duplicate of entry") || scalar(t, url, "SELECT count(*) AS v FROM kv") != int64(2) {
		t.Errorf("exec --id twice: %q", o.stdout)
	}
	// exec --file, --quiet.
	file := filepath.Join(t.TempDir(), "x.sql")
	os.WriteFile(file, []byte("INSERT INTO kv VALUES('d', 4);\n.mode csv\nSELECT count(*) AS n FROM kv;\n"), 0o644)
	o = mustRun(t, nil, "exec", "--server", url, "--quiet", "-f", file)
	if o.stdout != "n\n3\n" {
		t.Errorf("exec -f --quiet: %q", o.stdout)
	}
	// Every command has --help, exit 0.
	for _, c := range commandList {
		o = nqctl(t, nil, c.name, "--help")
		if o.code != 0 || !strings.Contains(o.stderr, "Usage: nqctl") {
			t.Errorf("%s --help: exit %d %q", c.name, o.code, o.stderr)
		}
	}
	o = nqctl(t, nil, "help")
	for _, c := range commandList {
		if !strings.Contains(o.stderr, "  "+c.name+" ") {
			t.Errorf("help lacks %s", c.name)
		}
	}
	// Flags before the command carry over.
	o = mustRun(t, nil, "--server", url, "--mode", "list", "query", "SELECT 1 AS x")
	if o.stdout != "x\n1\n" {
		t.Errorf("flags before query: %q", o.stdout)
	}
	// backup/restore of a file that cannot be: exit 1 with a clear message.
	if o = nqctl(t, nil, "restore", "--server", url, filepath.Join(t.TempDir(), "nope.db")); o.code != exitFailed || !strings.Contains(o.stderr, "no such file") {
		t.Errorf("restore of a missing file: exit %d %s", o.code, o.stderr)
	}
	// Exit codes: usage 2, SQL 1, connection 3, for subcommands too.
	if o = nqctl(t, nil, "query", "--server", url, "--mode", "xml", "SELECT 1"); o.code != exitUsage {
		t.Errorf("bad mode: exit %d", o.code)
	}
	if o = nqctl(t, nil, "query", "--server", url, "SELEC 1"); o.code != exitFailed || !strings.Contains(o.stderr, `near "SELEC": syntax error (line 1, column 1)`) {
		t.Errorf("syntax error: exit %d %s", o.code, o.stderr)
	}
	if o = nqctl(t, nil, "dump", "--server", url, "--db", "nodb"); o.code != exitConn {
		t.Errorf("dump of a database no node serves: exit %d %s", o.code, o.stderr)
	}
	// bench, small.
	o = mustRun(t, nil, "bench", "--server", url, "-n", "40", "-c", "4", "--op", "insert,read,strong", "--mode", "csv")
	lines := strings.Split(strings.TrimSpace(o.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "op,requests,clients,ops/s,p50_ms") || !strings.HasPrefix(lines[1], "insert,40,4,") || !strings.HasSuffix(lines[3], ",0") {
		t.Errorf("bench:\n%s", o.stdout)
	}
	if got := scalar(t, url, "SELECT count(*) AS v FROM sqlite_schema WHERE name = 'nqctl_bench'"); got != int64(0) {
		t.Error("bench left its table")
	}
}
