package replica_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client/nqsql"
	"github.com/nqlite/nqlite/service/embedded"
	"github.com/nqlite/nqlite/service/replica"
	"github.com/nqlite/nqlite/service/servicetest"
)

// quiet is the logger of the replicas the tests start: node logs only
// with NQLITE_TEST_LOG=1, as servicetest's nodes.
func quiet() *slog.Logger {
	if os.Getenv("NQLITE_TEST_LOG") != "" {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startReplica starts a replica with node id id on the server at url (its
// own connection, closed at cleanup) and stops it at cleanup.
func startReplica(t *testing.T, url, id string, cfg service.Config) *replica.Replica {
	t.Helper()
	cfg.NodeID = id
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Logger = quiet()
	r, err := replica.Start(testCtx(t), servicetest.Connect(t, url), cfg)
	if err != nil {
		t.Fatalf("start replica %s: %v", id, err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("stop replica %s: %v", id, err)
		}
	})
	return r
}

// localDB returns the replica's *sql.DB on "main".
func localDB(t *testing.T, r *replica.Replica, opts ...nqsql.Option) *sql.DB {
	t.Helper()
	db, err := r.DB("main", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// natsDB returns a *sql.DB of the driver over NATS at url.
func natsDB(t *testing.T, url string) *sql.DB {
	t.Helper()
	c, err := nqsql.NewConnector(servicetest.Connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	t.Cleanup(func() { db.Close() })
	return db
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

// do runs SQL on node n itself (service.Node.Do), so the test knows which
// node answered.
func do(t *testing.T, n *service.Node, req api.Request) *api.Response {
	t.Helper()
	resp, err := n.Do(testCtx(t), "main", &req, false)
	if err != nil {
		t.Fatalf("%s: %+v: %v", n.ID(), req, err)
	}
	for i, r := range resp.Results {
		if r.Error != "" {
			t.Fatalf("%s: statement %d: %s", n.ID(), i+1, r.Error)
		}
	}
	return resp
}

func stmts(sql ...string) []api.Statement {
	out := make([]api.Statement, len(sql))
	for i, s := range sql {
		out[i] = api.Statement{SQL: s}
	}
	return out
}

// TestReplica_ReadsAndWrites runs a replica beside a normal node on one
// nats-server: writes through the replica's *sql.DB reach the other node
// through the stream, writes of the other node reach the replica, and
// the replica's reads wait only for what they must (after_seq, strong).
func TestReplica_ReadsAndWrites(t *testing.T) {
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	r := startReplica(t, ns.ClientURL(), "r1", service.Config{})
	db := localDB(t, r)
	ctx := testCtx(t)

	// A write through the replica returns once the replica applied it, so
	// the next read sees it.
	var seq nqsql.Seq
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT)")
	res := mustExec(t, db, "INSERT INTO t(who) VALUES(?)", "replica", &seq)
	if id, err := res.LastInsertId(); err != nil || id != 1 {
		t.Fatalf("LastInsertId: %d %v", id, err)
	}
	if got := r.Node().DB("main").Applied(); got < uint64(seq) {
		t.Fatalf("the write returned before the replica applied it: applied %d, entry %d", got, seq)
	}
	if got := scalar[string](t, db, "SELECT who FROM t WHERE id = 1"); got != "replica" {
		t.Fatalf("read after write: %q", got)
	}
	// It went through the stream: the other node applies it.
	resp := do(t, n1.Node, api.Request{AfterSeq: uint64(seq), Statements: stmts("SELECT who FROM t")})
	if len(resp.Results[0].Values) != 1 || resp.Results[0].Values[0][0] != "replica" {
		t.Fatalf("n1 after_seq %d: %+v", seq, resp.Results[0].Values)
	}

	// The other way, with the replica held behind: a read at the level
	// none answers from what the replica has (no wait), after_seq waits
	// and times out, and once the replica applies, after_seq and strong
	// see n1's write.
	release := r.Node().DB("main").Hold()
	defer release()
	w := do(t, n1.Node, api.Request{Statements: []api.Statement{{SQL: "INSERT INTO t(who) VALUES(?)", Params: []any{"n1"}}}})
	if got := scalar[int64](t, db, "SELECT count(*) FROM t"); got != 1 {
		t.Fatalf("level none on the held replica: %d rows, want 1 (its own copy)", got)
	}
	var n int64
	err := db.QueryRowContext(ctx, "SELECT count(*) FROM t", nqsql.AfterSeq(w.Seq), nqsql.Timeout(200*time.Millisecond)).Scan(&n)
	if !errors.Is(err, api.ErrNotReached) {
		t.Fatalf("after_seq %d on the held replica: %d rows, %v; want 504 not_reached", w.Seq, n, err)
	}
	release()
	if got := scalar[int64](t, db, "SELECT count(*) FROM t", nqsql.AfterSeq(w.Seq)); got != 2 {
		t.Fatalf("after_seq %d: %d rows, want 2", w.Seq, got)
	}
	w = do(t, n1.Node, api.Request{Statements: stmts("INSERT INTO t(who) VALUES('n1 again')")})
	var who string
	var from nqsql.Seq
	if err := db.QueryRowContext(ctx, "SELECT who FROM t ORDER BY id DESC LIMIT 1", nqsql.Strong, &from).Scan(&who); err != nil || who != "n1 again" || uint64(from) < w.Seq {
		t.Fatalf("strong read: %q at %d, %v; want n1's write, entry %d", who, from, err, w.Seq)
	}

	// A read-only *sql.DB refuses writes before anything is published.
	// (The strong read appended a barrier, which the replica applies a
	// moment after answering: wait for it before taking the baseline.)
	if err := r.Node().DB("main").WaitApplied(ctx, r.Node().Stats("main").StreamLastSeq); err != nil {
		t.Fatal(err)
	}
	before := r.Node().DB("main").Applied()
	ro := localDB(t, r, nqsql.WithReadOnly())
	if _, err := ro.ExecContext(ctx, "DELETE FROM t"); api.ErrorCode(err) != api.CodeForbidden {
		t.Fatalf("write on a read-only DB: %v, want 403", err)
	}
	if got := scalar[int64](t, ro, "SELECT count(*) FROM t"); got != 3 {
		t.Fatalf("read-only DB: %d rows", got)
	}
	if got := r.Node().DB("main").Applied(); got != before {
		t.Fatalf("the refused write reached the stream: applied %d, was %d", got, before)
	}

	// Idempotency keys and per-call options work as over NATS.
	for i := 0; i < 2; i++ {
		res := mustExec(t, db, "INSERT INTO t(who) VALUES('once')", nqsql.IdempotencyKey("k1"))
		if _, err := res.RowsAffected(); i == 1 && !errors.Is(err, nqsql.ErrDuplicate) {
			t.Fatalf("retry: %v, want ErrDuplicate", err)
		}
	}
	if got := scalar[int64](t, db, "SELECT count(*) FROM t WHERE who = 'once'"); got != 1 {
		t.Fatalf("a retried key: %d rows, want 1", got)
	}
}

// TestReplica_LocalReads checks that the replica's reads need no NATS: with
// the nats-server down they still answer, while writes and strong reads,
// which need JetStream, fail with 503; when the server is back, writes
// work again.
func TestReplica_LocalReads(t *testing.T) {
	ns := servicetest.StartServer(t)
	r := startReplica(t, ns.ClientURL(), "r1", service.Config{})
	db := localDB(t, r)
	ctx := testCtx(t)
	mustExec(t, db, "CREATE TABLE t(x); INSERT INTO t VALUES(1), (2), (3)")

	restart := servicetest.ShutdownServer(t, ns)
	servicetest.WaitFor(t, 10*time.Second, "the replica's connection to notice", func() bool { return !r.Conn().IsConnected() })
	for i := 0; i < 100; i++ {
		if got := scalar[int64](t, db, "SELECT sum(x) FROM t"); got != 6 {
			t.Fatalf("read %d with NATS down: %d, want 6", i, got)
		}
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO t VALUES(4)", nqsql.Timeout(300*time.Millisecond)); !errors.Is(err, api.ErrNotStored) && !errors.Is(err, api.ErrUnknown) {
		t.Fatalf("write with NATS down: %v, want not_stored or unknown (the connection is down: the publish may be buffered)", err)
	}
	if _, err := db.QueryContext(ctx, "SELECT 1", nqsql.Strong, nqsql.Timeout(300*time.Millisecond)); api.ErrorCode(err) != api.CodeUnavailable {
		t.Fatalf("strong read with NATS down: %v, want 503", err)
	}

	restart()
	servicetest.WaitFor(t, 10*time.Second, "the replica to reconnect", r.Conn().IsConnected)
	mustExec(t, db, "INSERT INTO t VALUES(5)", nqsql.IdempotencyKey("after-restart"))
	if got := scalar[int64](t, db, "SELECT sum(x) FROM t WHERE x <> 4"); got != 11 {
		t.Fatalf("after the restart: %d, want 11", got)
	}
	// Before the restarted server's cleanup shuts it down again.
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestReplica_SameResults checks that a request gives the same results
// and the same errors through the replica (no JSON) as through NATS (the
// JSON wire form), values of every type included.
func TestReplica_SameResults(t *testing.T) {
	ns := servicetest.StartServer(t)
	r := startReplica(t, ns.ClientURL(), "r1", service.Config{})
	local, remote := localDB(t, r), natsDB(t, ns.ClientURL())
	mustExec(t, local, "CREATE TABLE v(id INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB, d DATETIME, n)")
	rows := [][]any{
		{int64(math.MaxInt64), 1.5, "héllo\n\"x\"\x01", []byte{0, 1, 255}, "2024-05-01 12:30:00", nil},
		{int64(math.MinInt64), math.Inf(-1), "", []byte{}, "not a date", int64(9007199254740993)},
		{int64(0), 2.0, "9007199254740993", []byte(nil), nil, 5e-324},
	}
	for _, row := range rows {
		mustExec(t, local, "INSERT INTO v(i, f, s, b, d, n) VALUES(?, ?, ?, ?, ?, ?)", row...)
	}
	mustExec(t, remote, "INSERT INTO v(i, f, s, b, d, n) VALUES(-1, 1e308, 'x', x'00', CURRENT_TIMESTAMP, NULL)")

	read := func(db *sql.DB, query string, args ...any) ([]string, [][]any, error) {
		rs, err := db.QueryContext(testCtx(t), query, args...)
		if err != nil {
			return nil, nil, err
		}
		defer rs.Close()
		cols, _ := rs.Columns()
		types, _ := rs.ColumnTypes()
		for _, ct := range types {
			cols = append(cols, ct.DatabaseTypeName())
		}
		var out [][]any
		for rs.Next() {
			vals := make([]any, len(types))
			ptrs := make([]any, len(vals))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rs.Scan(ptrs...); err != nil {
				return nil, nil, err
			}
			out = append(out, vals)
		}
		return cols, out, rs.Err()
	}
	var seq nqsql.Seq
	mustExec(t, remote, "SELECT 1", &seq)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"SELECT * FROM v ORDER BY id", nil},
		{"SELECT id, i + 1, f * 2, s || '!', hex(b), typeof(n), n AS n, n AS n FROM v WHERE id > ? ORDER BY id", []any{0}},
		{"SELECT :a AS a, @b AS b", []any{sql.Named("a", "x"), sql.Named("b", []byte{7})}},
		{"PRAGMA table_info(v)", nil},
		{"SELECT nope FROM v", nil},
		{"SELECT ?", []any{1, 2}},
		{"ATTACH 'x.db' AS x", nil},
		{"INSERT INTO v(i) VALUES(1) RETURNING id, i", nil},
	} {
		lc, lv, lerr := read(local, q.sql, append(q.args, nqsql.AfterSeq(seq))...)
		rc, rv, rerr := read(remote, q.sql, q.args...)
		if fmt.Sprint(lerr) != fmt.Sprint(rerr) || api.ErrorCode(lerr) != api.ErrorCode(rerr) {
			t.Errorf("%s: errors differ:\n local %v\n  nats %v", q.sql, lerr, rerr)
			continue
		}
		if strings.HasPrefix(q.sql, "INSERT") {
			// Two inserts: another id each, the same shape.
			if !reflect.DeepEqual(lc, rc) || len(lv) != 1 || len(rv) != 1 || lv[0][1] != rv[0][1] {
				t.Errorf("%s: local %v %v, nats %v %v", q.sql, lc, lv, rc, rv)
			}
			continue
		}
		if q.sql == "SELECT * FROM v ORDER BY id" && len(lv) != 4 {
			t.Errorf("%s: %d rows, want 4", q.sql, len(lv))
		}
		if !reflect.DeepEqual(lc, rc) || !reflect.DeepEqual(lv, rv) {
			t.Errorf("%s: results differ:\n local %v %#v\n  nats %v %#v", q.sql, lc, lv, rc, rv)
		}
	}
}

// TestReplica_Chinook loads Chinook through the replica's *sql.DB and
// queries it there and on another node.
func TestReplica_Chinook(t *testing.T) {
	data, err := os.ReadFile("../../../shared/testdata/chinook/Chinook_Sqlite.sql")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("../shared/testdata/chinook/Chinook_Sqlite.sql is absent beside the checkout")
	}
	if err != nil {
		t.Fatal(err)
	}
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	r := startReplica(t, ns.ClientURL(), "r1", service.Config{})
	db := localDB(t, r)
	var seq nqsql.Seq
	mustExec(t, db, strings.TrimPrefix(string(data), "\uFEFF"), &seq)
	if n := scalar[int64](t, db, "SELECT count(*) FROM Track"); n != 3503 {
		t.Errorf("tracks: %d, want 3503", n)
	}
	if sum := scalar[float64](t, db, "SELECT SUM(UnitPrice*Quantity) FROM InvoiceLine"); math.Abs(sum-2328.6) > 1e-6 {
		t.Errorf("sales: %v, want 2328.6", sum)
	}
	top := `SELECT ar.Name, count(*), round(avg(t.UnitPrice), 2)
		FROM Track t JOIN Album al ON al.AlbumId = t.AlbumId JOIN Artist ar ON ar.ArtistId = al.ArtistId
		GROUP BY ar.ArtistId ORDER BY count(*) DESC, ar.Name LIMIT 3`
	rows, err := db.QueryContext(testCtx(t), top)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var name string
		var n int64
		var price float64
		if err := rows.Scan(&name, &n, &price); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %d %.2f", name, n, price))
	}
	rows.Close()
	if want := []string{"Iron Maiden 213 0.99", "U2 135 0.99", "Led Zeppelin 114 0.99"}; !reflect.DeepEqual(got, want) {
		t.Errorf("top artists: got %v, want %v", got, want)
	}
	var hired time.Time
	if err := db.QueryRowContext(testCtx(t), "SELECT HireDate FROM Employee WHERE EmployeeId = 1").Scan(&hired); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2002, 8, 14, 0, 0, 0, 0, time.UTC); !hired.Equal(want) {
		t.Errorf("HireDate (DATETIME): got %v, want %v", hired, want)
	}
	// The other node holds the same data, and both answer a 3,503-row
	// read (about 400 kB) alike.
	all := "SELECT * FROM Track ORDER BY TrackId"
	want := do(t, r.Node(), api.Request{Statements: stmts(all)}).Results[0]
	other := do(t, n1.Node, api.Request{AfterSeq: uint64(seq), Statements: stmts(all)}).Results[0]
	if len(want.Values) != 3503 || !reflect.DeepEqual(want, other) {
		t.Errorf("Track on r1 (%d rows) and n1 (%d rows) differ", len(want.Values), len(other.Values))
	}
}

// TestReplica_Tx runs the driver's transactions through the replica:
// buffered writes committed as one entry, rollbacks, reads in a
// transaction, and increments serialized by the stream with another
// node's.
func TestReplica_Tx(t *testing.T) {
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	r := startReplica(t, ns.ClientURL(), "r1", service.Config{})
	db := localDB(t, r)
	ctx := testCtx(t)
	mustExec(t, db, "CREATE TABLE acct(id INTEGER PRIMARY KEY, owner TEXT UNIQUE, n INTEGER)")

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM acct").Scan(&n); err != nil || n != 0 {
		t.Fatalf("read in tx: %d %v", n, err)
	}
	r1 := mustExec(t, tx, "INSERT INTO acct(owner, n) VALUES(?, ?)", "ann", 10)
	mustExec(t, tx, "INSERT INTO acct(owner, n) VALUES(?, ?)", "bob", 20)
	if _, err := r1.LastInsertId(); !errors.Is(err, nqsql.ErrResultPending) {
		t.Errorf("before Commit: %v, want ErrResultPending", err)
	}
	if _, err := tx.QueryContext(ctx, "SELECT 1"); !errors.Is(err, nqsql.ErrQueryAfterWrite) {
		t.Errorf("Query after Exec: %v, want ErrQueryAfterWrite", err)
	}
	if got := scalar[int64](t, db, "SELECT count(*) FROM acct"); got != 0 {
		t.Errorf("before Commit: %d rows", got)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if id, err := r1.LastInsertId(); err != nil || id != 1 {
		t.Errorf("after Commit: %d %v", id, err)
	}

	// A failing statement rolls the whole transaction back.
	tx, _ = db.BeginTx(ctx, nil)
	mustExec(t, tx, "UPDATE acct SET n = n - 5 WHERE owner = 'ann'")
	mustExec(t, tx, "INSERT INTO acct(owner, n) VALUES('bob', 5)")
	var se *nqsql.StatementError
	if err := tx.Commit(); !errors.Is(err, nqsql.ErrRolledBack) || !errors.As(err, &se) || se.Index != 1 {
		t.Fatalf("commit: %v, want ErrRolledBack and statement 2's error", err)
	}
	if got := scalar[int64](t, db, "SELECT n FROM acct WHERE owner = 'ann'"); got != 10 {
		t.Errorf("ann after the rolled back transaction: %d, want 10", got)
	}
	// Rollback sends nothing; a query that writes is refused in a tx.
	tx, _ = db.BeginTx(ctx, nil)
	mustExec(t, tx, "DELETE FROM acct")
	tx.Rollback()
	tx, _ = db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if _, err := tx.QueryContext(ctx, "DELETE FROM acct RETURNING id"); api.ErrorCode(err) != api.CodeForbidden {
		t.Errorf("a writing Query in a transaction: %v, want 403", err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM acct"); !errors.Is(err, nqsql.ErrReadOnly) {
		t.Errorf("Exec in a read-only transaction: %v", err)
	}
	tx.Rollback()
	if got := scalar[int64](t, db, "SELECT count(*) FROM acct"); got != 2 {
		t.Errorf("after the rollbacks: %d rows, want 2", got)
	}

	// Increments from the replica and over NATS to n1 interleave in the
	// stream; none is lost.
	remote := natsDB(t, ns.ClientURL())
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(db *sql.DB) {
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
		}([]*sql.DB{db, remote}[i%2])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	last := do(t, n1.Node, api.Request{Level: api.LevelStrong, Statements: stmts("SELECT 1")}).Seq
	for _, d := range []*sql.DB{db, remote} {
		if a, b := scalar[int64](t, d, "SELECT n FROM acct WHERE owner = 'ann'", nqsql.AfterSeq(last)), scalar[int64](t, d, "SELECT n FROM acct WHERE owner = 'bob'", nqsql.AfterSeq(last)); a != 50 || b != -20 {
			t.Errorf("ann %d, bob %d; want 50 and -20", a, b)
		}
	}
}

// TestReplica_Stop checks a stopped replica: its *sql.DBs are closed,
// Do answers ErrStopped, the other node serves on, and a replica started
// again on the same data dir resumes where it stopped and catches up.
func TestReplica_Stop(t *testing.T) {
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	dir := t.TempDir()
	nc := servicetest.Connect(t, ns.ClientURL())
	r, err := replica.Start(testCtx(t), nc, service.Config{NodeID: "r1", DataDir: dir, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	db := localDB(t, r)
	mustExec(t, db, "CREATE TABLE t(x); INSERT INTO t VALUES(1)")

	// Requests in flight while it stops finish.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var n int64
				err := db.QueryRowContext(context.Background(), "SELECT count(*) FROM t").Scan(&n)
				if err != nil {
					// database/sql's own "sql: database is closed", or
					// a call that reached the driver or the node as they
					// closed.
					if !strings.Contains(err.Error(), "database is closed") && !errors.Is(err, nqsql.ErrClosed) && !errors.Is(err, service.ErrStopped) {
						errs <- err
					}
					return
				}
				if n != 1 {
					errs <- fmt.Errorf("%d rows", n)
					return
				}
			}
		}()
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("read while stopping: %v", err)
	}
	if err := r.Stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if err := db.PingContext(testCtx(t)); err == nil {
		t.Error("the replica's *sql.DB answers after Stop")
	}
	if _, err := r.DB("main"); !errors.Is(err, replica.ErrStopped) {
		t.Errorf("DB after Stop: %v, want ErrStopped", err)
	}
	if _, err := r.Node().Do(testCtx(t), "main", &api.Request{Statements: stmts("SELECT 1")}, false); !errors.Is(err, service.ErrStopped) {
		t.Errorf("Do after Stop: %v, want ErrStopped", err)
	}
	if nc.IsClosed() {
		t.Error("Stop closed the caller's NATS connection")
	}
	// The other node serves on: NATS requests reach it alone now.
	mustExec(t, natsDB(t, ns.ClientURL()), "INSERT INTO t VALUES(2)")
	w := do(t, n1.Node, api.Request{Statements: stmts("INSERT INTO t VALUES(3)")})

	r2 := startReplica(t, ns.ClientURL(), "r1", service.Config{DataDir: dir})
	if got := r2.Node().DB("main").Applied(); got < w.Seq {
		t.Fatalf("restarted replica applied %d, want at least %d (catch-up at start)", got, w.Seq)
	}
	if got := scalar[int64](t, localDB(t, r2), "SELECT sum(x) FROM t"); got != 6 {
		t.Errorf("restarted replica: sum %d, want 6", got)
	}
}

// TestReplica_StartEmbedded runs the nats-server in the replica's process:
// standalone with JetStream and a listener another node connects to, and
// as a leaf node of a hub.
func TestReplica_StartEmbedded(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		port := servicetest.FreePorts(t, 1)[0]
		r, err := replica.StartEmbedded(testCtx(t), service.Config{NodeID: "r1", DataDir: t.TempDir(), Logger: quiet()},
			replica.ServerOptions{Listen: fmt.Sprintf("127.0.0.1:%d", port)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Stop() })
		db := localDB(t, r)
		var seq nqsql.Seq
		mustExec(t, db, "CREATE TABLE t(x); INSERT INTO t VALUES('from r1')", &seq)
		n1 := servicetest.StartNode(t, r.Server().ClientURL(), service.Config{NodeID: "n1"})
		resp := do(t, n1.Node, api.Request{AfterSeq: uint64(seq), Statements: stmts("SELECT x FROM t")})
		if len(resp.Results[0].Values) != 1 {
			t.Fatalf("n1: %+v", resp.Results[0])
		}
		w := do(t, n1.Node, api.Request{Statements: stmts("INSERT INTO t VALUES('from n1')")})
		if got := scalar[int64](t, db, "SELECT count(*) FROM t", nqsql.AfterSeq(w.Seq)); got != 2 {
			t.Fatalf("r1 after n1's write: %d rows", got)
		}
		n1.Stop(t)
		if err := r.Stop(); err != nil {
			t.Fatal(err)
		}
		if r.Server().Running() {
			t.Error("the embedded server runs after Stop")
		}
	})
	t.Run("leaf", func(t *testing.T) {
		hub := servicetest.StartHub(t)
		n1 := servicetest.StartNode(t, hub.ClientURL(), service.Config{NodeID: "n1", JSDomain: servicetest.HubDomain})
		r, err := replica.StartEmbedded(testCtx(t), service.Config{NodeID: "edge1", DataDir: t.TempDir(), JSDomain: servicetest.HubDomain, Logger: quiet()},
			replica.ServerOptions{LeafRemotes: []string{fmt.Sprintf("127.0.0.1:%d", hub.LeafPort)}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Stop() })
		db := localDB(t, r)
		var seq nqsql.Seq
		mustExec(t, db, "CREATE TABLE t(x); INSERT INTO t VALUES(1)", &seq)
		resp := do(t, n1.Node, api.Request{AfterSeq: uint64(seq), Statements: stmts("SELECT count(*) FROM t")})
		if resp.Results[0].Values[0][0] != int64(1) {
			t.Fatalf("hub node: %+v", resp.Results[0])
		}
	})
	t.Run("errors", func(t *testing.T) {
		ctx := testCtx(t)
		for _, tt := range []struct {
			name string
			cfg  service.Config
			so   replica.ServerOptions
			want string
		}{
			{"no data dir", service.Config{NodeID: "r1"}, replica.ServerOptions{}, "DataDir"},
			{"leaf without domain", service.Config{NodeID: "r1", DataDir: t.TempDir()}, replica.ServerOptions{LeafRemotes: []string{"127.0.0.1:1"}}, "JSDomain"},
			{"creds without leaf", service.Config{NodeID: "r1", DataDir: t.TempDir()}, replica.ServerOptions{LeafCreds: "x.creds"}, "LeafRemotes"},
			{"bad listen", service.Config{NodeID: "r1", DataDir: t.TempDir()}, replica.ServerOptions{Listen: "nope"}, "Listen"},
		} {
			r, err := replica.StartEmbedded(ctx, tt.cfg, tt.so)
			if err == nil {
				r.Stop()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: got %v, want an error naming %s", tt.name, err, tt.want)
			}
		}
		var oe *embedded.OptionError
		if _, err := replica.StartEmbedded(ctx, service.Config{NodeID: "r1", DataDir: t.TempDir()}, replica.ServerOptions{Listen: "nope"}); !errors.As(err, &oe) || oe.Field != "Listen" {
			t.Errorf("bad listen: %v, want an *embedded.OptionError", err)
		}
	})
}

