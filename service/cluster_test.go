package service_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// cluster starts three clustered nats-servers, one node connected to each
// with an R3 stream, and a client per server. Within a cluster NATS picks
// any member of a queue group at random (only leaf connections defer to
// local members), so clients[i] does not necessarily reach nodes[i]:
// tests that need a given node ask until it answers (fromNode).
func cluster(tb testing.TB) ([]*server.Server, []*servicetest.Node, []*client.Client) {
	tb.Helper()
	servers := servicetest.StartCluster(tb, 3)
	var nodes []*servicetest.Node
	var clients []*client.Client
	for i, s := range servers {
		nodes = append(nodes, servicetest.StartNode(tb, s.ClientURL(), service.Config{NodeID: fmt.Sprintf("n%d", i+1), Replicas: 3}))
		clients = append(clients, client.New(servicetest.Connect(tb, s.ClientURL())))
	}
	return servers, nodes, clients
}

func query(tb testing.TB, c *client.Client, r client.Request) *api.Response {
	tb.Helper()
	resp, err := c.Query(context.Background(), "main", r)
	if err != nil {
		tb.Fatalf("%+v: %v", r.Statements, err)
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

// TestCluster_IdenticalFiles writes with random(), randomblob(), DEFAULT
// CURRENT_TIMESTAMP and other 'now' defaults, a trigger using 'now',
// last_insert_rowid() and changes(), from all three nodes at once, restarts
// one node in the middle and starts a fourth late: every node must end
// with a byte-identical SQLite file.
func TestCluster_IdenticalFiles(t *testing.T) {
	servers, nodes, clients := cluster(t)
	ok(t, query(t, clients[0], client.Request{Statements: stmts(
		`CREATE TABLE t(id INTEGER PRIMARY KEY, note TEXT,
			r INTEGER DEFAULT (random()), b BLOB DEFAULT (randomblob(8)),
			ts TEXT DEFAULT CURRENT_TIMESTAMP, d TEXT DEFAULT CURRENT_DATE, tm TEXT DEFAULT CURRENT_TIME,
			sub TEXT DEFAULT (datetime('now', 'subsec')), j REAL DEFAULT (julianday('now')),
			u INTEGER DEFAULT (unixepoch('now')), s TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))`,
		`CREATE TABLE log(id INTEGER PRIMARY KEY, tid INTEGER, at TEXT, rnd INTEGER, lid INTEGER, ch INTEGER)`,
		`CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
			INSERT INTO log(tid, at, rnd) VALUES(new.id, datetime('now', 'subsec'), random());
		END`,
		`CREATE INDEX t_day ON t(date(ts))`,
	)}))

	write := func(c *client.Client, i int) {
		var sql []string
		switch i % 4 {
		case 0:
			sql = []string{fmt.Sprintf("INSERT INTO t(note) VALUES('n%d')", i)}
		case 1:
			sql = []string{"INSERT INTO log(tid, rnd, lid, ch) VALUES(-1, random(), last_insert_rowid(), changes())"}
		case 2:
			sql = []string{fmt.Sprintf("UPDATE t SET note = hex(randomblob(4)) || datetime() WHERE id %% 3 = %d", i%3),
				"INSERT INTO log(tid, lid, ch) VALUES(-2, last_insert_rowid(), changes())"}
		case 3:
			sql = []string{fmt.Sprintf("INSERT INTO t(note, r) VALUES('n%d', abs(random()) %% 100)", i), "SELECT changes(), last_insert_rowid()"}
		}
		resp := query(t, c, client.Request{Statements: stmts(sql...)})
		ok(t, resp)
	}
	run := func(from, to int) {
		var wg sync.WaitGroup
		for n := 0; n < 3; n++ {
			wg.Add(1)
			go func(n int) {
				defer wg.Done()
				for i := from + n; i < to; i += 3 {
					write(clients[n], i)
				}
			}(n)
		}
		wg.Wait()
	}
	run(0, 150)
	// Restart node 2: its connection state (last_insert_rowid, changes) is
	// fresh afterwards and must not change what it computes.
	nodes[1].Stop(t)
	run(150, 200)
	nodes[1] = servicetest.StartNode(t, servers[1].ClientURL(), nodes[1].Config)
	run(200, 300)

	// A node started late catches up before it serves.
	last := streamLastSeq(t, servicetest.Connect(t, servers[0].ClientURL()), "main")
	late := servicetest.StartNode(t, servers[2].ClientURL(), service.Config{NodeID: "n4", Replicas: 3})
	if got := late.DB("main").Applied(); got < last {
		t.Fatalf("late node serves at %d, stream was at %d when it started", got, last)
	}
	nodes = append(nodes, late)
	last = streamLastSeq(t, servicetest.Connect(t, servers[0].ClientURL()), "main")
	for _, n := range nodes {
		n := n
		servicetest.WaitFor(t, 30*time.Second, n.ID()+" to apply everything", func() bool { return n.DB("main").Applied() >= last })
	}
	for _, n := range nodes {
		n.Stop(t) // closing the last connection checkpoints the WAL into the file
	}
	want := readDBFile(t, filepath.Join(nodes[0].DataDir, "main.sqlite"))
	for _, n := range nodes[1:] {
		got := readDBFile(t, filepath.Join(n.DataDir, "main.sqlite"))
		if !bytes.Equal(got, want) {
			t.Errorf("%s: database file differs from n1's (%d vs %d bytes)", n.ID(), len(got), len(want))
			for i := range got {
				if i < len(want) && got[i] != want[i] {
					t.Logf("first difference at byte %d (page %d)", i, i/4096+1)
					break
				}
			}
			a, b := dumpFile(t, filepath.Join(nodes[0].DataDir, "main.sqlite")), dumpFile(t, filepath.Join(n.DataDir, "main.sqlite"))
			if a != b {
				t.Logf("logical dumps differ:\n%s\n----\n%s", a, b)
			}
		}
	}
}

// TestCluster_ReadConsistency holds one node's apply so it lags, then
// checks level none reads stale data, strong and after_seq reads wait (504
// not_reached within their timeout), and see the write once the node catches up.
func TestCluster_ReadConsistency(t *testing.T) {
	_, nodes, clients := cluster(t)
	ok(t, query(t, clients[0], client.Request{Statements: stmts("CREATE TABLE t(x)")}))
	servicetest.WaitFor(t, 10*time.Second, "n3 to apply the table", func() bool { return nodes[2].DB("main").Applied() >= 1 })

	release := nodes[2].DB("main").Hold()
	defer release()
	// queue: any node may take the write, n3 included, and it is not applied there yet.
	w := ok(t, query(t, clients[0], client.Request{Statements: stmts("INSERT INTO t VALUES(1)"), Queue: true}))
	count := client.Request{Statements: stmts("SELECT count(*) FROM t"), Format: api.FormatValues}

	// Queue groups spread requests over the cluster's nodes at random, so
	// ask until the lagging node n3 answers.
	stale := fromNode(t, clients[2], count, "n3")
	if stale.err != nil || stale.resp.Results[0].Values[0][0] != int64(0) || stale.resp.Seq >= w.Seq {
		t.Fatalf("level none on the lagging node: %+v %v", stale.resp, stale.err)
	}
	for _, r := range []client.Request{
		{Statements: count.Statements, Level: api.LevelStrong, TimeoutMS: 100},
		{Statements: count.Statements, AfterSeq: w.Seq, TimeoutMS: 100},
	} {
		got := fromNode(t, clients[2], r, "n3")
		if ae, ok := got.err.(*api.Error); !ok || ae.Kind != api.KindNotReached || ae.Code != api.CodeGatewayTimeout {
			t.Fatalf("%+v on the held node: got %v, want 504 not_reached", r, got.err)
		}
	}
	// Consistent reads in flight on every node while n3 is held; at 30
	// each, some reach n3 (all but surely: (2/3)^30 < 1e-5 otherwise).
	done := make(chan answer, 60)
	for i := 0; i < 30; i++ {
		for _, r := range []client.Request{
			{Statements: count.Statements, Format: api.FormatValues, Level: api.LevelStrong, TimeoutMS: 20000},
			{Statements: count.Statements, Format: api.FormatValues, AfterSeq: w.Seq, TimeoutMS: 20000},
		} {
			go func(r client.Request) {
				resp, err := clients[i%3].Query(context.Background(), "main", r)
				done <- answer{resp, err}
			}(r)
		}
	}
	servicetest.WaitFor(t, 10*time.Second, "reads to queue up on n3", func() bool {
		return nodes[2].DB("main").Applied() < w.Seq // still held
	})
	release()
	fromN3 := 0
	for i := 0; i < 60; i++ {
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.resp.Results[0].Values[0][0] != int64(1) || r.resp.Seq < w.Seq {
			t.Fatalf("consistent read on %s: %+v", r.resp.Node, r.resp)
		}
		if r.resp.Node == "n3" {
			fromN3++
		}
	}
	if fromN3 == 0 {
		t.Fatal("no consistent read reached n3")
	}
}

type answer struct {
	resp *api.Response
	err  error
}

// fromNode sends r until node answers it (up to 500 times).
func fromNode(tb testing.TB, c *client.Client, r client.Request, node string) answer {
	tb.Helper()
	for i := 0; i < 500; i++ {
		resp, err := c.Query(context.Background(), "main", r)
		if resp != nil && resp.Node == node {
			return answer{resp, err}
		}
		if ae, ok := err.(*api.Error); ok && ae.Node == node {
			return answer{resp, err}
		}
		if err != nil {
			if _, ok := err.(*api.Error); !ok {
				tb.Fatal(err)
			}
		}
	}
	tb.Fatalf("%s never answered", node)
	return answer{}
}

// TestNode_RestartExactlyOnce stops a node in the middle of a stream of
// increments and restarts it: it resumes from its stored sequence, never
// applying an entry twice or skipping one.
func TestNode_RestartExactlyOnce(t *testing.T) {
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	n2 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n2"})
	c := client.New(servicetest.Connect(t, ns.ClientURL()))
	ok(t, do(t, c, "CREATE TABLE counter(n INTEGER); INSERT INTO counter VALUES(0)"))
	const N = 300
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < N; i += 4 {
				ok(t, do(t, c, "UPDATE counter SET n = n + 1"))
				if i == N/2 {
					n2.Stop(t)
				}
			}
		}(g)
	}
	wg.Wait()
	n2 = servicetest.StartNode(t, ns.ClientURL(), n2.Config)
	last := streamLastSeq(t, n1.NC, "main")
	for _, n := range []*servicetest.Node{n1, n2} {
		servicetest.WaitFor(t, 20*time.Second, n.ID()+" catching up", func() bool { return n.DB("main").Applied() >= last })
		if got := readCounter(t, n); got != N {
			t.Errorf("%s: counter %d, want %d", n.ID(), got, N)
		}
	}
	// A third restart with nothing new changes nothing.
	n2.Stop(t)
	n2 = servicetest.StartNode(t, ns.ClientURL(), n2.Config)
	if got := readCounter(t, n2); got != N || n2.DB("main").Applied() != last {
		t.Errorf("after idle restart: counter %d applied %d, want %d at %d", got, n2.DB("main").Applied(), N, last)
	}
}

