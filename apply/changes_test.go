package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// feed collects what OnChanges hands over.
type feed struct {
	calls   int
	entries []EntryChanges
	befores []ChangeCounts
	fail    error // returned by the next call, then cleared
}

func (f *feed) on(_ context.Context, before ChangeCounts, entries []EntryChanges) error {
	f.calls++
	if err := f.fail; err != nil {
		f.fail = nil
		return err
	}
	f.befores = append(f.befores, before.clone())
	f.entries = append(f.entries, entries...)
	return nil
}

func openFeedDB(tb testing.TB, path string, f *feed) *DB {
	tb.Helper()
	db, err := Open(path, Options{Node: "n1", Readers: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OnChanges: f.on})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// short renders changes compactly: "t insert 1 [1 a]", "t update 1 [1 a]->[1 b]".
func short(chs []Change) []string {
	var out []string
	for _, c := range chs {
		s := fmt.Sprintf("%s %s %d", c.Table, c.Op, c.RowID)
		if c.Op == Update && c.NewRowID != c.RowID {
			s += fmt.Sprintf("->%d", c.NewRowID)
		}
		if c.Old != nil {
			s += fmt.Sprintf(" %v", c.Old)
		}
		if c.New != nil {
			if c.Old != nil {
				s += "->"
			} else {
				s += " "
			}
			s += fmt.Sprintf("%v", c.New)
		}
		out = append(out, s)
	}
	return out
}

// changesOf applies one entry (a batch of its own) at seq and returns the
// changes handed over for it.
func changesOf(tb testing.TB, db *DB, f *feed, seq uint64, tx bool, sql ...string) []string {
	tb.Helper()
	n := len(f.entries)
	if err := db.ApplyBatch(context.Background(), []Msg{{Seq: seq, Data: entry(1700000000000, 1, tx, sql...)}}); err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range f.entries[n:] {
		if e.Seq != seq {
			tb.Fatalf("changes of entry %d handed over with entry %d", e.Seq, seq)
		}
		out = append(out, short(e.Changes)...)
	}
	return out
}

func TestCapture_Values(t *testing.T) {
	f := &feed{}
	db := openFeedDB(t, filepath.Join(t.TempDir(), "db.sqlite"), f)
	changesOf(t, db, f, 1, false, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, n INT)")
	if err := db.ApplyBatch(context.Background(), []Msg{{Seq: 2, Data: (&Entry{Node: "n1", Token: "x", Time: 1700000000123, Statements: stmts("INSERT INTO t VALUES(?, ?, ?, ?, ?)")}).withParams(int64(7), "Zoë", 1.5, []byte{0, 1, 255}, nil).Encode()}}); err != nil {
		t.Fatal(err)
	}
	got := f.entries[len(f.entries)-1]
	want := EntryChanges{Seq: 2, Time: 1700000000123, Node: "n1", Changes: []Change{{
		Table: "t", Op: Insert, RowID: 7, NewRowID: 7, Columns: []string{"id", "name", "score", "data", "n"}, PK: []int{0},
		New: []any{int64(7), "Zoë", 1.5, []byte{0, 1, 255}, nil},
	}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("insert:\n got  %+v\n want %+v", got, want)
	}
	// 9007199254740993 is not a float64: it must stay an exact INTEGER;
	// 2.0 stays a REAL; '' is TEXT.
	if got := changesOf(t, db, f, 3, false, "UPDATE t SET n = 9007199254740993, score = 2.0, name = '' WHERE id = 7"); !reflect.DeepEqual(got, []string{
		"t update 7 [7 Zoë 1.5 [0 1 255] <nil>]->[7  2 [0 1 255] 9007199254740993]"}) {
		t.Fatalf("update: %q", got)
	}
	ch := f.entries[len(f.entries)-1].Changes[0]
	if _, ok := ch.New[2].(float64); !ok {
		t.Errorf("REAL 2.0 came back as %T", ch.New[2])
	}
	if v, ok := ch.New[4].(int64); !ok || v != 9007199254740993 {
		t.Errorf("INTEGER came back as %T %v", ch.New[4], ch.New[4])
	}
	if got := changesOf(t, db, f, 4, false, "UPDATE t SET id = 8 WHERE id = 7", "DELETE FROM t"); !reflect.DeepEqual(got, []string{
		"t update 7->8 [7  2 [0 1 255] 9007199254740993]->[8  2 [0 1 255] 9007199254740993]",
		"t delete 8 [8  2 [0 1 255] 9007199254740993]"}) {
		t.Fatalf("rowid update and delete: %q", got)
	}
}

// withParams gives the entry's one statement positional parameters.
func (e *Entry) withParams(p ...any) *Entry {
	e.Statements[0].Params = p
	return e
}

// Tables with a declared primary key, WITHOUT ROWID, generated columns.
func TestCapture_Schema(t *testing.T) {
	f := &feed{}
	db := openFeedDB(t, filepath.Join(t.TempDir(), "db.sqlite"), f)
	changesOf(t, db, f, 1, false,
		"CREATE TABLE p(a TEXT, b INT, c, PRIMARY KEY(b, a))",
		"CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID",
		"CREATE TABLE g(x INT, y INT GENERATED ALWAYS AS (x * 2) VIRTUAL, z INT AS (x + 1) STORED, u TEXT)",
		"CREATE TABLE r(x, y)")
	changesOf(t, db, f, 2, false, "INSERT INTO p VALUES('a', 1, 'c')", "INSERT INTO w VALUES('k', 1)", "INSERT INTO g(x, u) VALUES(3, 'u')", "INSERT INTO r VALUES(1, 2)")
	var got []string
	for _, c := range f.entries[len(f.entries)-1].Changes {
		got = append(got, fmt.Sprintf("%s cols=%v pk=%v norowid=%v rowid=%d new=%v", c.Table, c.Columns, c.PK, c.WithoutRowID, c.RowID, c.New))
	}
	want := []string{
		"p cols=[a b c] pk=[1 0] norowid=false rowid=1 new=[a 1 c]",
		"w cols=[k v] pk=[0] norowid=true rowid=0 new=[k 1]",
		"g cols=[x u] pk=[] norowid=false rowid=1 new=[3 u]",
		"r cols=[x y] pk=[] norowid=false rowid=1 new=[1 2]",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n %s\nwant\n %s", strings.Join(got, "\n "), strings.Join(want, "\n "))
	}
	if got := changesOf(t, db, f, 3, false, "UPDATE w SET v = 2", "DELETE FROM w", "ALTER TABLE r ADD COLUMN z DEFAULT 9", "UPDATE r SET x = 5"); !reflect.DeepEqual(got, []string{
		"w update 0 [k 1]->[k 2]", "w delete 0 [k 2]", "r update 1 [1 2 9]->[5 2 9]"}) {
		t.Fatalf("%q", got)
	}
}

// Triggers, upserts and REPLACE: every row SQLite changes, in order.
func TestCapture_TriggersAndUpserts(t *testing.T) {
	f := &feed{}
	db := openFeedDB(t, filepath.Join(t.TempDir(), "db.sqlite"), f)
	changesOf(t, db, f, 1, false,
		"CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT UNIQUE, n INT)",
		"CREATE TABLE log(id INTEGER PRIMARY KEY, what TEXT)",
		"CREATE TRIGGER tb BEFORE INSERT ON t BEGIN INSERT INTO log(what) VALUES('before ' || new.k); END",
		"CREATE TRIGGER ta AFTER UPDATE ON t BEGIN INSERT INTO log(what) VALUES('update ' || new.k); END",
		"CREATE TRIGGER td AFTER DELETE ON t BEGIN DELETE FROM log WHERE what = 'before ' || old.k; END")
	for _, c := range []struct {
		name string
		sql  []string
		want []string
	}{
		{"trigger", []string{"INSERT INTO t(k, n) VALUES('a', 1)"}, []string{
			"log insert 1 [1 before a]", "t insert 1 [1 a 1]"}},
		{"upsert updates", []string{"INSERT INTO t(k, n) VALUES('a', 5) ON CONFLICT(k) DO UPDATE SET n = n + excluded.n"}, []string{
			"log insert 2 [2 before a]", "t update 1 [1 a 1]->[1 a 6]", "log insert 3 [3 update a]"}},
		{"upsert does nothing", []string{"INSERT INTO t(k, n) VALUES('a', 5) ON CONFLICT DO NOTHING"}, []string{
			"log insert 4 [4 before a]"}},
		{"replace deletes the conflicting row", []string{"INSERT OR REPLACE INTO t(id, k, n) VALUES(2, 'a', 0)"}, []string{
			"log insert 5 [5 before a]", "t delete 1 [1 a 6]", "t insert 2 [2 a 0]"}},
		{"delete fires a trigger", []string{"DELETE FROM t"}, []string{
			"t delete 2 [2 a 0]", "log delete 1 [1 before a]", "log delete 2 [2 before a]", "log delete 4 [4 before a]", "log delete 5 [5 before a]"}},
	} {
		if got := changesOf(t, db, f, uint64(len(f.entries)+2), false, c.sql...); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got  %q\n want %q", c.name, got, c.want)
		}
	}
}

// Only changes that commit: a failed statement's are dropped (its
// statement journal undid them) unless it failed with OR FAIL; savepoints
// rolled back drop theirs; a failed transaction drops everything.
func TestCapture_OnlyCommitted(t *testing.T) {
	setup := []string{
		"CREATE TABLE t(x INT PRIMARY KEY)",
		"CREATE TABLE log(w TEXT)",
		"CREATE TABLE f(x INT)",
		"CREATE TRIGGER ft AFTER INSERT ON f WHEN new.x = 3 BEGIN SELECT RAISE(FAIL, 'three'); END",
		"CREATE TABLE a(x INT)",
		"CREATE TRIGGER at AFTER INSERT ON a WHEN new.x = 3 BEGIN SELECT RAISE(ABORT, 'three'); END",
		"CREATE TRIGGER tl BEFORE INSERT ON t BEGIN INSERT INTO log VALUES(new.x); END",
		"INSERT INTO t VALUES(100)",
	}
	for _, c := range []struct {
		name string
		tx   bool
		sql  []string
		want []string // "table op" of the changes handed over
	}{
		{"failed statement dropped", false, []string{"INSERT INTO t VALUES(1), (2), (100), (3)", "INSERT INTO t VALUES(4)"}, []string{"log insert", "t insert"}},
		{"OR FAIL keeps what came before", false, []string{"INSERT OR FAIL INTO t VALUES(1), (100), (3)"}, []string{"log insert", "t insert", "log insert"}},
		{"RAISE(FAIL) keeps what came before", false, []string{"INSERT INTO f VALUES(1), (2), (3), (4)"}, []string{"f insert", "f insert", "f insert"}},
		{"RAISE(ABORT) drops the statement", false, []string{"INSERT INTO a VALUES(1), (2), (3)", "INSERT INTO a VALUES(9)"}, []string{"a insert"}},
		{"OR ROLLBACK fails alone", false, []string{"INSERT INTO a VALUES(1)", "INSERT OR ROLLBACK INTO t VALUES(100)", "INSERT INTO a VALUES(2)"}, []string{"a insert", "a insert"}},
		{"transaction failed", true, []string{"INSERT INTO a VALUES(1)", "INSERT INTO t VALUES(100)"}, nil},
		{"transaction", true, []string{"INSERT INTO a VALUES(1)", "INSERT INTO a VALUES(2)"}, []string{"a insert", "a insert"}},
		{"savepoint rolled back to", false, []string{"INSERT INTO a VALUES(1)", "SAVEPOINT s", "INSERT INTO a VALUES(2)", "SAVEPOINT s2", "INSERT INTO f VALUES(2)", "ROLLBACK TO s", "INSERT INTO f VALUES(4)", "RELEASE s"}, []string{"a insert", "f insert"}},
		{"nested savepoints", false, []string{"SAVEPOINT s", "INSERT INTO a VALUES(1)", "SAVEPOINT s2", "INSERT INTO a VALUES(2)", "ROLLBACK TO s2", "RELEASE s2", "INSERT INTO f VALUES(1)", "RELEASE s"}, []string{"a insert", "f insert"}},
		{"user transaction rolled back", false, []string{"INSERT INTO a VALUES(1)", "BEGIN", "INSERT INTO a VALUES(2)", "ROLLBACK", "INSERT INTO f VALUES(1)"}, []string{"a insert", "f insert"}},
		{"user transaction committed", false, []string{"BEGIN", "INSERT INTO a VALUES(2)", "COMMIT"}, []string{"a insert"}},
		{"left open", false, []string{"INSERT INTO a VALUES(1)", "BEGIN", "INSERT INTO a VALUES(2)"}, []string{"a insert"}},
		{"savepoint left open", false, []string{"SAVEPOINT s", "INSERT INTO a VALUES(2)"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &feed{}
			db := openFeedDB(t, filepath.Join(t.TempDir(), "db.sqlite"), f)
			changesOf(t, db, f, 1, false, setup...)
			before := db.ChangeCounts()
			if err := db.ApplyBatch(context.Background(), []Msg{{Seq: 2, Data: entry(1700000000000, 1, c.tx, c.sql...)}}); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range f.entries[1:] {
				for _, ch := range e.Changes {
					got = append(got, ch.Table+" "+ch.Op.String())
				}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
			// The table holds what the feed says it committed.
			if n := before.Count(nil) + uint64(len(c.want)); db.ChangeCounts().Count(nil) != n {
				t.Errorf("counts %d, want %d", db.ChangeCounts().Count(nil), n)
			}
		})
	}
}

// A batch replayed after a statement undid the SQLite transaction, or
// whose OnChanges failed, hands every change over once per commit, and
// the changes do not depend on the batching.
func TestCapture_Replay(t *testing.T) {
	var msgs []Msg
	for i, sql := range [][]string{
		{"CREATE TABLE t(x INT PRIMARY KEY)", "CREATE TABLE u(x)"},
		{"INSERT INTO t VALUES(1)", "INSERT INTO u VALUES(1)"},
		{"INSERT INTO u VALUES(2)", "INSERT OR ROLLBACK INTO t VALUES(1)", "INSERT INTO u VALUES(3)"},
		{"INSERT INTO u VALUES(4)", "DELETE FROM u"},
	} {
		msgs = append(msgs, Msg{Seq: uint64(i + 1), Data: entry(1700000000000+int64(i), int64(i), false, sql...)})
	}
	fa, fb := &feed{}, &feed{}
	a := openFeedDB(t, filepath.Join(t.TempDir(), "a.sqlite"), fa)
	b := openFeedDB(t, filepath.Join(t.TempDir(), "b.sqlite"), fb)
	for _, m := range msgs {
		if err := a.ApplyBatch(context.Background(), []Msg{m}); err != nil {
			t.Fatal(err)
		}
	}
	fb.fail = errors.New("feed down")
	if err := b.ApplyBatch(context.Background(), msgs); err == nil || !strings.Contains(err.Error(), "feed down") {
		t.Fatalf("ApplyBatch with a failing OnChanges: %v", err)
	}
	if b.Applied() != 0 || len(fb.entries) != 0 {
		t.Fatalf("after a failing OnChanges: applied %d, %d entries handed over", b.Applied(), len(fb.entries))
	}
	if err := b.ApplyBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fa.entries, fb.entries) {
		t.Fatalf("one by one:\n %+v\none batch:\n %+v", fa.entries, fb.entries)
	}
	var got []string
	for _, e := range fb.entries {
		got = append(got, fmt.Sprintf("%d: %q", e.Seq, short(e.Changes)))
	}
	want := []string{
		`2: ["t insert 1 [1]" "u insert 1 [1]"]`,
		`3: ["u insert 2 [2]" "u insert 3 [3]"]`,
		`4: ["u insert 4 [4]" "u delete 1 [1]" "u delete 2 [2]" "u delete 3 [3]" "u delete 4 [4]"]`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n %s\nwant\n %s", strings.Join(got, "\n "), strings.Join(want, "\n "))
	}
	// before: the counts committed before each batch.
	if n := fa.befores[2].Count(nil); n != 4 {
		t.Errorf("counts before entry 4: %d, want 4", n)
	}
	if n := fb.befores[0].Count(nil); n != 0 {
		t.Errorf("counts before the batch: %d, want 0", n)
	}
	wantCounts := map[string]uint64{"t": 1, "u": 8}
	for _, db := range []*DB{a, b} {
		if c := db.ChangeCounts(); !reflect.DeepEqual(c.Tables, wantCounts) || c.Resets != 0 {
			t.Errorf("counts %+v, want %v", c, wantCounts)
		}
	}
	// The counts are stored with the data.
	path := a.Path()
	a.Close()
	a = openFeedDB(t, path, &feed{})
	if c := a.ChangeCounts(); !reflect.DeepEqual(c.Tables, wantCounts) {
		t.Errorf("counts after reopening %+v, want %v", c, wantCounts)
	}
}

// Entries in format version 2 were applied by nodes that did not count:
// their changes count nothing and are not handed over.
func TestCapture_OldEntriesNotCounted(t *testing.T) {
	f := &feed{}
	db := openFeedDB(t, filepath.Join(t.TempDir(), "db.sqlite"), f)
	v2 := (&Entry{Node: "n1", Token: "x", Statements: stmts("CREATE TABLE t(x)", "INSERT INTO t VALUES(1)")}).encode(2)
	if err := db.ApplyBatch(context.Background(), []Msg{{Seq: 1, Data: v2}, {Seq: 2, Data: entryTx(false, "INSERT INTO t VALUES(2)")}}); err != nil {
		t.Fatal(err)
	}
	if len(f.entries) != 1 || f.entries[0].Seq != 2 {
		t.Fatalf("handed over %+v, want entry 2 only", f.entries)
	}
	if c := db.ChangeCounts(); c.Tables["t"] != 1 {
		t.Fatalf("counts %+v, want t: 1", c)
	}
}

// A barrier applies its sequence and nothing else: no OnChanges call for
// a batch of barriers, none of its changes in a batch with entries, the
// same counts and file as without it, not counted as skipped, and an
// old node (which decodes it as an invalid entry) skips it the same way.
func TestCapture_Barrier(t *testing.T) {
	if _, err := DecodeEntry(Barrier()); !errors.Is(err, ErrInvalidEntry) {
		t.Fatalf("DecodeEntry(Barrier()): %v, want ErrInvalidEntry (how nodes before barriers skip it)", err)
	}
	dir := t.TempDir()
	fa, fb := &feed{}, &feed{}
	a := openFeedDB(t, filepath.Join(dir, "a.sqlite"), fa)
	b := openFeedDB(t, filepath.Join(dir, "b.sqlite"), fb)
	e1 := entryTx(false, "CREATE TABLE t(x)", "INSERT INTO t VALUES(1)")
	e2 := entryTx(false, "INSERT INTO t VALUES(2)")
	// a: an entry, a barrier alone, then a barrier and an entry; b: the
	// same stream in one batch.
	for _, batch := range [][]Msg{
		{{Seq: 1, Data: e1}},
		{{Seq: 2, Data: Barrier()}},
		{{Seq: 3, Data: Barrier()}, {Seq: 4, Data: e2}},
	} {
		calls := fa.calls
		if err := a.ApplyBatch(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		last := batch[len(batch)-1].Seq
		if got := a.Applied(); got != last {
			t.Fatalf("applied %d, want %d", got, last)
		}
		if last == 2 && fa.calls != calls {
			t.Fatalf("a batch of a barrier called OnChanges")
		}
	}
	if err := a.WaitApplied(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	if err := b.ApplyBatch(context.Background(), []Msg{{Seq: 1, Data: e1}, {Seq: 2, Data: Barrier()}, {Seq: 3, Data: Barrier()}, {Seq: 4, Data: e2}}); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range fa.entries {
		seqs = append(seqs, e.Seq)
	}
	if want := []uint64{1, 4}; !reflect.DeepEqual(seqs, want) {
		t.Fatalf("changes handed over for entries %v, want %v", seqs, want)
	}
	if !reflect.DeepEqual(fa.entries, fb.entries) {
		t.Fatalf("changes differ by batching: %+v and %+v", fa.entries, fb.entries)
	}
	if ca := a.ChangeCounts(); ca.Tables["t"] != 2 || !reflect.DeepEqual(ca, b.ChangeCounts()) {
		t.Fatalf("counts %+v and %+v, want t: 2", ca, b.ChangeCounts())
	}
	if a.Skipped() != 0 || b.Skipped() != 0 {
		t.Fatalf("skipped: a %d, b %d, want 0", a.Skipped(), b.Skipped())
	}
	a.Close()
	b.Close()
	sameFiles(t, filepath.Join(dir, "a.sqlite"), filepath.Join(dir, "b.sqlite"))
}

// Without OnChanges, changes are counted all the same (no values kept).
func TestCapture_CountsWithoutFeed(t *testing.T) {
	dir := t.TempDir()
	f := &feed{}
	a := openFeedDB(t, filepath.Join(dir, "a.sqlite"), f)
	b := openDB(t, filepath.Join(dir, "b.sqlite"))
	msgs := []Msg{
		{Seq: 1, Data: entryTx(false, "CREATE TABLE t(x)", "INSERT INTO t VALUES(1), (2)")},
		{Seq: 2, Data: entryTx(false, "UPDATE t SET x = x + 1", "DELETE FROM t WHERE x = 2")},
	}
	for _, db := range []*DB{a, b} {
		if err := db.ApplyBatch(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
	}
	if ca, cb := a.ChangeCounts(), b.ChangeCounts(); !reflect.DeepEqual(ca, cb) || ca.Tables["t"] != 5 {
		t.Fatalf("with a feed %+v, without %+v; want t: 5", ca, cb)
	}
	a.Close()
	b.Close()
	sameFiles(t, filepath.Join(dir, "a.sqlite"), filepath.Join(dir, "b.sqlite"))
}

// A load entry hands over one reset before the file is swapped, and the
// new file keeps the counts plus one reset.
func TestCapture_LoadReset(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.sql")
	if err := os.WriteFile(src, []byte("CREATE TABLE n(x); INSERT INTO n VALUES(1), (2);"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &feed{}
	db, err := Open(filepath.Join(dir, "db.sqlite"), Options{Node: "n1", Readers: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OnChanges: f.on,
		Loader: func(ctx context.Context, seq uint64, l *Load, dir string) (string, bool, error) {
			b, err := os.ReadFile(src)
			if err != nil {
				return "", false, err
			}
			p := filepath.Join(dir, "fetched")
			return p, false, os.WriteFile(p, b, 0o644)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	load := (&Entry{Node: "n1", Token: "l", Time: 1700000000999, Load: &Load{Bucket: "b", Object: "o", SQL: true}}).Encode()
	msgs := []Msg{
		{Seq: 1, Data: entryTx(false, "CREATE TABLE t(x)", "INSERT INTO t VALUES(1)")},
		{Seq: 2, Data: load},
		{Seq: 3, Data: entryTx(false, "INSERT INTO n VALUES(3)")},
	}
	if err := db.ApplyBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range f.entries {
		got = append(got, fmt.Sprintf("%d reset=%v %q", e.Seq, e.Reset, short(e.Changes)))
	}
	want := []string{`1 reset=false ["t insert 1 [1]"]`, `2 reset=true []`, `3 reset=false ["n insert 3 [3]"]`}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if f.entries[1].Time != 1700000000999 {
		t.Errorf("reset time %d", f.entries[1].Time)
	}
	// The dump's own inserts are the loaded content, not changes: the
	// counts go on from the old database's.
	if c := db.ChangeCounts(); c.Resets != 1 || !reflect.DeepEqual(c.Tables, map[string]uint64{"t": 1, "n": 1}) {
		t.Fatalf("counts %+v, want 1 reset, t: 1, n: 1", c)
	}
	if n := f.befores[2].Count(nil); n != 2 {
		t.Errorf("counts before entry 3: %d, want 2 (t's insert and the reset)", n)
	}
}

// stepWrite words errors as zombiezen's Stmt.Step does: a failing write
// gives the text it gave before the capture stepped writes itself.
func TestCapture_StepErrors(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	setup := []string{
		"CREATE TABLE t(x INT PRIMARY KEY, y NOT NULL, z CHECK (z > 0))",
		"CREATE TABLE s(x INT) STRICT",
		"CREATE TRIGGER tr BEFORE INSERT ON s WHEN new.x = 7 BEGIN SELECT RAISE(ABORT, '1:2: seven'); END",
		"INSERT INTO t VALUES(1, 1, 1)",
	}
	applyOutcome(t, db, 1, entryTx(false, setup...))
	failing := []string{
		"INSERT INTO t VALUES(1, 1, 1)",
		"INSERT INTO t VALUES(2, NULL, 1)",
		"INSERT INTO t VALUES(3, 1, 0)",
		"INSERT INTO s VALUES('x')",
		"INSERT INTO s VALUES(7)",
		"INSERT INTO t SELECT zeroblob(20000000), 1, 1",
	}
	res := applyOutcome(t, db, 2, entryTx(false, failing...))
	// The same statements through zombiezen's Step on a plain copy.
	c, err := sqliteOpen(filepath.Join(t.TempDir(), "plain.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, q := range setup {
		if err := execPlain(c, q); err != nil {
			t.Fatal(err)
		}
	}
	for i, q := range failing {
		err := execPlain(c, q)
		if err == nil {
			t.Fatalf("%s: no error on plain SQLite", q)
		}
		if want := sqlErrorText(err, q); res[i].Error != want {
			t.Errorf("%s: %q, want %q", q, res[i].Error, want)
		}
	}
	// A parameter over the length limit fails at bind, reported by Step.
	big := strings.Repeat("x", MaxValueBytes+1)
	e := (&Entry{Node: "n1", Token: "big", Statements: stmts("INSERT INTO t VALUES(9, ?, 1)")}).withParams(big)
	got := applyOutcome(t, db, 3, e.Encode())[0].Error
	s, _, err := c.PrepareTransient("INSERT INTO t VALUES(9, ?, 1)")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Finalize()
	s.BindText(1, big)
	_, err = s.Step()
	if want := sqlErrorText(err, ""); err == nil || got != want {
		t.Errorf("oversized parameter: %q, want %q", got, want)
	}
}

// A REAL column holding an integral value: SQLite stores it as an integer
// in the record and reads it back as a REAL, but its pre-update hook hands
// an insert's (and an update's) new value over as the record holds it.
// The changes must carry the storage class a SELECT returns, as the old
// values already do.
func TestCapture_RealAffinity(t *testing.T) {
	f := &feed{}
	db := openFeedDB(t, filepath.Join(t.TempDir(), "db.sqlite"), f)
	changesOf(t, db, f, 1, false,
		"CREATE TABLE t(id INTEGER PRIMARY KEY, r REAL, n NUMERIC, i INT, x)",
		"CREATE TABLE w(k TEXT PRIMARY KEY, r REAL) WITHOUT ROWID",
		"CREATE TABLE s(id INTEGER PRIMARY KEY, r REAL) STRICT")
	typed := func(vals []any) string {
		var b strings.Builder
		for _, v := range vals {
			fmt.Fprintf(&b, "%T(%v) ", v, v)
		}
		return b.String()
	}
	for i, c := range []struct {
		sql   []string
		check []string // the rows after the entry, in the order of its changes with new values
	}{
		{[]string{"INSERT INTO t VALUES(1, 2, 2.0, 2, 2)", "INSERT INTO w VALUES('a', 5)", "INSERT INTO s VALUES(1, 7)"},
			[]string{"SELECT * FROM t WHERE id = 1", "SELECT * FROM w WHERE k = 'a'", "SELECT * FROM s WHERE id = 1"}},
		{[]string{"UPDATE t SET r = 3, x = 3.0", "UPDATE w SET r = r + 1", "INSERT INTO s VALUES(1, 8) ON CONFLICT(id) DO UPDATE SET r = excluded.r + 1"},
			[]string{"SELECT * FROM t WHERE id = 1", "SELECT * FROM w WHERE k = 'a'", "SELECT * FROM s WHERE id = 1"}},
		{[]string{"INSERT OR REPLACE INTO t VALUES(1, -4, 1e3, '5', '6')"},
			[]string{"", "SELECT * FROM t WHERE id = 1"}}, // the delete of the old row, then the insert
	} {
		n := len(f.entries)
		changesOf(t, db, f, uint64(i+2), false, c.sql...)
		chs := f.entries[n].Changes
		if len(chs) != len(c.check) {
			t.Fatalf("entry %d: %d changes, want %d", i+2, len(chs), len(c.check))
		}
		for j, ch := range chs {
			if c.check[j] == "" {
				continue
			}
			if got, want := typed(ch.New), typed(read(t, db, c.check[j])[0]); got != want {
				t.Errorf("entry %d: %s %s new %s, a SELECT reads %s", i+2, ch.Table, ch.Op, got, want)
			}
		}
	}
	// The old values (SQLite converts those) agree with what was read.
	last := f.entries[len(f.entries)-1].Changes[0]
	if got := typed(last.Old); got != "int64(1) float64(3) int64(2) int64(2) float64(3) " {
		t.Errorf("old values of the replaced row: %s", got)
	}
}
