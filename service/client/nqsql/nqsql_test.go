package nqsql_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/client/nqsql"
	"github.com/nqlite/nqlite/service/servicetest"
)

// start starts a nats-server and n nodes serving "main" and returns the
// server's URL and the nodes.
func start(t *testing.T, n int) (string, []*servicetest.Node) {
	t.Helper()
	ns := servicetest.StartServer(t)
	var nodes []*servicetest.Node
	for i := 0; i < n; i++ {
		nodes = append(nodes, servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: fmt.Sprintf("n%d", i+1)}))
	}
	return ns.ClientURL(), nodes
}

// open opens a *sql.DB on dsn, closed at cleanup.
func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("nqlite", dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustExec(t *testing.T, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, query string, args ...any) sql.Result {
	t.Helper()
	res, err := db.ExecContext(testCtx(t), query, args...)
	if err != nil {
		t.Fatalf("exec %q: %v", query, err)
	}
	return res
}

func scalar[T any](t *testing.T, db *sql.DB, query string, args ...any) T {
	t.Helper()
	var v T
	if err := db.QueryRowContext(testCtx(t), query, args...).Scan(&v); err != nil {
		t.Fatalf("query %q: %v", query, err)
	}
	return v
}

func TestValues_RoundTrip(t *testing.T) {
	url, _ := start(t, 1)
	db := open(t, url+"?db=main")
	mustExec(t, db, "CREATE TABLE v(id INTEGER PRIMARY KEY, x)")
	loc := time.FixedZone("UTC+5:30", 5*3600+1800)
	when := time.Date(2024, 5, 1, 12, 30, 0, 123456789, loc)
	tests := []struct {
		name     string
		in       any
		want     any
		wantType string
	}{
		{"max int64", int64(math.MaxInt64), int64(math.MaxInt64), "integer"},
		{"min int64", int64(math.MinInt64), int64(math.MinInt64), "integer"},
		{"2^53+1", int64(9007199254740993), int64(9007199254740993), "integer"},
		{"int", 42, int64(42), "integer"},
		{"uint32", uint32(math.MaxUint32), int64(math.MaxUint32), "integer"},
		{"zero", 0, int64(0), "integer"},
		{"bool", true, int64(1), "integer"},
		{"real", 1.5, 1.5, "real"},
		{"integral real", 2.0, 2.0, "real"},
		{"tiny real", 5e-324, 5e-324, "real"},
		{"huge real", math.MaxFloat64, math.MaxFloat64, "real"},
		{"infinity", math.Inf(-1), math.Inf(-1), "real"},
		{"text", "héllo\n\"x\"\x01", "héllo\n\"x\"\x01", "text"},
		{"empty text", "", "", "text"},
		{"numeric text", "9007199254740993", "9007199254740993", "text"},
		{"blob", []byte{0, 1, 2, 255}, []byte{0, 1, 2, 255}, "blob"},
		{"empty blob", []byte{}, []byte{}, "blob"},
		{"null", nil, nil, "null"},
		{"nil blob", []byte(nil), nil, "null"},
		{"null string", sql.NullString{}, nil, "null"},
		{"time", when, "2024-05-01 07:00:00.123456789+00:00", "text"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustExec(t, db, "INSERT INTO v(id, x) VALUES(?, ?)", i, tt.in)
			var got any
			var typ string
			if err := db.QueryRowContext(testCtx(t), "SELECT x, typeof(x) FROM v WHERE id = ?", i).Scan(&got, &typ); err != nil {
				t.Fatal(err)
			}
			if typ != tt.wantType {
				t.Errorf("stored as %s, want %s", typ, tt.wantType)
			}
			if b, ok := tt.want.([]byte); ok {
				if gb, ok := got.([]byte); !ok || !bytes.Equal(gb, b) {
					t.Errorf("got %#v, want %#v", got, tt.want)
				}
				return
			}
			if got != tt.want {
				t.Errorf("got %#v (%T), want %#v (%T)", got, got, tt.want, tt.want)
			}
		})
	}
	// A uint64 over int64 is refused, before anything is sent.
	if _, err := db.ExecContext(testCtx(t), "INSERT INTO v(x) VALUES(?)", uint64(math.MaxUint64)); err == nil {
		t.Error("uint64 max: no error")
	}
}

