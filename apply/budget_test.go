package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nqlite/nqlite/service/api"
)

func stmts(sql ...string) []api.Statement {
	out := make([]api.Statement, len(sql))
	for i, s := range sql {
		out[i] = api.Statement{SQL: s}
	}
	return out
}

// budgetEntry is an entry of node n1 with token tok and budget b.
func budgetEntry(tok string, b Budget, tx bool, sql ...string) []byte {
	return (&Entry{Node: "n1", Token: tok, Time: 1700000000000, Seed: 42, Budget: b, Tx: tx, Statements: stmts(sql...)}).Encode()
}

// costs records what each applied entry of db spent, by sequence.
func costs(db *DB) map[uint64]Budget {
	m := map[uint64]Budget{}
	db.traceCost = func(seq uint64, spent Budget) { m[seq] = spent }
	return m
}

// errs returns each result's error ("" for success).
func errs(res []api.Result) []string {
	out := make([]string, len(res))
	for i, r := range res {
		out[i] = r.Error
	}
	return out
}

// Statements that would run for a very long time: each must be stopped by
// a small step budget.
var endless = []struct{ name, sql string }{
	{"recursive CTE", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c"},
	{"cross join", "INSERT INTO t SELECT count(*) FROM k AS a, k AS b, k AS c, k AS d"},
	{"trigger fan-out", "INSERT INTO f1 VALUES(1)"},
}

// budgetSetup creates t, a 1000-row table k and a chain of triggers that
// inserts 1000^3 rows for one row in f1.
var budgetSetup = []string{
	"CREATE TABLE t(x)",
	"CREATE TABLE k(x)",
	"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000) INSERT INTO k SELECT x FROM c",
	"CREATE TABLE f1(x)", "CREATE TABLE f2(x)", "CREATE TABLE f3(x)", "CREATE TABLE f4(x)",
	"CREATE TRIGGER tf1 AFTER INSERT ON f1 BEGIN INSERT INTO f2 SELECT x FROM k; END",
	"CREATE TRIGGER tf2 AFTER INSERT ON f2 BEGIN INSERT INTO f3 SELECT x FROM k; END",
	"CREATE TRIGGER tf3 AFTER INSERT ON f3 BEGIN INSERT INTO f4 SELECT x FROM k; END",
}

func TestBudget_Steps(t *testing.T) {
	small := Budget{Steps: 1_000_000, Bytes: 1 << 30}
	want := "exceeded the execution budget of 1000000 steps; split the work or raise --max-entry-steps"
	for _, tc := range endless {
		t.Run(tc.name, func(t *testing.T) {
			db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
			spent := costs(db)
			applyOutcome(t, db, 1, budgetEntry("setup", Budget{}, false, budgetSetup...))

			// Per statement: the statement fails, the one before it stays,
			// the ones after it fail too (the entry's budget is used up).
			res := applyOutcome(t, db, 2, budgetEntry("a", small, false,
				"INSERT INTO t VALUES(-1)", tc.sql, "INSERT INTO t VALUES(-2)"))
			if got := errs(res); !reflect.DeepEqual(got, []string{"", want, want}) {
				t.Fatalf("results: %q", got)
			}
			if s := spent[2].Steps; s <= small.Steps || s > small.Steps+10*progressEvery {
				t.Errorf("spent %d steps, want just over %d", s, small.Steps)
			}
			// With transaction: nothing of the entry stays.
			res = applyOutcome(t, db, 3, budgetEntry("b", small, true,
				"INSERT INTO t VALUES(-3)", tc.sql, "INSERT INTO t VALUES(-4)"))
			if got := errs(res); !reflect.DeepEqual(got, []string{"", want}) {
				t.Fatalf("tx results: %q", got)
			}
			// The stream moves on: a later entry applies.
			applyOutcome(t, db, 4, budgetEntry("c", small, false, "INSERT INTO t VALUES(-5)"))
			if got := read(t, db, "SELECT group_concat(x) FROM t"); got[0][0] != "-1,-5" {
				t.Fatalf("t holds %v, want -1,-5", got[0][0])
			}
			if got := read(t, db, "SELECT (SELECT count(*) FROM f2) + (SELECT count(*) FROM f3) + (SELECT count(*) FROM f4)"); got[0][0] != int64(0) {
				t.Fatalf("trigger tables hold %v rows", got[0][0])
			}
		})
	}
}

// TestBudget_SameCount: an entry's step count does not depend on the
// node's history: a node reopened before every entry (cold statement and
// date/time caches) and one applying everything in one batch (warm caches,
// statements made stale by CREATE INDEX) count the same steps and bytes,
// and end with identical files.
func TestBudget_SameCount(t *testing.T) {
	var msgs []Msg
	add := func(tx bool, sql ...string) {
		seq := uint64(len(msgs) + 1)
		msgs = append(msgs, Msg{Seq: seq, Data: budgetEntry(fmt.Sprint("tok", seq), Budget{Steps: 5_000_000, Bytes: 1 << 30}, tx, sql...)})
	}
	add(false, budgetSetup...)
	work := []string{
		"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 2000) INSERT INTO t SELECT datetime('now', '+' || x || ' seconds') || hex(randomblob(8)) FROM c",
		"UPDATE t SET x = x || strftime('%s') WHERE rowid % 3 = 0",
		"DELETE FROM t WHERE rowid % 7 = 0",
		"INSERT INTO f4 SELECT x FROM k LIMIT 50", // one page: freed pages could differ in content between batchings
		"DELETE FROM f4", // compiled differently with the pre-update hook registered: must not be
	}
	add(false, work...)
	add(false, "CREATE INDEX t_x ON t(x)")
	add(false, work...)
	add(true, append(work, "INSERT INTO f1 VALUES(1)")...) // over budget: undone
	add(false, work...)

	dirA, dirB := t.TempDir(), t.TempDir()
	costsA := map[uint64]Budget{}
	var a *DB
	for _, m := range msgs {
		if a != nil {
			a.Close()
		}
		a = openDB(t, filepath.Join(dirA, "db.sqlite"))
		a.traceCost = func(seq uint64, spent Budget) { costsA[seq] = spent }
		if err := a.ApplyBatch(context.Background(), []Msg{m}); err != nil {
			t.Fatal(err)
		}
	}
	b := openDB(t, filepath.Join(dirB, "db.sqlite"))
	costsB := costs(b)
	if err := b.ApplyBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(costsA, costsB) {
		t.Fatalf("costs differ:\n cold %v\n warm %v", costsA, costsB)
	}
	if c := costsA[5]; c.Steps <= 5_000_000 {
		t.Errorf("entry 5 spent %v, want over its budget", c)
	}
	for _, seq := range []uint64{2, 4, 5, 6} {
		if c := costsA[seq]; c.Steps == 0 || c.Bytes == 0 {
			t.Errorf("entry %d: spent %v", seq, c)
		}
	}
	a.Close()
	b.Close()
	sameFiles(t, filepath.Join(dirA, "db.sqlite"), filepath.Join(dirB, "db.sqlite"))
}

// sameFiles fails unless two SQLite files are identical but for the two
// header counters that count opens (bytes 24-27 and 92-95).
func sameFiles(tb testing.TB, pa, pb string) {
	tb.Helper()
	fa, _ := os.ReadFile(pa)
	fb, _ := os.ReadFile(pb)
	if len(fa) < 100 || len(fa) != len(fb) {
		tb.Fatalf("sizes %d and %d", len(fa), len(fb))
	}
	copy(fa[24:28], fb[24:28])
	copy(fa[92:96], fb[92:96])
	if !bytes.Equal(fa, fb) {
		tb.Fatal("database files differ")
	}
}

// TestBudget_ReplayAfterTxLost: statements that undo the batch's
// transaction (an interrupted write, INSERT OR ROLLBACK) are replayed as
// failures that charge what they took the first time: grouped in one
// batch or applied one by one, every entry has the same results and the
// same step count, and the files are identical.
func TestBudget_ReplayAfterTxLost(t *testing.T) {
	small := Budget{Steps: 1_000_000, Bytes: 1 << 30}
	over := stepsError(small.Steps)
	entries := []struct {
		tx   bool
		sql  []string
		want []string // errors; "dup" for the OR ROLLBACK failure
	}{
		{false, budgetSetup, nil},
		{false, []string{"INSERT INTO t VALUES(1)"}, []string{""}},
		{false, []string{"CREATE UNIQUE INDEX t_x ON t(x)", "INSERT OR ROLLBACK INTO t VALUES(1)", "INSERT INTO t VALUES(2)"}, []string{"", "dup", ""}},
		{false, []string{"INSERT INTO t VALUES(3)", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO k SELECT x FROM c", "INSERT INTO t VALUES(4)"}, []string{"", over, over}},
		{true, []string{"INSERT INTO t VALUES(5)", endless[2].sql}, []string{"", over}},
		{false, []string{"INSERT INTO t VALUES(6)"}, []string{""}},
	}
	var msgs []Msg
	for i, e := range entries {
		b := small
		if i == 0 {
			b = Budget{}
		}
		msgs = append(msgs, Msg{Seq: uint64(i + 1), Data: budgetEntry(fmt.Sprint("tok", i+1), b, e.tx, e.sql...)})
	}
	apply := func(db *DB, batches [][]Msg) (map[uint64]Budget, map[uint64][]string) {
		spent := costs(db)
		results := map[uint64][]string{}
		for _, batch := range batches {
			var chans []<-chan Outcome
			for _, m := range batch {
				ch, cancel := db.Await(fmt.Sprint("tok", m.Seq))
				defer cancel()
				chans = append(chans, ch)
			}
			if err := db.ApplyBatch(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			for i, ch := range chans {
				results[batch[i].Seq] = errs((<-ch).Results)
			}
		}
		return spent, results
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := openDB(t, filepath.Join(dirA, "db.sqlite")), openDB(t, filepath.Join(dirB, "db.sqlite"))
	var one [][]Msg
	for _, m := range msgs {
		one = append(one, []Msg{m})
	}
	costsA, resA := apply(a, one)
	costsB, resB := apply(b, [][]Msg{msgs})
	if !reflect.DeepEqual(costsA, costsB) {
		t.Errorf("costs differ:\n one by one %v\n one batch  %v", costsA, costsB)
	}
	if c := costsB[4]; c.Steps <= small.Steps {
		t.Errorf("entry 4 spent %v, want over its budget of %d steps", c, small.Steps)
	}
	if !reflect.DeepEqual(resA, resB) {
		t.Errorf("results differ:\n one by one %v\n one batch  %v", resA, resB)
	}
	for i, e := range entries {
		if e.want == nil {
			continue
		}
		got := resB[uint64(i+1)]
		for j := range got {
			if e.want[j] == "dup" && strings.Contains(got[j], "UNIQUE") {
				got[j] = "dup"
			}
		}
		if !reflect.DeepEqual(got, e.want) {
			t.Errorf("entry %d: results %q, want %q", i+1, got, e.want)
		}
	}
	if got := read(t, b, "SELECT group_concat(x) FROM (SELECT x FROM t ORDER BY x)"); got[0][0] != "1,2,3,6" {
		t.Errorf("t holds %v, want 1,2,3,6", got[0][0])
	}
	a.Close()
	b.Close()
	sameFiles(t, filepath.Join(dirA, "db.sqlite"), filepath.Join(dirB, "db.sqlite"))
}

func TestBudget_Bytes(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	spent := costs(db)
	bu := Budget{Steps: 1_000_000, Bytes: 10_000}
	over := "exceeded the write budget of 10000 bytes; split the work or raise --max-entry-bytes"
	applyOutcome(t, db, 1, budgetEntry("s", Budget{}, false, "CREATE TABLE t(a, b, c, d)"))
	// What counts: 8 per INTEGER and REAL, the length of TEXT and BLOB.
	res := applyOutcome(t, db, 2, budgetEntry("a", bu, false,
		"INSERT INTO t VALUES(1, 'abc', NULL, 2.5)", "UPDATE t SET c = x'0102'", "DELETE FROM t WHERE a = 7"))
	if got := errs(res); !reflect.DeepEqual(got, []string{"", "", ""}) {
		t.Fatalf("results %q", got)
	}
	if got, want := spent[2].Bytes, uint64(19+21); got != want {
		t.Errorf("spent %d bytes, want %d", got, want)
	}
	for i, sql := range []string{
		"INSERT INTO t(b) VALUES(zeroblob(20000))", // one row over: it completes, then is undone
		"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t(b) SELECT zeroblob(1000) FROM c",
		"INSERT INTO t(b) SELECT zeroblob(3000) FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4)",
	} {
		res := applyOutcome(t, db, uint64(3+i), budgetEntry(fmt.Sprint("b", i), bu, false, sql, "INSERT INTO t(a) VALUES(0)"))
		if got := errs(res); !reflect.DeepEqual(got, []string{over, over}) {
			t.Errorf("%s: results %q", sql, got)
		}
	}
	if got := read(t, db, "SELECT count(*) FROM t"); got[0][0] != int64(1) {
		t.Fatalf("t holds %v rows, want 1", got[0][0])
	}
}

// TestBudget_Reads: reads inside a writing entry run only on the node that
// answers, with a budget of their own: an endless read fails there without
// touching the entry's writes, on that node or the others (with or
// without transaction).
func TestBudget_Reads(t *testing.T) {
	small := Budget{Steps: 1_000_000, Bytes: 1 << 30}
	over := stepsError(small.Steps)
	loop := "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := openDB(t, filepath.Join(dirA, "db.sqlite")), openDB(t, filepath.Join(dirB, "db.sqlite"))
	costsA, costsB := costs(a), costs(b)
	msgs := []Msg{
		{Seq: 1, Data: budgetEntry("s", Budget{}, false, "CREATE TABLE t(x)")},
		{Seq: 2, Data: budgetEntry("r1", small, false, "INSERT INTO t VALUES(1)", loop, loop, "INSERT INTO t VALUES(2)")},
		{Seq: 3, Data: budgetEntry("r2", small, true, "INSERT INTO t VALUES(3)", loop, "INSERT INTO t VALUES(4)")},
	}
	applyOutcome(t, a, 1, msgs[0].Data)
	if got := errs(applyOutcome(t, a, 2, msgs[1].Data)); !reflect.DeepEqual(got, []string{"", over, over, ""}) {
		t.Errorf("results %q", got)
	}
	if got := errs(applyOutcome(t, a, 3, msgs[2].Data)); !reflect.DeepEqual(got, []string{"", over, ""}) {
		t.Errorf("tx results %q", got)
	}
	if err := b.ApplyBatch(context.Background(), msgs); err != nil { // nobody waits on b: the reads do not run
		t.Fatal(err)
	}
	if !reflect.DeepEqual(costsA, costsB) {
		t.Errorf("costs differ:\n answering node %v\n other node     %v", costsA, costsB)
	}
	a.Close()
	b.Close()
	sameFiles(t, filepath.Join(dirA, "db.sqlite"), filepath.Join(dirB, "db.sqlite"))
}

func TestEntry_Versions(t *testing.T) {
	e := &Entry{Node: "n1", Token: "t", Time: 5, Seed: 6, Budget: Budget{Steps: 123, Bytes: 456}, SQLite: "3.49.2",
		Statements: stmts("INSERT INTO t VALUES(1)")}
	v6 := e.Encode()
	if v6[2] != 6 {
		t.Fatalf("Encode writes version %d, want 6", v6[2])
	}
	got, err := DecodeEntry(v6)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("v6: %v\n got  %+v\n want %+v", err, got, e)
	}
	// Version 6 with an id, a keep and further requests; versions 5 and 4
	// have the same layout (v5 loads keep no request ids, v4's large
	// values are not charged).
	e4 := *e
	e4.ID, e4.Keep = "id1", 120000
	e4.More = []Request{{Token: "t2", ID: "id2", Seed: 7, Tx: true, Statements: stmts("INSERT INTO t VALUES(2)", "INSERT INTO t VALUES(3)")},
		{Token: "t3", Seed: -8, Statements: stmts("SELECT 1")}}
	for _, v := range []byte{6, 5, 4} {
		b := e4.encode(v)
		if v == 6 && !bytes.Equal(b, e4.Encode()) {
			t.Fatalf("Encode is not version 6")
		}
		if b5 := e4.encode(5); !bytes.Equal(b[3:], b5[3:]) {
			t.Fatalf("v%d: another layout than v5", v)
		}
		got, err = DecodeEntry(b)
		if err != nil || !reflect.DeepEqual(got, &e4) {
			t.Fatalf("v%d coalesced: %v\n got  %+v\n want %+v", v, err, got, &e4)
		}
	}
	v4 := e.encode(4)
	// Version 3: version 2's layout, no id, keep or further requests.
	got, err = DecodeEntry(e.encode(3))
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("v3: %v\n got  %+v\n want %+v", err, got, e)
	}
	// Version 2: the same layout (its changes are not counted).
	v2 := e.encode(2)
	got, err = DecodeEntry(v2)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("v2: %v\n got  %+v\n want %+v", err, got, e)
	}
	// Version 1: no budget, no SQLite version; the base budget applies.
	got, err = DecodeEntry(e.encode(1))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Budget{Steps: BaseSteps, Bytes: BaseBytes}); got.Budget != want || got.SQLite != "" {
		t.Fatalf("v1: budget %+v, sqlite %q; want %+v and none", got.Budget, got.SQLite, want)
	}
	// A zero budget encodes as the base budget.
	got, err = DecodeEntry((&Entry{Statements: stmts("SELECT 1")}).Encode())
	if err != nil || got.Budget != (Budget{Steps: BaseSteps, Bytes: BaseBytes}) {
		t.Fatalf("zero budget: %v %+v", err, got)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"newer version", append([]byte{'n', 'q', EntryVersion + 1}, v4[3:]...), ErrUnknownVersion},
		{"v4 load with further requests", (&Entry{Load: &Load{Bucket: "b", Object: "o"}, More: []Request{{Statements: stmts("SELECT 1")}}}).Encode(), ErrInvalidEntry},
		{"v4 further request without statements", (&Entry{Statements: stmts("SELECT 1"), More: []Request{{Token: "x"}}}).Encode(), ErrInvalidEntry},
		{"version 255", []byte("nq\xff"), ErrUnknownVersion},
		{"version 0", append([]byte("nq\x00"), v2[3:]...), ErrInvalidEntry},
		{"no budget steps", (&Entry{Budget: Budget{Steps: MaxSteps + 1}, Statements: stmts("SELECT 1")}).Encode(), ErrInvalidEntry},
		{"truncated v2", v2[:len(v2)-3], ErrInvalidEntry},
		{"not an entry", []byte("hello"), ErrInvalidEntry},
	} {
		_, err := DecodeEntry(tc.data)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if errors.Is(err, ErrUnknownVersion) && errors.Is(err, ErrInvalidEntry) {
			t.Errorf("%s: %v is both unknown and invalid", tc.name, err)
		}
	}
}

