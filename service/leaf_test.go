package service_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// edge is a leaf-node site: a nats-server joined to the hub through a
// link the test can cut, one nqlite node on it using the hub's JetStream,
// and a local client.
type edge struct {
	ns   *server.Server
	link *servicetest.Link
	node *servicetest.Node
	c    *client.Client
}

func startEdge(tb testing.TB, hub *servicetest.Hub, name, nodeID string, opts ...func(*server.Options)) *edge {
	tb.Helper()
	ns, link := servicetest.StartLeaf(tb, hub, name, opts...)
	node := servicetest.StartNode(tb, ns.ClientURL(), service.Config{NodeID: nodeID, JSDomain: servicetest.HubDomain})
	return &edge{ns: ns, link: link, node: node, c: client.New(servicetest.Connect(tb, ns.ClientURL()))}
}

// cut breaks the edge's link to the hub and waits until its server noticed.
func (e *edge) cut(tb testing.TB) {
	tb.Helper()
	e.link.Cut()
	servicetest.WaitFor(tb, 10*time.Second, "the leaf link to go down", func() bool { return e.ns.NumLeafNodes() == 0 })
}

// restore mends the link and waits until the leaf server is back.
func (e *edge) restore(tb testing.TB) {
	tb.Helper()
	e.link.Restore()
	servicetest.WaitFor(tb, 10*time.Second, "the leaf link to come back", func() bool { return e.ns.NumLeafNodes() == 1 })
}

// wantUnreachable sends payload to the edge and wants a 503 saying
// JetStream is unreachable within 2 s (a write's timeout is 5 s).
func wantUnreachable(tb testing.TB, e *edge, payload string) time.Duration {
	tb.Helper()
	start := time.Now()
	resp, err := e.c.Do(context.Background(), "main", []byte(payload), 0)
	took := time.Since(start)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || !strings.Contains(ae.Message, "JetStream is unreachable") {
		tb.Fatalf("%s with the link down: got %+v, %v; want 503 JetStream is unreachable", payload, resp, err)
	}
	if took > 2*time.Second {
		tb.Fatalf("%s with the link down: the 503 took %v", payload, took)
	}
	return took
}

// edgeRows reads every v of t on the edge's own node, level strong.
func edgeRows(tb testing.TB, e *edge) string {
	tb.Helper()
	resp := ok(tb, do(tb, e.c, `{"statements": ["SELECT group_concat(v, '|') FROM (SELECT v FROM t ORDER BY id)"], "format": "values", "level": "strong"}`))
	if resp.Node != e.node.ID() {
		tb.Fatalf("answered by %s, want the edge's own node %s", resp.Node, e.node.ID())
	}
	v, _ := resp.Results[0].Values[0][0].(string)
	return v
}

