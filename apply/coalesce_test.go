package apply

import (
	"context"
	"fmt"
	"os"
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

// TestDB_LoadKeepsRequestIDs: the new file of a version 6 load holds the
// request ids of the database it replaces that have not expired at the
// load entry's time, and none the loaded file brought: a retry of a
// request applied before the load is answered as a duplicate of it after
// the load, by a file load and a SQL load alike, on a node applying
// message by message and one applying in one batch. After a version 5
// load (written by an older node) the retry runs again, as it did on the
// nodes of that version.
func TestDB_LoadKeepsRequestIDs(t *testing.T) {
	const ts, keep = int64(1700000000000), int64(60000)
	dir := t.TempDir()
	// A file made outside nqlite that brings a request ids table of its
	// own, with an id no request of this stream was applied under.
	src := filepath.Join(dir, "src.sqlite")
	c, err := sqliteOpen(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"CREATE TABLE n(x)", "INSERT INTO n VALUES(1)",
		"CREATE TABLE _nqlite_requests(id TEXT PRIMARY KEY, seq INTEGER NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID",
		fmt.Sprintf("INSERT INTO _nqlite_requests VALUES('kf', 1, %d)", ts+10*keep)} {
		if err := execPlain(c, q); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	dump := filepath.Join(dir, "src.sql")
	if err := os.WriteFile(dump, []byte("CREATE TABLE n(x);\nINSERT INTO n VALUES(1);\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	loader := func(ctx context.Context, seq uint64, l *Load, dir string) (string, bool, error) {
		b, err := os.ReadFile(l.Object)
		if err != nil {
			return "", false, err
		}
		p := filepath.Join(dir, "fetched")
		return p, false, os.WriteFile(p, b, 0o644)
	}
	e := func(t int64, tok, id, sql string) []byte {
		return (&Entry{Node: "n1", Token: tok, ID: id, Keep: keep, Time: t, Seed: 7, Statements: stmts(sql)}).Encode()
	}
	for _, tc := range []struct {
		sql     bool
		version byte
	}{{false, 6}, {true, 6}, {false, 5}, {true, 5}} {
		sql := tc.sql
		object := src
		if sql {
			object = dump
		}
		load := (&Entry{Node: "n1", Token: "load", Time: ts + 3*keep, Load: &Load{Bucket: "b", Object: object, SQL: sql}}).encode(tc.version)
		msgs := []Msg{
			{Seq: 1, Data: e(ts, "a", "ka", "CREATE TABLE t(x)")},
			// Expired at the load's time (ts+1 + 2*keep < ts + 3*keep).
			{Seq: 2, Data: e(ts+1, "b", "kb", "INSERT INTO t VALUES(2)")},
			{Seq: 3, Data: e(ts+2*keep, "c", "kc", "INSERT INTO t VALUES(3)")},
			{Seq: 4, Data: load},
			// Retries after the load: kc is a duplicate of entry 3; kb
			// expired and kf was never applied here: both run.
			{Seq: 5, Data: e(ts+3*keep+1, "c2", "kc", "INSERT INTO n VALUES(5)")},
			{Seq: 6, Data: e(ts+3*keep+2, "b2", "kb", "INSERT INTO n VALUES(6)")},
			{Seq: 7, Data: e(ts+3*keep+3, "f2", "kf", "INSERT INTO n VALUES(7)")},
		}
		var files []string
		for _, batch := range []bool{false, true} {
			sub := filepath.Join(dir, fmt.Sprintf("sql=%v-v%d-batch=%v", sql, tc.version, batch))
			os.MkdirAll(sub, 0o755)
			path := filepath.Join(sub, "db.sqlite")
			db, err := Open(path, Options{Node: "n1", Readers: 1, Loader: loader})
			if err != nil {
				t.Fatal(err)
			}
			outcomes := map[string]<-chan Outcome{}
			for _, tok := range []string{"c2", "b2", "f2"} {
				ch, stop := db.Await(tok)
				defer stop()
				outcomes[tok] = ch
			}
			if batch {
				if err := db.ApplyBatch(context.Background(), msgs[:4]); err != nil {
					t.Fatal(err)
				}
				if err := db.ApplyBatch(context.Background(), msgs[4:]); err != nil {
					t.Fatal(err)
				}
			} else {
				for _, m := range msgs {
					if err := db.ApplyBatch(context.Background(), []Msg{m}); err != nil {
						t.Fatal(err)
					}
				}
			}
			wants, rows := map[string]Outcome{"c2": {Seq: 3, Duplicate: true}, "b2": {Seq: 6}, "f2": {Seq: 7}}, "1,6,7"
			if tc.version < 6 {
				wants["c2"], rows = Outcome{Seq: 5}, "1,5,6,7"
			}
			for tok, want := range wants {
				o := <-outcomes[tok]
				if o.Seq != want.Seq || o.Duplicate != want.Duplicate {
					t.Errorf("sql %v v%d batch %v: retry %s: seq %d duplicate %v, want seq %d duplicate %v", sql, tc.version, batch, tok, o.Seq, o.Duplicate, want.Seq, want.Duplicate)
				}
			}
			if got := read(t, db, "SELECT group_concat(x) FROM (SELECT x FROM n ORDER BY x)"); got[0][0] != rows {
				t.Errorf("sql %v v%d batch %v: rows of n %v, want %s", sql, tc.version, batch, got[0][0], rows)
			}
			db.Close()
			files = append(files, path)
		}
		sameFiles(t, files[0], files[1])
	}
}
