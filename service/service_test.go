package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// single starts one nats-server and one node, and returns a client.
func single(tb testing.TB) (*server.Server, *servicetest.Node, *client.Client) {
	tb.Helper()
	ns := servicetest.StartServer(tb)
	node := servicetest.StartNode(tb, ns.ClientURL(), service.Config{NodeID: "n1"})
	return ns, node, client.New(servicetest.Connect(tb, ns.ClientURL()))
}

// do sends a raw payload to database main and fails on request errors.
func do(tb testing.TB, c *client.Client, payload string) *api.Response {
	tb.Helper()
	resp, err := c.Do(context.Background(), "main", []byte(payload), 0)
	if err != nil {
		tb.Fatalf("request %s: %v", payload, err)
	}
	return resp
}

// doErr sends a payload expected to fail at request level and returns the
// error.
func doErr(tb testing.TB, c *client.Client, payload string) *api.Error {
	tb.Helper()
	resp, err := c.Do(context.Background(), "main", []byte(payload), 0)
	var ae *api.Error
	if !errors.As(err, &ae) {
		tb.Fatalf("request %s: got response %+v, err %v; want a request error", payload, resp, err)
	}
	return ae
}

// ok fails on any statement error in resp.
func ok(tb testing.TB, resp *api.Response) *api.Response {
	tb.Helper()
	for i, r := range resp.Results {
		if r.Error != "" {
			tb.Fatalf("statement %d: %s", i+1, r.Error)
		}
	}
	return resp
}

func scalar(tb testing.TB, c *client.Client, sql string) any {
	tb.Helper()
	resp := ok(tb, do(tb, c, `{"statements": [`+string(api.AppendString(nil, sql))+`], "format": "values", "level": "strong"}`))
	if len(resp.Results) != 1 || len(resp.Results[0].Values) != 1 {
		tb.Fatalf("%s: want one row, got %+v", sql, resp.Results)
	}
	return resp.Results[0].Values[0][0]
}

func streamLastSeq(tb testing.TB, nc *nats.Conn, db string) uint64 {
	tb.Helper()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), service.StreamName(db))
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.LastSeq
}

// streamEntries counts the messages of db's stream with a sequence in
// (after, upto] that are not barriers (a strong read appends one: see
// apply.Barrier), that is what requests published.
func streamEntries(tb testing.TB, nc *nats.Conn, db string, after, upto uint64) int {
	tb.Helper()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), service.StreamName(db))
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for seq := after + 1; seq <= upto; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			tb.Fatalf("stream message %d: %v", seq, err)
		}
		if !apply.IsBarrier(m.Data) {
			n++
		}
	}
	return n
}

