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

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
	"github.com/nqlite/nqlite/snapshot"
)

// longEntry is a write whose first statements insert 10 MB in 25,000
// rows (more than the page cache: its pages spill into the WAL while the
// entry runs, which shows it is under way) and whose last runs until its
// budget ends (seconds). Few rows of 400 bytes keep the steps of the
// insert, and so the time a restarted node takes to apply the entry again,
// small under the race detector.
const longEntry = `{"statements": ["INSERT INTO t VALUES('in the entry')",
	"INSERT INTO t SELECT zeroblob(400) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 25000) SELECT x FROM c)",
	"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c WHERE x < 0"], "queue": true}`

// walSize returns the size of database main's WAL in dir (0: none).
func walSize(dir string) int64 {
	fi, err := os.Stat(filepath.Join(dir, "main.sqlite-wal"))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Stop in the middle of a long entry: the statement running is
// interrupted, the batch rolled back, Stop ends well within 10 s with
// everything closed, and the file holds everything before the entry and
// nothing of it; started again, the node applies the entry exactly once.
func TestNode_StopDuringLongEntry(t *testing.T) {
	steps := uint64(100_000_000)
	if raceDetector {
		steps = 1_500_000 // SQLite runs far slower: seconds all the same
	}
	ns := servicetest.StartServer(t)
	node := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1", MaxEntrySteps: steps})
	c := clientFor(t, ns.ClientURL())
	ok(t, do(t, c, "CREATE TABLE t(x)"))
	before := walSize(node.DataDir)
	resp := ok(t, do(t, c, longEntry))
	servicetest.WaitFor(t, 60*time.Second, "the node to be inside the long entry", func() bool { return walSize(node.DataDir) > before+4<<20 })
	if err := stopErrWithin(t, node, 10*time.Second); err != nil {
		t.Fatalf("stop in the middle of an entry: %v", err)
	}
	node.NC.Close()
	info, err := apply.ReadSnapshotInfo(context.Background(), filepath.Join(node.DataDir, "main.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Seq != resp.Seq-1 {
		t.Fatalf("applied sequence in the file: %d, want %d (the interrupted entry is not applied)", info.Seq, resp.Seq-1)
	}
	cfg := node.Config
	start := time.Now()
	node = servicetest.StartNode(t, ns.ClientURL(), cfg) // caught up: the entry is applied
	t.Logf("started again, the entry applied, in %v", time.Since(start).Round(time.Millisecond))
	if got := readCount(t, node, "SELECT count(*) FROM t WHERE x = 'in the entry'"); got != 1 {
		t.Fatalf("the entry's marker row %d times, want once", got)
	}
	if got := readCount(t, node, "SELECT count(*) FROM t"); got != 25001 {
		t.Fatalf("%d rows, want the entry's 25001", got)
	}
}

// Stop while the nats-server has been gone for a while ends all the same,
// with everything closed.
func TestNode_StopNATSUnreachable(t *testing.T) {
	ns := servicetest.StartServer(t)
	node := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	c := clientFor(t, ns.ClientURL())
	ok(t, do(t, c, "CREATE TABLE t(x); INSERT INTO t VALUES(1)"))
	servicetest.ShutdownServer(t, ns)
	servicetest.WaitFor(t, 30*time.Second, "the node to have missed NATS for 3 s", func() bool { return node.Stats("main").StreamAgeMS > 3000 })
	if err := stopErrWithin(t, node, 10*time.Second); err != nil {
		t.Fatalf("stop with NATS gone: %v", err)
	}
}

// TestNode_StartCatchUpDoesNotSpin: a node starting behind its stream
// (fresh, then restarted with its copy) waits for the catch-up without
// busy-waiting: Start's wait wakes up when JetStream is reached and when
// the node caught up, not in a loop over the closed "reached" channel
// (which burnt a core for the whole catch-up, halving its rate on two
// cores: BenchmarkCatchUp).
func TestNode_StartCatchUpDoesNotSpin(t *testing.T) {
	ns := servicetest.StartServer(t)
	c := clientFor(t, ns.ClientURL())
	servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	// One entry whose apply takes a while (20,000 rows: tens of
	// milliseconds, seconds under the race detector), so a starting node
	// is reached well before it has caught up.
	const big = `{"statements": ["CREATE TABLE IF NOT EXISTS t(x)", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 20000) INSERT INTO t SELECT x FROM c"], "timeout_ms": 120000}`
	w := ok(t, do(t, c, big))
	n2 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n2"})
	if got := n2.DB("main").Applied(); got < w.Seq {
		t.Fatalf("n2 started at %d, want at least %d", got, w.Seq)
	}
	if got := n2.StartWakes("main"); got > 3 {
		t.Errorf("fresh start: the wait woke %d times, want at most 3", got)
	}

	dir, cfg := n2.DataDir, n2.Config
	n2.Stop(t)
	w = ok(t, do(t, c, big))
	cfg.DataDir = dir
	n2 = servicetest.StartNode(t, ns.ClientURL(), cfg)
	if got := n2.DB("main").Applied(); got < w.Seq {
		t.Fatalf("restarted n2 started at %d, want at least %d", got, w.Seq)
	}
	if got := n2.StartWakes("main"); got > 3 {
		t.Errorf("restart with a copy: the wait woke %d times, want at most 3", got)
	}
}

// An edge node restarted while its hub is down serves level none reads
// from its copy at once, answers writes and strong reads with 503 at once,
// says "offline" in its stats, and catches up by itself when the hub
// returns.
func TestLeaf_OfflineStart(t *testing.T) {
	hub := servicetest.StartHub(t)
	e1 := startEdge(t, hub, "edge1", "n1")
	e2 := startEdge(t, hub, "edge2", "n2")
	w := ok(t, do(t, e1.c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES('before')"))
	servicetest.WaitFor(t, 10*time.Second, "n2 to apply", func() bool { return e2.node.DB("main").Applied() >= w.Seq })
	dir, cfg := e2.node.DataDir, e2.node.Config
	e2.node.Stop(t)
	e2.cut(t)

	start := time.Now()
	cfg.DataDir = dir
	node := servicetest.StartNode(t, e2.ns.ClientURL(), cfg)
	t.Logf("started offline in %v", time.Since(start).Round(time.Millisecond))
	if st := node.Stats("main"); st.State != "offline" || st.Applied != w.Seq {
		t.Fatalf("stats: %+v, want state offline at %d", st, w.Seq)
	}
	r := ok(t, do(t, e2.c, `{"statements": ["SELECT count(*) FROM t"], "format": "values"}`))
	if r.Node != "n2" || r.Results[0].Values[0][0] != int64(1) {
		t.Fatalf("offline read: %+v", r)
	}
	wantOffline503(t, e2.c, `{"statements": ["INSERT INTO t(v) VALUES('offline')"], "timeout_ms": 60000}`)
	wantOffline503(t, e2.c, `{"statements": ["INSERT INTO t(v) VALUES('offline')"], "queue": true, "timeout_ms": 60000}`)
	wantOffline503(t, e2.c, `{"statements": ["SELECT 1"], "level": "strong", "timeout_ms": 60000}`)
	w = ok(t, do(t, e1.c, "INSERT INTO t(v) VALUES('during the outage')"))

	e2.restore(t)
	servicetest.WaitFor(t, 30*time.Second, "n2 to reach JetStream and catch up", func() bool {
		st := node.Stats("main")
		return st.State == "serving" && st.Applied >= w.Seq
	})
	ok(t, do(t, e2.c, "INSERT INTO t(v) VALUES('after')"))
	if got := edgeRows(t, e1); got != "before|during the outage|after" {
		t.Fatalf("edge1 reads %q", got)
	}
}

func clientFor(tb testing.TB, url string) *client.Client {
	return client.New(servicetest.Connect(tb, url))
}

// stopErrWithin stops node and returns Stop's error; it fails the test if
// Stop takes longer than d.
func stopErrWithin(tb testing.TB, node *servicetest.Node, d time.Duration) error {
	tb.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- node.Node.Stop() }()
	select {
	case err := <-done:
		tb.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
		return err
	case <-time.After(d):
		tb.Fatalf("Stop did not return within %v", d)
		return nil
	}
}

// waitStalledDownload waits until link has stalled in the middle of a
// download by node: the object is larger than the link's allowance
// (StallAfter), and nothing else the node sends or receives comes near
// it. The download's file (pattern, in the node's data dir) may not exist
// yet: the server can deliver the object's first chunks ahead of its
// answer to the Object Store's consumer create, so the stall may hold the
// download inside its Get, before the file is made (seen under -race with
// both cores busy). It logs which of the two it found.
func waitStalledDownload(tb testing.TB, node *servicetest.Node, link *servicetest.Link, pattern string) {
	tb.Helper()
	servicetest.WaitFor(tb, 30*time.Second, "a download to stall in its middle", link.Stalled)
	m, _ := filepath.Glob(filepath.Join(node.DataDir, pattern))
	tb.Logf("the download stalled; its files: %v", m)
}

// bigRows makes database main about 4 MB larger in one request: a snapshot
// or load object of many NATS messages.
const bigRows = "CREATE TABLE big(b); INSERT INTO big SELECT randomblob(500000) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 8) SELECT x FROM c)"

// Stop while the node restores from a snapshot whose download stalled in
// its middle (a link that silently drops every byte): the download ends
// with the node's context, Stop ends well within 10 s with everything
// closed (no error), and the node, started again, catches up.
func TestNode_StopDuringStalledRestore(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	n1 := servicetest.StartNode(t, ns.ClientURL(), snapCfg("n1"))
	link := servicetest.NewLink(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	n2 := servicetest.StartNode(t, "nats://"+link.Addr(), snapCfg("n2"))
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
	ok(t, do(t, c, bigRows))
	last := streamInfo(t, nc).State.LastSeq
	servicetest.WaitFor(t, 10*time.Second, "n2 to apply the first rows", func() bool { return n2.DB("main").Applied() >= last })
	clients := ns.NumClients()
	link.Cut()
	servicetest.WaitFor(t, 10*time.Second, "the server to drop n2's connection", func() bool { return ns.NumClients() < clients })
	writeRows(t, c, 0, 100) // n1 snapshots (4 MB) and purges past n2
	servicetest.WaitFor(t, 10*time.Second, "a purge past n2", func() bool { return streamInfo(t, nc).State.FirstSeq > last+1 })

	link.StallAfter(1 << 20) // n2 reconnects, finds the gap, and its download stalls after 1 MB
	link.Restore()
	waitStalledDownload(t, n2, link, "main.restore-*")
	if st := n2.Stats("main"); st.State != "restoring" {
		t.Fatalf("n2 state %q, want restoring", st.State)
	}
	if err := stopErrWithin(t, n2, 10*time.Second); err != nil {
		t.Fatalf("stop during a stalled download: %v", err)
	}
	n2.NC.Close()

	link.Restore()
	n2 = servicetest.StartNode(t, "nats://"+link.Addr(), n2.Config)
	// Start returns once the restore it needed is over, not when the
	// restore made the snapshot's sequence the applied one (before it
	// ends): the writes below may reach n2 at once.
	if st := n2.Stats("main"); st.State != "serving" || st.Restores == 0 {
		t.Fatalf("restarted n2: state %q after %d restores, want serving after a restore", st.State, st.Restores)
	}
	writeRows(t, c, 100, 110)
	sameData(t, nc, n1, n2)
}

// Stop while the node applies a load entry whose object's download stalled
// in its middle: the same, and the node, started again, applies the load
// once like the others.
func TestNode_StopDuringStalledLoad(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	cfg := func(id string) service.Config {
		c := snapCfg(id)
		c.Snapshot.Interval = time.Hour // the load object, not a snapshot, is fetched
		return c
	}
	n1 := servicetest.StartNode(t, ns.ClientURL(), cfg("n1"))
	link := servicetest.NewLink(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	n2 := servicetest.StartNode(t, "nats://"+link.Addr(), cfg("n2"))
	c := client.New(nc)
	ok(t, do(t, c, "CREATE TABLE t(x)"))
	data := sqliteFile(t, bigRows)
	digest := upload(t, nc, "load/main/big", data)
	before := streamInfo(t, nc).State.LastSeq
	servicetest.WaitFor(t, 10*time.Second, "n2 to apply everything", func() bool { return n2.DB("main").Applied() >= before })

	release := n2.DB("main").Hold() // n2 fetches the object only when it applies the entry
	defer release()
	// Either node may answer; if n2 does, its answer fails when it stops.
	go nc.Request(service.LoadSubject("main"), []byte(fmt.Sprintf(`{"bucket": %q, "object": "load/main/big", "digest": %q}`, snapshot.Bucket, digest)), time.Minute)
	servicetest.WaitFor(t, 30*time.Second, "the load entry to be stored", func() bool { return streamInfo(t, nc).State.LastSeq > before })
	link.StallAfter(1 << 20)
	release()
	waitStalledDownload(t, n2, link, "load-*")
	if err := stopErrWithin(t, n2, 10*time.Second); err != nil {
		t.Fatalf("stop during a stalled load: %v", err)
	}
	n2.NC.Close()
	if got := n2.DB("main").Applied(); got != before {
		t.Fatalf("n2 applied %d after the interrupted load, want %d", got, before)
	}

	link.Restore()
	n2 = servicetest.StartNode(t, "nats://"+link.Addr(), n2.Config)
	if got := readCount(t, n2, "SELECT count(*) FROM big"); got != 8 {
		t.Fatalf("n2: %d loaded rows, want 8", got)
	}
	sameData(t, nc, n1, n2)
}

// Stop of an edge node whose hub has been unreachable for a while (its
// consumer resetting, each attempt refused, backing off) ends with
// everything closed.
func TestLeaf_StopWithHubDown(t *testing.T) {
	hub := servicetest.StartHub(t)
	e := startEdge(t, hub, "edge1", "n1")
	ok(t, do(t, e.c, "CREATE TABLE t(x); INSERT INTO t VALUES(1)"))
	e.cut(t)
	servicetest.WaitFor(t, 30*time.Second, "the node to have missed JetStream for 3 s", func() bool { return e.node.Stats("main").StreamAgeMS > 3000 })
	if err := stopErrWithin(t, e.node, 10*time.Second); err != nil {
		t.Fatalf("stop with the hub down: %v", err)
	}
}

// wantOffline503 sends payload with a long timeout_ms and wants a 503
// saying the node is offline: answered at once, not after the timeout
// (the client's deadline is shorter than timeout_ms).
func wantOffline503(tb testing.TB, c *client.Client, payload string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.Do(ctx, "main", []byte(payload), 0)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || !strings.Contains(ae.Message, "offline") {
		tb.Fatalf("%s while offline: %v, want 503 offline", payload, err)
	}
}

// A node (re)started while its external NATS has no JetStream (here: the
// server restarted without it) and holding a copy serves level none reads
// from it, answers writes and strong reads with 503 at once, shows state
// offline, and catches up by itself once JetStream is back. A node without
// a copy waits for JetStream, says why in its log, and serves once it is
// back.
func TestNode_OfflineStartWithoutJetStream(t *testing.T) {
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	c := clientFor(t, ns.ClientURL())
	w := ok(t, do(t, c, "CREATE TABLE t(v TEXT); INSERT INTO t VALUES('before')"))
	n1.Stop(t)
	noJS := servicetest.ShutdownServer(t, ns)(func(o *server.Options) { o.JetStream = false })

	cfg := n1.Config
	n1 = servicetest.StartNode(t, noJS.ClientURL(), cfg)
	if st := n1.Stats("main"); st.State != "offline" || st.Applied != w.Seq {
		t.Fatalf("stats: %+v, want state offline at %d", st, w.Seq)
	}
	c = clientFor(t, noJS.ClientURL())
	if r := ok(t, do(t, c, `{"statements": ["SELECT count(*) FROM t"], "format": "values"}`)); r.Node != "n1" || r.Results[0].Values[0][0] != int64(1) {
		t.Fatalf("offline read: %+v", r)
	}
	wantOffline503(t, c, `{"statements": ["INSERT INTO t VALUES('offline')"], "timeout_ms": 60000}`)
	wantOffline503(t, c, `{"statements": ["INSERT INTO t VALUES('offline')"], "queue": true, "timeout_ms": 60000}`)
	wantOffline503(t, c, `{"statements": ["SELECT 1"], "level": "strong", "timeout_ms": 60000}`)

	// A node with no copy waits, and says why.
	var logs logBuffer
	started := make(chan error, 1)
	var n2 *service.Node
	nc2 := servicetest.Connect(t, noJS.ClientURL())
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var err error
		n2, err = service.Start(ctx, nc2, service.Config{NodeID: "n2", DataDir: t.TempDir(), Logger: logs.logger()})
		started <- err
	}()
	servicetest.WaitFor(t, 30*time.Second, "n2 to log that it waits for JetStream", func() bool {
		return strings.Contains(logs.String(), "waiting for JetStream: no local copy of the database to serve meanwhile")
	})
	select {
	case err := <-started:
		t.Fatalf("n2 started without JetStream and without a copy: %v", err)
	default:
	}

	servicetest.ShutdownServer(t, noJS)(func(o *server.Options) { o.JetStream = true })
	servicetest.WaitFor(t, 30*time.Second, "n1 to reach JetStream", func() bool { return n1.Stats("main").State == "serving" })
	if err := <-started; err != nil {
		t.Fatalf("n2: %v", err)
	}
	defer n2.Stop()
	after := ok(t, do(t, c, "INSERT INTO t VALUES('after')"))
	for _, n := range []*service.Node{n1.Node, n2} {
		n := n
		servicetest.WaitFor(t, 30*time.Second, n.ID()+" to apply the write", func() bool { return n.DB("main").Applied() >= after.Seq })
	}
	if got := readCount(t, &servicetest.Node{Node: n2}, "SELECT count(*) FROM t"); got != 2 {
		t.Fatalf("n2 reads %d rows, want 2", got)
	}
}