func TestValues_Time(t *testing.T) {
	url, _ := start(t, 1)
	db := open(t, url)
	mustExec(t, db, "CREATE TABLE ev(id INTEGER PRIMARY KEY, at DATETIME, day DATE, ts timestamp, note TEXT)")
	when := time.Date(2024, 5, 1, 12, 30, 0, 500000000, time.FixedZone("", -7*3600))
	mustExec(t, db, "INSERT INTO ev VALUES(1, ?, '2024-05-01', ?, ?)", when, when, when)
	mustExec(t, db, "INSERT INTO ev VALUES(2, CURRENT_TIMESTAMP, 'not a date', 1714566600, NULL)")

	var at, day, ts time.Time
	var note string
	if err := db.QueryRowContext(testCtx(t), "SELECT at, day, ts, note FROM ev WHERE id = 1").Scan(&at, &day, &ts, &note); err != nil {
		t.Fatal(err)
	}
	if !at.Equal(when) || !ts.Equal(when) || at.Location() != time.UTC {
		t.Errorf("DATETIME/TIMESTAMP: got %v and %v, want %v in UTC", at, ts, when)
	}
	if want := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC); !day.Equal(want) {
		t.Errorf("DATE: got %v, want %v", day, want)
	}
	if note != "2024-05-01 19:30:00.5+00:00" {
		t.Errorf("TEXT column: got %q", note)
	}
	// SQLite's date functions read the stored text.
	if got := scalar[string](t, db, "SELECT datetime(?, '+1 day')", when); got != "2024-05-02 19:30:00" {
		t.Errorf("datetime(?): got %q", got)
	}
	// Text that is no date stays text; integers stay integers; the node's
	// CURRENT_TIMESTAMP reads back as a time.
	var now time.Time
	var notDate any
	var unix any
	if err := db.QueryRowContext(testCtx(t), "SELECT at, day, ts FROM ev WHERE id = 2").Scan(&now, &notDate, &unix); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(now); d < -time.Minute || d > time.Minute {
		t.Errorf("CURRENT_TIMESTAMP: got %v", now)
	}
	if notDate != "not a date" || unix != int64(1714566600) {
		t.Errorf("got %#v and %#v, want the text and the integer", notDate, unix)
	}
}

func TestColumnTypes(t *testing.T) {
	url, _ := start(t, 1)
	db := open(t, url)
	mustExec(t, db, "CREATE TABLE c(a INTEGER, b varchar(20), c REAL, d BLOB, e DATETIME, f)")
	mustExec(t, db, "INSERT INTO c VALUES(1, 'x', 1.5, x'00', NULL, NULL)")
	rows, err := db.QueryContext(testCtx(t), "SELECT a, b, c, d, e, f, a + 1 AS g FROM c")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cts, err := rows.ColumnTypes()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ct := range cts {
		got = append(got, ct.Name()+":"+ct.DatabaseTypeName())
	}
	if want := "a:INTEGER b:VARCHAR c:REAL d:BLOB e:DATETIME f: g:"; strings.Join(got, " ") != want {
		t.Errorf("got %q, want %q", strings.Join(got, " "), want)
	}
}