func TestQuery_Forms(t *testing.T) {
	ns, _, c := single(t)
	nc := servicetest.Connect(t, ns.ClientURL())

	// 1. Plain SQL text, several statements.
	resp := ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, n ANY); INSERT INTO t(name) VALUES('fiona')"))
	if got, want := len(resp.Results), 2; got != want {
		t.Fatalf("results: got %d, want %d", got, want)
	}
	if got := resp.Results[1]; !got.Write || got.LastInsertID != 1 || got.RowsAffected != 1 {
		t.Fatalf("insert result: %+v", got)
	}
	if resp.Seq != 1 {
		t.Fatalf("seq: got %d, want 1", resp.Seq)
	}

	// 2. JSON array: positional, named (all prefixes), BLOBs both ways.
	ok(t, do(t, c, `[
		["INSERT INTO t(id, name, score, n) VALUES(?, ?, ?, ?)", 2, "bob", 1.0, 9007199254740993],
		["INSERT INTO t(id, name, score) VALUES(:id, @name, $score)", {"id": 3, ":name": "carol", "$score": 2.5}],
		["INSERT INTO t(id, data) VALUES(?, ?)", 4, {"base64": "AAEC/w=="}],
		["INSERT INTO t(id, data) VALUES(?, ?)", 5, [0, 1, 2, 255]],
		["INSERT INTO t(id, n) VALUES(?, ?)", 6, true]
	]`))
	resp = ok(t, do(t, c, `{"statements": ["SELECT id, name, score, data, n FROM t ORDER BY id"], "format": "values"}`))
	r := resp.Results[0]
	if want := []string{"id", "name", "score", "data", "n"}; !reflect.DeepEqual(r.Columns, want) {
		t.Fatalf("columns: got %v, want %v", r.Columns, want)
	}
	if want := []string{"INTEGER", "TEXT", "REAL", "BLOB", "ANY"}; !reflect.DeepEqual(r.Types, want) {
		t.Fatalf("types: got %v, want %v", r.Types, want)
	}
	want := [][]any{
		{int64(1), "fiona", nil, nil, nil},
		{int64(2), "bob", 1.0, nil, int64(9007199254740993)}, // no float64 rounding
		{int64(3), "carol", 2.5, nil, nil},
		{int64(4), nil, nil, []byte{0, 1, 2, 255}, nil},
		{int64(5), nil, nil, []byte{0, 1, 2, 255}, nil},
		{int64(6), nil, nil, nil, int64(1)},
	}
	if !reflect.DeepEqual(r.Values, want) {
		t.Fatalf("values:\n got %#v\nwant %#v", r.Values, want)
	}

	// Raw JSON: a REAL keeps its '.', a BLOB is {"base64": ...}.
	msg, err := nc.Request("nqlite.query.main", []byte(`SELECT score, data FROM t WHERE id IN (2, 4) ORDER BY id`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(msg.Data, []byte(`{"score":1.0,"data":null}`)) || !bytes.Contains(msg.Data, []byte(`"data":{"base64":"AAEC/w=="}`)) {
		t.Fatalf("raw rows: %s", msg.Data)
	}

	// 3. Rows format (the default) and duplicate column names in values.
	resp = ok(t, do(t, c, `{"statements": "SELECT name FROM t WHERE id = 1"}`))
	if got := resp.Results[0].Rows; len(got) != 1 || got[0]["name"] != "fiona" {
		t.Fatalf("rows: %+v", got)
	}
	resp = ok(t, do(t, c, `{"statements": ["SELECT 1 AS a, 2 AS a"], "format": "values"}`))
	if got := resp.Results[0]; !reflect.DeepEqual(got.Columns, []string{"a", "a"}) || !reflect.DeepEqual(got.Values, [][]any{{int64(1), int64(2)}}) {
		t.Fatalf("duplicate columns: %+v", got)
	}

	// RETURNING gives the write's rows too.
	resp = ok(t, do(t, c, `INSERT INTO t(id, name) VALUES(7, 'dan') RETURNING id, upper(name) AS up`))
	if got := resp.Results[0]; !got.Write || got.RowsAffected != 1 || len(got.Rows) != 1 || got.Rows[0]["up"] != "DAN" {
		t.Fatalf("returning: %+v", got)
	}
	// A read's seq is the applied sequence: a token for after_seq.
	resp = ok(t, do(t, c, `SELECT count(*) AS n FROM t`))
	if resp.Seq != streamLastSeq(t, nc, "main") || resp.Node != "n1" {
		t.Fatalf("read seq %d node %q, stream last %d", resp.Seq, resp.Node, streamLastSeq(t, nc, "main"))
	}
}

func TestQuery_Errors(t *testing.T) {
	ns, _, c := single(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL)"))
	seq := streamLastSeq(t, nc, "main")

	// Per-statement errors: the others are unaffected.
	resp := do(t, c, "INSERT INTO t VALUES(1, 'a'); INSERT INTO t VALUES(1, 'dup'); INSERT INTO t VALUES(2, 'b')")
	if resp.Results[0].Error != "" || resp.Results[2].Error != "" {
		t.Fatalf("results: %+v", resp.Results)
	}
	if got := resp.Results[1].Error; !strings.Contains(got, "UNIQUE constraint failed: t.id") {
		t.Fatalf("error: %q", got)
	}
	if got := scalar(t, c, "SELECT count(*) FROM t"); got != int64(2) {
		t.Fatalf("count: %v", got)
	}
	resp = do(t, c, `SELECT * FROM nosuch`)
	if got := resp.Results[0].Error; got != "no such table: nosuch" {
		t.Fatalf("read error: %q", got)
	}
	resp = do(t, c, `INSERT INTO t(name) VALUES("bob")`)
	if got := resp.Results[0].Error; !strings.Contains(got, "single-quotes") {
		t.Fatalf("double-quoted literal: %q", got)
	}
	resp = do(t, c, `[["INSERT INTO t VALUES(?, ?)", 3]]`)
	if got := resp.Results[0].Error; !strings.Contains(got, "2 parameters but 1 values") {
		t.Fatalf("param count: %q", got)
	}
	resp = do(t, c, `[["INSERT INTO t VALUES(:id, :name)", {"id": 3}]]`)
	if got := resp.Results[0].Error; !strings.Contains(got, "no value given for parameter :name") {
		t.Fatalf("named: %q", got)
	}
	after := streamLastSeq(t, nc, "main")

	// Request-level errors change nothing and enter no stream entry.
	for _, tc := range []struct {
		payload string
		code    int
		msg     string
	}{
		{``, 400, "empty request"},
		{`   `, 400, "empty request"},
		{`[1]`, 400, "statement 1 must be a SQL string"},
		{`["SELECT 1", `, 400, "not valid JSON"},
		{`{"statements": ["SELECT 1"], "levle": "strong"}`, 400, `unknown field "levle"`},
		{`{"statements": ["SELECT 1"], "level": "linear"}`, 400, `level "linear"`},
		{`{"statements": ["SELECT 1"], "format": "csv"}`, 400, `format "csv"`},
		{`{"statements": ["SELECT 1"], "timeout_ms": -1}`, 400, "timeout_ms"},
		{`{"transaction": true}`, 400, `no "statements"`},
		{`[["INSERT INTO t VALUES(?, ?)", 99999999999999999999, "x"]]`, 400, "does not fit SQLite's 64-bit INTEGER"},
		{`["SELECT 1; SELECT 2"]`, 400, "holds 2 SQL statements"},
		{`PRAGMA journal_mode=DELETE`, 403, "PRAGMA journal_mode cannot be set"},
		{`PRAGMA synchronous=OFF`, 403, "PRAGMA synchronous cannot be set"},
		{`ATTACH 'x.db' AS x`, 403, "ATTACH"},
		{`DELETE FROM _nqlite_meta`, 403, "_nqlite_meta is nqlite's own"},
		{`CREATE TEMP TABLE tmp(x)`, 400, "temporary tables"},
		{`INSERT INTO t VALUES(9, total_changes())`, 400, "total_changes()"},
	} {
		ae := doErr(t, c, tc.payload)
		if ae.Code != tc.code || !strings.Contains(ae.Message, tc.msg) {
			t.Errorf("%q: got %d %q, want %d containing %q", tc.payload, ae.Code, ae.Message, tc.code, tc.msg)
		}
	}
	if got := streamLastSeq(t, nc, "main"); got != after {
		t.Fatalf("stream moved from %d to %d on rejected requests", after, got)
	}
	if after <= seq {
		t.Fatalf("statement errors in writes are entries too: stream at %d, was %d", after, seq)
	}
	// Reading a pragma works; PRAGMA user_version is replicated.
	ok(t, do(t, c, "PRAGMA user_version = 7"))
	if got := scalar(t, c, "PRAGMA user_version"); got != int64(7) {
		t.Fatalf("user_version: %v", got)
	}
}

func TestQuery_Classification(t *testing.T) {
	ns, node, c := single(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))
	reads := []string{
		" SELECT * FROM t",
		"\n\tselect 1",
		"WITH x AS (SELECT 1 AS a) SELECT a FROM x",
		"EXPLAIN SELECT * FROM t",
		"EXPLAIN QUERY PLAN SELECT * FROM t WHERE id = 1",
		"PRAGMA table_info(t)",
		"PRAGMA index_list(t)",
		"SELECT * FROM pragma_table_info('t')",
		"/* comment */ SELECT 2",
		"VALUES(1, 2)",
	}
	for _, q := range reads {
		before := streamLastSeq(t, nc, "main")
		ok(t, do(t, c, q))
		if after := streamLastSeq(t, nc, "main"); after != before {
			t.Errorf("read %q entered the stream (%d -> %d)", q, before, after)
		}
	}
	writes := []string{
		"WITH x AS (SELECT 5 AS a) INSERT INTO t(id) SELECT a FROM x",
		"INSERT INTO t(v) VALUES('r') RETURNING id",
		"CREATE INDEX t_v ON t(v)",
		"CREATE VIEW tv AS SELECT v FROM t",
		"DROP VIEW tv",
		"ALTER TABLE t ADD COLUMN w INTEGER",
		"UPDATE t SET w = 1",
		"DELETE FROM t WHERE id = 5",
		"ANALYZE",
		"REPLACE INTO t(id, v) VALUES(1, 'x')",
	}
	for _, q := range writes {
		before := node.DB("main").Applied()
		resp := ok(t, do(t, c, q))
		if resp.Seq != before+1 {
			t.Errorf("write %q: seq %d, want %d", q, resp.Seq, before+1)
		}
	}
}

