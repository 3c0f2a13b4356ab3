package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nqlite/nqlite/service/api"
)

// readFileMasked reads a SQLite file with the two header counters that
// count writes to the file (bytes 24-27 and 92-95) zeroed.
func readFileMasked(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if len(b) < 100 {
		tb.Fatalf("%s: %d bytes, not a SQLite file", path, len(b))
	}
	copy(b[24:28], make([]byte, 4))
	copy(b[92:96], make([]byte, 4))
	return b
}

// sameFile fails the test unless the two files hold the same bytes but for
// the write counters.
func sameFile(tb testing.TB, a, b string) {
	tb.Helper()
	fa, fb := readFileMasked(tb, a), readFileMasked(tb, b)
	if bytes.Equal(fa, fb) {
		return
	}
	first := -1
	for i := range fa {
		if i >= len(fb) || fa[i] != fb[i] {
			first = i
			break
		}
	}
	tb.Fatalf("%s and %s differ (%d and %d bytes; first difference at byte %d, page %d)", a, b, len(fa), len(fb), first, first/4096+1)
}

// prngEntries is a workload whose outcome comes from SQLite's own
// pseudo-random generator: inserts into a table whose largest rowid is
// 9223372036854775807 (SQLite then picks rowids at random), statements
// big enough to spill the page cache into the WAL in mid-statement (where
// SQLite draws a new WAL salt after a checkpoint), a sort, and CREATE
// TABLE AS SELECT with six columns of the same name (SQLite names the
// fifth and sixth with random numbers).
func prngEntries() []Msg {
	var msgs []Msg
	add := func(sql ...string) {
		n := len(msgs)
		msgs = append(msgs, Msg{Seq: uint64(n + 1), Data: entry(1700000000000+int64(n), int64(n)*104729+1, false, sql...)})
	}
	add("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", "CREATE TABLE u(x)",
		"INSERT INTO t(id, v) VALUES(9223372036854775807, x'00')")
	for round := 0; round < 4; round++ {
		for i := 0; i < 5; i++ {
			add("INSERT INTO t(v) VALUES(randomblob(8))", "INSERT INTO u SELECT max(id) FROM t")
		}
		// About 5 MB in one statement, more than the 2 MB page cache, twice:
		// the second spills into the WAL in mid-statement after the first's
		// commit checkpointed the WAL completely, where SQLite draws a new
		// salt.
		for i := 0; i < 2; i++ {
			add("INSERT INTO t(v) SELECT randomblob(3000) FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 1700) SELECT i FROM c)")
		}
		add(fmt.Sprintf("CREATE TABLE c%d AS SELECT 1 a, 2 a, 3 a, 4 a, 5 a, 6 a", round))
		add("INSERT INTO u SELECT id FROM t ORDER BY v LIMIT 3")
		add("DELETE FROM t WHERE id % 3 = 0 AND id <> 9223372036854775807")
	}
	return msgs
}

// TestDB_PRNG applies the same entries to two databases in one process
// (so both use SQLite's one generator): A one entry per batch while reads
// that draw from the generator in plain SQLite (random(), randomblob(), a
// sort bigger than the cache, a subquery with six columns of the same
// name), snapshots and connection opens run meanwhile; B in one batch.
// The files must be identical.
func TestDB_PRNG(t *testing.T) {
	msgs := prngEntries()
	dirA, dirB := t.TempDir(), t.TempDir()
	a := openDB(t, filepath.Join(dirA, "db.sqlite"))
	b := openDB(t, filepath.Join(dirB, "db.sqlite"))

	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads, snaps atomic.Int64
	errc := make(chan error, 16)
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			qs := []string{
				"SELECT random(), randomblob(16), hex(randomblob(100))",
				"SELECT * FROM (SELECT 1 a, 2 a, 3 a, 4 a, 5 a, 6 a)",
				// A sort and a temporary b-tree bigger than the cache.
				"SELECT sum(length(v)) FROM (SELECT v FROM t ORDER BY v DESC LIMIT 1000000)",
				"SELECT count(DISTINCT v) FROM t",
			}
			for i := 0; !stop.Load(); i++ {
				q := qs[(i+g)%len(qs)]
				if g == 1 {
					q += fmt.Sprintf(" -- %d", i) // never cached: prepared each time
				}
				p, err := a.Prepare(context.Background(), []api.Statement{{SQL: q}})
				if err != nil {
					errc <- err
					return
				}
				if _, _, err := p.Run(context.Background(), 0); err != nil {
					errc <- err
					return
				}
				reads.Add(1)
			}
		}(g)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		dir := t.TempDir()
		for i := 0; !stop.Load(); i++ {
			dst := filepath.Join(dir, fmt.Sprintf("snap%d.sqlite", i))
			if _, err := a.Snapshot(context.Background(), dst); err != nil && !stop.Load() {
				errc <- err
				return
			}
			os.Remove(dst)
			snaps.Add(1)
		}
	}()
	for _, m := range msgs {
		if err := a.ApplyBatch(context.Background(), []Msg{m}); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if err := b.ApplyBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	rows := read(t, b, "SELECT count(*), count(DISTINCT id), min(id) < 9000000000000000000 FROM t")
	if rows[0][0].(int64) < 3000 || rows[0][0] != rows[0][1] || rows[0][2] != int64(1) {
		t.Fatalf("rows %v: want thousands of distinct random rowids", rows)
	}
	cols := read(t, b, "SELECT group_concat(name, ' ') FROM pragma_table_info('c0')")
	if !strings.HasPrefix(cols[0][0].(string), "a a:1 a:2 a:3 a:") {
		t.Fatalf("columns of c0: %v", cols)
	}
	t.Logf("%d concurrent reads and %d snapshots on A", reads.Load(), snaps.Load())
	a.Close()
	b.Close()
	sameFile(t, filepath.Join(dirA, "db.sqlite"), filepath.Join(dirB, "db.sqlite"))
}

