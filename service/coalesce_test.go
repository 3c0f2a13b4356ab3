package service_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/servicetest"
)

// TestWrite_Coalesced: 16 concurrent writers on one node share stream
// entries (fewer entries than requests), yet each request gets its own
// results and its own transaction (a failing one in a group leaves the
// others applied), and a retry of a request that was coalesced (so no
// Nats-Msg-Id deduplicates it) answers duplicate with the original seq.
func TestWrite_Coalesced(t *testing.T) {
	ns, _, c := single(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	ok(t, do(t, c, `{"statements": ["CREATE TABLE t(id INTEGER PRIMARY KEY, w INT, v TEXT UNIQUE)", "INSERT INTO t(id, v) VALUES(0, 'taken')"]}`))
	const writers, each = 16, 10
	type sent struct {
		payload string
		v       string // the value its first statement inserts
		fails   bool   // its transaction fails: nothing of it stays
		resp    *api.Response
	}
	var coalesced []sent // requests that shared their entry with another
	for round := 0; len(coalesced) == 0; round++ {
		if round == 20 {
			t.Fatalf("20 rounds of %d concurrent writers, and no entry held two requests", writers)
		}
		before := streamLastSeq(t, nc, "main")
		reqs := make([][]sent, writers)
		var wg sync.WaitGroup
		for g := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					v := fmt.Sprintf("r%d-w%d-%d", round, g, i)
					s := sent{v: v, payload: fmt.Sprintf(`{"statements": ["INSERT INTO t(w, v) VALUES(%d, '%s')"], "id": "%s"}`, g, v, v)}
					if i%3 == 1 {
						// A transaction whose second statement fails.
						s.fails = true
						s.payload = fmt.Sprintf(`{"statements": ["INSERT INTO t(w, v) VALUES(%d, '%s')", "INSERT INTO t(v) VALUES('taken')"], "transaction": true, "id": "%s"}`, g, v, v)
					}
					resp, err := c.Do(context.Background(), "main", []byte(s.payload), 0)
					if err != nil {
						t.Errorf("%s: %v", s.payload, err)
						return
					}
					s.resp = resp
					reqs[g] = append(reqs[g], s)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		after := streamLastSeq(t, nc, "main")
		perSeq := map[uint64]int{}
		for _, rs := range reqs {
			for _, s := range rs {
				perSeq[s.resp.Seq]++
			}
		}
		for _, rs := range reqs {
			for _, s := range rs {
				r := s.resp
				switch {
				case r.Duplicate || r.Seq <= before || r.Seq > after:
					t.Fatalf("%s: %+v, want an entry in (%d, %d]", s.payload, r, before, after)
				case s.fails && (len(r.Results) != 2 || r.Results[0].Error != "" || r.Results[1].Error != "UNIQUE constraint failed: t.v"):
					t.Fatalf("%s: results %+v, want the second statement to fail alone", s.payload, r.Results)
				case !s.fails && (len(r.Results) != 1 || r.Results[0].Error != "" || r.Results[0].RowsAffected != 1 || r.Results[0].LastInsertID == 0):
					t.Fatalf("%s: results %+v, want one row inserted", s.payload, r.Results)
				}
				if perSeq[r.Seq] > 1 {
					coalesced = append(coalesced, s)
				}
			}
		}
		entries := streamEntries(t, nc, "main", before, after)
		t.Logf("round %d: %d requests in %d entries", round, writers*each, entries)
		if len(coalesced) > 0 && entries >= writers*each {
			t.Fatalf("%d requests in %d entries, though some answered with the same seq", writers*each, entries)
		}
		// Each request's own row, and only those that did not fail: its
		// last insert id names its row.
		for _, rs := range reqs {
			for _, s := range rs {
				id := s.resp.Results[0].LastInsertID
				n := scalarNoStrong(t, c, fmt.Sprintf("SELECT count(*) FROM t WHERE id = %d AND v = '%s'", id, s.v))
				if want := map[bool]int64{true: 0, false: 1}[s.fails]; n != want {
					t.Fatalf("%s: %d rows with id %d and its value, want %d", s.payload, n, id, want)
				}
			}
		}
	}
	// Retries of the coalesced requests (failed ones too), concurrently,
	// so the retries are coalesced in turn: duplicates of their original
	// entry, and nothing applied again.
	rows := scalar(t, c, "SELECT count(*) FROM t")
	var wg sync.WaitGroup
	for k := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < len(coalesced); i += writers {
				s := coalesced[i]
				r, err := c.Do(context.Background(), "main", []byte(s.payload), 0)
				if err != nil || !r.Duplicate || r.Seq != s.resp.Seq || len(r.Results) != 0 {
					t.Errorf("retry of %s: %+v %v, want a duplicate of entry %d", s.payload, r, err, s.resp.Seq)
				}
			}
		}()
	}
	wg.Wait()
	if got := scalar(t, c, "SELECT count(*) FROM t"); got != rows {
		t.Fatalf("%v rows after the retries, %v before", got, rows)
	}
}

