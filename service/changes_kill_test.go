package service_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// nodeProc is an nqlite node running as a process of its own, so that it
// can be killed (SIGKILL) at any instruction: mid-batch, between
// publishing change events and committing, mid-publish.
type nodeProc struct {
	id, dir, bin, url string
	cmd               *exec.Cmd
	log               *os.File
}

func (p *nodeProc) start(tb testing.TB) {
	tb.Helper()
	logf, err := os.OpenFile(filepath.Join(p.dir, "node.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(p.bin, "--nats-url", p.url, "--data-dir", filepath.Join(p.dir, "data"), "--node-id", p.id,
		"--changes", "--no-snapshots", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "NQLITE_DB=")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p.cmd, p.log = cmd, logf
}

func (p *nodeProc) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.log.Close()
	p.cmd = nil
}

// buildNqlite builds the nqlite command into a temporary dir.
func buildNqlite(tb testing.TB) string {
	tb.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		tb.Skip("needs the go command to build nqlite")
	}
	bin := filepath.Join(tb.TempDir(), "nqlite")
	build := exec.Command(goCmd, "build", "-o", bin, ".")
	build.Dir = ".." // the repository root: package main
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestChanges_KillNodes runs three node processes with the change feed on
// under a steady load of upserts (a trigger adds a row on each insert),
// and kills them with SIGKILL, one at a time and two at once, restarting
// each on its data dir. At the end the change stream holds every change
// the database committed, once, in order, with no hole: each entry's
// changes complete, and their replay gives the database's rows.
func TestChanges_KillNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills node processes")
	}
	bin := buildNqlite(t)
	ns := servicetest.StartServer(t)
	url := ns.ClientURL()
	procs := make([]*nodeProc, 3)
	for i := range procs {
		procs[i] = &nodeProc{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), bin: bin, url: url}
		procs[i].start(t)
		t.Cleanup(procs[i].kill)
	}
	nc := servicetest.Connect(t, url)
	c := client.New(nc)
	waitNodes(t, c, 3)
	schema := ok(t, do(t, c, `CREATE TABLE w(k TEXT PRIMARY KEY, writer INT, n INT);
		CREATE TABLE log(id INTEGER PRIMARY KEY, k TEXT);
		CREATE TABLE c(n INT); INSERT INTO c VALUES(0);
		CREATE TRIGGER wi AFTER INSERT ON w BEGIN INSERT INTO log(k) VALUES(new.k); END`)).Seq

	// Writers: upserts, each with an idempotency key, retried until
	// acknowledged.
	var (
		mu    sync.Mutex
		acked int
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			wc := client.New(servicetest.Connect(t, url))
			for i := 0; ; i++ {
				req := client.Request{Statements: []api.Statement{
					{SQL: "INSERT INTO w(k, writer, n) VALUES(?, ?, 1) ON CONFLICT(k) DO UPDATE SET n = n + 1", Params: []any{fmt.Sprintf("k%d-%d", w, i%40), int64(w)}},
					{SQL: "UPDATE c SET n = n + 1"},
				}, ID: fmt.Sprintf("w%d-%d", w, i), TimeoutMS: 2000}
				for {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					_, err := wc.Query(ctx, "main", req)
					cancel()
					var ae *api.Error
					if err == nil || errors.As(err, &ae) && ae.Code == api.CodeTimeout {
						break // stored (a 408: stored, not applied on that node yet)
					}
				}
				mu.Lock()
				acked++
				mu.Unlock()
			}
		}(w)
	}
	ackedNow := func() int { mu.Lock(); defer mu.Unlock(); return acked }
	more := func(n int) {
		want := ackedNow() + n
		servicetest.WaitFor(t, 60*time.Second, fmt.Sprintf("%d acknowledged writes", want), func() bool { return ackedNow() >= want })
	}
	more(100)
	for round, victims := range [][]int{{0}, {1}, {2}, {0, 1}, {1, 2}, {2, 0}} {
		for _, v := range victims {
			procs[v].kill()
		}
		more(60) // the survivors carry the load and the feed
		for _, v := range victims {
			procs[v].start(t)
		}
		waitNodes(t, c, 3)
		t.Logf("round %d: killed %v, restarted; %d writes acknowledged", round, victims, ackedNow())
	}
	more(100)
	close(stop)
	wg.Wait()

	// Every node applies everything.
	last := streamLastSeq(t, nc, "main")
	servicetest.WaitFor(t, 60*time.Second, "every node to apply the stream", func() bool {
		stats, err := c.Stats(context.Background(), client.StatsOptions{Wait: 2 * time.Second, Quiet: 300 * time.Millisecond, Expect: 3})
		if err != nil || len(stats) < 3 {
			return false
		}
		for _, s := range stats {
			if s.DB == "main" && s.Applied < last {
				return false
			}
		}
		return true
	})
	total := scalar(t, c, "SELECT sum(n) FROM _nqlite_changes").(int64)
	evs := readFeed(t, nc, uint64(total))
	if int64(len(evs)) != total {
		t.Fatalf("%d events in the change stream, %d changes committed", len(evs), total)
	}
	checkFeedOrder(t, evs)
	// Each write entry's changes, complete: per request (an entry holds
	// one, or several when writes were coalesced) an upsert of w (an
	// insert with its trigger's insert into log, or an update), then c.
	perEntry := map[uint64][]api.Change{}
	for _, ev := range evs {
		perEntry[ev.Seq] = append(perEntry[ev.Seq], ev)
	}
	for seq := schema + 1; seq <= last; seq++ {
		chs := perEntry[seq]
		var shape string
		for i, ch := range chs {
			if ch.Index != i {
				t.Fatalf("entry %d: change %d has index %d: a change is missing", seq, i, ch.Index)
			}
			shape += " " + ch.Table + ":" + ch.Op
		}
		if !requestShapes.MatchString(shape) {
			t.Fatalf("entry %d: changes%s", seq, shape)
		}
	}
	r := newReplica(t, c)
	for _, ev := range evs {
		r.apply(t, ev)
	}
	sameRows(t, c, r, "SELECT rowid, * FROM w ORDER BY rowid", "SELECT * FROM log ORDER BY id", "SELECT rowid, * FROM c")
	t.Logf("KILL %d writes acknowledged, %d entries, %d change events: none missing, none twice, in order", ackedNow(), last-schema, len(evs))
}

// requestShapes matches the changes of an entry of whole requests: none
// for an entry whose requests were all retries of requests already
// applied (skipped as duplicates; a retry of a coalesced request is not
// deduplicated by JetStream, so it is stored and skipped at apply) or for
// a strong read's barrier.
var requestShapes = regexp.MustCompile(`^( w:insert log:insert c:update| w:update c:update)*$`)

// waitNodes waits until n nodes answer the micro STATS of database main.
func waitNodes(tb testing.TB, c *client.Client, n int) {
	tb.Helper()
	servicetest.WaitFor(tb, 60*time.Second, fmt.Sprintf("%d nodes to serve", n), func() bool {
		stats, err := c.Stats(context.Background(), client.StatsOptions{Wait: 2 * time.Second, Quiet: 300 * time.Millisecond, Expect: n})
		return err == nil && len(stats) >= n
	})
}