// TestDB_SnapshotPages: a snapshot is the source's pages: a database
// restored from it and one that applied every entry end identical after
// the same further entries.
func TestDB_SnapshotPages(t *testing.T) {
	msgs := prngEntries()
	half := len(msgs) / 2
	dirA, dirB := t.TempDir(), t.TempDir()
	a := openDB(t, filepath.Join(dirA, "db.sqlite"))
	if err := a.ApplyBatch(context.Background(), msgs[:half]); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dirB, "snap.sqlite")
	info, err := a.Snapshot(context.Background(), snap)
	if err != nil {
		t.Fatal(err)
	}
	if info.Seq != uint64(half) {
		t.Fatalf("snapshot at %d, want %d", info.Seq, half)
	}
	b := openDB(t, filepath.Join(dirB, "db.sqlite"))
	if err := b.Replace(snap); err != nil {
		t.Fatal(err)
	}
	for _, db := range []*DB{a, b} {
		if err := db.ApplyBatch(context.Background(), msgs[half:]); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()
	b.Close()
	sameFile(t, filepath.Join(dirA, "db.sqlite"), filepath.Join(dirB, "db.sqlite"))
}

// TestDB_Refused: a request that writes and reads a value specific to the
// node, its file layout, its connection or its SQLite build is refused
// with 400 before anything is published; reads may read them; schema
// changes and introspection that writes may use are not refused.
func TestDB_Refused(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	applyOutcome(t, db, 1, entry(1, 1, false, "CREATE TABLE t(a, b)", "CREATE TABLE l(x)", "CREATE VIRTUAL TABLE f USING fts5(x)"))
	refused := map[string]string{
		"INSERT INTO t VALUES(total_changes(), 1)":                                                "total_changes()",
		"INSERT INTO t SELECT sqlite_offset(a), 1 FROM t":                                         "sqlite_offset()",
		"INSERT INTO t VALUES(sqlite_version(), sqlite_source_id())":                              "sqlite_version()",
		"INSERT INTO t VALUES(sqlite_compileoption_used('FTS5'), 1)":                              "sqlite_compileoption_used()",
		"INSERT INTO t VALUES(fts5_locale('en', 'x'), 1)":                                         "fts5_locale()",
		"INSERT INTO t SELECT bm25(f), 1 FROM f WHERE f MATCH 'x'":                                "bm25()",
		"INSERT INTO t SELECT page_count, 1 FROM pragma_page_count":                               "pragma_page_count()",
		"INSERT INTO t SELECT * FROM pragma_freelist_count, pragma_data_version":                  "pragma_freelist_count()",
		"INSERT INTO t SELECT file, 1 FROM pragma_database_list":                                  "pragma_database_list()",
		"UPDATE t SET a = (SELECT schema_version FROM pragma_schema_version)":                     "pragma_schema_version()",
		"INSERT INTO t SELECT name, 1 FROM pragma_function_list":                                  "pragma_function_list()",
		"INSERT INTO t SELECT * FROM pragma_integrity_check, pragma_quick_check":                  "pragma_integrity_check()",
		"INSERT INTO t SELECT name, pgoffset FROM dbstat":                                         "dbstat",
		"INSERT INTO t SELECT name, rootpage FROM sqlite_master":                                  "rootpage",
		"INSERT INTO t SELECT name, rootpage FROM sqlite_schema":                                  "rootpage",
		"CREATE TABLE r AS SELECT rootpage FROM sqlite_master":                                    "rootpage",
		"CREATE VIRTUAL TABLE s USING dbstat":                                                     "dbstat",
		"CREATE TRIGGER tr AFTER INSERT ON l BEGIN INSERT INTO t VALUES(total_changes(), 0); END": "",
	}
	for sql, want := range refused {
		p, err := db.Prepare(context.Background(), []api.Statement{{SQL: sql}})
		if want == "" {
			// The trigger is created; a write that fires it is refused.
			if err != nil {
				t.Errorf("%s: %v", sql, err)
				continue
			}
			p.Close()
			continue
		}
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeBadRequest || !strings.Contains(ae.Message, want) {
			t.Errorf("%s: got %v, want 400 about %s", sql, err, want)
		}
		if p != nil {
			p.Close()
		}
	}
	allowed := []string{
		"SELECT total_changes(), sqlite_version(), sqlite_offset(a) FROM t",
		"SELECT * FROM pragma_page_count, pragma_database_list",
		"SELECT count(*) FROM dbstat",
		"SELECT rootpage FROM sqlite_master",
		"INSERT INTO t SELECT name, type FROM pragma_table_info('t')",
		"INSERT INTO t SELECT name, sql FROM sqlite_master",
		"INSERT INTO t SELECT * FROM pragma_user_version, pragma_page_size",
		"INSERT INTO t SELECT name, seq FROM pragma_index_list('t')",
		"INSERT INTO t VALUES(ln(2), pow(2, 0.5))",
		"CREATE INDEX i ON t(a)", "DROP INDEX IF EXISTS i", "CREATE TABLE d(x)", "DROP TABLE l",
		"ALTER TABLE t RENAME TO t2", "ALTER TABLE t ADD COLUMN c", "ALTER TABLE t RENAME COLUMN a TO a2", "ALTER TABLE t DROP COLUMN b",
		"CREATE VIEW v AS SELECT * FROM t", "CREATE VIRTUAL TABLE g USING rtree(id, x0, x1)", "DROP TABLE f",
		"CREATE TABLE cc AS SELECT * FROM t", "ANALYZE", "REINDEX", "INSERT INTO f(f) VALUES('optimize')",
	}
	for _, sql := range allowed {
		p, err := db.Prepare(context.Background(), []api.Statement{{SQL: sql}})
		if err != nil {
			t.Errorf("%s: %v", sql, err)
			continue
		}
		p.Close()
	}
}