func TestExec(t *testing.T) {
	url, _ := start(t, 1)
	db := open(t, url)
	// Several statements without arguments: one request.
	res := mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT UNIQUE); INSERT INTO t(name) VALUES('a'); INSERT INTO t(name) VALUES('b')")
	if id, err := res.LastInsertId(); err != nil || id != 2 {
		t.Errorf("LastInsertId: %d %v, want 2", id, err)
	}
	res = mustExec(t, db, "UPDATE t SET name = name || '!'")
	if n, err := res.RowsAffected(); err != nil || n != 2 {
		t.Errorf("RowsAffected: %d %v, want 2", n, err)
	}
	// Named parameters.
	mustExec(t, db, "INSERT INTO t(name) VALUES(:name)", sql.Named("name", "c"))
	if got := scalar[int64](t, db, "SELECT id FROM t WHERE name = @n", sql.Named("n", "c")); got != 3 {
		t.Errorf("named: got %d", got)
	}
	// A failed statement among several: the others ran.
	_, err := db.ExecContext(testCtx(t), "INSERT INTO t(name) VALUES('d'); INSERT INTO t(name) VALUES('d'); INSERT INTO t(name) VALUES('e')")
	var se *nqsql.StatementError
	if !errors.As(err, &se) || se.Index != 1 || se.Count != 3 || !strings.Contains(se.Message, "UNIQUE") {
		t.Fatalf("got %v, want a *StatementError for statement 2 of 3", err)
	}
	if got := scalar[int64](t, db, "SELECT count(*) FROM t WHERE name IN ('d', 'e')"); got != 2 {
		t.Errorf("the other statements: got %d rows, want 2", got)
	}
	// Prepared statements.
	st, err := db.PrepareContext(testCtx(t), "SELECT name FROM t WHERE id = ?")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var name string
	if err := st.QueryRowContext(testCtx(t), 1).Scan(&name); err != nil || name != "a!" {
		t.Errorf("prepared: %q %v", name, err)
	}
	// Errors a person can act on.
	for _, tt := range []struct {
		query string
		args  []any
		want  string
	}{
		{"SELECT ?; SELECT ?", []any{1, 2}, "pass one statement per call"},
		{"SELECT ?, :n", []any{1, sql.Named("n", 2)}, "positional and named"},
		{"  ;  ", nil, "no SQL statement"},
		{"SELECT nope FROM t", nil, "no such column: nope"},
	} {
		if _, err := db.ExecContext(testCtx(t), tt.query, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("exec %q: got %v, want %q", tt.query, err, tt.want)
		}
	}
	if _, err := db.QueryContext(testCtx(t), "SELECT 1; SELECT 2"); err == nil || !strings.Contains(err.Error(), "Query takes one statement") {
		t.Errorf("query of two statements: %v", err)
	}
	// RETURNING rows through Query.
	var id int64
	if err := db.QueryRowContext(testCtx(t), "INSERT INTO t(name) VALUES('r') RETURNING id").Scan(&id); err != nil || id == 0 {
		t.Errorf("RETURNING: %d %v", id, err)
	}
}

func TestErrors(t *testing.T) {
	url, _ := start(t, 1)
	db := open(t, url+"?db=other")
	if err := db.PingContext(testCtx(t)); !errors.Is(err, client.ErrNoNode) {
		t.Errorf("ping a database no node serves: got %v, want ErrNoNode", err)
	}
	db = open(t, url)
	if err := db.PingContext(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// Request-level errors keep their code.
	var ae *api.Error
	if _, err := db.ExecContext(testCtx(t), "ATTACH 'x.db' AS x"); !errors.As(err, &ae) || ae.Code != api.CodeForbidden {
		t.Errorf("ATTACH: got %v, want a 403 *api.Error", err)
	}
	if _, err := db.ExecContext(testCtx(t), "ATTACH 'x.db' AS x"); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("ATTACH: got %v, want client.ErrForbidden", err)
	}
	// Text that is not UTF-8 is refused, not altered (JSON would carry
	// U+FFFD); a BLOB carries any bytes.
	if _, err := db.ExecContext(testCtx(t), "SELECT ?", "\xff\xfe"); !errors.As(err, &ae) || ae.Code != api.CodeBadRequest || !strings.Contains(ae.Message, "UTF-8") {
		t.Errorf("text not UTF-8: got %v, want a 400 *api.Error", err)
	}
	if got := scalar[[]byte](t, db, "SELECT ?", []byte("\xff\xfe")); !bytes.Equal(got, []byte("\xff\xfe")) {
		t.Errorf("BLOB: got %q", got)
	}
	big := strings.Repeat("x", 2<<20)
	var pe *client.PayloadError
	if _, err := db.ExecContext(testCtx(t), "SELECT ?", big); !errors.As(err, &pe) {
		t.Errorf("2 MB: got %v, want *client.PayloadError", err)
	}
	// A closed *sql.DB.
	db.Close()
	if err := db.PingContext(testCtx(t)); err == nil {
		t.Error("ping after Close: no error")
	}
}