// readCounter reads counter.n from this node's own database.
func readCounter(tb testing.TB, n *servicetest.Node) int64 {
	tb.Helper()
	p, err := n.DB("main").Prepare(context.Background(), stmts("SELECT n FROM counter"))
	if err != nil {
		tb.Fatal(err)
	}
	res, _, err := p.Run(context.Background(), 0)
	if err != nil || res[0].Error != "" {
		tb.Fatalf("read counter: %v %+v", err, res)
	}
	return res[0].Values[0][0].(int64)
}

// readDBFile reads a SQLite file with the two header counters that SQLite
// bumps per connection history rather than per content zeroed: the file
// change counter (bytes 24-27) and version-valid-for (bytes 92-95), see
// https://sqlite.org/fileformat2.html#database_header. A node that was
// restarted has opened the file more often; every other byte must match.
func readDBFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if len(b) < 100 {
		tb.Fatalf("%s: %d bytes, not a SQLite file", path, len(b))
	}
	copy(b[24:28], make([]byte, 4))
	copy(b[92:96], make([]byte, 4))
	return b
}

// dumpFile renders every row of every table of a SQLite file, for
// diagnosing a difference between nodes. (Tests may read SQLite directly;
// the service itself reaches it only through apply.)
func dumpFile(tb testing.TB, path string) string {
	tb.Helper()
	c, err := sqlite.OpenConn(path, sqlite.OpenReadOnly)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	var out bytes.Buffer
	var tables []string
	sqlitex.ExecTransient(c, "SELECT name, sql FROM sqlite_master ORDER BY name", func(s *sqlite.Stmt) error {
		fmt.Fprintf(&out, "%s\n", s.ColumnText(1))
		if s.ColumnText(1) != "" && !bytes.HasPrefix([]byte(s.ColumnText(1)), []byte("CREATE INDEX")) && !bytes.HasPrefix([]byte(s.ColumnText(1)), []byte("CREATE TRIGGER")) {
			tables = append(tables, s.ColumnText(0))
		}
		return nil
	})
	for _, tname := range tables {
		sqlitex.ExecTransient(c, "SELECT * FROM "+tname, func(s *sqlite.Stmt) error {
			fmt.Fprintf(&out, "%s:", tname)
			for i := 0; i < s.ColumnCount(); i++ {
				fmt.Fprintf(&out, " %v", s.ColumnText(i))
			}
			out.WriteByte('\n')
			return nil
		})
	}
	return out.String()
}