// TestDB_RefusedAtApply: uses the accepting node cannot see (a column
// DEFAULT, a trigger created earlier) fail at apply with the same error on
// every node, and change nothing.
func TestDB_RefusedAtApply(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	res := applyOutcome(t, db, 1, entry(1, 1, false,
		"CREATE TABLE t(a, b DEFAULT (total_changes()), c DEFAULT (sqlite_version()))",
		"CREATE TABLE l(x)",
		"CREATE TRIGGER tr AFTER INSERT ON l BEGIN INSERT INTO t(a, b, c) SELECT page_count, 0, 0 FROM pragma_page_count; END",
		"INSERT INTO t(a) VALUES(1)",
		"INSERT INTO t(a, b) VALUES(1, 2)",
		"INSERT INTO t(a, b, c) VALUES(1, 2, 3)",
		"INSERT INTO l VALUES(1)",
		"CREATE VIRTUAL TABLE s USING dbstat",
	))
	for i, want := range []string{"", "", "", "total_changes()", "sqlite_version()", "", "pragma_page_count()", "dbstat"} {
		got := res[i].Error
		if want == "" && got != "" || want != "" && !strings.Contains(got, want) {
			t.Errorf("statement %d: error %q, want %q", i+1, got, want)
		}
	}
	if got := read(t, db, "SELECT count(*) FROM t")[0][0]; got != int64(1) {
		t.Fatalf("rows: %v, want 1", got)
	}
}

