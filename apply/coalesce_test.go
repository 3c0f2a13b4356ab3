package apply

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
)

// coalescedMsgs is a stream with a coalesced entry (seq 2) of four
// requests, then retries of its ids within and after their keep.
func coalescedMsgs() []Msg {
	const ts, keep = int64(1700000000000), int64(60000)
	e := func(seq uint64, t int64, tok, id string, tx bool, sql ...string) *Entry {
		return &Entry{Node: "n1", Token: tok, ID: id, Keep: keep, Time: t, Seed: int64(seq) * 31, Tx: tx, Statements: stmts(sql...)}
	}
	group := e(2, ts+1, "a", "ka", false, "INSERT INTO t VALUES(1, 'a')", "INSERT INTO t VALUES(5, random())")
	group.Budget = Budget{Steps: 100_000, Bytes: 1 << 20}
	group.More = []Request{
		// Its own transaction: the second statement fails, the first is undone.
		{Token: "b", ID: "kb", Seed: 2, Tx: true, Statements: stmts("INSERT INTO t VALUES(2, 'b')", "INSERT INTO t VALUES(1, 'dup')")},
		// Undoes SQLite's transaction: replayed as failed, the others stay;
		// last_insert_rowid() starts at 0 for this request.
		{Token: "c", Seed: 3, Statements: stmts("INSERT OR ROLLBACK INTO t VALUES(1, 'x')", "INSERT INTO t VALUES(3, last_insert_rowid())")},
		// The same id as the first request: a duplicate of this entry.
		{Token: "d", ID: "ka", Seed: 4, Statements: stmts("INSERT INTO t VALUES(4, 'd')")},
		// Over the budget (each request has the entry's whole budget): it
		// fails alone, and the next request runs within its own.
		{Token: "e", Seed: 6, Statements: stmts("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t(v) SELECT x FROM c")},
		// Another seed: another random(); a read, run only where the
		// request waits (it enters the digest as a marker).
		{Token: "f", Seed: 5, Statements: stmts("INSERT INTO t VALUES(6, random())", "SELECT count(*) FROM t")},
	}
	return []Msg{
		{Seq: 1, Data: e(1, ts, "z", "", false, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)").Encode()},
		{Seq: 2, Data: group.Encode()},
		// A retry of the failed request b, within its keep: a duplicate.
		{Seq: 3, Data: e(3, ts+2*keep, "g", "kb", false, "INSERT INTO t VALUES(7, 'g')").Encode()},
		// After it expired: applied again.
		{Seq: 4, Data: e(4, ts+2*keep+2, "h", "kb", false, "INSERT INTO t VALUES(8, 'h')").Encode()},
	}
}

// TestDB_Coalesced: each request of a coalesced entry has its own results,
// transaction, failure and idempotency key; the entry's row changes reach
// the feed as one entry's; applied in one batch or message by message,
// the files and digests are the same.
func TestDB_Coalesced(t *testing.T) {
	msgs := coalescedMsgs()
	dirA, dirB := t.TempDir(), t.TempDir()
	f := &feed{}
	a := openFeedDB(t, filepath.Join(dirA, "db.sqlite"), f)
	tokens := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	chans := map[string]<-chan Outcome{}
	for _, tok := range tokens {
		ch, stop := a.Await(tok)
		defer stop()
		chans[tok] = ch
	}
	if err := a.ApplyBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	got := map[string]Outcome{}
	for _, tok := range tokens {
		select {
		case o := <-chans[tok]:
			got[tok] = o
		default:
			t.Fatalf("no outcome for request %s", tok)
		}
	}
	check := func(tok string, seq uint64, dup bool, wantErrs ...string) {
		t.Helper()
		o := got[tok]
		if o.Seq != seq || o.Duplicate != dup {
			t.Errorf("request %s: seq %d duplicate %v, want %d %v", tok, o.Seq, o.Duplicate, seq, dup)
		}
		if e := errs(o.Results); !reflect.DeepEqual(e, wantErrs) && !(len(e) == 0 && len(wantErrs) == 0) {
			t.Errorf("request %s: errors %q, want %q", tok, e, wantErrs)
		}
	}
	check("a", 2, false, "", "")
	check("b", 2, false, "", "UNIQUE constraint failed: t.id")
	check("c", 2, false, "UNIQUE constraint failed: t.id", "")
	check("d", 2, true)
	check("e", 2, false, stepsError(100_000))
	check("f", 2, false, "", "")
	if v := got["f"].Results[1].Values; len(v) != 1 || v[0][0] != int64(4) {
		t.Errorf("request f's read: %v, want 4 rows (1, 3, 5, 6)", v)
	}
	check("g", 2, true)
	check("h", 4, false, "")
	rows := read(t, a, "SELECT group_concat(id || '=' || typeof(v), ' ') FROM (SELECT * FROM t ORDER BY id)")
	if want := "1=text 3=integer 5=integer 6=integer 8=text"; rows[0][0] != want {
		t.Fatalf("rows %v, want %s", rows[0][0], want)
	}
	if r := read(t, a, "SELECT (SELECT v FROM t WHERE id = 3), (SELECT v FROM t WHERE id = 5) != (SELECT v FROM t WHERE id = 6)"); r[0][0] != int64(0) || r[0][1] != int64(1) {
		t.Fatalf("last_insert_rowid() of request c %v (want 0), random() of a and f differ %v (want 1)", r[0][0], r[0][1])
	}
	var seqs []uint64
	for _, ec := range f.entries {
		seqs = append(seqs, ec.Seq)
	}
	if want := []uint64{2, 4}; !reflect.DeepEqual(seqs, want) || len(f.entries[0].Changes) != 4 {
		t.Fatalf("feed entries %v with %d changes in the first, want %v and 4 (a's two, c's, f's)", seqs, len(f.entries[0].Changes), want)
	}

	// b has no waiters: it runs no reads, as a node that did not accept
	// the entry.
	b := openDB(t, filepath.Join(dirB, "db.sqlite"))
	for _, m := range msgs {
		if err := b.ApplyBatch(context.Background(), []Msg{m}); err != nil {
			t.Fatal(err)
		}
	}
	if da, db := a.Digest(), b.Digest(); da != db {
		t.Errorf("digests differ: %+v and %+v", da, db)
	}
	a.Close()
	b.Close()
	sameFiles(t, filepath.Join(dirA, "db.sqlite"), filepath.Join(dirB, "db.sqlite"))
}

// TestDB_RequestSeq: the sequence recorded for a request id is the one of
// the entry that applied it (a request in a coalesced entry included), and
// an id never applied has none.
func TestDB_RequestSeq(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	ctx := context.Background()
	if _, ok, err := db.RequestSeq(ctx, "ka"); err != nil || ok {
		t.Fatalf("before any entry: ok %v, err %v", ok, err)
	}
	if err := db.ApplyBatch(ctx, coalescedMsgs()[:2]); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   string
		seq  uint64
		want bool
	}{{"ka", 2, true}, {"kb", 2, true}, {"kz", 0, false}} {
		seq, ok, err := db.RequestSeq(ctx, c.id)
		if err != nil || ok != c.want || seq != c.seq {
			t.Errorf("RequestSeq(%q) = %d, %v, %v; want %d, %v", c.id, seq, ok, err, c.seq, c.want)
		}
	}
}
