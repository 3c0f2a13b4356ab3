package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/feed"
	"github.com/nqlite/nqlite/service/servicetest"
)

// feedCfg is a node with the change feed on.
func feedCfg(id string) service.Config {
	return service.Config{NodeID: id, Changes: service.ChangesConfig{Enabled: true}}
}

// readFeed returns every event the change stream of main holds, once its
// last sequence reaches at least want (0: whatever it holds now).
func readFeed(tb testing.TB, nc *nats.Conn, want uint64) []api.Change {
	tb.Helper()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	str, err := js.Stream(ctx, api.ChangesStreamName("main"))
	if err != nil {
		tb.Fatal(err)
	}
	var last uint64
	servicetest.WaitFor(tb, 30*time.Second, fmt.Sprintf("the change stream to hold %d events", want), func() bool {
		info, err := str.Info(ctx)
		if err != nil {
			return false
		}
		last = info.State.LastSeq
		return last >= want
	})
	var out []api.Change
	if last == 0 {
		return nil
	}
	for ch, err := range client.New(nc).WatchWith(ctx, "main", client.WatchOptions{All: true}) {
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, ch)
		if ch.Position >= last {
			break
		}
	}
	return out
}

// checkFeedOrder wants positions 1..N without a hole, no lost event, and
// (seq, index) strictly increasing.
func checkFeedOrder(tb testing.TB, evs []api.Change) {
	tb.Helper()
	for i, ev := range evs {
		if ev.Position != uint64(i+1) {
			tb.Fatalf("event %d at position %d: a hole in the change stream", i+1, ev.Position)
		}
		if ev.Op == api.OpLost {
			tb.Fatalf("position %d: a lost event", ev.Position)
		}
		if i > 0 {
			p := evs[i-1]
			if ev.Seq < p.Seq || ev.Seq == p.Seq && ev.Index <= p.Index {
				tb.Fatalf("position %d: entry %d change %d after entry %d change %d: duplicate or out of order", ev.Position, ev.Seq, ev.Index, p.Seq, p.Index)
			}
		}
	}
}

// replica replays a change feed onto a plain SQLite database holding the
// same tables (created from the node's schema, without its triggers: their
// changes are in the feed).
type replica struct {
	c *sqlite.Conn
}

func newReplica(tb testing.TB, c *client.Client) *replica {
	tb.Helper()
	sc, err := sqlite.OpenConn(filepath.Join(tb.TempDir(), "replica.sqlite"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sc.Close() })
	resp := ok(tb, do(tb, c, `{"statements": ["SELECT sql FROM sqlite_schema WHERE type = 'table' AND substr(name, 1, 7) != 'sqlite_' AND substr(name, 1, 8) != '_nqlite_'"], "format": "values", "level": "strong"}`))
	for _, row := range resp.Results[0].Values {
		if err := sqlitex.ExecuteTransient(sc, row[0].(string), nil); err != nil {
			tb.Fatal(err)
		}
	}
	return &replica{c: sc}
}

func (r *replica) exec(tb testing.TB, q string, args ...any) {
	tb.Helper()
	if err := sqlitex.ExecuteTransient(r.c, q, &sqlitex.ExecOptions{Args: args}); err != nil {
		tb.Fatalf("replay %s %v: %v", q, args, err)
	}
}

