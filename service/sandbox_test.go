package service_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// requestErr sends payload to subject and returns the request error code
// and message (0 if the request succeeded).
func requestErr(tb testing.TB, nc *nats.Conn, subject string, payload []byte) (int, string) {
	tb.Helper()
	msg, err := nc.Request(subject, payload, 10*time.Second)
	if err != nil {
		return -1, err.Error()
	}
	code := 0
	fmt.Sscan(msg.Header.Get("Nats-Service-Error-Code"), &code)
	if code == 0 {
		return 0, string(msg.Data)
	}
	_, derr := api.DecodeResponse(msg.Data, code)
	var ae *api.Error
	if !errors.As(derr, &ae) {
		tb.Fatalf("error reply %d without an error body: %s", code, msg.Data)
	}
	return code, ae.Message
}

func TestReadEndpoint(t *testing.T) {
	ns, node, c := single(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	ok(t, do(t, c, "CREATE TABLE t(x); INSERT INTO t VALUES(1)"))
	last := node.DB("main").Applied()
	for _, q := range []string{"INSERT INTO t VALUES(2)", "SELECT 1; DELETE FROM t", "BEGIN", "CREATE TABLE u(y)", "PRAGMA user_version = 3"} {
		code, msg := requestErr(t, nc, "nqlite.read.main", []byte(q))
		if code != 403 || !strings.Contains(msg, "only reads") {
			t.Errorf("%s on nqlite.read.main: %d %s", q, code, msg)
		}
	}
	code, body := requestErr(t, nc, "nqlite.read.main", []byte(`{"statements": ["SELECT count(*) AS n FROM t"], "level": "strong"}`))
	if code != 0 || !strings.Contains(body, `"n":1`) {
		t.Fatalf("read on nqlite.read.main: %d %s", code, body)
	}
	if got := streamLastSeq(t, nc, "main"); streamEntries(t, nc, "main", last, got) != 0 {
		t.Fatalf("refused writes reached the stream: %d -> %d", last, got)
	}
}

// TestReadEndpoint_Permissions runs a nats-server with two users: reader
// may only request nqlite.read.>, writer also nqlite.query.>.
func TestReadEndpoint_Permissions(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	port := servicetest.FreePorts(t, 1)[0]
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`
listen: 127.0.0.1:%d
jetstream: { store_dir: %q }
authorization {
  users: [
    { user: node, password: node }
    { user: writer, password: writer, permissions: {
        publish: { allow: ["nqlite.query.>", "nqlite.read.>"] }
        subscribe: { allow: ["_INBOX.>"] } } }
    { user: reader, password: reader, permissions: {
        publish: { allow: ["nqlite.read.>"], deny: ["nqlite.query.>", "nqlite.entry.>", "$JS.>"] }
        subscribe: { allow: ["_INBOX.>"] } } }
  ]
}
`, port, filepath.Join(dir, "js"))), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)
	url := func(u string) string { return fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", u, u, port) }
	servicetest.StartNode(t, url("node"), service.Config{NodeID: "n1"})
	writer := servicetest.Connect(t, url("writer"))
	reader := servicetest.Connect(t, url("reader"))
	if code, msg := requestErr(t, writer, "nqlite.query.main", []byte("CREATE TABLE t(x); INSERT INTO t VALUES(42)")); code != 0 {
		t.Fatalf("writer: %d %s", code, msg)
	}
	if code, body := requestErr(t, reader, "nqlite.read.main", []byte(`{"statements": ["SELECT x FROM t"], "level": "strong"}`)); code != 0 || !strings.Contains(body, `"x":42`) {
		t.Fatalf("reader read: %d %s", code, body)
	}
	// The server refuses the reader's publish to nqlite.query.main: the
	// request never reaches a node and times out.
	_, err = reader.Request("nqlite.query.main", []byte("DELETE FROM t"), 300*time.Millisecond)
	if err == nil {
		t.Fatal("reader could write through nqlite.query.main")
	}
	if code, _ := requestErr(t, reader, "nqlite.read.main", []byte("DELETE FROM t")); code != 403 {
		t.Fatalf("reader write on nqlite.read.main: %d", code)
	}
	if code, body := requestErr(t, writer, "nqlite.read.main", []byte(`{"statements": ["SELECT count(*) AS n FROM t"], "level": "strong"}`)); code != 0 || !strings.Contains(body, `"n":1`) {
		t.Fatalf("row count after refused deletes: %d %s", code, body)
	}
}