// TestErrors_Stored: a write stored but not applied in time is
// client.ErrStored through the driver; its sequence reaches the *Seq
// argument, and the connector's later reads wait for it.
func TestErrors_Stored(t *testing.T) {
	url, nodes := start(t, 1)
	db := open(t, url)
	mustExec(t, db, "CREATE TABLE t(x)")
	release := nodes[0].DB("main").Hold()
	defer release()
	var seq nqsql.Seq
	_, err := db.ExecContext(testCtx(t), "INSERT INTO t VALUES(1)", nqsql.Timeout(200*time.Millisecond), &seq)
	if got, ok := client.StoredSeq(err); !errors.Is(err, client.ErrStored) || !ok || got != uint64(seq) || seq == 0 {
		t.Fatalf("write on a held node: %v, seq %d (%d %v); want ErrStored with the entry's seq", err, seq, got, ok)
	}
	if _, err := db.QueryContext(testCtx(t), "SELECT count(*) FROM t", nqsql.Timeout(100*time.Millisecond)); !errors.Is(err, client.ErrNotReached) {
		t.Fatalf("read after the stored write: %v, want it to wait for sequence %d (not_reached)", err, seq)
	}
	release()
	if n := scalar[int64](t, db, "SELECT count(*) FROM t"); n != 1 {
		t.Fatalf("rows once applied: %d", n)
	}
}

// TestTx_OneSeq checks that the reads of a transaction carry the sequence
// the connector had at BeginTx, not the one it reached since: a write
// through the pool after BeginTx, stored but not applied (the node is
// held), makes reads outside the transaction wait for it, while the
// transaction's reads still answer at the sequence it began with.
func TestTx_OneSeq(t *testing.T) {
	url, nodes := start(t, 1)
	db := open(t, url)
	mustExec(t, db, "CREATE TABLE t(x); INSERT INTO t VALUES(1)")
	ctx := testCtx(t)
	for _, opts := range []*sql.TxOptions{{ReadOnly: true}, nil} {
		tx, err := db.BeginTx(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		release := nodes[0].DB("main").Hold()
		var seq nqsql.Seq
		if _, err := db.ExecContext(ctx, "INSERT INTO t VALUES(2)", nqsql.Timeout(200*time.Millisecond), &seq); !errors.Is(err, client.ErrStored) {
			release()
			t.Fatalf("write on a held node: %v, want ErrStored", err)
		}
		if _, err := db.QueryContext(ctx, "SELECT count(*) FROM t", nqsql.Timeout(100*time.Millisecond)); !errors.Is(err, client.ErrNotReached) {
			t.Errorf("read outside the transaction: %v, want it to wait for sequence %d (not_reached)", err, seq)
		}
		for i := 0; i < 2; i++ {
			var n int64
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM t", nqsql.Timeout(2*time.Second)).Scan(&n); err != nil {
				t.Errorf("tx %+v, read %d: %v; want it to read at the sequence of BeginTx", opts, i+1, err)
			}
		}
		release()
		tx.Rollback()
		servicetest.WaitFor(t, 10*time.Second, "the node applies the held write", func() bool { return nodes[0].DB("main").Applied() >= uint64(seq) })
	}
}

