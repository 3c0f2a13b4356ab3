package service_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// TestCluster_Budget runs writes that would never end (or end only after a
// very long time) through a three-node R3 cluster whose nodes accept
// writes with different step budgets: each is answered with the budget
// error of the node that accepted it, every node applies it alike (the
// budget travels in the entry) and moves on; a 100k-row INSERT ... SELECT
// passes, and the three database files end byte-identical.
func TestCluster_Budget(t *testing.T) {
	if raceDetector {
		// Tens of millions of SQLite steps on three nodes in one process:
		// minutes under the race detector. The budget's own race-relevant
		// code runs in apply's tests.
		t.Skip("skipped under the race detector (runs in go test ./...)")
	}
	servers := servicetest.StartCluster(t, 3)
	budget := map[string]uint64{"n1": 4_000_000, "n2": 5_000_000, "n3": 6_000_000}
	const maxBytes = 16 << 20
	var nodes []*servicetest.Node
	var clients []*client.Client
	for i, s := range servers {
		id := fmt.Sprintf("n%d", i+1)
		nodes = append(nodes, servicetest.StartNode(t, s.ClientURL(), service.Config{NodeID: id, Replicas: 3,
			MaxEntrySteps: budget[id], MaxEntryBytes: maxBytes}))
		clients = append(clients, client.New(servicetest.Connect(t, s.ClientURL())))
	}
	ok(t, query(t, clients[0], client.Request{Statements: stmts(
		"CREATE TABLE t(x)",
		"CREATE TABLE k(x)",
		"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000) INSERT INTO k SELECT x FROM c",
		"CREATE TABLE f1(x)", "CREATE TABLE f2(x)", "CREATE TABLE f3(x)", "CREATE TABLE f4(x)",
		"CREATE TRIGGER tf1 AFTER INSERT ON f1 BEGIN INSERT INTO f2 SELECT x FROM k; END",
		"CREATE TRIGGER tf2 AFTER INSERT ON f2 BEGIN INSERT INTO f3 SELECT x FROM k; END",
		"CREATE TRIGGER tf3 AFTER INSERT ON f3 BEGIN INSERT INTO f4 SELECT x FROM k; END",
		"CREATE TABLE big(id INTEGER PRIMARY KEY, name TEXT, n INTEGER)",
	)}))

	stepsErr := func(node string) string {
		return fmt.Sprintf("exceeded the execution budget of %d steps; split the work or raise --max-entry-steps", budget[node])
	}
	bytesErr := fmt.Sprintf("exceeded the write budget of %d bytes; split the work or raise --max-entry-bytes", maxBytes)
	for i, tc := range []struct {
		name, sql string
		bytes     bool // over the byte budget, not the step budget
	}{
		{"endless recursive CTE", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c", false},
		{"huge cross join", "INSERT INTO t SELECT count(*) FROM k AS a, k AS b, k AS c, k AS d, k AS e", false},
		// Triggers cannot recurse (recursive_triggers cannot be set, and
		// SQLite stops a trigger that would fire itself), so the endless
		// chain is one that fans out: f1 -> f2 -> f3 -> f4, 10^9 rows.
		{"endless trigger chain (10^9 rows)", "INSERT INTO f1 VALUES(1)", false},
		{"endless zeroblob rows", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT zeroblob(1000000) FROM c", true},
	} {
		for _, tx := range []bool{false, true} {
			resp := query(t, clients[i%3], client.Request{Statements: stmts(
				"INSERT INTO t VALUES('before')", tc.sql, "INSERT INTO t VALUES('after')"), Transaction: tx, TimeoutMS: 60000})
			want := []string{"", stepsErr(resp.Node), stepsErr(resp.Node)}
			if tc.bytes {
				want = []string{"", bytesErr, bytesErr}
			}
			if tx {
				want = want[:2]
			}
			if got := resultErrors(resp); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s (tx %v) accepted by %s: results %q, want %q", tc.name, tx, resp.Node, got, want)
			}
		}
	}
	// A write after them is applied, on every node.
	later := ok(t, query(t, clients[1], client.Request{Statements: stmts("INSERT INTO t VALUES('later')")}))
	for _, n := range nodes {
		n := n
		servicetest.WaitFor(t, 30*time.Second, n.ID()+" to apply the later write", func() bool { return n.DB("main").Applied() >= later.Seq })
	}

	// An ordinary bulk statement passes every budget (2.9M steps).
	bulk := ok(t, query(t, clients[2], client.Request{Statements: stmts(
		"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000) INSERT INTO big(name, n) SELECT 'row ' || x, x * 7 FROM c")}))
	if got := bulk.Results[0].RowsAffected; got != 100000 {
		t.Fatalf("bulk insert: %d rows affected, want 100000", got)
	}
	// A statement of about 4.5M steps fails or passes by the budget of the
	// node that accepted it, alike on every node.
	passed := int64(0)
	for i := 0; i < 6; i++ {
		resp := query(t, clients[i%3], client.Request{Statements: stmts(
			"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 265000) INSERT INTO t SELECT count(*) FROM c")})
		got := resultErrors(resp)[0]
		t.Logf("4.5M steps accepted by %s: %q", resp.Node, got)
		switch {
		case budget[resp.Node] >= 5_000_000 && got == "":
			passed++
		case budget[resp.Node] < 5_000_000 && got == stepsErr(resp.Node):
		default:
			t.Errorf("4.5M steps accepted by %s (budget %d): %q", resp.Node, budget[resp.Node], got)
		}
	}

	last := streamLastSeq(t, servicetest.Connect(t, servers[0].ClientURL()), "main")
	for _, n := range nodes {
		n := n
		servicetest.WaitFor(t, 30*time.Second, n.ID()+" to apply everything", func() bool { return n.DB("main").Applied() >= last })
		if got := readCount(t, n, "SELECT count(*) FROM t WHERE x = 265000"); got != passed {
			t.Errorf("%s: %d medium writes applied, %d passed", n.ID(), got, passed)
		}
		if got := readCount(t, n, "SELECT count(*) FROM t WHERE x IN ('before', 'after', 'later')"); got != 5 {
			t.Errorf("%s: %d marker rows, want 5 (4 before, 1 later)", n.ID(), got)
		}
	}
	for _, n := range nodes {
		n.Stop(t) // closing the last connection checkpoints the WAL into the file
	}
	want := readDBFile(t, filepath.Join(nodes[0].DataDir, "main.sqlite"))
	for _, n := range nodes[1:] {
		if got := readDBFile(t, filepath.Join(n.DataDir, "main.sqlite")); !bytes.Equal(got, want) {
			t.Errorf("%s: database file differs from n1's (%d vs %d bytes)", n.ID(), len(got), len(want))
		}
	}
}

func resultErrors(resp *api.Response) []string {
	out := make([]string, len(resp.Results))
	for i, r := range resp.Results {
		out[i] = r.Error
	}
	return out
}