// TestLeaf_Edges: two edge sites, each a leaf-node nats-server without
// JetStream of its own and one node using the hub's JetStream (domain
// "hub"). A write on one edge is read on the other. With one edge's link
// cut, its local reads keep working, its writes, queued writes and strong
// reads fail fast with 503, the other edge keeps writing, and when the
// link returns the cut edge catches up by itself.
func TestLeaf_Edges(t *testing.T) {
	hub := servicetest.StartHub(t)
	e1 := startEdge(t, hub, "edge1", "n1")
	e2 := startEdge(t, hub, "edge2", "n2")

	w := ok(t, do(t, e1.c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES('edge1')"))
	if w.Node != "n1" {
		t.Fatalf("edge1's write answered by %s", w.Node)
	}
	r := ok(t, do(t, e2.c, fmt.Sprintf(`{"statements": ["SELECT v FROM t"], "after_seq": %d, "format": "values"}`, w.Seq)))
	if r.Node != "n2" || r.Results[0].Values[0][0] != "edge1" {
		t.Fatalf("edge2 reading edge1's write: %+v", r)
	}
	w = ok(t, do(t, e2.c, "INSERT INTO t(v) VALUES('edge2')"))
	if w.Node != "n2" {
		t.Fatalf("edge2's write answered by %s", w.Node)
	}
	if got := edgeRows(t, e1); got != "edge1|edge2" {
		t.Fatalf("edge1 reads %q", got)
	}

	e2.cut(t)
	// Wait until the hub dropped n2's pull request for lack of interest (it
	// keeps a request younger than 2 s, see TestLeaf_LostDelivery): entries
	// written meanwhile then stay pending for n2.
	hubJS, err := jetstream.New(servicetest.Connect(t, hub.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	servicetest.WaitFor(t, 10*time.Second, "the hub to drop the cut edge's pull request", func() bool {
		return consumersWaiting(t, hubJS) == 1 // n1's only
	})
	r = ok(t, do(t, e2.c, `{"statements": ["SELECT count(*) FROM t"], "format": "values"}`))
	if r.Node != "n2" || r.Results[0].Values[0][0] != int64(2) {
		t.Fatalf("level none read on the cut edge: %+v", r)
	}
	for _, p := range []string{
		`INSERT INTO t(v) VALUES('lost')`,
		`{"statements": ["INSERT INTO t(v) VALUES('lost, queued')"], "queue": true}`,
		`{"statements": ["SELECT count(*) FROM t"], "level": "strong"}`,
	} {
		took := wantUnreachable(t, e2, p)
		t.Logf("link down: %s -> 503 in %v", p, took.Round(time.Millisecond))
	}
	for i := 0; i < 3; i++ {
		w = ok(t, do(t, e1.c, fmt.Sprintf("INSERT INTO t(v) VALUES('edge1 during the cut %d')", i)))
	}

	e2.restore(t)
	back := time.Now()
	servicetest.WaitFor(t, 15*time.Second, "n2 to catch up after the link returned", func() bool { return e2.node.DB("main").Applied() >= w.Seq })
	t.Logf("link back: n2 caught up with entry %d in %v, with no command", w.Seq, time.Since(back).Round(time.Millisecond))

	ok(t, do(t, e2.c, "INSERT INTO t(v) VALUES('edge2 after')"))
	want := "edge1|edge2|edge1 during the cut 0|edge1 during the cut 1|edge1 during the cut 2|edge2 after"
	for _, e := range []*edge{e1, e2} {
		if got := edgeRows(t, e); got != want {
			t.Errorf("%s reads %q, want %q", e.node.ID(), got, want)
		}
	}
}

// consumersWaiting counts the pull requests the hub holds on the
// consumers of stream NQLITE_main. Consumer info makes the server drop
// requests nobody listens for any more.
func consumersWaiting(tb testing.TB, js jetstream.JetStream) int {
	tb.Helper()
	s, err := js.Stream(context.Background(), service.StreamName("main"))
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	l := s.ListConsumers(context.Background())
	for info := range l.Info() {
		n += info.NumWaiting
	}
	if err := l.Err(); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestLeaf_LostDelivery cuts an edge's link right after its node started,
// while the hub still holds the node's fresh pull request (the server
// keeps a request younger than 2 s across leaf nodes even with no
// interest), and writes on the other edge: the hub delivers the entry
// into the broken link. When the link returns, the node must still catch
// up with no further write: nats.go's pull-based ordered consumer notices
// a lost message only when a later one arrives, so the follower's stall
// check must recreate it.
func TestLeaf_LostDelivery(t *testing.T) {
	hub := servicetest.StartHub(t)
	e1 := startEdge(t, hub, "edge1", "n1")
	ok(t, do(t, e1.c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))
	e2 := startEdge(t, hub, "edge2", "n2")
	started := time.Now()
	e2.cut(t)
	w := ok(t, do(t, e1.c, "INSERT INTO t(v) VALUES('into the broken link')"))
	if d := time.Since(started); d > 1500*time.Millisecond {
		t.Logf("the write came %v after n2 started: the hub may have dropped its pull request, so this run may not lose the delivery", d)
	}
	e2.restore(t)
	back := time.Now()
	servicetest.WaitFor(t, 10*time.Second, "n2 to catch up with no further write", func() bool { return e2.node.DB("main").Applied() >= w.Seq })
	t.Logf("n2 caught up %v after the link returned", time.Since(back).Round(time.Millisecond))
	if got := edgeRows(t, e2); got != "into the broken link" {
		t.Fatalf("n2 reads %q", got)
	}
}

// TestLeaf_SilentPartition: the link drops every byte but no connection
// closes. The leaf server notices through missing PONGs (here within
// about 3 x 100 ms; nqlite's embedded leaf uses 5 s and 2 pings out), and
// from then on writes fail fast as with a cut link.
func TestLeaf_SilentPartition(t *testing.T) {
	hub := servicetest.StartHub(t)
	fastPing := func(o *server.Options) { o.PingInterval, o.MaxPingsOut = 100*time.Millisecond, 2 }
	e1 := startEdge(t, hub, "edge1", "n1", fastPing)
	ok(t, do(t, e1.c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))

	e1.link.Stall()
	stalled := time.Now()
	servicetest.WaitFor(t, 10*time.Second, "the leaf server to notice the silent partition", func() bool { return e1.ns.NumLeafNodes() == 0 })
	t.Logf("silent partition noticed in %v", time.Since(stalled).Round(time.Millisecond))
	wantUnreachable(t, e1, `INSERT INTO t(v) VALUES('lost')`)
	if r := ok(t, do(t, e1.c, `SELECT count(*) AS n FROM t`)); r.Results[0].Rows[0]["n"] != int64(0) {
		t.Fatalf("level none read: %+v", r)
	}

	e1.restore(t)
	// The hub's interest reaches the leaf server just after the link: a
	// write refused as unreachable (not stored) meanwhile is retried.
	servicetest.WaitFor(t, 10*time.Second, "a write to succeed after the link returned", func() bool {
		resp, err := e1.c.Do(context.Background(), "main", []byte("INSERT INTO t(v) VALUES('after')"), 0)
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeUnavailable && strings.Contains(ae.Message, "JetStream is unreachable") {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		ok(t, resp)
		return true
	})
	if got := edgeRows(t, e1); got != "after" {
		t.Fatalf("reads %q", got)
	}
}
