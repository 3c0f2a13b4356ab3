package service_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// digestCfg checkpoints every 5 entries and snapshots every 40 (checked
// every 20ms), keeping 10 entries in the stream after each snapshot.
func digestCfg(id string) service.Config {
	cfg := snapCfg(id)
	cfg.Checkpoint = service.CheckpointConfig{Every: 5}
	return cfg
}

// threeDigestNodes starts one server and three nodes; mutate, when set,
// adjusts n3's apply options.
func threeDigestNodes(tb testing.TB, n3apply func(db string, o *apply.Options)) ([]*servicetest.Node, *client.Client) {
	tb.Helper()
	ns := servicetest.StartServer(tb)
	var nodes []*servicetest.Node
	for i := 1; i <= 3; i++ {
		cfg := digestCfg(fmt.Sprintf("n%d", i))
		if i == 3 {
			cfg.Apply = n3apply
		}
		nodes = append(nodes, servicetest.StartNode(tb, ns.ClientURL(), cfg))
	}
	return nodes, client.New(servicetest.Connect(tb, ns.ClientURL()))
}

// doOn sends a raw payload to database main of node n in process (a
// request over NATS may reach the diverged node, which answers 503) and
// fails on request errors.
func doOn(tb testing.TB, n *servicetest.Node, payload string) *api.Response {
	tb.Helper()
	req, err := api.ParseRequest([]byte(payload))
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := n.Do(context.Background(), "main", req, false)
	if err != nil {
		tb.Fatalf("request %s on %s: %v", payload, n.ID(), err)
	}
	return resp
}

// stateOf returns the node's stats of database main.
func stateOf(n *servicetest.Node) service.Stats { return n.Stats("main") }

