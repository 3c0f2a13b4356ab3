package apply

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// versionEntry is budgetEntry in entry format version v.
func versionEntry(v byte, tok string, b Budget, sql ...string) []byte {
	return (&Entry{Node: "n1", Token: tok, Time: 1700000000000, Seed: 42, Budget: b, Statements: stmts(sql...)}).encode(v)
}

// TestValues_LargeValuesBounded: statements whose every step builds or
// copies a 16 MB value, or reads one it holds, fail with the step budget's error within the
// default budget in a v5 entry (without the charge, each counts a few
// thousand steps, BenchmarkLargeValues), and change nothing; the same
// request in a v4 entry applies as it always did.
func TestValues_LargeValuesBounded(t *testing.T) {
	if raceDetector {
		t.Skip("builds about 2 GB of values: minutes under the race detector")
	}
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	spent := costs(db)
	def := Budget{Steps: DefaultSteps, Bytes: DefaultBytes}
	applyOutcome(t, db, 1, versionEntry(5, "a", def, "CREATE TABLE t(x)"))
	over := stepsError(DefaultSteps)
	const rows = 60 // 60 x 16 MB: more than DefaultSteps x valueBytesPerStep
	printf := fmt.Sprintf("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < %d) INSERT INTO t SELECT length(printf('%%.*c', 16000000 + x %% 2, 'x')) FROM c", rows)
	cte := fmt.Sprintf("WITH RECURSIVE c(x, s) AS (SELECT 1, printf('%%.*c', 16000000, 'x') UNION ALL SELECT x+1, s FROM c WHERE x < %d) INSERT INTO t SELECT length(s) FROM c", rows)
	// length() of a text built once and held in a register (a constant
	// subquery) allocates nothing per row: the values held count.
	held := fmt.Sprintf("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < %d) INSERT INTO t SELECT length((SELECT printf('%%.*c', 16000000, 'x'))) + x FROM c", 100*rows)
	seq := uint64(2)
	for _, q := range []string{printf, cte, held} {
		res := applyOutcome(t, db, seq, versionEntry(5, "b", def, q))
		if got := errs(res); !reflect.DeepEqual(got, []string{over}) {
			t.Fatalf("v5 %s: %q, want the budget error", q, got)
		}
		if spent[seq].Steps <= DefaultSteps {
			t.Fatalf("v5 %s: charged %d steps, want more than %d", q, spent[seq].Steps, DefaultSteps)
		}
		t.Logf("v5 %.40s...: stopped at %d steps", q, spent[seq].Steps)
		seq++
	}
	if got := read(t, db, "SELECT count(*) FROM t"); got[0][0] != int64(0) {
		t.Fatalf("%v rows after the failed statements, want 0", got[0][0])
	}
	res := applyOutcome(t, db, seq, versionEntry(4, "c", def, printf))
	if got := errs(res); !reflect.DeepEqual(got, []string{""}) || res[0].RowsAffected != rows {
		t.Fatalf("v4: %q, %d rows; want it applied as before", got, res[0].RowsAffected)
	}
	if spent[seq].Steps > 100_000 {
		t.Fatalf("v4: charged %d steps, want only the VM's", spent[seq].Steps)
	}
}

