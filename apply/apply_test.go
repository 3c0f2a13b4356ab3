package apply

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service/api"
)

func openDB(tb testing.TB, path string) *DB {
	tb.Helper()
	db, err := Open(path, Options{Node: "n1", Readers: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

func entry(t int64, seed int64, tx bool, sql ...string) []byte {
	e := &Entry{Node: "n1", Token: "tok", Time: t, Seed: seed, Tx: tx}
	for _, s := range sql {
		e.Statements = append(e.Statements, api.Statement{SQL: s})
	}
	return e.Encode()
}

// read runs a read request on db's read pool.
func read(tb testing.TB, db *DB, sql string) [][]any {
	tb.Helper()
	p, err := db.Prepare(context.Background(), []api.Statement{{SQL: sql}})
	if err != nil {
		tb.Fatal(err)
	}
	res, _, err := p.Run(context.Background(), 0)
	if err != nil || res[0].Error != "" {
		tb.Fatalf("%s: %v %s", sql, err, res[0].Error)
	}
	return res[0].Values
}

// applyOutcome applies one entry with a waiter and returns its results.
func applyOutcome(tb testing.TB, db *DB, seq uint64, data []byte) []api.Result {
	tb.Helper()
	e, err := DecodeEntry(data)
	if err != nil {
		tb.Fatal(err)
	}
	ch, cancel := db.Await(e.Token)
	defer cancel()
	if err := db.ApplyBatch(context.Background(), []Msg{{Seq: seq, Data: data}}); err != nil {
		tb.Fatal(err)
	}
	return (<-ch).Results
}

func TestEntry_RoundTrip(t *testing.T) {
	e := &Entry{Node: "n1", Token: "t", Time: 1700000000123, Seed: -5, Budget: Budget{Steps: 7, Bytes: 1 << 40}, SQLite: "3.49.2", Tx: true, Statements: []api.Statement{
		{SQL: "INSERT INTO t VALUES(?, ?, ?, ?, ?)", Params: []any{int64(1), 2.0, "x", nil, []byte{0, 1}}},
		{SQL: "SELECT :a", Named: map[string]any{"a": int64(-9223372036854775808)}},
	}}
	got, err := DecodeEntry(e.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("got  %+v\nwant %+v", got, e)
	}
}

func TestDB_Now(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	ts := time.Date(2024, 1, 2, 3, 4, 5, 678e6, time.UTC).UnixMilli()
	res := applyOutcome(t, db, 1, entry(ts, 1, false,
		"SELECT datetime('now'), CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME, date(), time('NOW'), strftime('%Y %f'), strftime('%s', 'now'), unixepoch(), datetime('now', '+1 day', 'subsec'), julianday('now') = julianday('2024-01-02 03:04:05.678'), datetime(0, 'unixepoch')",
		"SELECT datetime('now', 'localtime')",
		"SELECT random() = random(), length(randomblob(3)), length(randomblob(0))",
	))
	want := []any{"2024-01-02 03:04:05", "2024-01-02 03:04:05", "2024-01-02", "03:04:05", "2024-01-02", "03:04:05",
		"2024 05.678", "1704164645", int64(1704164645), "2024-01-03 03:04:05.678", int64(1), "1970-01-01 00:00:00"}
	if got := res[0].Values[0]; !reflect.DeepEqual(got, want) {
		t.Fatalf("now:\n got %#v\nwant %#v", got, want)
	}
	if res[1].Error == "" || !bytes.Contains([]byte(res[1].Error), []byte("localtime")) {
		t.Fatalf("localtime: %+v", res[1])
	}
	if got := res[2].Values[0]; !reflect.DeepEqual(got, []any{int64(0), int64(3), int64(1)}) {
		t.Fatalf("random: %#v", got)
	}
}

// TestDB_BatchingInvariance applies the same entries one per batch on one
// database (closing and reopening it half way) and all in one batch on
// another: the files must be identical, whatever the grouping, including a
// statement that rolls back the whole SQLite transaction.
func TestDB_BatchingInvariance(t *testing.T) {
	ts := int64(1700000000000)
	var msgs []Msg
	add := func(tx bool, sql ...string) {
		msgs = append(msgs, Msg{Seq: uint64(len(msgs) + 1), Data: entry(ts+int64(len(msgs)), int64(len(msgs))*7919, tx, sql...)})
	}
	add(false, "CREATE TABLE t(id INTEGER PRIMARY KEY, r INT DEFAULT (random()), at TEXT DEFAULT CURRENT_TIMESTAMP, lid INT, ch INT)")
	add(false, "CREATE TRIGGER tr AFTER UPDATE ON t BEGIN INSERT INTO t(lid) VALUES(-new.id); END")
	add(false, "INSERT INTO t(id) VALUES(1)", "INSERT INTO t(lid, ch) VALUES(last_insert_rowid(), changes())")
	add(false, "INSERT INTO t(lid, ch) VALUES(last_insert_rowid(), changes())")
	msgs = append(msgs, Msg{Seq: uint64(len(msgs) + 1), Data: []byte("garbage")})
	msgs = append(msgs, Msg{Seq: uint64(len(msgs) + 1), Data: Barrier()}) // skipped, not counted as skipped
	add(false, "INSERT INTO t(id) VALUES(10)", "INSERT OR ROLLBACK INTO t(id) VALUES(1)", "INSERT INTO t(id) VALUES(11)")
	add(true, "INSERT INTO t(id) VALUES(20)", "INSERT INTO t(id) VALUES(1)")
	add(false, "BEGIN", "INSERT INTO t(id) VALUES(30)")
	add(false, "UPDATE t SET r = random() WHERE id = 10", "INSERT INTO t(lid, ch) VALUES(last_insert_rowid(), changes())")
	add(false, "INSERT INTO t(lid) VALUES(hex(randomblob(16)))")
	// Rows written and deleted within one batch but committed in between
	// when applied one by one: freed space must not keep what it held.
	add(false, "CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT)", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 500) INSERT INTO big(v) SELECT printf('%0500d', x) FROM c")
	add(false, "DELETE FROM big WHERE id % 3 = 0")
	add(false, "DELETE FROM big")

	dirA, dirB := t.TempDir(), t.TempDir()
	a := openDB(t, filepath.Join(dirA, "db.sqlite"))
	for i, m := range msgs {
		if i == 3 { // a restart right before last_insert_rowid() and changes() are read
			a.Close()
			a = openDB(t, filepath.Join(dirA, "db.sqlite"))
			if got := a.Applied(); got != 3 {
				t.Fatalf("applied after reopen: %d, want 3", got)
			}
		}
		if err := a.ApplyBatch(context.Background(), []Msg{m}); err != nil {
			t.Fatal(err)
		}
	}
	b := openDB(t, filepath.Join(dirB, "db.sqlite"))
	if err := b.ApplyBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	// Redelivery of applied entries changes nothing.
	if err := b.ApplyBatch(context.Background(), msgs[3:]); err != nil {
		t.Fatal(err)
	}
	if a.Skipped() != 1 || b.Skipped() != 1 {
		t.Fatalf("skipped: a %d, b %d", a.Skipped(), b.Skipped())
	}
	ids := read(t, b, "SELECT group_concat(id) FROM (SELECT id FROM t WHERE id IN (1, 10, 11, 20, 30) ORDER BY id)")
	if got := ids[0][0]; got != "1,10,11" {
		t.Fatalf("ids: %v, want 1,10,11", got)
	}
	a.Close()
	b.Close()
	fa, _ := os.ReadFile(filepath.Join(dirA, "db.sqlite"))
	fb, _ := os.ReadFile(filepath.Join(dirB, "db.sqlite"))
	if len(fa) < 100 || len(fa) != len(fb) {
		t.Fatalf("sizes %d and %d", len(fa), len(fb))
	}
	// File change counters (header bytes 24-27, 92-95) count opens, not content.
	copy(fa[24:28], fb[24:28])
	copy(fa[92:96], fb[92:96])
	if !bytes.Equal(fa, fb) {
		t.Fatal("files differ between one-entry batches and one batch")
	}
}

func TestDB_Prepare(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	applyOutcome(t, db, 1, entry(1, 1, false, "CREATE TABLE t(x)"))
	for sql, write := range map[string]bool{
		"SELECT * FROM t": false, "EXPLAIN SELECT 1": false, "PRAGMA table_info(t)": false, "PRAGMA user_version": false,
		"INSERT INTO t VALUES(1)": true, "BEGIN": true, "COMMIT": true, "SAVEPOINT a": true, "PRAGMA user_version=3": true,
		"CREATE TABLE u(y)": true, "DROP TABLE t": true, "DROP TABLE IF EXISTS nosuch": true,
	} {
		p, err := db.Prepare(context.Background(), []api.Statement{{SQL: sql}})
		if err != nil {
			t.Errorf("%s: %v", sql, err)
			continue
		}
		if p.Write() != write {
			t.Errorf("%s: write %v, want %v", sql, p.Write(), write)
		}
		p.Close()
	}
	for _, sql := range []string{"VACUUM", "VACUUM INTO 'x.db'"} {
		_, err := db.Prepare(context.Background(), []api.Statement{{SQL: sql}})
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeForbidden {
			t.Errorf("%s: %v, want 403", sql, err)
		}
	}
}

// TestDB_PrepareStaleSchema: a read connection that loaded the schema
// before an index was created still classifies REINDEX of it (SQLite does
// not re-check the schema for that prepare error by itself).
func TestDB_PrepareStaleSchema(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	applyOutcome(t, db, 1, entry(1, 1, false, "CREATE TABLE t(x)"))
	for i := 0; i < 2; i++ { // every read connection loads the schema
		read(t, db, "SELECT count(*) FROM t")
	}
	applyOutcome(t, db, 2, entry(1, 1, false, "CREATE INDEX i ON t(x)"))
	for i := 0; i < 2; i++ {
		p, err := db.Prepare(context.Background(), []api.Statement{{SQL: "REINDEX i"}})
		if err != nil {
			t.Fatal(err)
		}
		if p.Failed() || !p.Write() {
			t.Fatalf("REINDEX i: failed %v, write %v", p.Failed(), p.Write())
		}
		p.Close()
	}
}

// FuzzDecodeEntry: any message either decodes to an entry that encodes
// back to the same bytes' meaning, or is refused with ErrInvalidEntry, or
// (a later format version) with ErrUnknownVersion; never a panic.
func FuzzDecodeEntry(f *testing.F) {
	f.Add(entry(1, 2, true, "SELECT 1", "INSERT INTO t VALUES(1)"))
	f.Add((&Entry{Statements: []api.Statement{{SQL: "x", Params: []any{nil, int64(-1), 1.5, "s", []byte{0}}}, {SQL: "y", Named: map[string]any{"a": int64(1)}}}}).Encode())
	f.Add((&Entry{Budget: Budget{Steps: 1, Bytes: 2}, SQLite: "3.49.2", Load: &Load{Bucket: "b", Object: "o", Digest: "d", SQL: true}}).Encode())
	f.Add((&Entry{Node: "n", Statements: []api.Statement{{SQL: "x"}}}).encode(1))
	f.Add([]byte("nq\x01"))
	f.Add([]byte("nq\x02"))
	f.Add([]byte("nq\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEntry(data)
		if err != nil {
			unknown, invalid := errors.Is(err, ErrUnknownVersion), errors.Is(err, ErrInvalidEntry)
			if unknown == invalid {
				t.Fatalf("error %v: wraps ErrUnknownVersion %v, ErrInvalidEntry %v; want exactly one", err, unknown, invalid)
			}
			if unknown != (len(data) >= 3 && data[0] == 'n' && data[1] == 'q' && data[2] > EntryVersion) {
				t.Fatalf("error %v for a message of version %d", err, data[2])
			}
			return
		}
		if e.Budget.Steps == 0 || e.Budget.Steps > MaxSteps || e.Budget.Bytes == 0 {
			t.Fatalf("decoded budget %+v", e.Budget)
		}
		again, err := DecodeEntry(e.Encode())
		if err != nil || !reflect.DeepEqual(again, e) {
			t.Fatalf("re-encoding: %v\n%+v\n%+v", err, again, e)
		}
	})
}