// where returns the condition identifying the row before the change.
func where(ch api.Change) (string, []any) {
	if !ch.WithoutRowID {
		return "rowid = ?", []any{ch.RowID}
	}
	var conds []string
	var args []any
	for _, k := range ch.PK {
		for i, c := range ch.Columns {
			if c == k {
				conds = append(conds, quote(c)+" IS ?")
				args = append(args, ch.Old[i])
			}
		}
	}
	return strings.Join(conds, " AND "), args
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func (r *replica) apply(tb testing.TB, ch api.Change) {
	tb.Helper()
	t := quote(ch.Table)
	switch ch.Op {
	case api.OpInsert:
		cols := make([]string, len(ch.Columns))
		marks := make([]string, len(ch.Columns))
		for i, c := range ch.Columns {
			cols[i], marks[i] = quote(c), "?"
		}
		r.exec(tb, fmt.Sprintf("INSERT INTO %s(%s) VALUES(%s)", t, strings.Join(cols, ","), strings.Join(marks, ",")), ch.New...)
		if !ch.WithoutRowID {
			r.exec(tb, fmt.Sprintf("UPDATE %s SET rowid = ? WHERE rowid = last_insert_rowid()", t), ch.RowID)
		}
	case api.OpUpdate:
		sets := make([]string, len(ch.Columns))
		for i, c := range ch.Columns {
			sets[i] = quote(c) + " = ?"
		}
		args := append([]any{}, ch.New...)
		if !ch.WithoutRowID {
			sets = append(sets, "rowid = ?")
			args = append(args, ch.NewRowID)
		}
		w, wargs := where(ch)
		r.exec(tb, fmt.Sprintf("UPDATE %s SET %s WHERE %s", t, strings.Join(sets, ", "), w), append(args, wargs...)...)
	case api.OpDelete:
		w, wargs := where(ch)
		r.exec(tb, fmt.Sprintf("DELETE FROM %s WHERE %s", t, w), wargs...)
	default:
		tb.Fatalf("replay: op %q", ch.Op)
	}
}

// rows returns every row of table (rowid first unless WITHOUT ROWID), in
// order, from the replica.
func (r *replica) rows(tb testing.TB, q string) [][]any {
	tb.Helper()
	var out [][]any
	err := sqlitex.ExecuteTransient(r.c, q, &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
		row := make([]any, s.ColumnCount())
		for i := range row {
			switch s.ColumnType(i) {
			case sqlite.TypeInteger:
				row[i] = s.ColumnInt64(i)
			case sqlite.TypeFloat:
				row[i] = s.ColumnFloat(i)
			case sqlite.TypeText:
				row[i] = s.ColumnText(i)
			case sqlite.TypeBlob:
				b := make([]byte, s.ColumnLen(i))
				s.ColumnBytes(i, b)
				row[i] = b
			}
		}
		out = append(out, row)
		return nil
	}})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// sameRows wants the node (read through c) and the replica to hold the
// same rows, values and storage classes for each query.
func sameRows(tb testing.TB, c *client.Client, r *replica, queries ...string) {
	tb.Helper()
	for _, q := range queries {
		body, _ := json.Marshal(map[string]any{"statements": []string{q}, "format": "values", "level": "strong"})
		resp := ok(tb, do(tb, c, string(body)))
		got := resp.Results[0].Values
		want := r.rows(tb, q)
		if len(got) == 0 && len(want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, want) {
			tb.Errorf("%s:\n node    %v\n replica %v", q, got, want)
		}
	}
}