// TestCluster_ClassifyOnLaggingNode: a statement that depends on a table
// another node already created (and acknowledged) is classified by a node
// that has not applied the CREATE yet: it must catch up and send the
// INSERT through the stream, not fail with "no such table".
func TestCluster_ClassifyOnLaggingNode(t *testing.T) {
	_, nodes, clients := cluster(t)
	release := nodes[2].DB("main").Hold()
	defer release()
	created := ok(t, query(t, clients[0], client.Request{Statements: stmts("CREATE TABLE k(x)"), Queue: true}))
	servicetest.WaitFor(t, 10*time.Second, "n1 to apply the CREATE", func() bool { return nodes[0].DB("main").Applied() >= created.Seq })
	const n = 30 // some reach n3: (2/3)^30 < 1e-5 otherwise
	done := make(chan answer, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			resp, err := clients[i%3].Query(context.Background(), "main", client.Request{Statements: stmts("INSERT INTO k VALUES(1)"), TimeoutMS: 20000})
			done <- answer{resp, err}
		}(i)
	}
	servicetest.WaitFor(t, 10*time.Second, "an INSERT to wait on n3 catching up", func() bool { return nodes[2].DB("main").Waiting() > 0 })
	release()
	fromN3 := 0
	for i := 0; i < n; i++ {
		a := <-done
		if a.err != nil {
			t.Fatal(a.err)
		}
		ok(t, a.resp)
		if a.resp.Node == "n3" {
			fromN3++
		}
	}
	if fromN3 == 0 {
		t.Fatal("no INSERT reached n3")
	}
	if got := scalar(t, clients[2], "SELECT count(*) FROM k"); got != int64(n) {
		t.Fatalf("rows: %v, want %d", got, n)
	}
}
