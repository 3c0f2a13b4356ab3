package main

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/servicetest"
)

// TestCheck: nqctl check exits 0 while every node holds the same content
// and 1 once a stopped node's file was edited with a plain SQLite
// connection (never through the stream), naming the node and the table.
func TestCheck(t *testing.T) {
	ns := servicetest.StartServer(t)
	url := ns.ClientURL()
	var nodes []*servicetest.Node
	for _, id := range []string{"n1", "n2", "n3"} {
		nodes = append(nodes, servicetest.StartNode(t, url, service.Config{NodeID: id,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	}
	mustRun(t, nil, "--server", url, "CREATE TABLE t(id INTEGER PRIMARY KEY, v); CREATE TABLE u(x); INSERT INTO t VALUES (1, 'a'), (2, 'b'); INSERT INTO u VALUES (1)")
	o := mustRun(t, nil, "check", "--server", url)
	if strings.Count(o.stdout, "yes") != 3 {
		t.Errorf("check before the edit: want 3 nodes agreeing:\n%s", o.stdout)
	}

	n3 := nodes[2]
	n3.Stop(t)
	func() {
		apply.SQLiteRandomness().Lock() // SQLite beside nodes in this process
		defer apply.SQLiteRandomness().Unlock()
		c, err := sqlite.OpenConn(filepath.Join(n3.DataDir, "main.sqlite"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := sqlitex.ExecuteTransient(c, "UPDATE t SET v = 'edited' WHERE id = 2", nil); err != nil {
			t.Fatal(err)
		}
	}()
	servicetest.StartNode(t, url, n3.Config)
	o = nqctl(t, nil, "check", "--server", url, "main")
	if o.code != exitFailed {
		t.Fatalf("check after the edit: exit %d, want 1\n%s%s", o.code, o.stdout, o.stderr)
	}
	t.Logf("nqctl check after the edit:\n%s", o.stdout)
	var n3line string
	for _, l := range strings.Split(o.stdout, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "n3") {
			n3line = l
		}
	}
	if !strings.Contains(n3line, " no ") || !strings.HasSuffix(strings.TrimSpace(n3line), " t") || strings.Count(o.stdout, "yes") != 2 {
		t.Errorf("check after the edit: want n3 not agreeing, differing in t:\n%s", o.stdout)
	}
	if !strings.Contains(o.stderr, "do not all hold the same content") {
		t.Errorf("stderr: %s", o.stderr)
	}
	if o := nqctl(t, nil, "check", "--server", url, "no/such"); o.code != exitUsage {
		t.Errorf("check of a bad database name: exit %d %s", o.code, o.stderr)
	}
}
