package apply

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"modernc.org/libc"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// TestRaw guards the private layout of zombiezen's types that raw.go
// reads through reflect and unsafe: if a zombiezen upgrade renames or
// retypes a field, this fails before anything else does. It also checks
// that stepWrite, which steps writes with the C API, reports errors in
// the words zombiezen's Stmt.Step uses, so a statement's error text does
// not depend on which of the two ran it.
func TestRaw(t *testing.T) {
	tlsType := reflect.TypeOf((*libc.TLS)(nil))
	handle := reflect.TypeOf(uintptr(0))
	for _, c := range []struct {
		typ    reflect.Type
		field  string
		want   reflect.Type
		reason string
	}{
		{reflect.TypeOf(sqlite.Conn{}), "tls", tlsType, "connHandles"},
		{reflect.TypeOf(sqlite.Conn{}), "conn", handle, "connHandles"},
		{reflect.TypeOf(sqlite.Stmt{}), "stmt", handle, "stmtHandle"},
		{reflect.TypeOf(sqlite.Stmt{}), "bindErr", reflect.TypeOf((*error)(nil)).Elem(), "bindErr"},
		{reflect.TypeOf(sqlite.Action{}), "arg2", reflect.TypeOf(""), "actionArg2"},
		{reflect.TypeOf(sqlite.Context{}), "tls", tlsType, "funcError, contextTLS"},
		{reflect.TypeOf(sqlite.Context{}), "ptr", handle, "funcError"},
		{reflect.TypeOf(sqlite.Value{}), "tls", tlsType, "numericArg"},
		{reflect.TypeOf(sqlite.Value{}), "ptrOrType", handle, "numericArg"},
	} {
		f, ok := c.typ.FieldByName(c.field)
		if !ok {
			t.Errorf("%s has no field %s (used by %s)", c.typ, c.field, c.reason)
			continue
		}
		if f.Type != c.want {
			t.Errorf("%s.%s is a %s, want %s (used by %s)", c.typ, c.field, f.Type, c.want, c.reason)
		}
	}
	// And the helpers work on a live connection.
	db := openDB(t, filepath.Join(t.TempDir(), "raw.sqlite"))
	if got := applyOutcome(t, db, 1, entry(0, 0, false, "CREATE TABLE t(a INTEGER, a2 TEXT)", "INSERT INTO t VALUES(1, 'x')", "SELECT a, a AS a, a2 FROM t")); got[2].Error != "" {
		t.Fatal(got[2].Error)
	} else if want := []string{"a", "a", "a2"}; !reflect.DeepEqual(got[2].Columns, want) {
		t.Errorf("column names: got %v, want %v (duplicates kept)", got[2].Columns, want)
	} else if want := []string{"INTEGER", "INTEGER", "TEXT"}; !reflect.DeepEqual(got[2].Types, want) {
		t.Errorf("declared types: got %v, want %v", got[2].Types, want)
	}

	// stepWrite and Stmt.Step fail alike: the same error text, and
	// sqlErrorText gives the same message either way.
	wc, err := openConn(filepath.Join(t.TempDir(), "step.sqlite"), sqlite.OpenReadWrite|sqlite.OpenCreate|sqlite.OpenNoMutex)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newConn(wc)
	if err != nil {
		closeSQLite(wc)
		t.Fatal(err)
	}
	defer c.close()
	for _, q := range []string{
		"CREATE TABLE u(k INTEGER PRIMARY KEY, v TEXT NOT NULL CHECK (v <> 'bad'))",
		"CREATE TRIGGER abort BEFORE INSERT ON u WHEN new.v = 'abort' BEGIN SELECT RAISE(ABORT, 'aborted by trigger'); END",
		"CREATE TRIGGER fail BEFORE INSERT ON u WHEN new.v = 'fail' BEGIN SELECT RAISE(FAIL, 'failed by trigger'); END",
		"INSERT INTO u VALUES(1, 'one')",
	} {
		if err := c.exec(q); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan struct{})
	close(closed)
	for _, w := range []struct {
		sql       string
		interrupt bool
		bind      any
	}{
		{sql: "INSERT INTO u VALUES(1, 'again')"},                                       // UNIQUE (the primary key)
		{sql: "INSERT INTO u VALUES(2, NULL)"},                                          // NOT NULL
		{sql: "INSERT INTO u VALUES(3, 'bad')"},                                         // CHECK
		{sql: "INSERT INTO u VALUES(4, 'abort')"},                                       // RAISE(ABORT)
		{sql: "INSERT INTO u VALUES(5, 'fail')"},                                        // RAISE(FAIL)
		{sql: "INSERT INTO u VALUES(6, abs(-9223372036854775808))"},                     // integer overflow
		{sql: "INSERT INTO u VALUES(7, ?)", bind: strings.Repeat("x", MaxValueBytes+1)}, // bind error (too big)
		{sql: "INSERT INTO u VALUES(8, 'eight')", interrupt: true},                      // interrupted
	} {
		run := func(raw bool) error {
			cs, err := c.prepare(w.sql)
			if err != nil {
				t.Fatalf("%s: prepare: %v", w.sql, err)
			}
			defer cs.release()
			if w.bind != nil {
				bindValue(cs.stmt, 1, w.bind)
			}
			var done <-chan struct{}
			if w.interrupt {
				done = closed
			}
			if raw {
				_, _, err = c.stepWrite(cs, done)
				return err
			}
			c.c.SetInterrupt(done)
			defer c.c.SetInterrupt(nil)
			_, err = cs.stmt.Step()
			return err
		}
		rawErr, stepErr := run(true), run(false)
		if rawErr == nil || stepErr == nil {
			t.Errorf("%s: stepWrite %v, Step %v: want both to fail", w.sql, rawErr, stepErr)
			continue
		}
		if rawErr.Error() != stepErr.Error() {
			t.Errorf("%s: stepWrite says %q, Step says %q", w.sql, rawErr, stepErr)
		}
		if a, b := sqlErrorText(rawErr, w.sql), sqlErrorText(stepErr, w.sql); a != b {
			t.Errorf("%s: sqlErrorText %q after stepWrite, %q after Step", w.sql, a, b)
		}
	}
}