// TestDivergence_Heal: a node that applies one entry differently (an apply
// option rewrites a parameter on n3 only) is found at the next checkpoint,
// refuses reads with 503 diverged, heals from a snapshot of an agreeing
// node and then holds the same content and digest as the others.
func TestDivergence_Heal(t *testing.T) {
	var mutated atomic.Bool
	nodes, c := threeDigestNodes(t, func(db string, o *apply.Options) {
		o.Mutate = func(seq uint64, e *apply.Entry) {
			for i := range e.Statements {
				if len(e.Statements[i].Params) == 2 && e.Statements[i].Params[1] == "original" && mutated.CompareAndSwap(false, true) {
					e.Statements[i].Params[1] = "tampered"
				}
			}
		}
	})
	n1, n3 := nodes[0], nodes[2]
	ok(t, do(t, c, `["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]`))
	ok(t, query(t, c, client.Request{Statements: []api.Statement{{SQL: "INSERT INTO t(id, v) VALUES(?, ?)", Params: []any{int64(1), "original"}}}}))
	for i := 2; i <= 12; i++ {
		ok(t, doOn(t, n1, fmt.Sprintf(`["INSERT INTO t(id, v) VALUES(%d, 'x')"]`, i)))
	}
	servicetest.WaitFor(t, 20*time.Second, "n3 to apply the mutated entry", mutated.Load)
	servicetest.WaitFor(t, 20*time.Second, "n3 to find itself diverged or heal", func() bool {
		s := stateOf(n3)
		return s.State == "diverged" || s.Heals > 0
	})
	if s := stateOf(n3); s.State == "diverged" {
		_, err := n3.Do(context.Background(), "main", &api.Request{Statements: []api.Statement{{SQL: "SELECT v FROM t WHERE id = 1"}}}, true)
		if !errors.Is(err, api.ErrDiverged) {
			t.Errorf("read on the diverged node: got err %v, want 503 diverged", err)
		} else if api.ErrorCode(err) != api.CodeUnavailable {
			t.Errorf("read on the diverged node: code %d, want 503", api.ErrorCode(err))
		}
		// The latest checkpoint's status is "split" while only n3 and one
		// other node reported it; once the third reports, it differs.
		servicetest.WaitFor(t, 20*time.Second, "n3's stats to say it differs, or n3 to heal", func() bool {
			s := stateOf(n3)
			return s.State != "diverged" || s.CheckpointStatus == "differs"
		})
		if s := stateOf(n3); s.State == "diverged" && s.DivergedSeq == 0 {
			t.Errorf("diverged stats: diverged_seq %d, checkpoint_status %q", s.DivergedSeq, s.CheckpointStatus)
		}
	}
	servicetest.WaitFor(t, 60*time.Second, "n3 to heal", func() bool {
		s := stateOf(n3)
		return s.Heals > 0 && s.State == "serving"
	})
	// More entries: n3 applies them from the snapshot on and agrees.
	for i := 13; i <= 20; i++ {
		ok(t, doOn(t, n1, fmt.Sprintf(`["INSERT INTO t(id, v) VALUES(%d, 'y')"]`, i)))
	}
	last := n1.DB("main").Applied()
	for _, n := range nodes {
		n := n
		servicetest.WaitFor(t, 20*time.Second, n.ID()+" to apply "+fmt.Sprint(last), func() bool { return n.DB("main").Applied() >= last })
	}
	got, err := n3.Do(context.Background(), "main", &api.Request{Statements: []api.Statement{{SQL: "SELECT v FROM t WHERE id = 1"}}, Format: api.FormatValues}, true)
	if err != nil {
		t.Fatal(err)
	}
	if v := got.Results[0].Values[0][0]; v != "original" {
		t.Errorf("n3 after healing holds v = %v, want original", v)
	}
	res, err := c.Check(context.Background(), "main", 0, client.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Agree() {
		t.Errorf("after healing the nodes differ: %+v", res.Replies)
	}
	servicetest.WaitFor(t, 20*time.Second, "every node to agree at a checkpoint past the heal", func() bool {
		for _, n := range nodes {
			if s := stateOf(n); s.CheckpointStatus != "agrees" || s.CheckpointSeq < 20 {
				return false
			}
		}
		return true
	})
	if d1, d3 := n1.DB("main").Digest(), n3.DB("main").Digest(); d1.Seq == d3.Seq && d1.Digest != d3.Digest {
		t.Errorf("digests at %d: n1 %s, n3 %s", d1.Seq, d1.Digest, d3.Digest)
	}
}

// TestCheck_EditedFile: an edit made with a plain SQLite connection to a
// stopped node's file never goes through the stream: nqctl check's
// content hash catches it at once, naming the table; the running digest
// catches it once an entry touches the edited row.
func TestCheck_EditedFile(t *testing.T) {
	nodes, c := threeDigestNodes(t, nil)
	ok(t, do(t, c, `["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "CREATE TABLE u(id INTEGER PRIMARY KEY)"]`))
	for i := 1; i <= 6; i++ {
		ok(t, do(t, c, fmt.Sprintf(`["INSERT INTO t(id, v) VALUES(%d, 'x')", "INSERT INTO u(id) VALUES(%d)"]`, i, i)))
	}
	res, err := c.Check(context.Background(), "main", 0, client.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Agree() || len(res.Replies) != 3 {
		t.Fatalf("before the edit: %+v", res.Replies)
	}
	n3 := nodes[2]
	applied := n3.DB("main").Applied()
	digest := n3.DB("main").Digest()
	n3.Stop(t)
	editFile(t, filepath.Join(n3.DataDir, "main.sqlite"), "UPDATE t SET v = 'edited' WHERE id = 3")
	cfg := n3.Config
	n3 = servicetest.StartNode(t, nodes[0].NC.ConnectedUrl(), cfg)
	nodes[2] = n3
	if got := n3.DB("main").Digest(); got != digest || n3.DB("main").Applied() != applied {
		t.Fatalf("restart: digest %+v at %d, want %+v at %d (the digest is kept in the file)", got, n3.DB("main").Applied(), digest, applied)
	}
	res, err = c.Check(context.Background(), "main", 0, client.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Agree() {
		t.Fatalf("check after the edit: every node agrees: %+v", res.Replies)
	}
	for _, rep := range res.Replies {
		diff := res.DifferingTables(rep)
		if rep.Node == "n3" {
			if len(diff) != 1 || diff[0] != "t" {
				t.Errorf("n3 differs in %v, want [t]", diff)
			}
		} else if len(diff) != 0 || rep.Hash != res.Majority() {
			t.Errorf("%s differs in %v", rep.Node, diff)
		}
	}
	// The digest: entries not touching the row change nothing; one that
	// updates it writes n3's edited row, and n3 diverges and heals.
	ok(t, doOn(t, nodes[0], `["UPDATE t SET id = id WHERE id = 3"]`))
	for i := 0; i < 10; i++ {
		ok(t, doOn(t, nodes[0], fmt.Sprintf(`["INSERT INTO u(id) VALUES(%d)"]`, 100+i)))
	}
	servicetest.WaitFor(t, 60*time.Second, "n3 to diverge and heal", func() bool {
		s := stateOf(n3)
		return s.Heals > 0 && s.State == "serving"
	})
	servicetest.WaitFor(t, 30*time.Second, "check to agree after the heal", func() bool {
		res, err := c.Check(context.Background(), "main", 0, client.CheckOptions{})
		return err == nil && res.Agree()
	})
}

// editFile runs sql on the SQLite file at path with a plain connection (as
// an operator with the sqlite3 shell would).
func editFile(tb testing.TB, path, sql string) {
	tb.Helper()
	apply.SQLiteRandomness().Lock() // SQLite beside nodes in this process (apply.SQLiteRandomness)
	defer apply.SQLiteRandomness().Unlock()
	conn, err := sqlite.OpenConn(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	if err := sqlitex.ExecuteTransient(conn, sql, nil); err != nil {
		tb.Fatal(err)
	}
}

// TestDivergence_SplitTwoNodes: with two nodes that differ there is no
// majority: both report "split", neither calls itself diverged or heals,
// and both keep serving (the operator decides).
func TestDivergence_SplitTwoNodes(t *testing.T) {
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), digestCfg("n1"))
	cfg := digestCfg("n2")
	cfg.Apply = func(db string, o *apply.Options) {
		o.Mutate = func(seq uint64, e *apply.Entry) {
			for i := range e.Statements {
				if len(e.Statements[i].Params) == 1 && e.Statements[i].Params[0] == "a" {
					e.Statements[i].Params[0] = "b"
				}
			}
		}
	}
	n2 := servicetest.StartNode(t, ns.ClientURL(), cfg)
	ok(t, doOn(t, n1, `["CREATE TABLE t(v TEXT)"]`))
	ok(t, doOn(t, n1, `{"statements": [["INSERT INTO t(v) VALUES(?)", "a"]]}`))
	for i := 0; i < 8; i++ {
		ok(t, doOn(t, n1, `["INSERT INTO t(v) VALUES('c')"]`))
	}
	for _, n := range []*servicetest.Node{n1, n2} {
		n := n
		servicetest.WaitFor(t, 20*time.Second, n.ID()+" to report split", func() bool {
			s := stateOf(n)
			return s.CheckpointStatus == "split" && s.CheckpointNodes == 2
		})
		if s := stateOf(n); s.State != "serving" || s.DivergedSeq != 0 || s.Heals != 0 {
			t.Errorf("%s: state %s, diverged_seq %d, heals %d; want serving, 0, 0", n.ID(), s.State, s.DivergedSeq, s.Heals)
		}
	}
	ok(t, doOn(t, n2, `["SELECT count(*) FROM t"]`))
}