func TestDSN(t *testing.T) {
	// A server that needs a user and password, and a node on it.
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, Username: "app", Password: "s3cret"}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(ns.Shutdown)
	url := ns.ClientURL()
	servicetest.StartNode(t, strings.Replace(url, "nats://", "nats://app:s3cret@", 1), service.Config{NodeID: "n1"})

	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("NATS_CONTEXT", "")
	t.Setenv("NATS_URL", "")
	for _, k := range []string{"NATS_CREDS", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY", "NATS_CERT", "NATS_KEY", "NATS_CA"} {
		t.Setenv(k, "")
	}
	dir := filepath.Join(cfg, "nats", "context")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "prod.json"), []byte(fmt.Sprintf(`{"url": %q, "user": "app", "password": "s3cret"}`, url)), 0o600)

	ok := []string{
		url + "?user=app&password=s3cret&db=main&level=strong&timeout=5s",
		strings.Replace(url, "nats://", "nats://app:s3cret@", 1),
		url + "?context=prod",
		"?context=prod&readonly=true",
		"",                       // the selected context, below
		"?db=main&timeout=250ms", // the selected context too
	}
	os.WriteFile(filepath.Join(cfg, "nats", "context.txt"), []byte("prod"), 0o644)
	for _, dsn := range ok {
		db := open(t, dsn)
		if got := scalar[int64](t, db, "SELECT 40 + 2"); got != 42 {
			t.Errorf("%q: got %d", dsn, got)
		}
	}
	// NATS_URL and NATS_USER/NATS_PASSWORD when the DSN names no server.
	os.Remove(filepath.Join(cfg, "nats", "context.txt"))
	t.Setenv("NATS_URL", url)
	t.Setenv("NATS_USER", "app")
	t.Setenv("NATS_PASSWORD", "s3cret")
	if got := scalar[int64](t, open(t, "?db=main"), "SELECT 1"); got != 1 {
		t.Errorf("environment: got %d", got)
	}
	// A DSN naming its server ignores the environment: no password.
	if err := open(t, url).PingContext(testCtx(t)); err == nil || !strings.Contains(err.Error(), "connect to") {
		t.Errorf("server without credentials: got %v, want a connect error", err)
	}
	// readonly: writes are refused.
	if _, err := open(t, url+"?context=prod&readonly=true").ExecContext(testCtx(t), "CREATE TABLE x(a)"); api.ErrorCode(err) != api.CodeForbidden {
		t.Errorf("readonly write: got %v, want 403", err)
	}

	for dsn, want := range map[string]string{
		url + "?nope=1":                   `unknown DSN parameter "nope"`,
		url + "?level=weakest":            `level "weakest"`,
		url + "?timeout=5":                `timeout "5"`,
		url + "?timeout=1h":               "give 1ms to 10m",
		url + "?db=no/slash":              `database name "no/slash"`,
		url + "?readonly=maybe":           `readonly "maybe"`,
		url + "?db=a&db=b":                "given 2 times",
		"?context=missing":                `nats context "missing"`,
		url + "?tls_cert=/x.pem":          "go together",
		url + "?nkey=/does/not/exist.nk":  "nkey seed file",
		url + "?password=%zz":             "DSN parameters",
		"nats://127.0.0.1:1?timeout=50ms": "connect to nats://127.0.0.1:1",
	} {
		db, err := sql.Open("nqlite", dsn)
		if err == nil {
			err = db.PingContext(testCtx(t))
			db.Close()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error with %q", dsn, err, want)
		}
	}
}

