package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"
)

// contentMsgs builds a database with every kind of object: rowid and
// WITHOUT ROWID tables, AUTOINCREMENT, an index, a trigger, a view,
// generated columns, statistics, values of every storage class; then
// deletes rows (free space for VACUUM to repack).
func contentMsgs(n int) []Msg {
	sqls := [][]string{{
		"CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT, r REAL, b BLOB, g AS (v || '!'))",
		"CREATE TABLE w(k TEXT PRIMARY KEY, n) WITHOUT ROWID",
		"CREATE TABLE plain(x, y)",
		"CREATE INDEX tv ON t(v)",
		"CREATE VIEW vw AS SELECT id, v FROM t",
		"CREATE TRIGGER tw AFTER INSERT ON t BEGIN INSERT INTO w VALUES('t' || new.id, new.r); END",
		"PRAGMA user_version = 7",
	}}
	for i := 0; i < n; i++ {
		sqls = append(sqls, []string{fmt.Sprintf("INSERT INTO t(v, r, b) VALUES('row %d', %d.5, randomblob(%d))", i, i, i%300),
			fmt.Sprintf("INSERT INTO plain VALUES(%d, NULL)", i)})
	}
	// (Not from plain: VACUUM renumbers the rowids of a table without an
	// INTEGER PRIMARY KEY, which the hash rightly sees as other content.)
	sqls = append(sqls, []string{"DELETE FROM t WHERE id % 2 = 0", "DELETE FROM w WHERE k LIKE '%3'", "ANALYZE"})
	var msgs []Msg
	for i, s := range sqls {
		msgs = append(msgs, Msg{Seq: uint64(i + 1), Data: entry(1700000000000, int64(i), false, s...)})
	}
	return msgs
}

func copyFile(tb testing.TB, src, dst string) {
	tb.Helper()
	in, err := os.Open(src)
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		tb.Fatal(err)
	}
	if err := out.Close(); err != nil {
		tb.Fatal(err)
	}
}

// plainExec runs statements on the file with a plain SQLite connection
// (holding SQLite's generator lock, as programs beside nodes must).
func plainExec(tb testing.TB, path string, sqls ...string) {
	tb.Helper()
	prngMu.Lock()
	defer prngMu.Unlock()
	c, err := sqliteOpen(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	for _, q := range sqls {
		if err := execPlain(c, q); err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
	}
}

func hashFile(tb testing.TB, path string) ContentHash {
	tb.Helper()
	h, err := HashFile(context.Background(), path)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// differing returns the Tables keys whose digests differ.
func differing(a, b ContentHash) []string {
	var out []string
	for k, d := range a.Tables {
		if b.Tables[k] != d {
			out = append(out, k)
		}
	}
	for k := range b.Tables {
		if _, ok := a.Tables[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// The content hash does not depend on the page layout (a VACUUMed copy
// hashes the same), and an edit of one row made with a plain SQLite
// connection changes it, naming the table.
func TestHashFile_LayoutAndEdit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "db.sqlite")
	db, err := Open(path, Options{Readers: 1})
	if err != nil {
		t.Fatal(err)
	}
	msgs := contentMsgs(300)
	if err := db.ApplyBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	db.Close()
	a := hashFile(t, path)
	if a.Seq != uint64(len(msgs)) {
		t.Fatalf("seq %d, want %d", a.Seq, len(msgs))
	}
	var names []string
	for k := range a.Tables {
		names = append(names, k)
	}
	sort.Strings(names)
	if want := []string{"plain", "sqlite_header", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4", "t", "vw", "w"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("tables %q, want %q", names, want)
	}
	vac := filepath.Join(dir, "vacuumed.sqlite")
	copyFile(t, path, vac)
	plainExec(t, vac, "PRAGMA journal_mode=DELETE", "VACUUM")
	if st1, st2 := mustStat(t, path), mustStat(t, vac); st1 == st2 {
		t.Fatalf("VACUUM left the file at %d bytes: the layouts are not different", st1)
	}
	if b := hashFile(t, vac); b.Hash != a.Hash {
		t.Fatalf("VACUUMed copy: tables %q differ", differing(a, b))
	}
	for _, c := range []struct {
		edit string
		want []string
	}{
		{"UPDATE plain SET y = 1 WHERE x = 1", []string{"plain"}},
		{"UPDATE t SET r = 1 WHERE id = 1", []string{"t"}},               // REAL 1.0 for 1.5
		{"UPDATE t SET v = CAST(v AS BLOB) WHERE id = 1", []string{"t"}}, // same bytes, other class
		{"UPDATE w SET n = n WHERE 0", nil},
		{"CREATE INDEX pi ON plain(y)", []string{"plain"}},
		{"PRAGMA user_version = 8", []string{"sqlite_header"}},
		{"UPDATE _nqlite_digest SET origin = 1", nil},
	} {
		t.Run(c.edit, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "edited.sqlite")
			copyFile(t, path, p)
			plainExec(t, p, c.edit)
			b := hashFile(t, p)
			if got := differing(a, b); !reflect.DeepEqual(got, c.want) || (b.Hash == a.Hash) != (c.want == nil) {
				t.Fatalf("differing tables %q (hash equal %v), want %q", got, b.Hash == a.Hash, c.want)
			}
		})
	}
}

func mustStat(tb testing.TB, path string) int64 {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Size()
}

// ContentHashAt for a sequence in the middle of the next batch stops the
// batch there: the hash is that of a database that applied up to that
// sequence only, while the rest of the batch applies.
func TestContentHashAt_Pin(t *testing.T) {
	dir := t.TempDir()
	msgs := contentMsgs(40)
	const at = 20
	ref := openDB(t, filepath.Join(dir, "ref.sqlite"))
	if err := ref.ApplyBatch(context.Background(), msgs[:at]); err != nil {
		t.Fatal(err)
	}
	want, err := ref.ContentHashAt(context.Background(), at) // applied == at: at once
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t, filepath.Join(dir, "db.sqlite"))
	if err := db.ApplyBatch(context.Background(), msgs[:5]); err != nil {
		t.Fatal(err)
	}
	type result struct {
		h   ContentHash
		err error
	}
	done := make(chan result, 1)
	go func() {
		h, err := db.ContentHashAt(context.Background(), at)
		done <- result{h, err}
	}()
	waitPins(t, db, 1)
	if err := db.ApplyBatch(context.Background(), msgs[5:]); err != nil {
		t.Fatal(err)
	}
	if got := db.Applied(); got != uint64(len(msgs)) {
		t.Fatalf("applied %d, want the whole batch (%d)", got, len(msgs))
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.h.Seq != at || r.h.Hash != want.Hash {
		t.Fatalf("pinned hash at %d: tables %q differ from the database at %d", r.h.Seq, differing(want, r.h), at)
	}
	if now := hashFile(t, db.Path()); now.Hash == want.Hash {
		t.Fatal("the database's hash did not change after the pin: the test proves nothing")
	}
	if _, err := db.ContentHashAt(context.Background(), at); !errors.Is(err, ErrPassed) {
		t.Fatalf("a passed sequence: got %v, want ErrPassed", err)
	}
	// A wait that ends with its context leaves no pin behind.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := db.ContentHashAt(ctx, 1000)
		done <- result{err: err}
	}()
	waitPins(t, db, 1)
	cancel()
	if r := <-done; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled: got %v", r.err)
	}
	waitPins(t, db, 0)
}

// waitPins polls until db has n pins.
func waitPins(tb testing.TB, db *DB, n int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		db.pinMu.Lock()
		got := len(db.pins)
		db.pinMu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pins: %d, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}
