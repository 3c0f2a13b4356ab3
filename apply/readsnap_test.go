package apply

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nqlite/nqlite/service/api"
)

// TestDB_ReadSnapshot: a read connection keeps its read transaction for
// the next read while nothing is applied, every read still sees every
// entry applied before it, a failing statement ends the snapshot, and the
// batches applied meanwhile end the idle snapshots, so that a snapshot
// left by the last read never keeps the WAL from being checkpointed and
// restarted (the WAL stays bounded under writes with no reads; without
// releaseSnapshots it grew to 24,272 frames here).
func TestDB_ReadSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap.sqlite")
	db := openDB(t, path)
	ctx := context.Background()
	seq := uint64(0)
	apply := func(sql string) {
		t.Helper()
		seq++
		if err := db.ApplyBatch(ctx, []Msg{{Seq: seq, Data: entry(0, 0, false, sql)}}); err != nil {
			t.Fatal(err)
		}
	}
	apply("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")

	// Reads between writes: each sees the row written just before it.
	for i := 1; i <= 20; i++ {
		apply(fmt.Sprintf("INSERT INTO t VALUES(%d, 'v%d')", i, i))
		for range 3 { // the second and third reuse the snapshot
			if got := read(t, db, "SELECT count(*), max(id) FROM t"); got[0][0] != int64(i) || got[0][1] != int64(i) {
				t.Fatalf("after entry %d: %v, want %d rows up to id %d", seq, got, i, i)
			}
		}
		if got := db.held.Load(); got < 1 {
			t.Fatalf("after reads at %d: %d snapshots held, want at least 1", seq, got)
		}
	}

	// A table created by an entry after the snapshot began is prepared
	// against the new schema, not the snapshot's.
	apply("CREATE TABLE u(x)")
	if got := read(t, db, "SELECT count(*) FROM u"); got[0][0] != int64(0) {
		t.Fatalf("new table: %v", got)
	}

	// A statement that fails ends its connection's snapshot.
	db.releaseSnapshots()
	p, err := db.Prepare(ctx, []api.Statement{{SQL: "SELECT abs(-9223372036854775807 - 1)"}})
	if err != nil {
		t.Fatal(err)
	}
	res, _, err := p.Run(ctx, 0)
	if err != nil || !strings.Contains(res[0].Error, "integer overflow") {
		t.Fatalf("failing read: %+v %v, want integer overflow", res, err)
	}
	if got := db.held.Load(); got != 0 {
		t.Fatalf("after a failing read: %d snapshots held, want 0", got)
	}

	// Several statements read one snapshot, as in one transaction.
	p, err = db.Prepare(ctx, []api.Statement{{SQL: "SELECT count(*) FROM t"}, {SQL: "SELECT count(*) FROM u"}})
	if err != nil {
		t.Fatal(err)
	}
	if res, _, err = p.Run(ctx, 0); err != nil || res[0].Values[0][0] != int64(20) || res[1].Values[0][0] != int64(0) {
		t.Fatalf("two statements: %+v %v", res, err)
	}

	// A read leaves a snapshot; then only writes come. Each batch ends
	// the idle snapshots, so SQLite's checkpoints reach the WAL's end and
	// the WAL restarts from its beginning: it stays near the
	// autocheckpoint size (walAutocheckpoint frames) instead of growing
	// with the writes.
	db.releaseSnapshots()
	read(t, db, "SELECT count(*) FROM t")
	if got := db.held.Load(); got != 1 {
		t.Fatalf("after a read: %d snapshots held, want 1", got)
	}
	big := strings.Repeat("x", 4000)
	for i := 0; i < 4000; i++ {
		apply(fmt.Sprintf("INSERT INTO t(v) VALUES('%s')", big))
	}
	if got := db.held.Load(); got != 0 {
		t.Errorf("after writes: %d snapshots held, want 0", got)
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	const frame = 4096 + 24
	frames := fi.Size() / frame
	t.Logf("WAL: %d frames", frames)
	if frames > walAutocheckpoint+500 {
		t.Fatalf("WAL of %d frames after 4,000 writes of 4 KB with no reads, want it restarted near %d", frames, walAutocheckpoint)
	}
	if got := read(t, db, "SELECT count(*) FROM t"); got[0][0] != int64(4020) {
		t.Fatalf("after the writes: %v rows, want 4020", got)
	}
}
