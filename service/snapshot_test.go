package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
	"github.com/nqlite/nqlite/snapshot"
)

// snapCfg snapshots every 40 entries, checked every 20ms, keeping 10
// entries in the stream after each snapshot.
func snapCfg(id string) service.Config {
	return service.Config{NodeID: id, Snapshot: service.SnapshotConfig{Threshold: 40, Interval: 20 * time.Millisecond, Retain: 10}}
}

func streamInfo(tb testing.TB, nc *nats.Conn) *jetstream.StreamInfo {
	tb.Helper()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), service.StreamName("main"))
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info
}

func storedSnapshot(tb testing.TB, nc *nats.Conn) *snapshot.Meta {
	tb.Helper()
	js, _ := jetstream.New(nc)
	st, err := snapshot.Open(context.Background(), js, snapshot.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	m, err := st.Latest(context.Background(), "main")
	if err != nil {
		return nil
	}
	return m
}

// writeRows inserts rows [from, to) one request each (one entry each).
func writeRows(tb testing.TB, c *client.Client, from, to int) {
	tb.Helper()
	for i := from; i < to; i++ {
		ok(tb, do(tb, c, fmt.Sprintf("INSERT INTO t(id, v) VALUES(%d, random())", i)))
	}
}

// sameData stops the nodes and compares their databases row by row (a node
// restored from a snapshot has a vacuumed file, so bytes differ).
func sameData(tb testing.TB, nc *nats.Conn, nodes ...*servicetest.Node) {
	tb.Helper()
	last := streamInfo(tb, nc).State.LastSeq
	for _, n := range nodes {
		n := n
		servicetest.WaitFor(tb, 20*time.Second, n.ID()+" to apply everything", func() bool { return n.DB("main").Applied() >= last })
	}
	for _, n := range nodes {
		n.Stop(tb)
	}
	want := dumpFile(tb, filepath.Join(nodes[0].DataDir, "main.sqlite"))
	for _, n := range nodes[1:] {
		if got := dumpFile(tb, filepath.Join(n.DataDir, "main.sqlite")); got != want {
			tb.Errorf("%s's data differs from %s's", n.ID(), nodes[0].ID())
		}
	}
}

func TestSnapshot_PurgeAndRestoreFreshNode(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	n1 := servicetest.StartNode(t, ns.ClientURL(), snapCfg("n1"))
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
	writeRows(t, c, 0, 150)
	servicetest.WaitFor(t, 10*time.Second, "a snapshot and a purge", func() bool {
		m := storedSnapshot(t, nc)
		return m != nil && streamInfo(t, nc).State.FirstSeq > 1
	})
	m := storedSnapshot(t, nc)
	first := streamInfo(t, nc).State.FirstSeq
	if m.Node != "n1" || m.Pages <= 0 || m.Digest == "" || first > m.Seq-10+1 || first < 2 {
		t.Fatalf("snapshot %+v, stream first seq %d", m, first)
	}
	// A fresh node cannot replay from 1: it restores, then replays the rest.
	n2 := servicetest.StartNode(t, ns.ClientURL(), snapCfg("n2"))
	if got := n2.DB("main").Applied(); got < streamInfo(t, nc).State.LastSeq {
		t.Fatalf("fresh node serves at %d", got)
	}
	writeRows(t, c, 150, 160)
	sameData(t, nc, n1, n2)
}

func TestSnapshot_EndpointAndOneUploader(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	cfg := func(id string) service.Config {
		c := snapCfg(id)
		c.Snapshot.Interval = time.Hour // only on demand here
		return c
	}
	servicetest.StartNode(t, ns.ClientURL(), cfg("n1"))
	servicetest.StartNode(t, ns.ClientURL(), cfg("n2"))
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
	js, _ := jetstream.New(nc)
	obj, err := js.ObjectStore(context.Background(), snapshot.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	w, err := obj.Watch(context.Background(), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for round := 1; round <= 3; round++ {
		resp := ok(t, do(t, c, fmt.Sprintf("INSERT INTO t(id) VALUES(%d)", round)))
		// Both nodes asked at once, many times: one upload per new sequence.
		var wg sync.WaitGroup
		var mu sync.Mutex
		taken := 0
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg, err := nc.Request(service.SnapshotSubject("main"), []byte(fmt.Sprintf(`{"after_seq": %d}`, resp.Seq)), 10*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				if msg.Header.Get("Nats-Service-Error-Code") == "503" {
					return // another node held the claim
				}
				var r service.SnapshotReply
				if err := json.Unmarshal(msg.Data, &r); err != nil || r.Seq != resp.Seq || r.Object != "main" || r.Bucket != snapshot.Bucket {
					t.Errorf("reply %s: %v", msg.Data, err)
					return
				}
				mu.Lock()
				if r.Taken {
					taken++
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if taken != 1 {
			t.Fatalf("round %d: %d uploads, want 1", round, taken)
		}
		select {
		case info := <-w.Updates():
			if info == nil || info.Metadata[snapshot.MetaSeq] != fmt.Sprint(resp.Seq) {
				t.Fatalf("round %d: stored %+v, want seq %d", round, info, resp.Seq)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: no object update", round)
		}
	}
	select {
	case info := <-w.Updates():
		t.Fatalf("extra upload: %+v", info)
	default:
	}
}

func TestSnapshot_SelfHealAfterPurge(t *testing.T) {
	ns, nc, n1, n2, c := twoSnapNodes(t)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
	writeRows(t, c, 0, 20)
	n2.Stop(t)
	stoppedAt := n2.DB("main").Applied()
	writeRows(t, c, 20, 200)
	servicetest.WaitFor(t, 10*time.Second, "a purge past the stopped node", func() bool {
		return streamInfo(t, nc).State.FirstSeq > stoppedAt+1
	})
	n2 = servicetest.StartNode(t, ns.ClientURL(), n2.Config)
	sameData(t, nc, n1, n2)
}

func TestSnapshot_DataDirDeleted(t *testing.T) {
	ns, nc, n1, n2, c := twoSnapNodes(t)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
	writeRows(t, c, 0, 100)
	servicetest.WaitFor(t, 10*time.Second, "a purge", func() bool { return streamInfo(t, nc).State.FirstSeq > 1 })
	// Wipe the running node's data dir, then restart it with the same flags.
	if err := os.RemoveAll(n2.DataDir); err != nil {
		t.Fatal(err)
	}
	n2.Stop(t)
	n2 = servicetest.StartNode(t, ns.ClientURL(), n2.Config)
	writeRows(t, c, 100, 110)
	sameData(t, nc, n1, n2)
}

func TestSnapshot_CorruptFileReplaced(t *testing.T) {
	ns, nc, n1, n2, c := twoSnapNodes(t)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t(v)"))
	for i := 0; i < 100; i++ {
		ok(t, do(t, c, fmt.Sprintf("INSERT INTO t(id, v) VALUES(%d, hex(randomblob(200)))", i)))
	}
	servicetest.WaitFor(t, 10*time.Second, "a snapshot", func() bool { return storedSnapshot(t, nc) != nil })
	n2.Stop(t)
	path := filepath.Join(n2.DataDir, "main.sqlite")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	for off := int64(4096); off+4096 <= st.Size(); off += 3 * 4096 {
		f.WriteAt(garbage, off) // every third page after the first
	}
	f.Close()
	n2 = servicetest.StartNode(t, ns.ClientURL(), n2.Config)
	aside, _ := filepath.Glob(path + ".corrupt-*")
	if len(aside) == 0 {
		t.Fatal("the corrupt file was not detected and moved aside")
	}
	sameData(t, nc, n1, n2)
}

// upload puts data into the snapshot bucket as object name and returns
// its digest.
func upload(tb testing.TB, nc *nats.Conn, name string, data []byte) string {
	tb.Helper()
	js, _ := jetstream.New(nc)
	obj, err := js.ObjectStore(context.Background(), snapshot.Bucket)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := obj.PutBytes(context.Background(), name, data)
	if err != nil {
		tb.Fatal(err)
	}
	return info.Digest
}

func TestLoad(t *testing.T) {
	_, nc, n1, n2, c := twoSnapNodes(t)
	ok(t, do(t, c, "CREATE TABLE old(x); INSERT INTO old VALUES(1)"))

	// A SQLite file made elsewhere, larger than one NATS message.
	src := filepath.Join(t.TempDir(), "src.db")
	sc, err := sqlite.OpenConn(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlitex.ExecuteScript(sc, `CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);
		INSERT INTO big(b) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 300) SELECT randomblob(10000) FROM n;`, nil); err != nil {
		t.Fatal(err)
	}
	sc.Close()
	data, _ := os.ReadFile(src)
	if len(data) < 2<<20 {
		t.Fatalf("source file %d bytes: want over the max payload", len(data))
	}
	digest := upload(t, nc, "load/main/1", data)
	load := func(body string) (int, string) { return requestErr(t, nc, service.LoadSubject("main"), []byte(body)) }
	code, body := load(fmt.Sprintf(`{"bucket": %q, "object": "load/main/1", "digest": %q}`, snapshot.Bucket, digest))
	if code != 0 {
		t.Fatalf("load: %d %s", code, body)
	}
	var reply service.LoadReply
	json.Unmarshal([]byte(body), &reply)
	for _, n := range []*servicetest.Node{n1, n2} {
		n := n
		servicetest.WaitFor(t, 10*time.Second, n.ID()+" to load", func() bool { return n.DB("main").Applied() >= reply.Seq })
	}
	if got := scalar(t, c, "SELECT count(*) FROM big"); got != int64(300) {
		t.Fatalf("loaded rows: %v", got)
	}
	if resp := do(t, c, "SELECT * FROM old"); resp.Results[0].Error == "" {
		t.Fatal("the old table survived the load")
	}
	// Writes go on after the load, on every node.
	ok(t, do(t, c, "INSERT INTO big(id) VALUES(1000)"))

	// A SQL dump loads the same way.
	digest = upload(t, nc, "load/main/2", []byte("BEGIN TRANSACTION;\nCREATE TABLE d(x, at DEFAULT CURRENT_TIMESTAMP);\nINSERT INTO d(x) VALUES(1),(2);\nCOMMIT;\n"))
	if code, body := load(fmt.Sprintf(`{"bucket": %q, "object": "load/main/2", "digest": %q, "sql": true}`, snapshot.Bucket, digest)); code != 0 {
		t.Fatalf("load sql: %d %s", code, body)
	}
	if got := scalar(t, c, "SELECT count(*) FROM d"); got != int64(2) {
		t.Fatalf("dump rows: %v", got)
	}
	// Refused before anything is published: wrong digest, no object.
	// (The stream's last sequence, not n1's applied one: n2 may have
	// answered the writes above before n1 applied them.)
	last := streamLastSeq(t, nc, "main")
	for _, body := range []string{
		fmt.Sprintf(`{"bucket": %q, "object": "load/main/2", "digest": "SHA-256=AAAA"}`, snapshot.Bucket),
		fmt.Sprintf(`{"bucket": %q, "object": "nope", "digest": %q}`, snapshot.Bucket, digest),
		`{"object": "x"}`, `not json`,
	} {
		if code, msg := load(body); code != 400 {
			t.Errorf("load %s: %d %s, want 400", body, code, msg)
		}
	}
	// (The strong read above appended a barrier, applied maybe after last.)
	if streamEntries(t, nc, "main", last, streamLastSeq(t, nc, "main")) != 0 {
		t.Fatal("a refused load reached the stream")
	}
	sameData(t, nc, n1, n2)
}

// TestLoad_CheckTimesOut: a load whose timeout_ms ends while the node
// checks the dump before publishing it is answered not_stored (503:
// nothing was published, safe to retry), not as a bug, and nothing
// reaches the stream.
func TestLoad_CheckTimesOut(t *testing.T) {
	_, nc, _, _, c := twoSnapNodes(t)
	ok(t, do(t, c, "CREATE TABLE keep(x)"))
	// Checking this dump runs its statements: tens of millions of rows,
	// seconds at least, far past the 300 ms the request allows.
	dump := "CREATE TABLE t(x);\nWITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 50000000) INSERT INTO t SELECT x FROM c;\n"
	digest := upload(t, nc, "load/main/slow", []byte(dump))
	last := streamLastSeq(t, nc, "main") // n2 may have answered the write before n1 applied it
	msg, err := nc.Request(service.LoadSubject("main"), []byte(fmt.Sprintf(
		`{"bucket": %q, "object": "load/main/slow", "digest": %q, "sql": true, "timeout_ms": 300}`, snapshot.Bucket, digest)), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	code := msg.Header.Get("Nats-Service-Error-Code")
	_, derr := api.DecodeResponse(msg.Data, 503)
	if code != "503" || !errors.Is(derr, client.ErrNotStored) {
		t.Fatalf("load that timed out in its check: %s %v, want 503 not_stored", code, derr)
	}
	if n := streamEntries(t, nc, "main", last, streamLastSeq(t, nc, "main")); n != 0 {
		t.Fatalf("%d entries reached the stream", n)
	}
}

// TestSnapshot_SelfHealWhileRunning: a running node cut off from NATS while
// the others write far ahead, snapshot and purge, finds, once the link is
// back, that the next entry it needs was purged: it restores from the
// snapshot by itself and goes on.
func TestSnapshot_SelfHealWhileRunning(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	n1 := servicetest.StartNode(t, ns.ClientURL(), snapCfg("n1"))
	link := servicetest.NewLink(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	n2 := servicetest.StartNode(t, "nats://"+link.Addr(), snapCfg("n2"))
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
	writeRows(t, c, 0, 10)
	last := streamInfo(t, nc).State.LastSeq
	servicetest.WaitFor(t, 10*time.Second, "n2 to apply the first rows", func() bool { return n2.DB("main").Applied() >= last })
	clients := ns.NumClients()
	link.Cut()
	servicetest.WaitFor(t, 10*time.Second, "the server to drop n2's connection", func() bool { return ns.NumClients() < clients })
	writeRows(t, c, 10, 200) // n1 alone answers now
	servicetest.WaitFor(t, 10*time.Second, "a purge past n2", func() bool {
		return streamInfo(t, nc).State.FirstSeq > last+1
	})
	link.Restore()
	last = streamInfo(t, nc).State.LastSeq
	servicetest.WaitFor(t, 30*time.Second, "n2 to heal and catch up", func() bool { return n2.DB("main").Applied() >= last })
	// At least once (twice when n1 purged again while n2 was restoring).
	servicetest.WaitFor(t, 10*time.Second, "n2's restore to be counted", func() bool { return n2.Stats("main").Restores >= 1 })
	writeRows(t, c, 200, 210)
	sameData(t, nc, n1, n2)
}

// TestFollow_EntryDeletedByOperator: an entry an operator deleted from the
// middle of the stream (nats stream rmm) leaves a hole that is not a purge:
// a node that had not received it goes on past it (with a warning) rather
// than restoring or starting consumers over and over.
func TestFollow_EntryDeletedByOperator(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	cfg := func(id string) service.Config {
		return service.Config{NodeID: id, Snapshot: service.SnapshotConfig{Disabled: true}}
	}
	servicetest.StartNode(t, ns.ClientURL(), cfg("n1"))
	link := servicetest.NewLink(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	n2 := servicetest.StartNode(t, "nats://"+link.Addr(), cfg("n2"))
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
	servicetest.WaitFor(t, 10*time.Second, "n2 to apply the table", func() bool { return n2.DB("main").Applied() >= 1 })
	clients := ns.NumClients()
	link.Cut()
	servicetest.WaitFor(t, 10*time.Second, "the server to drop n2's connection", func() bool { return ns.NumClients() < clients })
	writeRows(t, c, 0, 5) // sequences 2-6
	js, _ := jetstream.New(nc)
	str, err := js.Stream(context.Background(), service.StreamName("main"))
	if err != nil {
		t.Fatal(err)
	}
	if err := str.DeleteMsg(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	link.Restore()
	servicetest.WaitFor(t, 20*time.Second, "n2 to go past the deleted entry", func() bool { return n2.DB("main").Applied() >= 6 })
	if got := readRows(t, n2); got != 4 {
		t.Fatalf("n2 rows: %d, want 4 (the deleted entry's row missing)", got)
	}
}

// readRows counts t's rows in this node's own database.
func readRows(tb testing.TB, n *servicetest.Node) int64 {
	tb.Helper()
	p, err := n.DB("main").Prepare(context.Background(), stmts("SELECT count(*) FROM t"))
	if err != nil {
		tb.Fatal(err)
	}
	res, _, err := p.Run(context.Background(), 0)
	if err != nil || res[0].Error != "" {
		tb.Fatalf("count: %v %+v", err, res)
	}
	return res[0].Values[0][0].(int64)
}

// twoSnapNodes starts a server and two nodes with snapCfg, and returns the
// server, a client connection, the nodes and a client.
func twoSnapNodes(tb testing.TB) (*server.Server, *nats.Conn, *servicetest.Node, *servicetest.Node, *client.Client) {
	tb.Helper()
	ns := servicetest.StartServer(tb)
	nc := servicetest.Connect(tb, ns.ClientURL())
	n1 := servicetest.StartNode(tb, ns.ClientURL(), snapCfg("n1"))
	n2 := servicetest.StartNode(tb, ns.ClientURL(), snapCfg("n2"))
	return ns, nc, n1, n2, client.New(nc)
}

// sqliteFile returns a SQLite file made by running script.
func sqliteFile(tb testing.TB, script string) []byte {
	tb.Helper()
	apply.SQLiteRandomness().Lock() // SQLite beside nodes in this process (apply.SQLiteRandomness)
	defer apply.SQLiteRandomness().Unlock()
	path := filepath.Join(tb.TempDir(), "src.db")
	c, err := sqlite.OpenConn(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := sqlitex.ExecuteScript(c, script, nil); err != nil {
		tb.Fatal(err)
	}
	c.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// loadObject uploads data as load object name and loads it, returning the
// load entry's sequence.
func loadObject(tb testing.TB, nc *nats.Conn, name string, data []byte) uint64 {
	tb.Helper()
	digest := upload(tb, nc, name, data)
	code, body := requestErr(tb, nc, service.LoadSubject("main"), []byte(fmt.Sprintf(`{"bucket": %q, "object": %q, "digest": %q}`, snapshot.Bucket, name, digest)))
	if code != 0 {
		tb.Fatalf("load %s: %d %s", name, code, body)
	}
	var reply service.LoadReply
	if err := json.Unmarshal([]byte(body), &reply); err != nil {
		tb.Fatal(err)
	}
	return reply.Seq
}

// objectInfo returns the info of object name in the snapshot bucket, nil
// when there is none.
func objectInfo(tb testing.TB, nc *nats.Conn, name string) *jetstream.ObjectInfo {
	tb.Helper()
	js, _ := jetstream.New(nc)
	obj, err := js.ObjectStore(context.Background(), snapshot.Bucket)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := obj.GetInfo(context.Background(), name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	return info
}

// TestLoad_ObjectsDeletedOnceCovered: a load object records its entry's
// sequence, is loaded once, and is deleted by the first snapshot that
// covers that sequence; one whose entry is later than the snapshot stays.
// A node that had not applied a load entry when its object went takes the
// snapshot instead and ends up like the others.
func TestLoad_ObjectsDeletedOnceCovered(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	cfg := func(id string) service.Config {
		c := snapCfg(id)
		c.Snapshot.Interval = time.Hour // only on demand here
		c.Snapshot.Retain = 1000        // no purge: entries stay in the stream
		return c
	}
	n1 := servicetest.StartNode(t, ns.ClientURL(), cfg("n1"))
	n2 := servicetest.StartNode(t, ns.ClientURL(), cfg("n2"))
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(x)"))

	seqA := loadObject(t, nc, "load/main/a", sqliteFile(t, "CREATE TABLE a(x); INSERT INTO a VALUES(1);"))
	if got, _ := snapshot.LoadSeq(objectInfo(t, nc, "load/main/a")); got != seqA {
		t.Fatalf("load/main/a records entry %d, want %d", got, seqA)
	}
	servicetest.WaitFor(t, 10*time.Second, "n2 to apply load A", func() bool { return n2.DB("main").Applied() >= seqA })
	n2.Stop(t)
	// A copy of n2's database as of load A: a node that will not have
	// applied load B when its object is deleted.
	lagging := t.TempDir()
	data, err := os.ReadFile(filepath.Join(n2.DataDir, "main.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(lagging, "main.sqlite"), data, 0o644)

	seqB := loadObject(t, nc, "load/main/b", sqliteFile(t, "CREATE TABLE b(x); INSERT INTO b VALUES(2);"))
	ok(t, do(t, c, "INSERT INTO b VALUES(3)"))
	// Loaded once.
	code, msg := requestErr(t, nc, service.LoadSubject("main"), []byte(fmt.Sprintf(`{"bucket": %q, "object": "load/main/b", "digest": %q}`, snapshot.Bucket, objectInfo(t, nc, "load/main/b").Digest)))
	if code != 400 || !strings.Contains(msg, fmt.Sprintf("was loaded already, by entry %d", seqB)) {
		t.Fatalf("loading load/main/b again: %d %s", code, msg)
	}

	// n2's database, at load A, snapshots: it covers A, not B.
	js, _ := jetstream.New(nc)
	st, err := snapshot.Open(context.Background(), js, snapshot.Options{Node: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	db, err := apply.Open(filepath.Join(n2.DataDir, "main.sqlite"), apply.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, taken, err := st.Take(context.Background(), "main", db, t.TempDir())
	db.Close()
	if err != nil || !taken || m.Seq != seqA {
		t.Fatalf("snapshot of n2: %+v taken %v err %v, want one at %d", m, taken, err, seqA)
	}
	if objectInfo(t, nc, "load/main/a") != nil {
		t.Error("load/main/a is still stored: the snapshot covers its entry")
	}
	if objectInfo(t, nc, "load/main/b") == nil {
		t.Fatal("load/main/b was deleted, but its entry is after the snapshot")
	}
	// n2 comes back and applies load B from its object.
	n2 = servicetest.StartNode(t, ns.ClientURL(), n2.Config)

	// A snapshot after load B deletes B's object.
	last := streamInfo(t, nc).State.LastSeq
	if code, msg := requestErr(t, nc, service.SnapshotSubject("main"), []byte(fmt.Sprintf(`{"after_seq": %d}`, last))); code != 0 {
		t.Fatalf("snapshot: %d %s", code, msg)
	}
	if objectInfo(t, nc, "load/main/b") != nil {
		t.Fatal("load/main/b is still stored: the snapshot covers its entry")
	}
	// The lagging node meets load B with its object gone: it takes the
	// snapshot in its place.
	n3 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n3", DataDir: lagging, Snapshot: cfg("n3").Snapshot})
	if got := readCount(t, n3, "SELECT count(*) FROM b"); got != 2 {
		t.Fatalf("n3: %d rows in b, want 2", got)
	}
	ok(t, do(t, c, "INSERT INTO b VALUES(4)"))
	sameData(t, nc, n1, n2, n3)
}

// readCount runs a count query on this node's own database.
func readCount(tb testing.TB, n *servicetest.Node, sql string) int64 {
	tb.Helper()
	p, err := n.DB("main").Prepare(context.Background(), stmts(sql))
	if err != nil {
		tb.Fatal(err)
	}
	res, _, err := p.Run(context.Background(), 0)
	if err != nil || res[0].Error != "" {
		tb.Fatalf("%s: %v %+v", sql, err, res)
	}
	return res[0].Values[0][0].(int64)
}