func TestConnector(t *testing.T) {
	url, _ := start(t, 1)
	nc := servicetest.Connect(t, url)
	c, err := nqsql.NewConnector(nc, nqsql.WithDB("main"), nqsql.WithLevel(api.LevelStrong), nqsql.WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	mustExec(t, db, "CREATE TABLE t(x)")
	res := mustExec(t, db, "INSERT INTO t VALUES(1)")
	if id, _ := res.LastInsertId(); id != 1 || c.Seq() < 2 {
		t.Errorf("LastInsertId %d, Seq %d", id, c.Seq())
	}
	db.Close()
	if nc.IsClosed() {
		t.Error("closing the *sql.DB closed the caller's NATS connection")
	}
	for _, opt := range []nqsql.Option{nqsql.WithDB(""), nqsql.WithLevel("x"), nqsql.WithTimeout(0)} {
		if _, err := nqsql.NewConnector(nc, opt); err == nil {
			t.Error("bad option: no error")
		}
	}
	if _, err := nqsql.NewConnector(nil); err == nil {
		t.Error("nil connection: no error")
	}
}

func TestOptions(t *testing.T) {
	url, nodes := start(t, 1)
	db := open(t, url)
	var seq nqsql.Seq
	mustExec(t, db, "CREATE TABLE t(x)", &seq)
	if seq == 0 {
		t.Fatal("*Seq not filled")
	}
	// Options are not parameters: "SELECT ?" gets one, whatever the
	// options around it.
	var got int64
	if err := db.QueryRowContext(testCtx(t), "SELECT ?", nqsql.Strong, 7, nqsql.AfterSeq(seq), nqsql.Timeout(time.Second)).Scan(&got); err != nil || got != 7 {
		t.Errorf("options removed: %d %v", got, err)
	}
	// AfterSeq past the stream: the node waits, then 504 not_reached.
	_, err := db.QueryContext(testCtx(t), "SELECT 1", nqsql.AfterSeq(seq+100), nqsql.Timeout(100*time.Millisecond))
	if !errors.Is(err, client.ErrNotReached) || api.ErrorCode(err) != api.CodeGatewayTimeout {
		t.Errorf("AfterSeq ahead: got %v, want 504 not_reached", err)
	}
	// IdempotencyKey: a retry is applied once.
	for i := 0; i < 2; i++ {
		res := mustExec(t, db, "INSERT INTO t VALUES(1)", nqsql.IdempotencyKey("k1"))
		_, err := res.RowsAffected()
		if i == 1 && !errors.Is(err, nqsql.ErrDuplicate) {
			t.Errorf("retry: got %v, want ErrDuplicate", err)
		}
	}
	if n := scalar[int64](t, db, "SELECT count(*) FROM t"); n != 1 {
		t.Errorf("after a retry with the same key: %d rows, want 1", n)
	}
	if _, err := db.QueryContext(testCtx(t), "SELECT 1", nqsql.Level("weak")); err == nil {
		t.Error("bad level: no error")
	}
	// The options of a call that fails before it is sent do not leak into
	// the next call on the connection.
	cn, err := db.Conn(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	var leaked nqsql.Seq
	if _, err := cn.ExecContext(testCtx(t), "INSERT INTO t VALUES(?)", &leaked, uint64(math.MaxUint64)); err == nil {
		t.Fatal("uint64 max: no error")
	}
	if _, err := cn.ExecContext(testCtx(t), "INSERT INTO t VALUES(2)"); err != nil {
		t.Fatal(err)
	}
	if leaked != 0 {
		t.Errorf("the failed call's *Seq was filled by the next call: %d", leaked)
	}
	_ = nodes
}

func TestTx(t *testing.T) {
	url, _ := start(t, 1)
	db := open(t, url)
	mustExec(t, db, "CREATE TABLE acct(id INTEGER PRIMARY KEY, owner TEXT UNIQUE, n INTEGER)")
	ctx := testCtx(t)

	t.Run("commit", func(t *testing.T) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		// A read before any Exec works.
		var n int64
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM acct").Scan(&n); err != nil || n != 0 {
			t.Fatalf("read in tx: %d %v", n, err)
		}
		r1 := mustExec(t, tx, "INSERT INTO acct(owner, n) VALUES(?, ?)", "ann", 10)
		r2 := mustExec(t, tx, "INSERT INTO acct(owner, n) VALUES(?, ?)", "bob", 20)
		if _, err := r1.LastInsertId(); !errors.Is(err, nqsql.ErrResultPending) {
			t.Errorf("LastInsertId before Commit: got %v, want ErrResultPending", err)
		}
		if _, err := tx.QueryContext(ctx, "SELECT 1"); !errors.Is(err, nqsql.ErrQueryAfterWrite) {
			t.Errorf("Query after Exec: got %v, want ErrQueryAfterWrite", err)
		}
		// Nothing is visible before Commit.
		if n := scalar[int64](t, db, "SELECT count(*) FROM acct"); n != 0 {
			t.Errorf("before Commit: %d rows, want 0", n)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if id, err := r2.LastInsertId(); err != nil || id != 2 {
			t.Errorf("LastInsertId after Commit: %d %v, want 2", id, err)
		}
		if n, err := r1.RowsAffected(); err != nil || n != 1 {
			t.Errorf("RowsAffected after Commit: %d %v, want 1", n, err)
		}
		if n := scalar[int64](t, db, "SELECT sum(n) FROM acct"); n != 30 {
			t.Errorf("after Commit: sum %d, want 30", n)
		}
	})
	t.Run("statement fails", func(t *testing.T) {
		tx, _ := db.BeginTx(ctx, nil)
		r := mustExec(t, tx, "UPDATE acct SET n = n - 5 WHERE owner = 'ann'")
		mustExec(t, tx, "INSERT INTO acct(owner, n) VALUES('bob', 5)") // UNIQUE
		err := tx.Commit()
		var se *nqsql.StatementError
		if !errors.Is(err, nqsql.ErrRolledBack) || !errors.As(err, &se) || se.Index != 1 {
			t.Fatalf("got %v, want ErrRolledBack and statement 2's error", err)
		}
		if _, err := r.RowsAffected(); !errors.Is(err, nqsql.ErrRolledBack) {
			t.Errorf("RowsAffected after a failed Commit: got %v", err)
		}
		if n := scalar[int64](t, db, "SELECT n FROM acct WHERE owner = 'ann'"); n != 10 {
			t.Errorf("the first statement was applied: n = %d, want 10", n)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		tx, _ := db.BeginTx(ctx, nil)
		r := mustExec(t, tx, "DELETE FROM acct")
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.RowsAffected(); !errors.Is(err, nqsql.ErrRolledBack) {
			t.Errorf("RowsAffected after Rollback: got %v", err)
		}
		if n := scalar[int64](t, db, "SELECT count(*) FROM acct"); n != 2 {
			t.Errorf("after Rollback: %d rows, want 2", n)
		}
	})
	t.Run("query that writes", func(t *testing.T) {
		tx, _ := db.BeginTx(ctx, nil)
		defer tx.Rollback()
		_, err := tx.QueryContext(ctx, "DELETE FROM acct RETURNING id")
		if api.ErrorCode(err) != api.CodeForbidden || !strings.Contains(err.Error(), "Exec") {
			t.Errorf("got %v, want 403 saying to use Exec", err)
		}
		if n := scalar[int64](t, db, "SELECT count(*) FROM acct"); n != 2 {
			t.Errorf("%d rows, want 2", n)
		}
	})
	t.Run("read only", func(t *testing.T) {
		tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, "DELETE FROM acct"); !errors.Is(err, nqsql.ErrReadOnly) {
			t.Errorf("Exec: got %v, want ErrReadOnly", err)
		}
		var a, b int64
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM acct").Scan(&a); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRowContext(ctx, "SELECT sum(n) FROM acct").Scan(&b); err != nil || a != 2 || b != 30 {
			t.Errorf("reads: %d %d %v", a, b, err)
		}
		if err := tx.Commit(); err != nil {
			t.Errorf("commit of a read-only tx: %v", err)
		}
	})
	t.Run("isolation", func(t *testing.T) {
		if _, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable}); !errors.Is(err, nqsql.ErrIsolation) {
			t.Errorf("serializable: got %v, want ErrIsolation", err)
		}
		tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
		if err != nil {
			t.Fatal(err)
		}
		tx.Rollback()
	})
	t.Run("serialized writes", func(t *testing.T) {
		// Statements that compute from the database run at apply, one
		// transaction after the other: no increment is lost.
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tx, err := db.BeginTx(ctx, nil)
				if err == nil {
					_, err = tx.ExecContext(ctx, "UPDATE acct SET n = n + 1 WHERE owner = 'ann'")
				}
				if err == nil {
					_, err = tx.ExecContext(ctx, "UPDATE acct SET n = n - 1 WHERE owner = 'bob'")
				}
				if err == nil {
					err = tx.Commit()
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if a, b := scalar[int64](t, db, "SELECT n FROM acct WHERE owner = 'ann'"), scalar[int64](t, db, "SELECT n FROM acct WHERE owner = 'bob'"); a != 30 || b != 0 {
			t.Errorf("ann %d, bob %d; want 30 and 0", a, b)
		}
	})
	t.Run("buffered blob", func(t *testing.T) {
		tx, _ := db.BeginTx(ctx, nil)
		buf := []byte("abc")
		mustExec(t, tx, "INSERT INTO acct(owner, n) VALUES(?, 0)", buf)
		copy(buf, "xyz") // database/sql lets the caller reuse it
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if n := scalar[int64](t, db, "SELECT count(*) FROM acct WHERE owner = x'616263'"); n != 1 {
			t.Errorf("the buffered BLOB changed with the caller's slice")
		}
	})
}