func TestQuery_Transaction(t *testing.T) {
	_, _, c := single(t)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))

	// transaction: all or nothing.
	resp := do(t, c, `{"statements": ["INSERT INTO t VALUES(1, 'a')", "INSERT INTO t VALUES(1, 'dup')", "INSERT INTO t VALUES(3, 'c')"], "transaction": true}`)
	if len(resp.Results) != 2 || resp.Results[1].Error == "" {
		t.Fatalf("tx results: %+v", resp.Results)
	}
	if got := scalar(t, c, "SELECT count(*) FROM t"); got != int64(0) {
		t.Fatalf("after failed transaction: %v rows, want 0", got)
	}
	// Without it, each statement stands alone.
	do(t, c, `{"statements": ["INSERT INTO t VALUES(1, 'a')", "INSERT INTO t VALUES(1, 'dup')", "INSERT INTO t VALUES(3, 'c')"]}`)
	if got := scalar(t, c, "SELECT count(*) FROM t"); got != int64(2) {
		t.Fatalf("without transaction: %v rows, want 2", got)
	}
	// SQL BEGIN/COMMIT and ROLLBACK work inside an entry.
	ok(t, do(t, c, "BEGIN; INSERT INTO t VALUES(10, 'x'); COMMIT"))
	ok(t, do(t, c, "BEGIN; INSERT INTO t VALUES(11, 'y'); ROLLBACK"))
	ok(t, do(t, c, "SAVEPOINT a; INSERT INTO t VALUES(12, 'z'); RELEASE a"))
	// A transaction left open is rolled back at the end of the entry.
	ok(t, do(t, c, "BEGIN; INSERT INTO t VALUES(13, 'open')"))
	ok(t, do(t, c, "SAVEPOINT b; INSERT INTO t VALUES(14, 'open')"))
	resp = do(t, c, "COMMIT")
	if got := resp.Results[0].Error; !strings.Contains(got, "no transaction is active") {
		t.Fatalf("COMMIT with no transaction: %q", got)
	}
	resp = do(t, c, "BEGIN; BEGIN")
	if got := resp.Results[1].Error; !strings.Contains(got, "within a transaction") {
		t.Fatalf("nested BEGIN: %q", got)
	}
	resp = ok(t, do(t, c, `{"statements": ["SELECT group_concat(id) FROM (SELECT id FROM t ORDER BY id)"], "format": "values"}`))
	if got := resp.Results[0].Values[0][0]; got != "1,3,10,12" {
		t.Fatalf("ids: got %v, want 1,3,10,12", got)
	}
	// A statement that rolls back the transaction (ON CONFLICT ROLLBACK)
	// fails alone: statements before and after it in the entry stand.
	resp = do(t, c, "INSERT INTO t VALUES(20, 'before'); INSERT OR ROLLBACK INTO t VALUES(1, 'dup'); INSERT INTO t VALUES(21, 'after')")
	if resp.Results[0].Error != "" || resp.Results[1].Error == "" || resp.Results[2].Error != "" {
		t.Fatalf("OR ROLLBACK results: %+v", resp.Results)
	}
	resp = ok(t, do(t, c, `{"statements": ["SELECT group_concat(id) FROM (SELECT id FROM t ORDER BY id)"], "format": "values"}`))
	if got := resp.Results[0].Values[0][0]; got != "1,3,10,12,20,21" {
		t.Fatalf("ids: got %v, want 1,3,10,12,20,21", got)
	}
}