// TestChanges_Replay: the feed of a workload of every kind of write
// (triggers, upserts, REPLACE, failed statements, transactions, savepoints,
// rowid and primary-key changes, WITHOUT ROWID, every storage class),
// replayed onto an empty copy of the schema, gives the database's rows;
// two nodes publish it, a third has the feed off; each change once, in
// order.
func TestChanges_Replay(t *testing.T) {
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), feedCfg("n1"))
	n2 := servicetest.StartNode(t, ns.ClientURL(), feedCfg("n2"))
	n3 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n3"})
	nc := servicetest.Connect(t, ns.ClientURL())
	c := client.New(nc)
	ok(t, do(t, c, `CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT UNIQUE, n INT, r REAL, b BLOB);
		CREATE TABLE log(at INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT, n);
		CREATE TABLE w(a TEXT, b INT, v, PRIMARY KEY(a, b)) WITHOUT ROWID;
		CREATE TABLE plain(x, y);
		CREATE TRIGGER ti AFTER INSERT ON t BEGIN INSERT INTO log(what, n) VALUES('ins ' || new.k, new.n); END;
		CREATE TRIGGER tu AFTER UPDATE OF n ON t BEGIN INSERT INTO log(what, n) VALUES('upd ' || new.k, new.n - old.n); END;
		CREATE TRIGGER td BEFORE DELETE ON t BEGIN INSERT INTO w VALUES(old.k, old.id, old.b) ON CONFLICT DO UPDATE SET v = excluded.v; END`))
	writes := []string{
		`[["INSERT INTO t(k, n, r, b) VALUES(?, ?, ?, ?)", "a", 9007199254740993, 1.0, {"base64": "AAEC/w=="}], ["INSERT INTO t(k, n, r) VALUES(?, ?, ?)", "b", -1, 1e300]]`,
		`["INSERT INTO t(k, n) VALUES('a', 5) ON CONFLICT(k) DO UPDATE SET n = n + excluded.n", "INSERT INTO t(k, n) VALUES('c', 1) ON CONFLICT DO NOTHING"]`,
		`["INSERT OR REPLACE INTO t(id, k, n) VALUES(10, 'b', 7)", "INSERT INTO t(k) VALUES('a')", "INSERT INTO plain VALUES('it''s', x'00')"]`,
		`{"statements": ["INSERT INTO t(k) VALUES('tx')", "INSERT INTO t(k) VALUES('a')"], "transaction": true}`,
		`["BEGIN", "INSERT INTO t(k) VALUES('rolled')", "ROLLBACK", "SAVEPOINT s", "INSERT INTO t(k) VALUES('s1')", "ROLLBACK TO s", "INSERT INTO t(k) VALUES('s2')", "RELEASE s"]`,
		`["UPDATE t SET id = id + 100 WHERE k = 's2'", "UPDATE plain SET rowid = 50, y = 3.25", "INSERT OR FAIL INTO t(k) VALUES('f1'), ('a'), ('f2')"]`,
		`["INSERT INTO w VALUES('x', 1, 'v'), ('x', 2, NULL)", "UPDATE w SET b = 3 WHERE b = 2", "DELETE FROM t WHERE k IN ('a', 'b')"]`,
		`["WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300) INSERT INTO plain SELECT i, randomblob(4) FROM c", "DELETE FROM plain WHERE x % 7 = 0", "UPDATE plain SET y = NULL WHERE x % 5 = 0"]`,
		`["DELETE FROM log", "INSERT INTO t(k, n) VALUES('z', 0)", "DELETE FROM w"]`,
	}
	for _, wr := range writes {
		do(t, c, wr) // some statements fail on purpose
	}
	last := ok(t, do(t, c, "INSERT INTO plain VALUES('last', 1)")).Seq
	for _, n := range []*servicetest.Node{n1, n2, n3} {
		n := n
		servicetest.WaitFor(t, 10*time.Second, n.ID()+" to apply", func() bool { return n.DB("main").Applied() >= last })
	}
	counts := n1.DB("main").ChangeCounts()
	if got, want := counts, n3.DB("main").ChangeCounts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("counts differ between a node with the feed and one without: %+v, %+v", got, want)
	}
	evs := readFeed(t, nc, counts.Count(nil))
	if uint64(len(evs)) != counts.Count(nil) {
		t.Fatalf("%d events, want %d (the counted changes)", len(evs), counts.Count(nil))
	}
	checkFeedOrder(t, evs)
	if ev := evs[len(evs)-1]; ev.Seq != last || ev.Table != "plain" || ev.Op != api.OpInsert {
		t.Fatalf("last event %+v, want the insert into plain of entry %d", ev, last)
	}
	r := newReplica(t, c)
	ops := map[string]int{}
	for _, ev := range evs {
		r.apply(t, ev)
		ops[ev.Op]++
	}
	t.Logf("%d events replayed: %v", len(evs), ops)
	sameRows(t, c, r,
		"SELECT rowid, * FROM t ORDER BY rowid", "SELECT rowid, * FROM log ORDER BY rowid",
		"SELECT * FROM w ORDER BY a, b", "SELECT rowid, * FROM plain ORDER BY rowid")
}