// TestReadYourWrites holds one node's apply so it lags, then checks that a
// read through the pool, landing on that node, waits for the pool's own
// write instead of answering without it.
func TestReadYourWrites(t *testing.T) {
	// NATS prefers a queue subscriber on the requester's own leaf server
	// to one across the hub: with n1 and the driver on leaf1, every
	// request goes to n1; once n1 stops, to n2 on leaf2.
	hub := servicetest.StartHub(t)
	leaf1, _ := servicetest.StartLeaf(t, hub, "leaf1")
	leaf2, _ := servicetest.StartLeaf(t, hub, "leaf2")
	n1 := servicetest.StartNode(t, leaf1.ClientURL(), service.Config{NodeID: "n1", JSDomain: servicetest.HubDomain})
	n2 := servicetest.StartNode(t, leaf2.ClientURL(), service.Config{NodeID: "n2", JSDomain: servicetest.HubDomain})
	nc := servicetest.Connect(t, leaf1.ClientURL())
	c, err := nqsql.NewConnector(nc)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	db.SetMaxOpenConns(4)
	var seq nqsql.Seq
	mustExec(t, db, "CREATE TABLE t(x)", &seq)
	servicetest.WaitFor(t, 10*time.Second, "n2 applies the table", func() bool { return n2.DB("main").Applied() >= uint64(seq) })

	release := n2.DB("main").Hold()
	defer release()
	mustExec(t, db, "INSERT INTO t VALUES(1)", &seq)
	if n2.DB("main").Applied() >= uint64(seq) {
		t.Fatal("n2 applied the write while held")
	}
	n1.Stop(t)

	// Two connections of the pool: each read carries the pool's sequence.
	ctx := testCtx(t)
	conns := make([]*sql.Conn, 2)
	for i := range conns {
		if conns[i], err = db.Conn(ctx); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	var from nqsql.Seq
	for _, cn := range conns {
		var n int64
		err := cn.QueryRowContext(ctx, "SELECT count(*) FROM t", nqsql.Timeout(200*time.Millisecond), &from).Scan(&n)
		if !errors.Is(err, client.ErrNotReached) {
			t.Fatalf("read on the lagging node: got %d rows, err %v; want it to wait for sequence %d (not_reached)", n, err, seq)
		}
	}
	// A read-only transaction reads at the same sequence.
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.QueryContext(ctx, "SELECT count(*) FROM t", nqsql.Timeout(200*time.Millisecond)); !errors.Is(err, client.ErrNotReached) {
		t.Errorf("read-only tx on the lagging node: got %v, want not_reached", err)
	}
	tx.Rollback()

	release()
	for _, cn := range conns {
		var n int64
		if err := cn.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
			t.Errorf("after n2 caught up: %d rows, %v", n, err)
		}
	}
}