// The applied sequence commits in the same transaction as the entries:
// a file copied at any time holds both or neither, and reopening resumes
// after it.
func TestDB_AppliedSeqCommitsWithEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq.sqlite")
	db := openDB(t, path)
	msgs := []Msg{
		{Seq: 1, Data: entry(0, 0, false, "CREATE TABLE t(x)")},
		{Seq: 2, Data: entry(0, 0, false, "INSERT INTO t VALUES(1)")},
		{Seq: 3, Data: entry(0, 0, false, "INSERT INTO t VALUES(2)")},
	}
	if err := db.ApplyBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	// Redelivered entries are dropped by sequence.
	if err := db.ApplyBatch(context.Background(), msgs[1:]); err != nil {
		t.Fatal(err)
	}
	if got := db.Applied(); got != 3 {
		t.Fatalf("applied: got %d, want 3", got)
	}
	if got := read(t, db, "SELECT count(*) FROM t"); got[0][0] != int64(2) {
		t.Fatalf("rows: got %v, want 2 (redelivery applied twice?)", got)
	}
	// A plain SQLite connection sees the sequence and the rows together.
	c, err := sqlite.OpenConn(path, sqlite.OpenReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var seq, rows int64
	err = sqlitex.ExecuteTransient(c, "SELECT (SELECT value FROM _nqlite_meta WHERE key = 'applied_seq'), (SELECT count(*) FROM t)", &sqlitex.ExecOptions{
		ResultFunc: func(s *sqlite.Stmt) error { seq, rows = s.ColumnInt64(0), s.ColumnInt64(1); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if seq != 3 || rows != 2 {
		t.Fatalf("file: applied_seq %d with %d rows, want 3 with 2", seq, rows)
	}
	db.Close()
	db2 := openDB(t, path)
	if got := db2.Applied(); got != 3 {
		t.Fatalf("reopened: applied %d, want 3", got)
	}
	db2.Close()

	// Storing the sequence fails (a trigger added with a plain connection
	// refuses it; the batch's start stores it, in the batch's transaction,
	// see flushFirstFrame): none of the batch's entries is applied.
	plain := func(q string) {
		t.Helper()
		c, err := sqlite.OpenConn(path, sqlite.OpenReadWrite)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := sqlitex.ExecuteTransient(c, q, nil); err != nil {
			t.Fatal(err)
		}
	}
	plain("CREATE TRIGGER refuse BEFORE UPDATE ON _nqlite_meta WHEN new.key = 'applied_seq' AND new.value = 5 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
	db3 := openDB(t, path)
	more := []Msg{
		{Seq: 4, Data: entry(0, 0, false, "INSERT INTO t VALUES(3)")},
		{Seq: 5, Data: entry(0, 0, false, "INSERT INTO t VALUES(4)")},
	}
	if err := db3.ApplyBatch(context.Background(), more); err == nil || !strings.Contains(err.Error(), "refused by the test") {
		t.Fatalf("got %v, want the store of the applied sequence to fail", err)
	}
	if got := db3.Applied(); got != 3 {
		t.Fatalf("after the failed store: applied %d, want 3", got)
	}
	if got := read(t, db3, "SELECT count(*) FROM t"); got[0][0] != int64(2) {
		t.Fatalf("after the failed store: %v rows, want 2 (the batch's entries are rolled back with the sequence)", got[0][0])
	}
	db3.Close()
	plain("DROP TRIGGER refuse")
	db4 := openDB(t, path)
	if err := db4.ApplyBatch(context.Background(), more); err != nil {
		t.Fatal(err)
	}
	if got, rows := db4.Applied(), read(t, db4, "SELECT count(*) FROM t"); got != 5 || rows[0][0] != int64(4) {
		t.Fatalf("applied again: sequence %d with %v rows, want 5 with 4", got, rows[0][0])
	}
}

// A cancelled context interrupts even an endless statement, rolls the
// batch back and is never recorded as the statement's outcome: the entry
// is applied again, whole, by the next call.
func TestDB_ApplyBatchInterrupted(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "int.sqlite"))
	applyOutcome(t, db, 1, entry(0, 0, false, "CREATE TABLE t(x)"))
	endless := entry(0, 0, false, "INSERT INTO t VALUES('before')",
		"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c WHERE x < 0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- db.ApplyBatch(ctx, []Msg{{Seq: 2, Data: endless}}) }()
	time.Sleep(50 * time.Millisecond) // let it run into the endless statement (not needed for correctness)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ApplyBatch did not return after its context was cancelled")
	}
	if got := db.Applied(); got != 1 {
		t.Fatalf("applied: got %d, want 1 (the interrupted entry must not count)", got)
	}
	if got := read(t, db, "SELECT count(*) FROM t"); got[0][0] != int64(0) {
		t.Fatalf("rows: got %v, want 0 (the batch is rolled back)", got)
	}
	// The connection is usable again, and the next call applies entries.
	if got := applyOutcome(t, db, 2, entry(0, 0, false, "INSERT INTO t VALUES('after')")); got[0].Error != "" {
		t.Fatalf("after the interrupt: %s", got[0].Error)
	}
	if err := db.ApplyBatch(ctx, []Msg{{Seq: 3, Data: entry(0, 0, false, "INSERT INTO t VALUES(3)")}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("a done context: got %v, want context.Canceled", err)
	}
}

// Savepoints and user transactions inside an entry: what each statement
// reports and what stays applied.
func TestDB_SavepointOutcomes(t *testing.T) {
	for _, c := range []struct {
		name   string
		tx     bool
		sql    []string
		errors []bool // which statements fail
		rows   int64  // rows of t afterwards
	}{
		{"failed statement alone", false, []string{"INSERT INTO t VALUES(1)", "INSERT INTO nope VALUES(1)", "INSERT INTO t VALUES(2)"}, []bool{false, true, false}, 2},
		{"transaction all or nothing", true, []string{"INSERT INTO t VALUES(1)", "INSERT INTO nope VALUES(1)", "INSERT INTO t VALUES(2)"}, []bool{false, true}, 0},
		{"user transaction committed", false, []string{"BEGIN", "INSERT INTO t VALUES(1)", "COMMIT"}, []bool{false, false, false}, 1},
		{"user transaction rolled back", false, []string{"BEGIN", "INSERT INTO t VALUES(1)", "ROLLBACK"}, []bool{false, false, false}, 0},
		{"left open: rolled back", false, []string{"BEGIN", "INSERT INTO t VALUES(1)"}, []bool{false, false}, 0},
		{"savepoint released", false, []string{"SAVEPOINT a", "INSERT INTO t VALUES(1)", "RELEASE a"}, []bool{false, false, false}, 1},
		{"savepoint rolled back to", false, []string{"SAVEPOINT a", "INSERT INTO t VALUES(1)", "ROLLBACK TO a", "INSERT INTO t VALUES(2)", "RELEASE a"}, []bool{false, false, false, false, false}, 1},
		{"nested BEGIN", false, []string{"BEGIN", "BEGIN", "COMMIT"}, []bool{false, true, false}, 0},
		{"COMMIT without BEGIN", false, []string{"COMMIT"}, []bool{true}, 0},
		{"OR ROLLBACK fails alone", false, []string{"INSERT INTO t VALUES(1)", "INSERT OR ROLLBACK INTO u VALUES(1)", "INSERT INTO t VALUES(2)"}, []bool{false, true, false}, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := openDB(t, filepath.Join(t.TempDir(), "sp.sqlite"))
			applyOutcome(t, db, 1, entry(0, 0, false, "CREATE TABLE t(x)", "CREATE TABLE u(x PRIMARY KEY)", "INSERT INTO u VALUES(1)"))
			res := applyOutcome(t, db, 2, entryTx(c.tx, c.sql...))
			if len(res) != len(c.errors) {
				t.Fatalf("got %d results, want %d: %+v", len(res), len(c.errors), res)
			}
			for i, want := range c.errors {
				if got := res[i].Error != ""; got != want {
					t.Errorf("statement %d (%s): failed %v (%q), want %v", i+1, c.sql[i], got, res[i].Error, want)
				}
			}
			if got := read(t, db, "SELECT count(*) FROM t"); got[0][0] != c.rows {
				t.Errorf("rows: got %v, want %d", got[0][0], c.rows)
			}
		})
	}
}

func entryTx(tx bool, sql ...string) []byte { return entry(0, 0, tx, sql...) }

// random(), randomblob() and 'now' come from the entry: the same entry
// gives the same values on two databases, and another seed others.
func TestDB_DeterministicFunctions(t *testing.T) {
	q := "SELECT random(), hex(randomblob(8)), datetime('now'), CURRENT_TIMESTAMP, unixepoch('now')"
	run := func(seed int64) []any {
		db := openDB(t, filepath.Join(t.TempDir(), "f.sqlite"))
		res := applyOutcome(t, db, 1, entry(1700000000123, seed, false, "CREATE TABLE t(x)", q))
		if res[1].Error != "" {
			t.Fatal(res[1].Error)
		}
		return res[1].Values[0]
	}
	a, b, c := run(7), run(7), run(8)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same entry, different values: %v and %v", a, b)
	}
	if reflect.DeepEqual(a[:2], c[:2]) {
		t.Fatalf("another seed, same random values: %v", a)
	}
	if a[2] != "2023-11-14 22:13:20" || a[3] != "2023-11-14 22:13:20" || a[4] != int64(1700000000) {
		t.Fatalf("'now': got %v, want the entry time 2023-11-14 22:13:20", a[2:])
	}
}

// A full disk (here: the file's page limit) is this node's failure, not
// the entry's: the batch is rolled back, ApplyBatch returns ErrLocal, and
// nothing is recorded; with room again the entry applies as anywhere else.
func TestDB_LocalFailureIsNotAnOutcome(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "full.sqlite")
	open := func(maxPages int64) *DB {
		db, err := Open(path, Options{Node: "n1", Readers: 1, MaxPages: maxPages})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open(0)
	applyOutcome(t, db, 1, entry(0, 0, false, "CREATE TABLE t(x)"))
	db.Close()
	db = open(8) // about 32 KB: the entry below needs more
	big := entry(0, 0, false, "INSERT INTO t VALUES('small')", "INSERT INTO t VALUES(zeroblob(200000))", "INSERT INTO t VALUES('after')")
	err := db.ApplyBatch(context.Background(), []Msg{{Seq: 2, Data: big}})
	if !errors.Is(err, ErrLocal) {
		t.Fatalf("got %v, want ErrLocal", err)
	}
	if got := db.Applied(); got != 1 {
		t.Fatalf("applied %d after a full disk, want 1", got)
	}
	db.Close()
	db = open(0)
	defer db.Close()
	res := applyOutcome(t, db, 2, big)
	for i, r := range res {
		if r.Error != "" {
			t.Fatalf("with room, statement %d: %s", i+1, r.Error)
		}
	}
	if got := read(t, db, "SELECT count(*) FROM t"); got[0][0] != int64(3) {
		t.Fatalf("rows: %v, want 3", got)
	}
}

// The long operations on a file of its own (quick_check, the checkpoint
// of a loaded file) stop once their context is done, with ctx's error:
// never a verdict on the file (not ErrLoadInvalid, so a node stopping in
// the middle of a load never refuses it alone), and a load entry
// interrupted there is applied again, whole, by the next call.
func TestDB_LongOperationsStopWithContext(t *testing.T) {
	dir := t.TempDir()
	// A plain SQLite file to load.
	src := filepath.Join(dir, "src.sqlite")
	c, err := sqlite.OpenConn(src, sqlite.OpenReadWrite|sqlite.OpenCreate)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlitex.ExecuteScript(c, "CREATE TABLE n(x); INSERT INTO n VALUES(1), (2);", nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	srcBytes, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, srcBytes, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stopped, stop := context.WithCancel(context.Background())
	stop()

	if err := PrepareLoadFile(stopped, fetch("check.sqlite"), ""); !errors.Is(err, context.Canceled) || errors.Is(err, ErrLoadInvalid) {
		t.Fatalf("PrepareLoadFile, stopped: got %v, want context.Canceled and not ErrLoadInvalid", err)
	}
	if err := PrepareLoadFile(context.Background(), fetch("check.sqlite"), ""); err != nil {
		t.Fatalf("PrepareLoadFile: %v", err)
	}

	// The loader's context ends while the fetched file is being prepared.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := Open(filepath.Join(dir, "db.sqlite"), Options{Node: "n1", Readers: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Loader: func(lctx context.Context, seq uint64, l *Load, dir string) (string, bool, error) {
			p := fetch("fetched.sqlite")
			cancel() // the node stops
			return p, false, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	load := (&Entry{Node: "n1", Token: "load", Time: 1700000000000, Load: &Load{Bucket: "b", Object: "o"}}).Encode()
	outcome, stopWaiting := db.Await("load")
	defer stopWaiting()
	if err := db.ApplyBatch(ctx, []Msg{{Seq: 1, Data: load}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("load interrupted: got %v, want context.Canceled", err)
	}
	if got := db.Applied(); got != 0 {
		t.Fatalf("load interrupted: applied %d, want 0", got)
	}
	select {
	case o := <-outcome:
		t.Fatalf("load interrupted: an outcome was delivered: %+v", o)
	default:
	}
	if err := db.ApplyBatch(context.Background(), []Msg{{Seq: 1, Data: load}}); err != nil {
		t.Fatal(err)
	}
	if o := <-outcome; len(o.Results) != 1 || o.Results[0].Error != "" {
		t.Fatalf("load: outcome %+v", o)
	}
	if got := read(t, db, "SELECT count(*) FROM n"); got[0][0] != int64(2) {
		t.Fatalf("loaded rows: %v, want 2", got)
	}

	path := filepath.Join(dir, "db.sqlite")
	if _, err := ReadSnapshotInfo(stopped, path); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadSnapshotInfo, stopped: got %v, want context.Canceled", err)
	}
	if info, err := ReadSnapshotInfo(context.Background(), path); err != nil || info.Seq != 1 {
		t.Fatalf("ReadSnapshotInfo: %+v, %v; want sequence 1", info, err)
	}
	if _, err := db.Snapshot(stopped, filepath.Join(dir, "snap.sqlite")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Snapshot, stopped: got %v, want context.Canceled", err)
	}
}

// sqliteOpen opens a plain zombiezen connection (no nqlite), with nqlite's
// length limit.
func sqliteOpen(path string) (*sqlite.Conn, error) {
	c, err := sqlite.OpenConn(path, sqlite.OpenReadWrite|sqlite.OpenCreate)
	if err == nil {
		c.Limit(sqlite.LimitLength, MaxValueBytes)
	}
	return c, err
}

// execPlain runs one statement with zombiezen's Step.
func execPlain(c *sqlite.Conn, q string) error {
	s, _, err := c.PrepareTransient(q)
	if err != nil {
		return err
	}
	defer s.Finalize()
	for {
		row, err := s.Step()
		if err != nil || !row {
			return err
		}
	}
}

// TestDB_WALCheckpoints: the WAL is checkpointed beside the apply, on the
// checkpoint connection, once the apply wrote walBackgroundFrames frames,
// well before the apply connection's own checkpoint at walAutocheckpoint
// frames; and the WAL still restarts, so it stays near walAutocheckpoint
// frames however many the entries write (here about five times as many).
func TestDB_WALCheckpoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal.sqlite")
	db := openDB(t, path)
	ctx := context.Background()
	if err := db.ApplyBatch(ctx, []Msg{{Seq: 1, Data: entry(0, 0, false, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")}}); err != nil {
		t.Fatal(err)
	}
	size := func(name string) int64 {
		t.Helper()
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	// Each entry writes at least four frames: its row's page (a 4,000-byte
	// value fills one), _nqlite_meta's page twice (the applied sequence
	// first, the running digest at the commit) and the change counts'.
	big := strings.Repeat("x", 4000)
	seq := uint64(1)
	apply := func(n int) {
		t.Helper()
		for range n {
			seq++
			if err := db.ApplyBatch(ctx, []Msg{{Seq: seq, Data: entry(0, 0, false, "INSERT INTO t(v) VALUES('"+big+"')")}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// 400 entries: more than walBackgroundFrames frames, far fewer than
	// walAutocheckpoint. Only a background checkpoint copies their pages
	// into the database file.
	dbBefore := size(path)
	apply(400)
	waitFor(t, 10*time.Second, "a background checkpoint to copy the rows into the database file", func() bool {
		return db.ckpt.runs.Load() > 0 && size(path) > dbBefore+100*4096
	})

	const entries = 5000
	apply(entries)
	// The WAL file never shrinks (a restart writes over it from its
	// start), so its size is the most frames it held at once. The apply
	// connection's checkpoint does not run while a background one does,
	// so the WAL can pass walAutocheckpoint by the frames of a few more
	// commits.
	const frame = 4096 + 24 // a 4 KiB page and its frame header
	got := size(path+"-wal") / frame
	t.Logf("WAL of %d frames after %d entries of at least 4 frames each; %d background checkpoints", got, 400+entries, db.ckpt.runs.Load())
	if got > walAutocheckpoint+walBackgroundFrames {
		t.Errorf("WAL of %d frames after at least %d written: not restarted near %d", got, 4*entries, walAutocheckpoint)
	}
}

// waitFor polls cond every 10ms until it returns true or the
// deadline passes (then it fails the test with what it waited for).
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
