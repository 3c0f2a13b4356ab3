package service_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// Fault drills: each runs a steady write load, injects one fault, and
// reports acknowledged writes, writes found on every node, duplicates and
// the time to recover. A write is one entry that inserts a unique key into
// w and increments c.n, sent with that key as its idempotency id and
// retried with the same id until it is acknowledged, as a careful client
// does; so the stream never holds a key twice, and a key applied twice
// shows up as a duplicate row and as c.n above the row count.

const faultSchema = "CREATE TABLE w(k TEXT NOT NULL, writer INTEGER); CREATE TABLE c(n INTEGER); INSERT INTO c VALUES(0)"

// faultLoad runs writers, one goroutine per client, until stopped.
type faultLoad struct {
	stopc   chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	acked   map[string]bool
	mark    time.Time   // see waitAcks
	firstAt []time.Time // per writer: when its first write begun after mark was acknowledged
	retries int
}

func startFaultLoad(tb testing.TB, clients []*client.Client) *faultLoad {
	l := &faultLoad{stopc: make(chan struct{}), acked: map[string]bool{}, firstAt: make([]time.Time, len(clients))}
	for w, c := range clients {
		l.wg.Add(1)
		go func(w int, c *client.Client) {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stopc:
					return
				default:
				}
				if !l.write(tb, c, w, fmt.Sprintf("w%d-%d", w, i)) {
					return
				}
			}
		}(w, c)
	}
	return l
}

// write sends one entry until it is acknowledged (true) or the load stops.
func (l *faultLoad) write(tb testing.TB, c *client.Client, w int, key string) bool {
	req := client.Request{
		Statements: []api.Statement{{SQL: "INSERT INTO w(k, writer) VALUES(?, ?)", Params: []any{key, int64(w)}}, {SQL: "UPDATE c SET n = n + 1"}},
		ID:         key,
		TimeoutMS:  2000,
	}
	for {
		began := time.Now()
		resp, err := c.Query(context.Background(), "main", req)
		stored := err == nil || errors.Is(err, client.ErrStored) // stored, not yet applied on that node
		if stored {
			if resp != nil {
				for _, r := range resp.Results {
					if r.Error != "" {
						tb.Errorf("write %s: %s", key, r.Error)
					}
				}
			}
			l.mu.Lock()
			l.acked[key] = true
			if !l.mark.IsZero() && began.After(l.mark) && l.firstAt[w].IsZero() {
				l.firstAt[w] = time.Now()
			}
			l.mu.Unlock()
			return true
		}
		l.mu.Lock()
		l.retries++
		l.mu.Unlock()
		select {
		case <-l.stopc:
			return false // unknown outcome: it may or may not be stored
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// markFault notes the time of the fault: see waitAcks.
func (l *faultLoad) markFault() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mark = time.Now()
	return l.mark
}

// waitAcks waits until every writer has had a write acknowledged that it
// began after the fault, and returns how long after the fault the first
// and the last of these acknowledgements came. Under a steady load every
// writer has a request in flight at the fault, whose reply may be lost:
// the writer waits out its timeout first.
func (l *faultLoad) waitAcks(tb testing.TB, d time.Duration) (resumed, all time.Duration) {
	tb.Helper()
	var first, last time.Time
	servicetest.WaitFor(tb, d, "every writer to get a write acknowledged again", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		first, last = time.Time{}, l.mark
		for _, a := range l.firstAt {
			if a.IsZero() {
				return false
			}
			if a.After(last) {
				last = a
			}
			if first.IsZero() || a.Before(first) {
				first = a
			}
		}
		return true
	})
	return first.Sub(l.mark), last.Sub(l.mark)
}

// probe sends fresh writes, each bounded to 300 ms, until one is
// acknowledged, and returns how long after the fault that was (the time
// for a new request to succeed again) and the write's sequence.
func (l *faultLoad) probe(tb testing.TB, c *client.Client, d time.Duration) (time.Duration, uint64) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for i := 0; time.Now().Before(deadline); i++ {
		key := fmt.Sprintf("probe-%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		resp, err := c.Query(ctx, "main", client.Request{
			Statements: []api.Statement{{SQL: "INSERT INTO w(k, writer) VALUES(?, -1)", Params: []any{key}}, {SQL: "UPDATE c SET n = n + 1"}},
			ID:         key, TimeoutMS: 300})
		cancel()
		if err == nil {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.acked[key] = true
			return time.Since(l.mark), resp.Seq
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("no write succeeded within %v of the fault", d)
	return 0, 0
}

// nodesApplying waits until every node has applied entry seq (written
// after the fault) and returns how long after the fault that was. A node
// whose consumer lived on a stopped server notices only when two of the
// consumer's heartbeats are missing (nats.go's default: 5 s apart), then
// recreates it: allow for that and a meta leader election.
func (l *faultLoad) nodesApplying(tb testing.TB, nodes []*servicetest.Node, seq uint64) time.Duration {
	tb.Helper()
	for _, n := range nodes {
		servicetest.WaitFor(tb, 25*time.Second, n.ID()+" to apply a write made after the fault", func() bool { return n.DB("main").Applied() >= seq })
	}
	return time.Since(l.mark)
}

// waitMore waits until n more writes are acknowledged.
func (l *faultLoad) waitMore(tb testing.TB, n int) {
	tb.Helper()
	l.mu.Lock()
	want := len(l.acked) + n
	l.mu.Unlock()
	servicetest.WaitFor(tb, 15*time.Second, fmt.Sprintf("%d more acknowledged writes", n), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.acked) >= want
	})
}