func TestChinook(t *testing.T) {
	data, err := os.ReadFile("../../../../shared/testdata/chinook/Chinook_Sqlite.sql")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("../shared/testdata/chinook/Chinook_Sqlite.sql is absent beside the checkout")
	}
	if err != nil {
		t.Fatal(err)
	}
	url, _ := start(t, 2)
	db := open(t, url)
	// The whole script in one Exec: one request, one stream entry.
	mustExec(t, db, strings.TrimPrefix(string(data), "\uFEFF"))
	if n := scalar[int64](t, db, "SELECT count(*) FROM Track"); n != 3503 {
		t.Errorf("tracks: %d, want 3503", n)
	}
	if sum := scalar[float64](t, db, "SELECT SUM(UnitPrice*Quantity) FROM InvoiceLine"); math.Abs(sum-2328.6) > 1e-6 {
		t.Errorf("sales: %v, want 2328.6", sum)
	}
	type row struct {
		artist string
		tracks int64
		price  float64
	}
	rows, err := db.QueryContext(testCtx(t), `SELECT ar.Name, count(*), round(avg(t.UnitPrice), 2)
		FROM Track t JOIN Album al ON al.AlbumId = t.AlbumId JOIN Artist ar ON ar.ArtistId = al.ArtistId
		GROUP BY ar.ArtistId ORDER BY count(*) DESC, ar.Name LIMIT 3`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.artist, &r.tracks, &r.price); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []row{{"Iron Maiden", 213, 0.99}, {"U2", 135, 0.99}, {"Led Zeppelin", 114, 0.99}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("top artists: got %v, want %v", got, want)
	}
	var hired time.Time
	if err := db.QueryRowContext(testCtx(t), "SELECT HireDate FROM Employee WHERE EmployeeId = 1").Scan(&hired); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2002, 8, 14, 0, 0, 0, 0, time.UTC); !hired.Equal(want) {
		t.Errorf("HireDate (DATETIME): got %v, want %v", hired, want)
	}
}

// TestRace runs reads and writes from many goroutines through one pool
// (go test -race).
func TestRace(t *testing.T) {
	url, _ := start(t, 2)
	nc := servicetest.Connect(t, url)
	c, err := nqsql.NewConnector(nc)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, g INTEGER)")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if _, err := db.ExecContext(testCtx(t), "INSERT INTO t(g) VALUES(?)", g); err != nil {
					errs <- err
					return
				}
				// Read-your-writes: this goroutine's rows are all there.
				var n int64
				if err := db.QueryRowContext(testCtx(t), "SELECT count(*) FROM t WHERE g = ?", g).Scan(&n); err != nil {
					errs <- err
					return
				}
				if n != int64(i+1) {
					errs <- fmt.Errorf("goroutine %d: %d rows after %d writes", g, n, i+1)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
