package service_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// logBuffer collects a node's log lines (text handler, every level).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logger is a logger writing to b at Info level and above.
func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

func (b *logBuffer) lines(level string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, "level="+level+" ") {
			out = append(out, l)
		}
	}
	return out
}

// TestLogs_NoErrorInNormalOperation: ERROR is for what needs a person.
// Three nodes on one server snapshot every few entries (so they race for
// the snapshot claim, and the losers' "wrong last sequence" is the normal
// outcome of the race), purge, compare checkpoints, load a database,
// restore a node that was stopped while the others purged past it, and
// answer bad requests (400, 403, 504) and a write whose answer times out
// (408 stored); then they stop. No node logs an ERROR; the race for the
// claim was lost at least once, logged at DEBUG.
func TestLogs_NoErrorInNormalOperation(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	c := client.New(nc)
	var nodes []*servicetest.Node
	var logs []*logBuffer
	for _, id := range []string{"n1", "n2", "n3"} {
		lb := &logBuffer{}
		logs = append(logs, lb)
		cfg := service.Config{NodeID: id,
			Logger:     slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Snapshot:   service.SnapshotConfig{Threshold: 4, Interval: 5 * time.Millisecond, Retain: 2},
			Checkpoint: service.CheckpointConfig{Every: 5},
		}
		nodes = append(nodes, servicetest.StartNode(t, ns.ClientURL(), cfg))
	}
	lost := func() bool {
		for _, lb := range logs {
			for _, l := range lb.lines("DEBUG") {
				if strings.Contains(l, "snapshot taken by another node") {
					return true
				}
			}
		}
		return false
	}
	ok(t, do(t, c, "CREATE TABLE t(x)"))
	loadObject(t, nc, "load/main/logs", sqliteFile(t, "CREATE TABLE t(x); INSERT INTO t VALUES(0);"))
	round := 0
	servicetest.WaitFor(t, 60*time.Second, "a node to lose the race for the snapshot claim", func() bool {
		round++
		for i := 0; i < 5; i++ {
			ok(t, do(t, c, fmt.Sprintf("INSERT INTO t VALUES(%d)", round*10+i)))
		}
		doErr(t, c, `{"statements": "SELECT 1", "nope": 1}`)                                // 400
		doErr(t, c, "ATTACH 'x.db' AS x")                                                   // 403
		doErr(t, c, `{"statements": ["SELECT 1"], "after_seq": 1000000, "timeout_ms": 20}`) // 504
		return lost() && round >= 5
	})
	// A node away while the others snapshot and purge past it comes back
	// and restores from the snapshot.
	away := nodes[2]
	behind := away.DB("main").Applied()
	away.Stop(t)
	for i := 0; streamInfo(t, nc).State.FirstSeq <= behind+1; i++ {
		if i > 2000 {
			t.Fatal("the stream was never purged past the stopped node")
		}
		ok(t, do(t, c, fmt.Sprintf("INSERT INTO t VALUES(%d)", 1000+i)))
	}
	lb := &logBuffer{}
	logs[2] = lb
	cfg := away.Config
	cfg.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	nodes[2] = servicetest.StartNode(t, ns.ClientURL(), cfg)
	// A write that is stored but not applied in time on the node that
	// answers it: every node holds its apply.
	var releases []func()
	for _, n := range nodes {
		releases = append(releases, n.DB("main").Hold())
	}
	if e := doErr(t, c, `{"statements": ["INSERT INTO t VALUES(-1)"], "timeout_ms": 100}`); e.Code != 408 {
		t.Fatalf("held write: %v, want 408 stored", e)
	}
	for _, release := range releases {
		release()
	}
	last := ok(t, do(t, c, "INSERT INTO t VALUES(-2)")).Seq
	for _, n := range nodes {
		servicetest.WaitFor(t, 20*time.Second, n.ID()+" to apply everything", func() bool { return n.DB("main").Applied() >= last })
	}
	for _, n := range nodes {
		n.Stop(t)
	}
	for i, lb := range logs {
		if errs := lb.lines("ERROR"); len(errs) > 0 {
			t.Errorf("%s logged ERROR in normal operation:\n%s", nodes[i].ID(), strings.Join(errs, "\n"))
		}
	}
}