func (l *faultLoad) stop() (acked, retries int) {
	close(l.stopc)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked), l.retries
}

// faultState is what a node holds: its keys in apply order and c.n.
type faultState struct {
	keys    []string
	counter int64
}

func readFaultState(tb testing.TB, n *servicetest.Node) faultState {
	tb.Helper()
	p, err := n.DB("main").Prepare(context.Background(), stmts("SELECT k FROM w ORDER BY rowid", "SELECT n FROM c"))
	if err != nil {
		tb.Fatal(err)
	}
	res, _, err := p.Run(context.Background(), 0)
	if err != nil || res[0].Error != "" || res[1].Error != "" {
		tb.Fatalf("%s: read state: %v %+v", n.ID(), err, res)
	}
	var s faultState
	for _, row := range res[0].Values {
		s.keys = append(s.keys, row[0].(string))
	}
	s.counter = res[1].Values[0][0].(int64)
	return s
}

// checkFault waits until every node applied the stream (last sequence
// read through nc's server), then checks each node: every acknowledged
// key present, no key twice, c.n equal to the row count (each entry
// applied exactly once), and the same keys in the same order as the first
// node. It returns the report figures.
func checkFault(tb testing.TB, js jetstream.JetStream, nodes []*servicetest.Node, acked map[string]bool) (foundEverywhere, duplicates int) {
	tb.Helper()
	s, err := js.Stream(context.Background(), service.StreamName("main"))
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	last := info.State.LastSeq
	for _, n := range nodes {
		servicetest.WaitFor(tb, 15*time.Second, n.ID()+" to apply the whole stream", func() bool { return n.DB("main").Applied() >= last })
	}
	found := map[string]int{}
	var first faultState
	for i, n := range nodes {
		st := readFaultState(tb, n)
		seen := map[string]bool{}
		for _, k := range st.keys {
			if seen[k] {
				duplicates++
				tb.Errorf("%s: key %s applied twice", n.ID(), k)
			}
			seen[k] = true
			if acked[k] {
				found[k]++
			}
		}
		if st.counter != int64(len(st.keys)) {
			tb.Errorf("%s: counter %d, rows %d: an entry was applied twice or partly", n.ID(), st.counter, len(st.keys))
		}
		if i == 0 {
			first = st
		} else if fmt.Sprint(st.keys) != fmt.Sprint(first.keys) || st.counter != first.counter {
			tb.Errorf("%s holds %d rows (counter %d), %s holds %d (counter %d), or in another order", n.ID(), len(st.keys), st.counter, nodes[0].ID(), len(first.keys), first.counter)
		}
	}
	var missing []string
	for k := range acked {
		if found[k] == len(nodes) {
			foundEverywhere++
		} else {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		tb.Errorf("%d acknowledged writes missing on some node: %v", len(missing), missing[:min(len(missing), 10)])
	}
	return foundEverywhere, duplicates
}

// stopAndCompareFiles stops the nodes (checkpointing their WAL) and wants
// byte-identical database files, apart from the two header counters that
// count file opens.
func stopAndCompareFiles(tb testing.TB, nodes []*servicetest.Node) {
	tb.Helper()
	for _, n := range nodes {
		n.Stop(tb)
	}
	want := readDBFile(tb, filepath.Join(nodes[0].DataDir, "main.sqlite"))
	for _, n := range nodes[1:] {
		if got := readDBFile(tb, filepath.Join(n.DataDir, "main.sqlite")); string(got) != string(want) {
			tb.Errorf("%s: database file differs from %s's", n.ID(), nodes[0].ID())
		}
	}
}

func faultReport(tb testing.TB, name string, acked, found, dups, retries int, recovery time.Duration, extra string) {
	tb.Helper()
	tb.Logf("FAULT %s: acknowledged writes %d, found on every node %d, duplicates %d, time to recover %v%s (client retries %d)",
		name, acked, found, dups, recovery.Round(time.Millisecond), extra, retries)
}

// TestFault_ClusterServerStop stops the nats-server that leads the R3
// stream, under a steady write load from a client on every server of a
// three-server JetStream cluster. The clients and the node of the stopped
// server reconnect to the others.
func TestFault_ClusterServerStop(t *testing.T) {
	servers, nodes, clients := cluster(t)
	ok(t, do(t, clients[0], faultSchema))
	js, _ := jetstream.New(servicetest.Connect(t, servers[0].ClientURL()))
	s, err := js.Stream(context.Background(), service.StreamName("main"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	victim := 0
	for i, srv := range servers {
		if srv.Name() == info.Cluster.Leader {
			victim = i
		}
	}
	// Stream info and the final checks go through a surviving server.
	js, _ = jetstream.New(servicetest.Connect(t, servers[(victim+1)%3].ClientURL()))

	load := startFaultLoad(t, append(clients, clients...)) // two writers per server
	load.waitMore(t, 100)
	servers[victim].Shutdown()
	load.markFault()
	recovery, seq := load.probe(t, clients[(victim+1)%3], 15*time.Second)
	applying := load.nodesApplying(t, nodes, seq)
	_, every := load.waitAcks(t, 15*time.Second)
	load.waitMore(t, 100)
	acked, retries := load.stop()
	found, dups := checkFault(t, js, nodes, load.acked)
	faultReport(t, "stop the stream leader's nats-server ("+servers[victim].Name()+") of 3, R3", acked, found, dups, retries, recovery,
		fmt.Sprintf(" for new writes; every node applying again after %v; every writer after %v (in-flight requests wait out timeout_ms 2000)",
			applying.Round(time.Millisecond), every.Round(time.Millisecond)))
	stopAndCompareFiles(t, nodes)
}

// TestFault_ServerRestart restarts the only nats-server (same port and
// store) under a steady write load: the nodes and clients reconnect, the
// nodes catch up, nothing acknowledged is lost and nothing is applied
// twice, including entries whose acknowledgement the restart swallowed
// (the retry with the same id is a duplicate).
func TestFault_ServerRestart(t *testing.T) {
	ns := servicetest.StartServer(t)
	nodes := []*servicetest.Node{
		servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"}),
		servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n2"}),
	}
	clients := []*client.Client{
		client.New(servicetest.Connect(t, ns.ClientURL())),
		client.New(servicetest.Connect(t, ns.ClientURL())),
		client.New(servicetest.Connect(t, ns.ClientURL())),
	}
	ok(t, do(t, clients[0], faultSchema))
	load := startFaultLoad(t, clients)
	load.waitMore(t, 100)
	restart := servicetest.ShutdownServer(t, ns)
	down := load.markFault()
	ns = restart()
	restartTook := time.Since(down)
	recovery, seq := load.probe(t, clients[0], 15*time.Second)
	applying := load.nodesApplying(t, nodes, seq)
	_, every := load.waitAcks(t, 15*time.Second)
	load.waitMore(t, 100)
	acked, retries := load.stop()
	js, _ := jetstream.New(servicetest.Connect(t, ns.ClientURL()))
	found, dups := checkFault(t, js, nodes, load.acked)
	faultReport(t, "restart the single nats-server", acked, found, dups, retries, recovery,
		fmt.Sprintf(" for new writes (server back in %v); every node applying again after %v; every writer after %v (in-flight requests wait out timeout_ms 2000)",
			restartTook.Round(time.Millisecond), applying.Round(time.Millisecond), every.Round(time.Millisecond)))
	stopAndCompareFiles(t, nodes)
}

// TestFault_KillMidBatch kills a node between publish and apply, three
// times: its apply is held (apply.DB.Hold) while entries are published and
// delivered to it, then it is abandoned without stopping, as a crash would
// leave it: its NATS connection closes, its apply loop never runs again
// (its database is closed before the hold is released, so the batch in
// hand is refused) and the SQLite file holds only what it had committed.
// A new node on the same data dir and node id must resume from the stored
// sequence and apply every entry exactly once.
func TestFault_KillMidBatch(t *testing.T) {
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	n2 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n2"})
	c := client.New(servicetest.Connect(t, ns.ClientURL()))
	js, _ := jetstream.New(servicetest.Connect(t, ns.ClientURL()))
	ok(t, do(t, c, faultSchema))
	servicetest.WaitFor(t, 10*time.Second, "n2 to apply the schema", func() bool { return n2.DB("main").Applied() >= n1.DB("main").Applied() })

	acked := map[string]bool{}
	var recoverMax time.Duration
	var buried []func()
	bury := func() { // close the killed instances: the files are compared once nothing else has them open
		for _, f := range buried {
			f()
		}
	}
	t.Cleanup(bury)
	for round := 0; round < 3; round++ {
		release := n2.DB("main").Hold()
		// Queued writes answer on the JetStream ack, whichever node takes
		// them, so none waits for the held node.
		var last uint64
		for i := 0; i < 200; i++ {
			key := fmt.Sprintf("r%d-%d", round, i)
			resp := ok(t, do(t, c, fmt.Sprintf(`{"statements": [["INSERT INTO w(k) VALUES(?)", %q], "UPDATE c SET n = n + 1"], "id": %q, "queue": true}`, key, key)))
			acked[key] = true
			last = resp.Seq
		}
		servicetest.WaitFor(t, 10*time.Second, "n1 to apply the round", func() bool { return n1.DB("main").Applied() >= last })
		held := n2.DB("main").Applied()
		if held >= last {
			t.Fatalf("n2 applied up to %d while held", held)
		}
		// Crash: no more NATS, and the held batch must never be applied
		// by this instance.
		n2.NC.Close()
		dead := n2
		var once sync.Once
		buried = append(buried, func() {
			once.Do(func() {
				dead.DB("main").Close()
				release()
				dead.Node.Stop() // returns the refused batch's ErrClosed; nothing else to check
			})
		})

		restarted := time.Now()
		n2 = servicetest.StartNode(t, ns.ClientURL(), dead.Config)
		// StartNode returns once the node has applied the stream as it
		// was at start-up.
		took := time.Since(restarted)
		recoverMax = max(recoverMax, took)
		if got := n2.DB("main").Applied(); got < last {
			t.Fatalf("round %d: restarted n2 serves at %d, stream at %d", round, got, last)
		}
		t.Logf("round %d: n2 killed holding entries %d-%d, restarted and caught up in %v", round, held+1, last, took.Round(time.Millisecond))
	}
	found, dups := checkFault(t, js, []*servicetest.Node{n1, n2}, acked)
	faultReport(t, "kill a node between publish and apply, 3 times", len(acked), found, dups, 0, recoverMax, " (slowest restart to caught up)")
	bury()
	stopAndCompareFiles(t, []*servicetest.Node{n1, n2})
}

// TestFault_SlowNode makes one node of a three-server cluster slow (its
// apply held for 300 ms out of every 310) under a write load. NATS spreads
// the requests over the three nodes: a write the slow node answers waits
// for its own apply, as any write does, but writes the other two answer
// keep their pace (none waits for the slow node) while it lags, and once
// the slowness ends it catches up.
func TestFault_SlowNode(t *testing.T) {
	servers, nodes, clients := cluster(t)
	ok(t, do(t, clients[0], faultSchema))
	js, _ := jetstream.New(servicetest.Connect(t, servers[0].ClientURL()))
	slow := nodes[2]
	const hold = 300 * time.Millisecond

	stopSlow := make(chan struct{})
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		for {
			release := slow.DB("main").Hold()
			select {
			case <-stopSlow:
				release()
				return
			case <-time.After(hold):
			}
			release()
			time.Sleep(10 * time.Millisecond)
		}
	}()

	var mu sync.Mutex
	var worstOthers, worstSlow time.Duration
	var bySlow, byOthers int
	var maxLag uint64
	acked := map[string]bool{}
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				key := fmt.Sprintf("w%d-%d", w, i)
				began := time.Now()
				resp, err := clients[w%3].Query(context.Background(), "main", client.Request{
					Statements: []api.Statement{{SQL: "INSERT INTO w(k, writer) VALUES(?, ?)", Params: []any{key, int64(w)}}, {SQL: "UPDATE c SET n = n + 1"}},
					ID:         key, TimeoutMS: 5000})
				took := time.Since(began)
				if err != nil {
					t.Errorf("write %s: %v", key, err)
					return
				}
				ok(t, resp)
				mu.Lock()
				acked[key] = true
				if resp.Node == slow.ID() {
					bySlow++
					worstSlow = max(worstSlow, took)
				} else {
					byOthers++
					worstOthers = max(worstOthers, took)
				}
				if a := slow.DB("main").Applied(); resp.Seq > a {
					maxLag = max(maxLag, resp.Seq-a)
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	close(stopSlow)
	<-slowDone
	ended := time.Now()
	last := streamLastSeq(t, servicetest.Connect(t, servers[0].ClientURL()), "main")
	servicetest.WaitFor(t, 15*time.Second, "the slow node to catch up", func() bool { return slow.DB("main").Applied() >= last })
	recovery := time.Since(ended)
	if maxLag == 0 || byOthers == 0 {
		t.Fatalf("the slow node never lagged (%d) or nobody else answered (%d): the drill tested nothing", maxLag, byOthers)
	}
	if worstOthers >= hold {
		t.Errorf("the slowest write answered by the other nodes took %v, as long as the slow node's hold: it waited for it", worstOthers)
	}
	found, dups := checkFault(t, js, nodes, acked)
	faultReport(t, "one slow node of 3 (apply held 300 ms of every 310)", len(acked), found, dups, 0, recovery,
		fmt.Sprintf(" (the others answered %d writes, slowest %v; the slow node answered %d, slowest %v; it fell up to %d entries behind)",
			byOthers, worstOthers.Round(time.Millisecond), bySlow, worstSlow.Round(time.Millisecond), maxLag))
	stopAndCompareFiles(t, nodes)
}