func TestQuery_Idempotency(t *testing.T) {
	ns, _, c := single(t)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)"))
	req := `{"statements": ["INSERT INTO t(v) VALUES('once')"], "id": "order-42"}`
	first := ok(t, do(t, c, req))
	second := do(t, c, req)
	if first.Duplicate || !second.Duplicate || second.Seq != first.Seq || len(second.Results) != 0 {
		t.Fatalf("first %+v, second %+v", first, second)
	}
	if got := scalar(t, c, "SELECT count(*) FROM t"); got != int64(1) {
		t.Fatalf("rows: %v, want 1", got)
	}
	// queue: the reply carries the stored sequence before the apply.
	resp := do(t, c, `{"statements": ["INSERT INTO t(v) VALUES('queued')"], "queue": true}`)
	// (The strong read of scalar appended a barrier in between.)
	if !resp.Queued || resp.Seq <= first.Seq || streamEntries(t, servicetest.Connect(t, ns.ClientURL()), "main", first.Seq, resp.Seq) != 1 {
		t.Fatalf("queued: %+v, want the next entry after %d", resp, first.Seq)
	}
	resp = ok(t, do(t, c, fmt.Sprintf(`{"statements": ["SELECT count(*) FROM t"], "after_seq": %d, "format": "values"}`, resp.Seq)))
	if got := resp.Results[0].Values[0][0]; got != int64(2) || resp.Seq < first.Seq+1 {
		t.Fatalf("after_seq read: %v at seq %d", got, resp.Seq)
	}
}

