package apply

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nqlite/nqlite/service/api"
)

// digestWorkload is a run of entries that exercises what the digest
// covers: every kind of row change, WITHOUT ROWID and generated columns,
// triggers, failed statements (kept and dropped changes), a statement
// that ends the transaction (replayed), savepoints, transaction entries,
// reads inside writes (one failing at run time, only where it runs), and
// a message that is not an entry. Entries are accepted by node (their
// Node and Token "tok").
func digestWorkload(node string) []Msg {
	var msgs []Msg
	add := func(tx bool, sql ...string) {
		e := &Entry{Node: node, Token: "tok", Time: 1700000000000 + int64(len(msgs)), Seed: int64(len(msgs)), Tx: tx}
		for _, s := range sql {
			e.Statements = append(e.Statements, api.Statement{SQL: s})
		}
		msgs = append(msgs, Msg{Seq: uint64(len(msgs) + 1), Data: e.Encode()})
	}
	add(false, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, r REAL, b BLOB, g AS (v || 'g'))",
		"CREATE TABLE w(k TEXT PRIMARY KEY, n INT) WITHOUT ROWID",
		"CREATE TABLE log(x)",
		"CREATE TRIGGER tt AFTER UPDATE ON t BEGIN INSERT INTO log VALUES(new.v); END")
	add(false, "INSERT INTO t(v, r, b) VALUES('a', 1.5, x'00ff'), ('b', NULL, NULL)", "INSERT INTO w VALUES('k1', 1), ('k2', 2)")
	add(false, "UPDATE t SET v = 'c' WHERE id = 1", "SELECT * FROM t", "UPDATE w SET n = n + 1")
	add(false, "INSERT INTO w VALUES('k3', 3), ('k1', 9)", "INSERT OR FAIL INTO w VALUES('k4', 4), ('k1', 9)")
	add(false, "INSERT INTO log VALUES(1)", "INSERT OR ROLLBACK INTO w VALUES('k1', 0)", "INSERT INTO log VALUES(2)")
	add(true, "INSERT INTO log VALUES('tx')", "SELECT abs(-9223372036854775807 - 1)", "INSERT INTO log VALUES('tx2')")
	add(true, "INSERT INTO log VALUES('fails')", "INSERT INTO w VALUES('k1', 0)")
	add(false, "SAVEPOINT s", "DELETE FROM t WHERE id = 2", "ROLLBACK TO s", "DELETE FROM w WHERE k = 'k2'", "RELEASE s")
	add(false, "BEGIN", "INSERT INTO log VALUES('user')", "ROLLBACK", "SELECT random()", "INSERT INTO log VALUES(random())")
	msgs = append(msgs, Msg{Seq: uint64(len(msgs) + 1), Data: []byte("not an entry")})
	add(false, "DELETE FROM t", "UPDATE t SET id = 7", "SELECT x FROM nowhere")
	add(false, "INSERT INTO t(v) VALUES('after')")
	return msgs
}

// digestsOf records every state OnDigest reports.
type digestsOf struct{ states []DigestState }

func (d *digestsOf) on(st DigestState) { d.states = append(d.states, st) }