// TestDB_VirtualTableBatching: FTS5 holds an entry's terms in memory until
// the next savepoint or commit, and its flush runs statements of its own.
// Whatever the batching, every entry must see the same changes() and
// last_insert_rowid(), and the FTS5 index must have the same segments.
func TestDB_VirtualTableBatching(t *testing.T) {
	var msgs []Msg
	add := func(sql ...string) {
		msgs = append(msgs, Msg{Seq: uint64(len(msgs) + 1), Data: entry(1700000000000, int64(len(msgs)+1), false, sql...)})
	}
	add("CREATE VIRTUAL TABLE ft USING fts5(body)", "CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1)",
		"CREATE TABLE t(id INTEGER PRIMARY KEY, ch INTEGER, lid INTEGER)",
		"CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET ch = changes(), lid = last_insert_rowid() WHERE id = new.id; END")
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("INSERT INTO ft(rowid, body) VALUES(%d, 'alpha beta %d')", 100+i, i), fmt.Sprintf("INSERT INTO rt VALUES(%d, %d, %d)", i, i, i+1))
		add("INSERT INTO t(ch, lid) VALUES(changes(), last_insert_rowid())")
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	a := openDB(t, filepath.Join(dirA, "db.sqlite"))
	b := openDB(t, filepath.Join(dirB, "db.sqlite"))
	for _, m := range msgs {
		if err := a.ApplyBatch(context.Background(), []Msg{m}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.ApplyBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	ra, rb := read(t, a, "SELECT group_concat(ch || '/' || lid, ' ') FROM t"), read(t, b, "SELECT group_concat(ch || '/' || lid, ' ') FROM t")
	if ra[0][0] != rb[0][0] {
		t.Fatalf("changes()/last_insert_rowid(): one entry per batch %v, one batch %v", ra[0][0], rb[0][0])
	}
	a.Close()
	b.Close()
	sameFile(t, filepath.Join(dirA, "db.sqlite"), filepath.Join(dirB, "db.sqlite"))
}

// TestDB_PlannerState: the query planner works from the schema and the
// statistics a connection holds, which depend on its history (ALTER TABLE
// drops what ANALYZE loaded, statistics that went away leave a stale row
// count, cached statements keep old plans). A database applied in one
// batch on one connection must equal one whose connection is new for
// every entry, including which row a LIMIT takes and how often random()
// runs.
func TestDB_PlannerState(t *testing.T) {
	var msgs []Msg
	add := func(sql ...string) {
		msgs = append(msgs, Msg{Seq: uint64(len(msgs) + 1), Data: entry(1700000000000, int64(len(msgs)+1), false, sql...)})
	}
	query := "INSERT INTO out SELECT group_concat(r, ' ') FROM (SELECT random() AS r FROM t ORDER BY id LIMIT 3 OFFSET 2)"
	add("CREATE TABLE t(id INTEGER PRIMARY KEY, c TEXT, d)", "CREATE INDEX t_c ON t(lower(c))", "CREATE INDEX t_d ON t(d)",
		"CREATE TABLE out(v)", "INSERT INTO t(c, d) VALUES('b', 1), ('a', 2), ('c', 3), ('a', 4), ('b', 5), ('e', 6)")
	add("ANALYZE")
	add(query)
	add("CREATE TABLE x AS SELECT 1 a", "ALTER TABLE x RENAME TO y")
	add(query)
	add("DROP INDEX t_d", query)
	add(query)
	add("DELETE FROM sqlite_stat1 WHERE tbl = 't'", query)
	add(query, "ANALYZE", query, "INSERT INTO sqlite_stat1 VALUES('t', 't_c', '1000000 1')", query)
	add(query)
	dirA, dirB := t.TempDir(), t.TempDir()
	a := openDB(t, filepath.Join(dirA, "db.sqlite"))
	if err := a.ApplyBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	pathB := filepath.Join(dirB, "db.sqlite")
	for _, m := range msgs {
		b := openDB(t, pathB)
		if err := b.ApplyBatch(context.Background(), []Msg{m}); err != nil {
			t.Fatal(err)
		}
		b.Close()
	}
	got, want := read(t, a, "SELECT group_concat(v, ' | ') FROM out"), (func() [][]any { b := openDB(t, pathB); return read(t, b, "SELECT group_concat(v, ' | ') FROM out") })()
	if got[0][0] != want[0][0] {
		t.Fatalf("one connection:\n%v\nnew connection per entry:\n%v", got[0][0], want[0][0])
	}
	a.Close()
	sameFile(t, filepath.Join(dirA, "db.sqlite"), pathB)
}