func TestNode_GarbageSkipped(t *testing.T) {
	ns, node, c := single(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	ok(t, do(t, c, "CREATE TABLE t(x)"))
	js, _ := jetstream.New(nc)
	for _, garbage := range []string{"not json", `{"v":1}`, `{"v":99,"stmts":[{"sql":"DROP TABLE t"}]}`, `{"v":1,"stmts":[{"p":[1]}]}`} {
		if _, err := js.Publish(context.Background(), service.EntrySubject("main"), []byte(garbage)); err != nil {
			t.Fatal(err)
		}
	}
	resp := ok(t, do(t, c, "INSERT INTO t VALUES(1)"))
	if resp.Seq != 6 || node.DB("main").Skipped() != 4 {
		t.Fatalf("seq %d skipped %d", resp.Seq, node.DB("main").Skipped())
	}
	if got := scalar(t, c, "SELECT count(*) FROM t"); got != int64(1) {
		t.Fatalf("rows %v", got)
	}
}

func TestNode_MicroStats(t *testing.T) {
	ns, node, c := single(t)
	ok(t, do(t, c, "CREATE TABLE t(x); INSERT INTO t VALUES(1)"))
	release := node.DB("main").Hold()
	ok(t, do(t, c, `{"statements": ["INSERT INTO t VALUES(2)"], "queue": true}`))
	nc := servicetest.Connect(t, ns.ClientURL())
	msg, err := nc.Request("$SRV.STATS.nqlite", nil, 5*time.Second)
	release()
	if err != nil {
		t.Fatal(err)
	}
	var stats struct {
		Name      string `json:"name"`
		Version   string `json:"version"`
		Metadata  map[string]string
		Endpoints []struct {
			Subject    string        `json:"subject"`
			QueueGroup string        `json:"queue_group"`
			Data       service.Stats `json:"data"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &stats); err != nil {
		t.Fatalf("%v: %s", err, msg.Data)
	}
	if stats.Name != "nqlite" || stats.Version != service.Version || stats.Metadata["node"] != "n1" || len(stats.Endpoints) != 5 {
		t.Fatalf("stats: %s", msg.Data)
	}
	e := stats.Endpoints[0]
	e.Data.StreamAgeMS = 0 // how old the stream state is: any age
	if len(e.Data.Digest) != 64 {
		t.Errorf("digest %q: want 64 hex digits", e.Data.Digest)
	}
	e.Data.Digest = ""
	want := service.Stats{DB: "main", Node: "n1", Applied: 1, StreamLastSeq: 2, Lag: 1, State: "serving"}
	if e.Subject != "nqlite.query.main" || e.QueueGroup != "nqlite" || e.Data != want {
		t.Fatalf("endpoint stats: got %+v, want %+v", e, want)
	}
}