// TestReplica_Errors checks bad arguments and bad requests: a clear
// error, nothing published.
func TestReplica_Errors(t *testing.T) {
	ns := servicetest.StartServer(t)
	r := startReplica(t, ns.ClientURL(), "r1", service.Config{})
	if _, err := r.DB("other"); !errors.Is(err, service.ErrNoDatabase) {
		t.Errorf("DB of a database not served: %v, want ErrNoDatabase", err)
	}
	if _, err := r.DB("main", nqsql.WithTimeout(0)); err == nil {
		t.Error("a bad option: no error")
	}
	if _, err := replica.Start(testCtx(t), nil, service.Config{NodeID: "x"}); err == nil {
		t.Error("nil connection: no error")
	}
	ctx := testCtx(t)
	before := r.Node().DB("main").Applied()
	for _, tt := range []struct {
		name string
		req  api.Request
		code int
	}{
		{"unsupported value", api.Request{Statements: []api.Statement{{SQL: "INSERT INTO t VALUES(?)", Params: []any{int32(1)}}}}, api.CodeBadRequest},
		{"NUL", api.Request{Statements: stmts("CREATE TABLE t(x)\x00")}, api.CodeBadRequest},
		{"no statement", api.Request{}, api.CodeBadRequest},
		{"bad level", api.Request{Level: "weakest", Statements: stmts("SELECT 1")}, api.CodeBadRequest},
		{"sandbox", api.Request{Statements: stmts("PRAGMA journal_mode=DELETE")}, api.CodeForbidden},
		{"temp table", api.Request{Statements: stmts("CREATE TEMP TABLE x(a)")}, api.CodeBadRequest},
	} {
		_, err := r.Node().Do(ctx, "main", &tt.req, false)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != tt.code {
			t.Errorf("%s: got %v, want a %d *api.Error", tt.name, err, tt.code)
		}
	}
	if _, err := r.Node().Do(ctx, "other", &api.Request{Statements: stmts("SELECT 1")}, false); !errors.Is(err, service.ErrNoDatabase) {
		t.Errorf("Do on a database not served: %v", err)
	}
	if got := r.Node().DB("main").Applied(); got != before {
		t.Errorf("a refused request reached the stream: applied %d, was %d", got, before)
	}
	// A cancelled context: the error wraps context.Canceled and a
	// read_timeout (504: nothing was published; never 408, which says
	// stored).
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := r.Node().Do(cctx, "main", &api.Request{AfterSeq: before + 100, Statements: stmts("SELECT 1")}, false)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, api.ErrReadTimeout) || api.ErrorCode(err) != api.CodeGatewayTimeout {
		t.Errorf("cancelled: %v, want context.Canceled and a 504 read_timeout", err)
	}
	// Through a transport of its own: the Replica is an nqsql.Transport.
	c, err := nqsql.NewTransportConnector(r, nqsql.WithDB("main"))
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	if got := scalar[int64](t, db, "SELECT 40 + 2"); got != 42 {
		t.Errorf("NewTransportConnector(r): %d", got)
	}
	if _, err := nqsql.NewTransportConnector(nil); err == nil {
		t.Error("nil transport: no error")
	}
}