// TestValues_OrdinaryFits: writing and reading back large values as
// ordinary requests do (a bound 4 MB parameter, zeroblobs up to the
// byte budget, an update of every large row) stays far within the default
// step budget in a v5 entry.
func TestValues_OrdinaryFits(t *testing.T) {
	if raceDetector {
		t.Skip("writes about 220 MB: minutes under the race detector")
	}
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	spent := costs(db)
	def := Budget{Steps: DefaultSteps, Bytes: DefaultBytes}
	applyOutcome(t, db, 1, versionEntry(5, "a", def, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"))
	blob := make([]byte, 4<<20)
	e := &Entry{Node: "n1", Token: "b", Budget: def, Statements: stmts(
		"INSERT INTO t(v) VALUES(?)",
		"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 10) INSERT INTO t(v) SELECT zeroblob(16000000) FROM c",
		"UPDATE t SET v = substr(v, 1, 4000000)",
		"INSERT INTO t(v) SELECT hex(v) FROM t WHERE id = 1")}
	e.Statements[0].Params = []any{blob}
	res := applyOutcome(t, db, 2, e.Encode())
	if got := errs(res); !reflect.DeepEqual(got, []string{"", "", "", ""}) {
		t.Fatalf("%q", got)
	}
	if spent[2].Steps > DefaultSteps/2 {
		t.Fatalf("charged %d steps, want well within %d", spent[2].Steps, DefaultSteps)
	}
	t.Logf("about 220 MB of large values written and read: %d steps, %d bytes", spent[2].Steps, spent[2].Bytes)
}

// valueEntries is a history of entries with large values, on a budget
// of 1M steps (16 MB of large allocations), many of them near it: values
// built by printf, zeroblob, hex, || and replace, carried through
// recursive CTEs, read back from tables, sorted, aggregated, and indexed
// by FTS5 (many distinct terms, so its pending-terms hash grows; a token
// of 100 KB, so its tokenizer's buffer grows).
func valueEntries() []Msg {
	var msgs []Msg
	b := Budget{Steps: 1_000_000, Bytes: 1 << 30}
	addTx := func(tx bool, sql ...string) {
		n := len(msgs)
		msgs = append(msgs, Msg{Seq: uint64(n + 1), Data: (&Entry{Node: "n1", Token: "tok", Time: 1700000000000 + int64(n),
			Seed: int64(n), Budget: b, Tx: tx, Statements: stmts(sql...)}).Encode()})
	}
	add := func(sql ...string) { addTx(false, sql...) }
	add("CREATE TABLE big(id INTEGER PRIMARY KEY, v)", "CREATE TABLE small(a, b)",
		"CREATE VIRTUAL TABLE f USING fts5(body)")
	// Updates of existing pages in a savepoint (a transaction request's)
	// write the statement journal. With temp_store=MEMORY (db.go) it is
	// an in-memory journal of chunks of about 1 KiB, below the threshold;
	// with temporary files it would be chunks of 64 KiB (SQLite's
	// nStmtSpill) until it spilled to a file that stays for the rest of
	// the SQLite transaction, so that a node applying these in one batch
	// would allocate no chunk for the second and third.
	add("CREATE TABLE wide(id INTEGER PRIMARY KEY, pad)",
		"INSERT INTO wide(pad) SELECT zeroblob(1000) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 400) SELECT x FROM c)")
	for _, c := range []int{65, 66, 67} {
		addTx(true, fmt.Sprintf("UPDATE wide SET pad = printf('%%.*c', 1000, char(%d + id %% 20))", c))
	}
	// Values between the threshold and a few pages, built piece by piece
	// (group_concat, json), carried by CTEs and written; R*Tree inserts
	// near the budget (its own statements' steps depend on the
	// connection's history: a node restarted before every entry stopped
	// the insert at another row until only the entry statement's steps
	// decided, budget.go).
	add("CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1, y0, y1)")
	for _, n := range []int{1300, 3000, 9000} {
		add(fmt.Sprintf("UPDATE wide SET pad = printf('%%.*c', %d, char(70 + id %% 7)) WHERE id %% 3 = 0", n),
			fmt.Sprintf("WITH RECURSIVE c(x, s) AS (SELECT 1, printf('%%.*c', %d, 'm') UNION ALL SELECT x+1, s || x FROM c WHERE x < 300) INSERT INTO small SELECT x, length(s) FROM c", n),
			"INSERT INTO small SELECT count(*), length(group_concat(pad, ',')) FROM wide",
			"INSERT INTO small SELECT 1, length(json_group_array(json_object('k', id, 'v', substr(pad, 1, 50)))) FROM wide",
			fmt.Sprintf("INSERT INTO rt SELECT NULL, x, x + 1, x %% 97, x %% 97 + 2 FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < %d) SELECT x FROM c)", n/3),
			"INSERT INTO small SELECT count(*), 0 FROM rt WHERE x0 > 100 AND y1 < 50")
		add(fmt.Sprintf("INSERT INTO small SELECT x, length(printf('%%.*c', %d + x, 'p')) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 200) SELECT x FROM c)", n))
	}
	for i, n := range []int{100_000, 700_000, 1_500_000, 3_000_000, 5_000_000} {
		add(fmt.Sprintf("INSERT INTO big(v) VALUES(printf('%%.*c', %d, 'a'))", n),
			fmt.Sprintf("INSERT INTO big(v) VALUES(zeroblob(%d))", n*2),
			fmt.Sprintf("INSERT INTO big(v) SELECT hex(v) FROM big WHERE id = %d", 2*i+1))
		for _, k := range []int{2, 5, 11} {
			add(fmt.Sprintf("WITH RECURSIVE c(x, s) AS (SELECT 1, (SELECT v FROM big WHERE id = %d) UNION ALL SELECT x+1, s || 'z' FROM c WHERE x < %d) INSERT INTO small SELECT x, length(s) FROM c", 2*i+1, k))
		}
		add(fmt.Sprintf("UPDATE big SET v = replace(v, 'a', 'bc') WHERE id = %d", 2*i+1),
			"INSERT INTO small SELECT id, length(v) FROM big ORDER BY v LIMIT 3",
			"INSERT INTO small SELECT count(*), sum(length(v || 'x')) FROM big")
		add(fmt.Sprintf("INSERT INTO f(body) SELECT group_concat(printf('w%%d', x * %d), ' ') FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < %d) SELECT x FROM c)", i+1, 15000*(i+1)),
			"INSERT INTO small SELECT count(*), 0 FROM f WHERE f MATCH 'w6'")
		add(fmt.Sprintf("INSERT INTO f(body) VALUES(printf('%%.*c', %d, 'q'))", 50_000*(i+1)))
		add("DELETE FROM big WHERE length(v) > 8000000")
	}
	return msgs
}

// TestValues_Determinism applies valueEntries on nodes with other
// histories: one entry per batch; all in one batch; restarted half way;
// restarted before every entry (a cold page cache, new FTS5 table
// instances and statement cache each time); restored half way from a
// snapshot of the first. Every entry must charge the same steps and
// bytes, and the digests and files must be the same.
//
// With pages of 64 KiB, a page of the cache is an allocation above the
// threshold (excluded: a warm cache allocates none).
func TestValues_Determinism(t *testing.T) {
	if raceDetector {
		t.Skip("applies about 2 GB of values on ten nodes: over ten minutes under the race detector (TestInstrReplace_ApplyConnection and TestDB_IdleBindings run v5 charges under it)")
	}
	for _, ps := range []int{4096, 65536} {
		t.Run(fmt.Sprint("page", ps), func(t *testing.T) { testValuesDeterminism(t, ps) })
	}
}

// pageSized creates an empty database file at path with pages of size
// bytes.
func pageSized(t *testing.T, path string, size int) {
	c, err := sqlite.OpenConn(path, sqlite.OpenReadWrite|sqlite.OpenCreate)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := sqlitex.ExecuteScript(c, fmt.Sprintf("PRAGMA page_size=%d; CREATE TABLE x(y); DROP TABLE x;", size), nil); err != nil {
		t.Fatal(err)
	}
}

func testValuesDeterminism(t *testing.T, pageSize int) {
	msgs := valueEntries()
	half := len(msgs) / 2
	type node struct {
		dir   string
		db    *DB
		spent map[uint64]Budget
	}
	open := func(n *node) {
		n.db = openDB(t, filepath.Join(n.dir, "db.sqlite"))
		n.db.traceCost = func(seq uint64, b Budget) { n.spent[seq] = b }
	}
	nodes := make([]*node, 5)
	for i := range nodes {
		nodes[i] = &node{dir: t.TempDir(), spent: map[uint64]Budget{}}
		pageSized(t, filepath.Join(nodes[i].dir, "db.sqlite"), pageSize)
		open(nodes[i])
	}
	apply := func(n *node, ms []Msg) {
		if err := n.db.ApplyBatch(context.Background(), ms); err != nil {
			t.Fatal(err)
		}
	}
	restart := func(n *node) { n.db.Close(); open(n) }
	for i := range msgs {
		apply(nodes[0], msgs[i:i+1])
		if i+1 == half {
			snap := filepath.Join(nodes[4].dir, "snap.sqlite")
			if _, err := nodes[0].db.Snapshot(context.Background(), snap); err != nil {
				t.Fatal(err)
			}
			if err := nodes[4].db.Replace(snap); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(nodes[1], msgs)
	apply(nodes[2], msgs[:half])
	restart(nodes[2])
	apply(nodes[2], msgs[half:])
	for i := range msgs {
		restart(nodes[3])
		apply(nodes[3], msgs[i:i+1])
	}
	apply(nodes[4], msgs[half:])

	over := 0
	for seq, b := range nodes[0].spent {
		if b.Steps > 1_000_000 {
			over++
		}
		for k, n := range nodes[1:] {
			if got, ok := n.spent[seq]; (ok || k != 3 || seq > uint64(half)) && got != b {
				t.Errorf("entry %d: node %d spent %+v, node 0 %+v", seq, k+1, got, b)
			}
		}
	}
	if over == 0 || over == len(msgs) {
		t.Errorf("%d of %d entries went over the budget: the history tests neither side", over, len(msgs))
	}
	t.Logf("%d of %d entries over the budget", over, len(msgs))
	if got := read(t, nodes[0].db, "PRAGMA page_size"); got[0][0] != int64(pageSize) {
		t.Fatalf("page size %v, want %d", got[0][0], pageSize)
	}
	want := nodes[0].db.Digest()
	for k, n := range nodes[1:] {
		if got := n.db.Digest(); got != want {
			t.Errorf("node %d digest %+v, node 0 %+v", k+1, got, want)
		}
	}
	for _, n := range nodes {
		n.db.Close()
	}
	for k, n := range nodes[1:] {
		t.Run(fmt.Sprint("file", k+1), func(t *testing.T) {
			sameFiles(t, filepath.Join(nodes[0].dir, "db.sqlite"), filepath.Join(n.dir, "db.sqlite"))
		})
	}
}

// TestDB_IdleBindings: FTS5 with contentless_delete=1 inserts a new row's
// placeholder in %_docsize with a parameter still bound from the
// statement's previous use on the connection (NULL on a connection that
// never used it). A node that restarted and one that did not must count
// the same bytes for the entry and keep the same running digest
// (clearIdleBindings).
func TestDB_IdleBindings(t *testing.T) {
	var msgs []Msg
	for i, sql := range []string{
		"CREATE VIRTUAL TABLE f USING fts5(body, content='', contentless_delete=1)",
		"INSERT INTO f(body) VALUES('w1 x')",
		"INSERT INTO f(body) VALUES('w2 x')",
		"INSERT INTO f(body) VALUES('last one')",
	} {
		msgs = append(msgs, Msg{Seq: uint64(i + 1), Data: versionEntry(EntryVersion, "tok", Budget{Steps: DefaultSteps, Bytes: DefaultBytes}, sql)})
	}
	last := uint64(len(msgs))
	warmDir, restartedDir := t.TempDir(), t.TempDir()
	warm := openDB(t, filepath.Join(warmDir, "db.sqlite"))
	restarted := openDB(t, filepath.Join(restartedDir, "db.sqlite"))
	var got, want Budget
	warm.traceCost = func(seq uint64, b Budget) {
		if seq == last {
			want = b
		}
	}
	for i := range msgs {
		if err := warm.ApplyBatch(context.Background(), msgs[i:i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := restarted.ApplyBatch(context.Background(), msgs[:last-1]); err != nil {
		t.Fatal(err)
	}
	restarted.Close()
	restarted = openDB(t, filepath.Join(restartedDir, "db.sqlite"))
	restarted.traceCost = func(seq uint64, b Budget) {
		if seq == last {
			got = b
		}
	}
	if err := restarted.ApplyBatch(context.Background(), msgs[last-1:]); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("last entry spent %+v on the restarted node, %+v on the other", got, want)
	}
	if g, w := restarted.Digest(), warm.Digest(); g != w {
		t.Errorf("running digest %+v on the restarted node, %+v on the other", g, w)
	}
}
