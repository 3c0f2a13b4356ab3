package service_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// stopWithin stops node and fails the test if Stop takes longer than d.
func stopWithin(tb testing.TB, node *servicetest.Node, d time.Duration) {
	tb.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		node.Node.Stop()
		close(done)
	}()
	select {
	case <-done:
		tb.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(d):
		tb.Fatalf("Stop did not return within %v", d)
	}
}

// Stop in the middle of an entry that would run for minutes: the
// statement is interrupted, the batch rolled back, Stop ends well within
// 10 s, and the file holds everything before the entry and nothing of it.
func TestNode_StopDuringLongEntry(t *testing.T) {
	ns := servicetest.StartServer(t)
	node := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1", MaxEntrySteps: service.MaxEntrySteps})
	c := clientFor(t, ns.ClientURL())
	ok(t, do(t, c, "CREATE TABLE t(x)"))
	resp := ok(t, do(t, c, `{"statements": ["INSERT INTO t VALUES('in the entry')", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c WHERE x < 0"], "queue": true}`))
	servicetest.WaitFor(t, 10*time.Second, "the long entry to be stored", func() bool { return node.Stats("main").StreamLastSeq >= resp.Seq })
	stopWithin(t, node, 10*time.Second)
	node.NC.Close()
	info, err := apply.ReadSnapshotInfo(context.Background(), filepath.Join(node.DataDir, "main.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Seq != resp.Seq-1 {
		t.Fatalf("applied sequence in the file: %d, want %d (the interrupted entry is not applied)", info.Seq, resp.Seq-1)
	}
}

// Stop while the nats-server is gone ends all the same.
func TestNode_StopNATSUnreachable(t *testing.T) {
	ns := servicetest.StartServer(t)
	node := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	c := clientFor(t, ns.ClientURL())
	ok(t, do(t, c, "CREATE TABLE t(x); INSERT INTO t VALUES(1)"))
	servicetest.ShutdownServer(t, ns)
	stopWithin(t, node, 10*time.Second)
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
	for _, p := range []string{"INSERT INTO t(v) VALUES('offline')", `{"statements": ["SELECT 1"], "level": "strong"}`} {
		e := doErr(t, e2.c, p)
		if e.Code != api.CodeUnavailable || !strings.Contains(e.Message, "offline") {
			t.Fatalf("%s while offline: %d %q, want 503 offline", p, e.Code, e.Message)
		}
	}
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
