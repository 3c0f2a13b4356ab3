package service_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/servicetest"
)

// wantFailing checks what node n says while it cannot apply entries of
// main for reason: state failing in stats, 503 naming the reason on a
// request, and the entry at seq not applied (nor skipped).
func wantFailing(tb testing.TB, n *servicetest.Node, seq uint64, reason string) {
	tb.Helper()
	servicetest.WaitFor(tb, 30*time.Second, n.ID()+" to report state failing", func() bool { return n.Stats("main").State == "failing" })
	_, err := n.Do(context.Background(), "main", &api.Request{Statements: stmts("SELECT count(*) FROM t")}, false)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || !strings.Contains(ae.Message, "cannot apply entries of main") || !strings.Contains(ae.Message, reason) {
		tb.Fatalf("%s: a read while failing: %v; want 503 saying it cannot apply entries (%s)", n.ID(), err, reason)
	}
	if got := n.DB("main").Applied(); got >= seq {
		tb.Fatalf("%s applied %d while failing at %d", n.ID(), got, seq)
	}
}

// Failures of a node's own, not of the entry's, are never an outcome: a
// node whose disk is full (here: its file's page limit) or whose file is
// locked by another process stops applying, says so (state failing, 503
// with the reason, a log line that turns ERROR), retries with backoff,
// never skips the entry, and once the cause is gone applies it like the
// other node: the files end byte-identical.
func TestNode_LocalFailure(t *testing.T) {
	ns := servicetest.StartServer(t)
	n1 := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	var logs logBuffer
	full := service.Config{NodeID: "n2", Logger: logs.logger(), Apply: func(db string, o *apply.Options) { o.MaxPages = 16 }}
	n2 := servicetest.StartNode(t, ns.ClientURL(), full)
	write := func(sql string) uint64 {
		t.Helper()
		resp, err := n1.Do(context.Background(), "main", &api.Request{Statements: stmts(sql)}, false)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		ok(t, resp)
		return resp.Seq
	}
	created := write("CREATE TABLE t(x)")
	servicetest.WaitFor(t, 30*time.Second, "n2 to apply the table", func() bool { return n2.DB("main").Applied() >= created })

	// A full disk: n2 cannot apply the entry; n1 can.
	seq := write("INSERT INTO t VALUES(zeroblob(200000))")
	wantFailing(t, n2, seq, "full")
	servicetest.WaitFor(t, 30*time.Second, "n2 to retry (a third attempt, logged as ERROR)", func() bool {
		l := logs.String()
		return strings.Contains(l, "level=ERROR") && strings.Contains(l, "cannot apply entries: retrying") && strings.Contains(l, "attempt=3")
	})
	wantFailing(t, n2, seq, "full") // still not skipped
	if err := stopErrWithin(t, n2, 10*time.Second); err != nil {
		t.Fatalf("stop while failing: %v", err)
	}
	n2.NC.Close()
	// With room (no page limit), the entry is applied.
	roomy := full
	roomy.Apply, roomy.DataDir = nil, n2.DataDir
	n2 = servicetest.StartNode(t, ns.ClientURL(), roomy)
	if st := n2.Stats("main"); st.State != "serving" || st.Applied < seq {
		t.Fatalf("n2 with room: %+v", st)
	}

	// A file locked by another process: SQLite's busy timeout (10 s) runs
	// out, the node fails, retries, and applies once the lock is gone,
	// without a restart.
	// (SQLite beside nodes in this process: see apply.SQLiteRandomness.)
	apply.SQLiteRandomness().Lock()
	lock, err := sqlite.OpenConn(filepath.Join(n2.DataDir, "main.sqlite"), sqlite.OpenReadWrite)
	if err == nil {
		err = sqlitex.ExecuteTransient(lock, "BEGIN IMMEDIATE", nil)
	}
	apply.SQLiteRandomness().Unlock()
	if err != nil {
		t.Fatal(err)
	}
	seq = write("INSERT INTO t VALUES('while locked')")
	wantFailing(t, n2, seq, "locked")
	apply.SQLiteRandomness().Lock()
	err = sqlitex.ExecuteTransient(lock, "ROLLBACK", nil)
	lock.Close() // n2's close must be the last, which checkpoints the WAL into the file
	apply.SQLiteRandomness().Unlock()
	if err != nil {
		t.Fatal(err)
	}
	servicetest.WaitFor(t, 30*time.Second, "n2 to apply once the lock is gone", func() bool {
		st := n2.Stats("main")
		return st.State == "serving" && st.Applied >= seq
	})

	last := write("INSERT INTO t VALUES('after')")
	servicetest.WaitFor(t, 30*time.Second, "n2 to apply the last write", func() bool { return n2.DB("main").Applied() >= last })
	n1.Stop(t)
	n2.Stop(t)
	if a, b := readDBFile(t, filepath.Join(n1.DataDir, "main.sqlite")), readDBFile(t, filepath.Join(n2.DataDir, "main.sqlite")); !bytes.Equal(a, b) {
		off := 0
		for off < len(a) && off < len(b) && a[off] == b[off] {
			off++
		}
		t.Fatalf("n1's and n2's database files differ (%d and %d bytes, first at offset %d)\n%s\n%s", len(a), len(b), off,
			dumpFile(t, filepath.Join(n1.DataDir, "main.sqlite")), dumpFile(t, filepath.Join(n2.DataDir, "main.sqlite")))
	}
}
