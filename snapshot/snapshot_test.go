package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/servicetest"
	"github.com/nqlite/nqlite/service/stream"
	"github.com/nqlite/nqlite/snapshot"
)

// openDB opens a fresh nqlite database file in a temporary dir.
func openDB(tb testing.TB) *apply.DB {
	tb.Helper()
	db, err := apply.Open(filepath.Join(tb.TempDir(), "main.sqlite"), apply.Options{Readers: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// write applies one entry at seq.
func write(tb testing.TB, db *apply.DB, seq uint64, sql string) {
	tb.Helper()
	e := &apply.Entry{Time: 1, Seed: 1, Statements: []api.Statement{{SQL: sql}}}
	if err := db.ApplyBatch(context.Background(), []apply.Msg{{Seq: seq, Data: e.Encode()}}); err != nil {
		tb.Fatal(err)
	}
}

// TestTake_ClaimRaceIsBusy: nodes racing for the claim of the same
// database, round after round (each round starts from the deleted claim
// of the previous one), either upload or get ErrBusy; losing the race is
// never another error. On replicated buckets the loser of the race on a
// deleted key gets JetStream's "wrong last sequence" (10164), which
// nats.go's KeyValue.Create does not report as ErrKeyExists.
func TestTake_ClaimRaceIsBusy(t *testing.T) {
	servers := servicetest.StartCluster(t, 3)
	var stores []*snapshot.Store
	for i, node := range []string{"a", "b", "c"} {
		nc := servicetest.Connect(t, servers[i].ClientURL())
		js, _ := jetstream.New(nc)
		// A fresh cluster may not have every peer ready for an R3 bucket
		// yet ("no suitable peers for placement"): retry, as a node does.
		var st *snapshot.Store
		var err error
		deadline := time.Now().Add(30 * time.Second)
		for {
			if st, err = snapshot.Open(context.Background(), js, snapshot.Options{Node: node, Replicas: 3}); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, st)
	}
	db := openDB(t)
	write(t, db, 1, "CREATE TABLE t(x)")
	dir := t.TempDir()
	for round := 2; round <= 21; round++ {
		write(t, db, uint64(round), fmt.Sprintf("INSERT INTO t VALUES(%d)", round))
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 4*len(stores))
		for i := 0; i < 4*len(stores); i++ {
			wg.Add(1)
			go func(st *snapshot.Store) {
				defer wg.Done()
				<-start
				_, _, err := st.Take(context.Background(), "main", db, dir)
				errs <- err
			}(stores[i%len(stores)])
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil && !errors.Is(err, snapshot.ErrBusy) {
				t.Fatalf("round %d: Take: %v, want nil or ErrBusy", round, err)
			}
		}
	}
}

// TestTakeWith_Purge: after storing a snapshot at sequence S, TakeWith
// asks the Purger (here the entry stream's owner, service/stream) to
// remove the stream's entries below S-Retain, and nothing while
// S <= Retain+1.
func TestTakeWith_Purge(t *testing.T) {
	ns := servicetest.StartServer(t)
	js, err := jetstream.New(servicetest.Connect(t, ns.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := snapshot.Open(ctx, js, snapshot.Options{Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	str, err := stream.Open(ctx, js, stream.Config{Name: "NQLITE_main", Subject: "nqlite.entry.main"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := str.Append(ctx, []byte(fmt.Sprint(i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	db := openDB(t)
	write(t, db, 1, "CREATE TABLE t(x)")
	for seq := uint64(2); seq <= 4; seq++ {
		write(t, db, seq, fmt.Sprintf("INSERT INTO t VALUES(%d)", seq))
	}
	first := func() uint64 {
		t.Helper()
		b, err := str.Bounds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return b.FirstSeq
	}
	// Applied 4, Retain 3: 4 <= 3+1, nothing is purged.
	if _, taken, err := st.TakeWith(ctx, "main", db, t.TempDir(), snapshot.TakeOptions{Purge: str, Retain: 3}); err != nil || !taken {
		t.Fatalf("take at 4: taken %v, %v", taken, err)
	}
	if got := first(); got != 1 {
		t.Fatalf("first sequence after a snapshot at 4 keeping 3: %d, want 1 (nothing purged)", got)
	}
	for seq := uint64(5); seq <= 9; seq++ {
		write(t, db, seq, fmt.Sprintf("INSERT INTO t VALUES(%d)", seq))
	}
	// Applied 9, Retain 3: entries below 6 go.
	if _, taken, err := st.TakeWith(ctx, "main", db, t.TempDir(), snapshot.TakeOptions{Purge: str, Retain: 3}); err != nil || !taken {
		t.Fatalf("take at 9: taken %v, %v", taken, err)
	}
	if got := first(); got != 6 {
		t.Fatalf("first sequence after a snapshot at 9 keeping 3: %d, want 6", got)
	}
}