// scalarNoStrong reads one integer at level none (this node applied
// every write it answered).
func scalarNoStrong(tb testing.TB, c interface {
	Do(context.Context, string, []byte, int) (*api.Response, error)
}, sql string) int64 {
	tb.Helper()
	resp, err := c.Do(context.Background(), "main", []byte(`{"statements": [`+string(api.AppendString(nil, sql))+`], "format": "values"}`), 0)
	if err != nil || len(resp.Results) != 1 || resp.Results[0].Error != "" || len(resp.Results[0].Values) != 1 {
		tb.Fatalf("%s: %+v %v", sql, resp, err)
	}
	n, _ := resp.Results[0].Values[0][0].(int64)
	return n
}

// TestWrite_QueuedTimesOut: a write request that waits to be coalesced
// while this node's previous entry is being published, and whose
// timeout_ms ends before that publish returns, is answered not_stored
// (503: it was never published, safe to retry) and never reaches the
// stream, even once the publish in flight goes through.
func TestWrite_QueuedTimesOut(t *testing.T) {
	ns := servicetest.StartServer(t)
	link := servicetest.NewLink(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	n := servicetest.StartNode(t, "nats://"+link.Addr(), service.Config{NodeID: "n1", DataDir: t.TempDir()})
	ctx := context.Background()
	write := func(v string, timeoutMS int) (*api.Response, error) {
		return n.Do(ctx, "main", &api.Request{TimeoutMS: timeoutMS,
			Statements: []api.Statement{{SQL: "INSERT INTO t(v) VALUES(?)", Params: []any{v}}}}, false)
	}
	if _, err := n.Do(ctx, "main", &api.Request{Statements: []api.Statement{{SQL: "CREATE TABLE t(v TEXT)"}}}, false); err != nil {
		t.Fatal(err)
	}

	// The node's connection stalls: the next write's publish stays in flight.
	link.Stall()
	first := make(chan error, 1)
	go func() {
		_, err := write("first", 3000)
		first <- err
	}()
	servicetest.WaitFor(t, 10*time.Second, "the first write's publish to be in flight", func() bool {
		return n.Stats("main").Publishing == 1
	})
	_, err := write("queued", 300)
	if !errors.Is(err, api.ErrNotStored) {
		t.Fatalf("queued write past its timeout: %v, want not_stored", err)
	}
	if s := n.Stats("main"); s.WritesQueued != 0 {
		t.Errorf("writes_queued %d after the queued write gave up, want 0", s.WritesQueued)
	}

	// The link comes back: the first write is applied, the queued one never.
	link.Restore()
	if err := <-first; err != nil && !errors.Is(err, api.ErrUnknown) {
		t.Fatalf("first write: %v", err)
	}
	nc := servicetest.Connect(t, ns.ClientURL())
	last := streamLastSeq(t, nc, "main")
	if err := n.DB("main").WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	resp, err := n.Do(ctx, "main", &api.Request{Statements: []api.Statement{{SQL: "SELECT count(*) FROM t WHERE v = 'queued'"}}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Results[0].Values[0][0]; fmt.Sprint(got) != "0" {
		t.Fatalf("the write answered not_stored was applied (%v rows)", got)
	}
}