// TestDB_UnknownVersion: an entry in a newer format is never skipped: the
// entries before it commit, ApplyBatch returns an *IncompatibleError, and
// nothing from it on is applied, however often the batch is retried.
func TestDB_UnknownVersion(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	newer := append([]byte("nq\x07"), []byte("whatever a later version writes")...)
	msgs := []Msg{
		{Seq: 1, Data: budgetEntry("a", Budget{}, false, "CREATE TABLE t(x)")},
		{Seq: 2, Data: (&Entry{Node: "n1", Token: "b", Statements: stmts("INSERT INTO t VALUES(1)")}).encode(1)},
		{Seq: 3, Data: newer},
		{Seq: 4, Data: budgetEntry("d", Budget{}, false, "INSERT INTO t VALUES(2)")},
	}
	for try := 0; try < 2; try++ {
		err := db.ApplyBatch(context.Background(), msgs[db.Applied():])
		var ie *IncompatibleError
		if !errors.As(err, &ie) || !errors.Is(err, ErrUnknownVersion) || errors.Is(err, ErrInvalidEntry) {
			t.Fatalf("try %d: %v, want an *IncompatibleError", try, err)
		}
		if ie.Seq != 3 || ie.Version != 7 {
			t.Fatalf("try %d: %+v, want seq 3 version 7", try, ie)
		}
		if db.Applied() != 2 || db.Skipped() != 0 {
			t.Fatalf("try %d: applied %d skipped %d, want 2 and 0", try, db.Applied(), db.Skipped())
		}
	}
	if got := read(t, db, "SELECT count(*) FROM t"); got[0][0] != int64(1) {
		t.Fatalf("t holds %v rows, want 1", got[0][0])
	}
}