// TestChanges_Events checks the wire form of triggers' and upserts'
// changes, a table filter and the subjects.
func TestChanges_Events(t *testing.T) {
	ns := servicetest.StartServer(t)
	cfg := feedCfg("n1")
	cfg.Changes.Tables = []string{"T", "Log"}
	cfg.Changes.MaxAge, cfg.Changes.MaxBytes = time.Hour, 1<<20
	n1 := servicetest.StartNode(t, ns.ClientURL(), cfg)
	nc := servicetest.Connect(t, ns.ClientURL())
	c := client.New(nc)
	ok(t, do(t, c, `CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT UNIQUE, n INT);
		CREATE TABLE log(what TEXT);
		CREATE TABLE other(x);
		CREATE TRIGGER ti AFTER INSERT ON t BEGIN INSERT INTO log VALUES('ins ' || new.k); INSERT INTO other VALUES(1); END`))
	seq := ok(t, do(t, c, `["INSERT INTO t(k, n) VALUES('a', 1)", "INSERT INTO t(k, n) VALUES('a', 2) ON CONFLICT(k) DO UPDATE SET n = n + excluded.n", "INSERT INTO other VALUES(2)", "DELETE FROM t"]`)).Seq
	js, _ := jetstream.New(nc)
	str, err := js.Stream(context.Background(), api.ChangesStreamName("main"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	servicetest.WaitFor(t, 10*time.Second, "4 events", func() bool {
		info, err := str.Info(context.Background())
		return err == nil && info.State.LastSeq >= 4
	})
	for p := uint64(1); p <= 4; p++ {
		m, err := str.GetMsg(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Subject+" "+string(m.Data))
	}
	s := fmt.Sprint(seq)
	want := []string{
		`nqlite.changes.main.t {"seq":` + s + `,"index":0,"time":TIME,"table":"t","op":"insert","rowid":1,"pk":{"id":1},"new":{"id":1,"k":"a","n":1}}`,
		`nqlite.changes.main.log {"seq":` + s + `,"index":1,"time":TIME,"table":"log","op":"insert","rowid":1,"new":{"what":"ins a"}}`,
		`nqlite.changes.main.t {"seq":` + s + `,"index":3,"time":TIME,"table":"t","op":"update","rowid":1,"pk":{"id":1},"old":{"id":1,"k":"a","n":1},"new":{"id":1,"k":"a","n":3}}`,
		`nqlite.changes.main.t {"seq":` + s + `,"index":5,"time":TIME,"table":"t","op":"delete","rowid":1,"pk":{"id":1},"old":{"id":1,"k":"a","n":3}}`,
	}
	for i := range got {
		if j := strings.Index(got[i], `"time":`); j > 0 {
			k := strings.Index(got[i][j:], ",")
			got[i] = got[i][:j] + `"time":TIME` + got[i][j+k:]
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n %s\nwant\n %s", strings.Join(got, "\n "), strings.Join(want, "\n "))
	}
	info, err := str.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.MaxAge != time.Hour || c.MaxBytes != 1<<20 || c.Replicas != 1 || c.Storage != jetstream.FileStorage {
		t.Errorf("change stream config: max age %v, max bytes %d, replicas %d, storage %v", c.MaxAge, c.MaxBytes, c.Replicas, c.Storage)
	}
	// Retention (here a purge) removes old events only: new ones go on
	// at their places, also after a restart.
	if err := str.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	n1.Stop(t)
	n1 = servicetest.StartNode(t, ns.ClientURL(), n1.Config)
	ok(t, do(t, c, "INSERT INTO log VALUES('after')"))
	servicetest.WaitFor(t, 10*time.Second, "event 5", func() bool {
		info, err := str.Info(context.Background())
		return err == nil && info.State.LastSeq >= 5
	})
	if m, err := str.GetMsg(context.Background(), 5); err != nil || !strings.Contains(string(m.Data), `"new":{"what":"after"}`) {
		t.Fatalf("event 5 after the purge: %v %v", m, err)
	}
	// A node with another table list is refused, naming the fix.
	bad := feedCfg("n2")
	bad.DataDir = t.TempDir()
	nc2 := servicetest.Connect(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := service.Start(ctx, nc2, bad); err == nil || !strings.Contains(err.Error(), "--changes-tables") {
		t.Fatalf("a node publishing other tables: %v", err)
	}
	// The Go client's Watch filters by table.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	var seen []string
	for ch, err := range c.WatchWith(wctx, "main", client.WatchOptions{Tables: []string{"LOG"}, All: true}) {
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, ch.Table+" "+ch.Op)
		break
	}
	if !reflect.DeepEqual(seen, []string{"log insert"}) {
		t.Fatalf("watch log: %v", seen)
	}
}

// TestChanges_ResetOnLoad: a load publishes one reset, in its place among
// the changes, and changes after it replay onto the loaded database.
func TestChanges_ResetOnLoad(t *testing.T) {
	ns := servicetest.StartServer(t)
	cfg := feedCfg("n1")
	n1 := servicetest.StartNode(t, ns.ClientURL(), cfg)
	n2 := servicetest.StartNode(t, ns.ClientURL(), feedCfg("n2"))
	nc := servicetest.Connect(t, ns.ClientURL())
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE old(x); INSERT INTO old VALUES(1)"))
	reply, err := c.Load(context.Background(), "main", bytes.NewReader([]byte("CREATE TABLE d(id INTEGER PRIMARY KEY, x); INSERT INTO d(x) VALUES(1), (2);")), client.LoadOptions{SQL: true})
	if err != nil {
		t.Fatal(err)
	}
	last := ok(t, do(t, c, "INSERT INTO d(x) VALUES(3); UPDATE d SET x = 20 WHERE id = 2")).Seq
	for _, n := range []*servicetest.Node{n1, n2} {
		n := n
		servicetest.WaitFor(t, 10*time.Second, n.ID()+" to apply", func() bool { return n.DB("main").Applied() >= last })
	}
	evs := readFeed(t, nc, 4)
	checkFeedOrder(t, evs)
	var got []string
	for _, ev := range evs {
		got = append(got, fmt.Sprintf("%d %s %s", ev.Seq, ev.Op, ev.Table))
	}
	want := []string{
		fmt.Sprintf("%d insert old", reply.Seq-1),
		fmt.Sprintf("%d reset ", reply.Seq),
		fmt.Sprintf("%d insert d", last), fmt.Sprintf("%d update d", last),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	// Watching from the load's sequence starts at the reset.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ch, err := range c.WatchWith(ctx, "main", client.WatchOptions{Since: reply.Seq}) {
		if err != nil {
			t.Fatal(err)
		}
		if ch.Op != api.OpReset || ch.Position != 2 {
			t.Fatalf("watch since %d starts with %+v, want the reset", reply.Seq, ch)
		}
		break
	}
}

// TestChanges_Lost: when no node that publishes the feed applied some
// entries (the only feed node was down while another, without the feed,
// went on, took a snapshot and purged the stream), the node that comes
// back restores the snapshot, waits LostAfter for someone to publish the
// changes it skipped, marks their positions lost, and goes on: the feed
// stays in order, with no duplicate and an explicit hole.
func TestChanges_Lost(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	n1 := servicetest.StartNode(t, ns.ClientURL(), snapCfg("n1"))
	cfg := snapCfg("n2")
	cfg.Changes = service.ChangesConfig{Enabled: true, LostAfter: 300 * time.Millisecond}
	n2 := servicetest.StartNode(t, ns.ClientURL(), cfg)
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
	writeRows(t, c, 0, 20)
	last := streamLastSeq(t, nc, "main")
	servicetest.WaitFor(t, 10*time.Second, "n2 to apply", func() bool { return n2.DB("main").Applied() >= last })
	n2.Stop(t)
	writeRows(t, c, 20, 200) // n1 only, which has no feed
	servicetest.WaitFor(t, 10*time.Second, "a purge past the stopped node", func() bool {
		return streamInfo(t, nc).State.FirstSeq > last+1
	})
	n2 = servicetest.StartNode(t, ns.ClientURL(), n2.Config)
	writeRows(t, c, 200, 210)
	last = streamLastSeq(t, nc, "main")
	servicetest.WaitFor(t, 10*time.Second, "n2 to apply", func() bool { return n2.DB("main").Applied() >= last })
	// n1 counts the changes below: it may answer a write before it applied
	// the last one another node accepted.
	servicetest.WaitFor(t, 10*time.Second, "n1 to apply", func() bool { return n1.DB("main").Applied() >= last })
	total := n1.DB("main").ChangeCounts().Count(nil)
	if total != 210 {
		t.Fatalf("%d changes counted, want 210", total)
	}
	evs := readFeed(t, nc, total)
	lost := 0
	var rows []string
	for i, ev := range evs {
		if ev.Position != uint64(i+1) {
			t.Fatalf("event %d at position %d", i+1, ev.Position)
		}
		if ev.Op == api.OpLost {
			lost++
			continue
		}
		rows = append(rows, fmt.Sprint(ev.New[0]))
	}
	if len(evs) != 210 || lost == 0 || lost+len(rows) != 210 {
		t.Fatalf("%d events, %d lost", len(evs), lost)
	}
	// The first 20 rows, then a hole, then the rows n2 applied itself, in order.
	for i, r := range rows[:20] {
		if r != fmt.Sprint(i) {
			t.Fatalf("row %d: %s", i, r)
		}
	}
	if rows[len(rows)-1] != "209" {
		t.Fatalf("last row %s", rows[len(rows)-1])
	}
	t.Logf("%d events, %d of them lost", len(evs), lost)
}

// TestChanges_OffByDefault: a node started without the feed creates no
// change stream and publishes nothing; a watch says what to do.
func TestChanges_OffByDefault(t *testing.T) {
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	nc := servicetest.Connect(t, ns.ClientURL())
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(x)"))
	seq := ok(t, do(t, c, "INSERT INTO t VALUES(1)")).Seq
	servicetest.WaitFor(t, 10*time.Second, "n1 to apply", func() bool { return n1.DB("main").Applied() >= seq })
	js, _ := jetstream.New(nc)
	if _, err := js.Stream(context.Background(), api.ChangesStreamName("main")); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("change stream of a node without --changes: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, err := range c.Watch(ctx, "main") {
		if !errors.Is(err, client.ErrNoFeed) || !strings.Contains(err.Error(), "--changes") {
			t.Fatalf("watch without a feed: %v", err)
		}
	}
}

// TestChanges_Replicas: the change stream has the entry stream's
// replicas (here 3, on a three-server cluster) and works at them.
func TestChanges_Replicas(t *testing.T) {
	servers := servicetest.StartCluster(t, 3)
	for i, s := range servers {
		cfg := feedCfg(fmt.Sprintf("n%d", i+1))
		cfg.Replicas = 3
		servicetest.StartNode(t, s.ClientURL(), cfg)
	}
	nc := servicetest.Connect(t, servers[1].ClientURL())
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(x)"))
	ok(t, do(t, c, "INSERT INTO t VALUES(1)"))
	evs := readFeed(t, nc, 1)
	if len(evs) != 1 || evs[0].Op != api.OpInsert {
		t.Fatalf("events: %+v", evs)
	}
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	entries, err := js.Stream(ctx, service.StreamName("main"))
	if err != nil {
		t.Fatal(err)
	}
	changes, err := js.Stream(ctx, api.ChangesStreamName("main"))
	if err != nil {
		t.Fatal(err)
	}
	if e, ch := entries.CachedInfo().Config.Replicas, changes.CachedInfo().Config.Replicas; e != 3 || ch != e {
		t.Fatalf("replicas: entry stream %d, change stream %d", e, ch)
	}
}

// TestChanges_FarBehind: a node that comes back far behind (here 300
// writes, which the other feed node published meanwhile) catches up
// without publishing a single event the change stream already holds: a
// core subscription on the feed's subjects sees every publish attempt,
// refused ones included, and none of those events comes from it. The feed
// stays complete and in order as it goes on.
func TestChanges_FarBehind(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	var (
		mu       sync.Mutex
		attempts = map[string][]uint64{} // publishing node: positions, in arrival order
	)
	sub, err := nc.Subscribe(api.ChangesSubject("main")+".>", func(m *nats.Msg) {
		pos, _ := strconv.ParseUint(m.Header.Get(jetstream.MsgIDHeader), 10, 64)
		mu.Lock()
		node := m.Header.Get(feed.NodeHeader)
		attempts[node] = append(attempts[node], pos)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil { // the subscription is in place before any publish
		t.Fatal(err)
	}
	count := func(node string, from, to uint64) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, p := range attempts[node] {
			if p >= from && p <= to {
				n++
			}
		}
		return n
	}
	n1 := servicetest.StartNode(t, ns.ClientURL(), feedCfg("n1"))
	n2 := servicetest.StartNode(t, ns.ClientURL(), feedCfg("n2"))
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
	writeRows(t, c, 0, 10)
	last := streamLastSeq(t, nc, "main")
	servicetest.WaitFor(t, 10*time.Second, "n2 to apply", func() bool { return n2.DB("main").Applied() >= last })
	n2.Stop(t)
	writeRows(t, c, 10, 310) // n1 alone: it publishes each event before it answers
	readFeed(t, nc, 310)
	// The subscription sees publishes: n1's of events 11 to 310.
	servicetest.WaitFor(t, 10*time.Second, "n1's 300 publishes seen", func() bool { return count("n1", 11, 310) >= 300 })
	n2 = servicetest.StartNode(t, ns.ClientURL(), n2.Config)
	last = streamLastSeq(t, nc, "main")
	servicetest.WaitFor(t, 10*time.Second, "n2 to catch up", func() bool { return n2.DB("main").Applied() >= last })
	writeRows(t, c, 310, 340) // both nodes again
	last = streamLastSeq(t, nc, "main")
	for _, n := range []*servicetest.Node{n1, n2} {
		n := n
		servicetest.WaitFor(t, 10*time.Second, n.ID()+" to apply", func() bool { return n.DB("main").Applied() >= last })
	}
	total := n1.DB("main").ChangeCounts().Count(nil)
	evs := readFeed(t, nc, total)
	if uint64(len(evs)) != total || total != 340 {
		t.Fatalf("%d events, %d changes counted, want 340", len(evs), total)
	}
	checkFeedOrder(t, evs)
	if n := count("n2", 11, 310); n > 0 {
		t.Fatalf("n2 caught up by publishing %d events the change stream held", n)
	}
	t.Logf("publish attempts: n1 %d, n2 %d (%d after it came back)", count("n1", 0, 1<<62), count("n2", 0, 1<<62), count("n2", 311, 340))
}

// TestChanges_WatchLive: client.Watch delivers, of the tables asked for,
// the changes made from the moment it starts, in order, and ends when its
// context does.
func TestChanges_WatchLive(t *testing.T) {
	ns := servicetest.StartServer(t)
	servicetest.StartNode(t, ns.ClientURL(), feedCfg("n1"))
	servicetest.StartNode(t, ns.ClientURL(), feedCfg("n2"))
	nc := servicetest.Connect(t, ns.ClientURL())
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v); CREATE TABLE u(x)"))
	var before uint64
	for i := 0; i < 5; i++ {
		before = ok(t, do(t, c, fmt.Sprintf("INSERT INTO t(v) VALUES(%d); INSERT INTO u VALUES(%d)", -i, i))).Seq
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan api.Change, 1000)
	ended := make(chan error, 1)
	go func() {
		defer close(ended)
		for ch, err := range c.Watch(ctx, "main", "T") {
			if err != nil {
				ended <- err
				return
			}
			got <- ch
		}
	}()
	// Write until the watch delivers (it starts at some moment in
	// between), then five more writes: each is delivered, in order.
	var first api.Change
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; first.Seq == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the watch delivered nothing")
		}
		ok(t, do(t, c, fmt.Sprintf("INSERT INTO u VALUES(%d); INSERT INTO t(v) VALUES(%d)", i, i)))
		select {
		case first = <-got:
		case err := <-ended:
			t.Fatalf("watch ended: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if first.Seq <= before || first.Table != "t" || first.Op != api.OpInsert {
		t.Fatalf("first event %+v: want an insert into t by a write after seq %d", first, before)
	}
	prev := first
	for i := 0; i < 5; i++ {
		seq := ok(t, do(t, c, fmt.Sprintf("INSERT INTO u VALUES(%d); UPDATE t SET v = 'w%d' WHERE id = 1", 100+i, i))).Seq
		for {
			var ch api.Change
			select {
			case ch = <-got:
			case err := <-ended:
				t.Fatalf("watch ended: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatalf("write %d not delivered", seq)
			}
			if ch.Table != "t" || ch.Position <= prev.Position || ch.Seq <= prev.Seq {
				t.Fatalf("after %+v: %+v (want the next event of table t)", prev, ch)
			}
			prev = ch
			if ch.Seq == seq {
				if ch.Op != api.OpUpdate || ch.New[1] != fmt.Sprintf("w%d", i) {
					t.Fatalf("write %d: %+v", seq, ch)
				}
				break
			}
		}
	}
	cancel()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("watch ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the watch did not end with its context")
	}
}