func openDigestDB(tb testing.TB, path, node string, opts Options) *DB {
	tb.Helper()
	opts.Node, opts.Readers = node, 1
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := Open(path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// applyIn applies msgs in batches of per (per 0: all in one batch); with
// wait, each entry has a waiter on db (the node collects its results).
func applyIn(tb testing.TB, db *DB, msgs []Msg, per int, wait bool) {
	tb.Helper()
	if per == 0 {
		per = len(msgs)
	}
	for i := 0; i < len(msgs); i += per {
		batch := msgs[i:min(i+per, len(msgs))]
		if wait {
			_, cancel := db.Await("tok")
			defer cancel()
		}
		if err := db.ApplyBatch(context.Background(), batch); err != nil {
			tb.Fatal(err)
		}
	}
}

// The digest is the same on every node whatever the batching, whether the
// node collects results (it accepted the entries and waits for them: its
// reads run, one of them fails) or not, and whether it keeps the changes'
// values for OnChanges; each message moves it.
func TestDigest_SameEverywhere(t *testing.T) {
	dir := t.TempDir()
	ref := &digestsOf{}
	one := openDigestDB(t, filepath.Join(dir, "one.sqlite"), "n1", Options{OnDigest: ref.on})
	applyIn(t, one, digestWorkload("n1"), 1, false)
	if len(ref.states) != len(digestWorkload("n1")) {
		t.Fatalf("OnDigest called %d times, want once per batch (%d)", len(ref.states), len(digestWorkload("n1")))
	}
	seen := map[Digest]bool{{}: true}
	for i, st := range ref.states {
		if st.Seq != uint64(i+1) || st.Origin != 0 || st.Format != DigestFormat {
			t.Fatalf("state %d: %+v", i, st)
		}
		if seen[st.Digest] {
			t.Fatalf("seq %d: digest %s seen before: the message did not move it", st.Seq, st.Digest)
		}
		seen[st.Digest] = true
		if at, ok := one.DigestAt(st.Seq); !ok || at != st {
			t.Fatalf("DigestAt(%d) = %+v %v, want %+v", st.Seq, at, ok, st)
		}
	}
	for _, c := range []struct {
		name string
		node string // the DB's node: "n1" accepted the entries
		per  int
		wait bool
		feed bool
	}{
		{"all in one batch", "n2", 0, false, false},
		{"batches of 3", "n2", 3, false, false},
		{"collecting, one per batch", "n1", 1, true, false},
		{"collecting, one batch", "n1", 0, true, false},
		{"with a change feed", "n2", 4, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := Options{}
			if c.feed {
				opts.OnChanges = (&feed{}).on
			}
			db := openDigestDB(t, filepath.Join(t.TempDir(), "db.sqlite"), c.node, opts)
			applyIn(t, db, digestWorkload("n1"), c.per, c.wait)
			for _, want := range ref.states {
				got, ok := db.DigestAt(want.Seq)
				if !ok || got != want {
					t.Fatalf("seq %d: got %v %s, want %s", want.Seq, ok, got.Digest, want.Digest)
				}
			}
			if got, want := db.Digest(), ref.states[len(ref.states)-1]; got != want {
				t.Fatalf("Digest: got %+v, want %+v", got, want)
			}
		})
	}
}

// The collecting node really ran the reads (one of them failed there
// only): otherwise the test above would prove nothing about them.
func TestDigest_CollectingNodeRunsReads(t *testing.T) {
	db := openDigestDB(t, filepath.Join(t.TempDir(), "db.sqlite"), "n1", Options{})
	msgs := digestWorkload("n1")
	applyIn(t, db, msgs[:5], 0, false)
	res := applyOutcome(t, db, 6, msgs[5].Data)
	if len(res) != 3 || res[1].Error == "" || res[2].Error != "" {
		t.Fatalf("results %+v: want the read to fail here and the transaction to go on", res)
	}
}

// An entry applied differently on one node (a parameter changed by the
// Mutate hook) makes its digest differ from that entry on; the entries
// before agree.
func TestDigest_Mutate(t *testing.T) {
	dir := t.TempDir()
	var msgs []Msg
	for i, sql := range []string{"CREATE TABLE t(x)", "INSERT INTO t VALUES(?)", "INSERT INTO t VALUES(?)", "INSERT INTO t VALUES(?)"} {
		e := &Entry{Node: "n1", Token: "tok", Time: 1, Seed: 1, Statements: []api.Statement{{SQL: sql}}}
		if i > 0 {
			e.Statements[0].Params = []any{int64(i)}
		}
		msgs = append(msgs, Msg{Seq: uint64(i + 1), Data: e.Encode()})
	}
	a := openDigestDB(t, filepath.Join(dir, "a.sqlite"), "a", Options{})
	b := openDigestDB(t, filepath.Join(dir, "b.sqlite"), "b", Options{Mutate: func(seq uint64, e *Entry) {
		if seq == 3 {
			e.Statements[0].Params = []any{int64(30)}
		}
	}})
	applyIn(t, a, msgs, 1, false)
	applyIn(t, b, msgs, 0, false)
	if got := read(t, b, "SELECT group_concat(x) FROM t"); got[0][0] != "1,30,3" {
		t.Fatalf("mutated node holds %v", got)
	}
	for seq := uint64(1); seq <= 4; seq++ {
		da, _ := a.DigestAt(seq)
		db, _ := b.DigestAt(seq)
		if same, want := da == db, seq < 3; same != want {
			t.Errorf("seq %d: digests equal %v, want %v (%s vs %s)", seq, same, want, da.Digest, db.Digest)
		}
	}
}

// A statement's outcome is covered, not only its changes: an entry whose
// statement fails on one node and succeeds on another with no change
// (UPDATE of no row vs an error) differs.
func TestDigest_Outcome(t *testing.T) {
	dir := t.TempDir()
	setup := Msg{Seq: 1, Data: entry(1, 1, false, "CREATE TABLE t(x)")}
	a := openDigestDB(t, filepath.Join(dir, "a.sqlite"), "a", Options{})
	b := openDigestDB(t, filepath.Join(dir, "b.sqlite"), "b", Options{Mutate: func(seq uint64, e *Entry) {
		if seq == 2 {
			e.Statements[0].SQL = "UPDATE t SET y = 1"
		}
	}})
	msgs := []Msg{setup, {Seq: 2, Data: entry(1, 1, false, "UPDATE t SET x = 1")}}
	applyIn(t, a, msgs, 0, false)
	applyIn(t, b, msgs, 0, false)
	if a.Digest() == b.Digest() {
		t.Fatal("a failed statement and one that changed nothing give the same digest")
	}
}

// The digest is stored with the applied sequence: a restarted node holds
// it and goes on computing what a node that never stopped computes.
func TestDigest_Restart(t *testing.T) {
	dir := t.TempDir()
	msgs := digestWorkload("n1")
	ref := openDigestDB(t, filepath.Join(dir, "ref.sqlite"), "n2", Options{})
	applyIn(t, ref, msgs, 1, false)
	path := filepath.Join(dir, "db.sqlite")
	db, err := Open(path, Options{Node: "n2", Readers: 1})
	if err != nil {
		t.Fatal(err)
	}
	applyIn(t, db, msgs[:6], 2, false)
	before := db.Digest()
	db.Close()
	db = openDigestDB(t, path, "n2", Options{})
	if got := db.Digest(); got != before {
		t.Fatalf("after restart: %+v, want %+v", got, before)
	}
	applyIn(t, db, msgs[6:], 0, false)
	if got, want := db.Digest(), ref.Digest(); got != want {
		t.Fatalf("after restart and catch-up: %s, want %s", got.Digest, want.Digest)
	}
}

// DigestAt remembers the last 4096 applied sequences.
func TestDigest_At(t *testing.T) {
	db := openDigestDB(t, filepath.Join(t.TempDir(), "db.sqlite"), "n2", Options{})
	msgs := []Msg{{Seq: 1, Data: entry(1, 1, false, "CREATE TABLE t(x)")}}
	for i := 2; i <= 5000; i++ {
		msgs = append(msgs, Msg{Seq: uint64(i), Data: entry(1, 1, false, fmt.Sprintf("INSERT INTO t VALUES(%d)", i))})
	}
	all := &digestsOf{}
	ref := openDigestDB(t, filepath.Join(t.TempDir(), "ref.sqlite"), "n2", Options{OnDigest: all.on})
	applyIn(t, ref, msgs, 1, false)
	applyIn(t, db, msgs, 700, false)
	for _, c := range []struct {
		seq uint64
		ok  bool
	}{{5000, true}, {4999, true}, {5000 - 4095, true}, {5000 - 4096, false}, {1, false}, {5001, false}} {
		got, ok := db.DigestAt(c.seq)
		if ok != c.ok {
			t.Errorf("DigestAt(%d): ok %v, want %v", c.seq, ok, c.ok)
			continue
		}
		if ok && got != all.states[c.seq-1] {
			t.Errorf("DigestAt(%d) = %s, want %s", c.seq, got.Digest, all.states[c.seq-1].Digest)
		}
	}
}

// The definition, byte for byte, for one entry (DESIGN.md, "Running
// digest"): a change to the encoding must fail here.
func TestDigest_Format(t *testing.T) {
	db := openDigestDB(t, filepath.Join(t.TempDir(), "db.sqlite"), "n2", Options{})
	applyIn(t, db, []Msg{
		{Seq: 1, Data: entry(1, 1, false, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)")},
		{Seq: 2, Data: entry(1, 1, false, "INSERT INTO t VALUES(5, 'hi')", "SELECT 1")},
	}, 0, false)
	d1, _ := db.DigestAt(1)
	var b []byte
	b = append(b, d1.Digest[:]...)
	b = binary.BigEndian.AppendUint64(b, 2)
	b = append(b, 'E', 0, 0, 0, 1)          // one change
	b = append(b, 0, 0, 0, 1, 't', 1)       // table t, insert
	b = binary.BigEndian.AppendUint64(b, 5) // rowid
	b = append(b, 0, 0, 0, 2)               // two values
	b = append(b, 1)
	b = binary.BigEndian.AppendUint64(b, 5)
	b = append(b, 3, 0, 0, 0, 2, 'h', 'i')
	b = append(b, 0, 0, 0, 2)               // two results
	b = append(b, 'S', 1)                   // write
	b = binary.BigEndian.AppendUint64(b, 1) // rows affected
	b = binary.BigEndian.AppendUint64(b, 5) // last insert id
	b = append(b, 0, 0, 0, 0)               // no error
	b = append(b, 'R')                      // the read
	if got, want := db.Digest().Digest, Digest(sha256.Sum256(b)); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// A database made before digests (no digest rows) starts its chain at
// its applied sequence, and keeps that origin.
func TestDigest_Origin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.sqlite")
	db, err := Open(path, Options{Readers: 1})
	if err != nil {
		t.Fatal(err)
	}
	applyIn(t, db, digestWorkload("n1")[:3], 0, false)
	db.Close()
	prngMu.Lock()
	c, err := sqliteOpen(path)
	if err == nil {
		err = execPlain(c, "DROP TABLE _nqlite_digest")
		c.Close()
	}
	prngMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	db = openDigestDB(t, path, "n2", Options{})
	if got := db.Digest(); got != (DigestState{Seq: 3, Origin: 3, Format: DigestFormat}) {
		t.Fatalf("upgraded: %+v, want a new chain at 3", got)
	}
	if _, ok := db.DigestAt(2); ok {
		t.Fatal("DigestAt before the origin answered")
	}
	applyIn(t, db, digestWorkload("n1")[3:5], 0, false)
	if got := db.Digest(); got.Origin != 3 || got.Seq != 5 {
		t.Fatalf("after two entries: %+v", got)
	}
}

// A load entry continues the chain with its message bytes ('L'); the
// nodes agree, and the loaded file carries the digest across a restart.
func TestDigest_Load(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.sql")
	if err := os.WriteFile(src, []byte("CREATE TABLE n(x); INSERT INTO n VALUES(1), (2);"), 0o644); err != nil {
		t.Fatal(err)
	}
	loader := func(ctx context.Context, seq uint64, l *Load, dir string) (string, bool, error) {
		b, err := os.ReadFile(src)
		if err != nil {
			return "", false, err
		}
		p := filepath.Join(dir, "fetched")
		return p, false, os.WriteFile(p, b, 0o644)
	}
	load := (&Entry{Node: "n1", Token: "l", Time: 1700000000999, Load: &Load{Bucket: "b", Object: "o", SQL: true}}).Encode()
	msgs := []Msg{
		{Seq: 1, Data: entryTx(false, "CREATE TABLE t(x)", "INSERT INTO t VALUES(1)")},
		{Seq: 2, Data: load},
		{Seq: 3, Data: entryTx(false, "INSERT INTO n VALUES(3)")},
	}
	var states []DigestState
	os.MkdirAll(filepath.Join(dir, "a"), 0o755)
	a := openDigestDB(t, filepath.Join(dir, "a", "db.sqlite"), "a", Options{Loader: loader, OnDigest: func(st DigestState) { states = append(states, st) }})
	os.MkdirAll(filepath.Join(dir, "b"), 0o755)
	bpath := filepath.Join(dir, "b", "db.sqlite")
	b, err := Open(bpath, Options{Node: "b", Readers: 1, Loader: loader})
	if err != nil {
		t.Fatal(err)
	}
	applyIn(t, a, msgs, 1, false)
	applyIn(t, b, msgs, 0, false)
	d1, _ := a.DigestAt(1)
	d2, ok := a.DigestAt(2)
	if !ok || d2.Digest != newDigester().step(d1.Digest, 2, 'L', load) {
		t.Fatalf("load digest %+v %v, want H(prev, 2, 'L', entry)", d2, ok)
	}
	if len(states) != 3 || states[1] != d2 {
		t.Fatalf("OnDigest states %+v", states)
	}
	if a.Digest() != b.Digest() {
		t.Fatalf("nodes differ after a load: %s vs %s", a.Digest().Digest, b.Digest().Digest)
	}
	want := b.Digest()
	b.Close()
	b = openDigestDB(t, bpath, "b", Options{})
	if got := b.Digest(); got != want {
		t.Fatalf("loaded file reopened: %+v, want %+v", got, want)
	}
}

// Changes that do not commit leave nothing in the digest: an entry whose
// changes were all undone (a failed statement, a savepoint rolled back,
// a failed transaction entry, a user transaction rolled back or left
// open) hashes as an entry with no change and its outcomes.
func TestDigest_UndoneChanges(t *testing.T) {
	for _, c := range []struct {
		name string
		tx   bool
		sql  []string
	}{
		{"failed statement", false, []string{"INSERT INTO t VALUES(1), (2), (1)"}},
		{"savepoint rolled back", false, []string{"SAVEPOINT s", "INSERT INTO t VALUES(1)", "ROLLBACK TO s", "RELEASE s"}},
		{"savepoint left open", false, []string{"SAVEPOINT s", "INSERT INTO t VALUES(1)"}},
		{"transaction entry failed", true, []string{"INSERT INTO t VALUES(1)", "INSERT INTO t VALUES(1)"}},
		{"user transaction rolled back", false, []string{"BEGIN", "INSERT INTO t VALUES(1)", "ROLLBACK"}},
		{"user transaction left open", false, []string{"BEGIN", "INSERT INTO t VALUES(1)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
			applyOutcome(t, db, 1, entry(1, 1, false, "CREATE TABLE t(x PRIMARY KEY)"))
			prev := db.Digest().Digest
			res := applyOutcome(t, db, 2, entry(1, 1, c.tx, c.sql...))
			if got := read(t, db, "SELECT count(*) FROM t"); got[0][0] != int64(0) {
				t.Fatalf("rows: %v", got)
			}
			want := newDigester().entry(prev, 2, 0, nil, res, nil)
			if got := db.Digest().Digest; got != want {
				t.Fatalf("got %s, want %s (the digest of no change)", got, want)
			}
		})
	}
}

// A snapshot carries the digest and its content hash; a node restored
// from it (Replace) takes the digest and goes on computing what the node
// that made it computes. The restored node's own earlier digests are
// forgotten (they were another file's).
func TestDigest_Snapshot(t *testing.T) {
	dir := t.TempDir()
	msgs := digestWorkload("n1")
	src := openDigestDB(t, filepath.Join(dir, "src.sqlite"), "n2", Options{})
	applyIn(t, src, msgs[:7], 0, false)
	snap := filepath.Join(dir, "snap.sqlite")
	info, err := src.Snapshot(context.Background(), snap)
	if err != nil {
		t.Fatal(err)
	}
	if info.Digest != src.Digest() {
		t.Fatalf("snapshot digest %+v, want %+v", info.Digest, src.Digest())
	}
	if h := hashFile(t, src.Path()); info.Content != h.Hash || info.Content == (Digest{}) {
		t.Fatalf("snapshot content %s, want the source's %s", info.Content, h.Hash)
	}
	// The restored node had diverged: its own digests differ.
	dst := openDigestDB(t, filepath.Join(dir, "dst.sqlite"), "n3", Options{Mutate: func(seq uint64, e *Entry) {
		if seq == 2 {
			e.Statements[0].SQL = "SELECT 1"
		}
	}})
	applyIn(t, dst, msgs[:3], 0, false)
	if err := dst.Replace(snap); err != nil {
		t.Fatal(err)
	}
	if got := dst.Digest(); got != info.Digest {
		t.Fatalf("restored: %+v, want %+v", got, info.Digest)
	}
	if _, ok := dst.DigestAt(2); ok {
		t.Fatal("DigestAt answers for a sequence of the file replaced")
	}
	applyIn(t, src, msgs[7:], 0, false)
	applyIn(t, dst, msgs[7:], 1, false)
	if dst.Digest() != src.Digest() {
		t.Fatalf("after catch-up: %s, want %s", dst.Digest().Digest, src.Digest().Digest)
	}
}