func TestDB_ForeignSQLite(t *testing.T) {
	var logs bytes.Buffer
	db, err := Open(filepath.Join(t.TempDir(), "db.sqlite"), Options{Node: "n1", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var msgs []Msg
	for i, v := range []string{"", SQLiteVersion(), "3.0.0", "3.0.0", "3.50.0", "3.0.0"} {
		data := (&Entry{Node: "n2", SQLite: v, Statements: stmts("SELECT 1")}).Encode()
		if i == 0 {
			data = (&Entry{Node: "n2", Statements: stmts("SELECT 1")}).encode(1)
		}
		msgs = append(msgs, Msg{Seq: uint64(i + 1), Data: data})
	}
	if err := db.ApplyBatch(context.Background(), msgs[:3]); err != nil {
		t.Fatal(err)
	}
	if err := db.ApplyBatch(context.Background(), msgs[3:]); err != nil {
		t.Fatal(err)
	}
	if got := db.ForeignSQLite(); got != 4 {
		t.Errorf("ForeignSQLite = %d, want 4", got)
	}
	if n := strings.Count(logs.String(), "another SQLite version"); n != 2 {
		t.Errorf("logged %d times, want once per version (2):\n%s", n, logs.String())
	}
}

// TestBudget_DefaultFitsBulk: the default budget lets ordinary bulk work
// through: the Chinook script as one entry, and a 100k-row INSERT ...
// SELECT.
func TestBudget_DefaultFitsBulk(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	spent := costs(db)
	def := Budget{Steps: DefaultSteps, Bytes: DefaultBytes}
	res := applyOutcome(t, db, 1, budgetEntry("a", def, false,
		"CREATE TABLE big(id INTEGER PRIMARY KEY, name TEXT, n INTEGER)",
		"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000) INSERT INTO big(name, n) SELECT 'row ' || x, x * 7 FROM c"))
	if got := errs(res); !reflect.DeepEqual(got, []string{"", ""}) || res[1].RowsAffected != 100000 {
		t.Fatalf("100k rows: %q, %d rows", got, res[1].RowsAffected)
	}
	t.Logf("100k-row INSERT ... SELECT: %d steps, %d bytes", spent[1].Steps, spent[1].Bytes)
	path := filepath.Join("..", "..", "shared", "testdata", "chinook", "Chinook_Sqlite.sql")
	script, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("Chinook script not found at %s: the shared test data is not checked out next to the repository", path)
	}
	sql := api.Split(string(script))
	for i, r := range applyOutcome(t, db, 2, budgetEntry("b", def, false, sql...)) {
		if r.Error != "" {
			t.Fatalf("Chinook statement %d: %s", i+1, r.Error)
		}
	}
	t.Logf("Chinook as one entry (%d statements): %d steps, %d bytes", len(sql), spent[2].Steps, spent[2].Bytes)
	if got := read(t, db, "SELECT count(*) FROM Track"); got[0][0] != int64(3503) {
		t.Fatalf("tracks: %v", got[0][0])
	}
}