// TestSandbox: statements nqlite refuses on every endpoint, limits, and
// hostile inputs: each gets a clear error and changes nothing.
func TestSandbox(t *testing.T) {
	ns, node, c := single(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES('a')"))
	dir := t.TempDir()
	for _, tc := range []struct {
		sql  string
		code int
		msg  string
	}{
		{"ATTACH '" + filepath.Join(dir, "x.db") + "' AS x", 403, "ATTACH"},
		{"DETACH x", 403, "DETACH"},
		{"SELECT load_extension('x')", 403, "load_extension"},
		{"UPDATE _nqlite_meta SET value = 0", 403, "_nqlite_meta"},
		{"DROP TABLE _nqlite_meta", 403, "_nqlite_meta"},
		{"PRAGMA journal_mode = DELETE", 403, "journal_mode"},
		{"PRAGMA synchronous = 0", 403, "synchronous"},
		{"PRAGMA writable_schema = 1", 403, "writable_schema"},
		{"PRAGMA query_only = 0", 403, "query_only"},
		{"PRAGMA locking_mode = EXCLUSIVE", 403, "locking_mode"},
		{"PRAGMA foreign_keys = ON", 403, "foreign_keys"},
		{"PRAGMA wal_checkpoint", 403, "wal_checkpoint"},
		{"VACUUM INTO '" + filepath.Join(dir, "copy.db") + "'", 403, "VACUUM INTO"},
	} {
		for _, subj := range []string{"nqlite.query.main", "nqlite.read.main"} {
			code, msg := requestErr(t, nc, subj, []byte(tc.sql))
			if code != tc.code || !strings.Contains(msg, tc.msg) {
				t.Errorf("%s on %s: got %d %q, want %d with %q", tc.sql, subj, code, msg, tc.code, tc.msg)
			}
		}
	}
	// A trigger body is authorized when it fires, not when it is created:
	// the statement that would fire it is refused.
	ok(t, do(t, c, "CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM _nqlite_meta; END"))
	// (403 when the node classifying it already knows the trigger, else a
	// statement error at apply: either way nothing changes.)
	if code, msg := requestErr(t, nc, "nqlite.query.main", []byte("INSERT INTO t(v) VALUES('x')")); (code != 403 && code != 0) || !strings.Contains(msg, "table _nqlite_meta is nqlite's own") {
		t.Errorf("insert firing a trigger that writes _nqlite_meta: %d %q", code, msg)
	}
	ok(t, do(t, c, "DROP TRIGGER tr"))
	if _, err := os.Stat(filepath.Join(dir, "copy.db")); err == nil {
		t.Error("VACUUM INTO wrote a file")
	}
	for _, q := range []string{"PRAGMA table_info(t)", "PRAGMA index_list(t)", "PRAGMA foreign_key_list(t)", "PRAGMA journal_mode", "PRAGMA integrity_check"} {
		ok(t, do(t, c, q))
	}

	last := node.DB("main").Applied()
	big := strings.Repeat("x", 10<<20)
	hostile := []struct {
		name    string
		payload string
		code    int // -1: refused by NATS itself (over max payload)
		msg     string
	}{
		{"deep nesting", strings.Repeat("[", 100000) + strings.Repeat("]", 100000), 400, "not valid JSON"},
		{"huge integer", `[["INSERT INTO t(id) VALUES(?)", 123456789012345678901234567890]]`, 400, "64-bit INTEGER"},
		{"invalid UTF-8", "INSERT INTO t(v) VALUES('\xff\xfe')", 400, "UTF-8"},
		{"10 MB payload", "INSERT INTO t(v) VALUES('" + big + "')", -1, "maximum payload"},
		{"NUL in SQL text", "INSERT INTO t(v) VALUES('a\x00b')", 400, "NUL byte"},
		{"NUL in a parameter", `[["INSERT INTO t(v) VALUES(?)", "a\u0000b"]]`, 0, ""},
		{"100k statements", strings.Repeat("SELECT 1;", 100000), 400, "over the limit"},
		{"parameter count", `[["INSERT INTO t(id, v) VALUES(?, ?)", 1]]`, 0, "2 parameters but 1 values"},
		{"unknown named", `[["INSERT INTO t(v) VALUES(:v)", {"v": "x", "w": 1}]]`, 0, "not used by the statement"},
	}
	for _, h := range hostile {
		code, msg := requestErr(t, nc, "nqlite.query.main", []byte(h.payload))
		switch {
		case h.code == -1:
			if code != -1 || !strings.Contains(msg, h.msg) {
				t.Errorf("%s: got %d %q, want the client to refuse it (%s)", h.name, code, msg, h.msg)
			}
		case h.code == 0:
			// A statement error: the request is answered, the statement fails.
			if code != 0 || (h.msg != "" && !strings.Contains(msg, h.msg)) {
				t.Errorf("%s: got %d %q, want a statement error with %q", h.name, code, msg, h.msg)
			}
		default:
			if code != h.code || !strings.Contains(msg, h.msg) {
				t.Errorf("%s: got %d %q, want %d with %q", h.name, code, msg, h.code, h.msg)
			}
		}
	}
	// Only the NUL parameter and the two statement-error entries reached
	// the stream; the value with a NUL byte is stored whole.
	if got := scalar(t, c, "SELECT count(*) FROM t"); got != int64(2) {
		t.Fatalf("rows after hostile inputs: %v, want 2", got)
	}
	if got := scalar(t, c, "SELECT length(CAST(v AS BLOB)) FROM t WHERE id = 2"); got != int64(3) {
		t.Fatalf("NUL row: %v", got)
	}
	if got := streamEntries(t, nc, "main", last, node.DB("main").Applied()); got != 3 {
		t.Fatalf("entries after %d: %d, want 3", last, got)
	}

	// A response over the NATS max payload is a 413 with the row count.
	ok(t, do(t, c, "CREATE TABLE big(b); INSERT INTO big WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000) SELECT zeroblob(1000) FROM n"))
	code, msg := requestErr(t, nc, "nqlite.query.main", []byte("SELECT hex(b) FROM big"))
	if code != 413 || !strings.Contains(msg, "3000 rows") {
		t.Fatalf("big response: %d %q", code, msg)
	}
	// A long read is interrupted at the request deadline.
	resp, err := c.Query(context.Background(), "main", client.Request{TimeoutMS: 300,
		Statements: []api.Statement{{SQL: "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n) SELECT count(*) FROM n"}}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeGatewayTimeout || ae.Kind != api.KindReadTimeout {
		t.Fatalf("endless read: %+v %v, want 504 read_timeout", resp, err)
	}
	// SQLite length limits apply, with SQLite's message.
	res := do(t, c, "INSERT INTO t(v) VALUES(zeroblob(100000000))")
	if !strings.Contains(res.Results[0].Error, "too big") {
		t.Fatalf("zeroblob over the length limit: %+v", res.Results)
	}
}
