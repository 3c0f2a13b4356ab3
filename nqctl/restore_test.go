package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"github.com/nqlite/nqlite/apply"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/servicetest"
)

// twoNodes starts a nats-server and two nodes serving main (snapshots
// only on demand) and returns the server's URL and the nodes.
func twoNodes(t *testing.T) (string, []*servicetest.Node) {
	t.Helper()
	ns := servicetest.StartServer(t)
	var nodes []*servicetest.Node
	for _, id := range []string{"n1", "n2"} {
		nodes = append(nodes, servicetest.StartNode(t, ns.ClientURL(), service.Config{
			NodeID:   id,
			Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
			Snapshot: service.SnapshotConfig{Interval: time.Hour},
		}))
	}
	return ns.ClientURL(), nodes
}

// populate writes what every source database holds: a rowid table with
// an index and BLOBs, a WITHOUT ROWID table, freed pages (for auto_vacuum)
// and user_version/application_id. part2 goes last (into the -wal, for
// the kinds that keep one).
const (
	populate1 = `CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 400)
INSERT INTO t SELECT i, printf('row %d', i), randomblob(i % 97 * 13) FROM n;
CREATE INDEX t_v ON t(v);
`
	populate2 = `CREATE TABLE w(k TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO w VALUES('a', 1), ('b', 2), ('c', 3);
DELETE FROM t WHERE id % 7 = 0;
UPDATE t SET v = v || '!' WHERE id % 5 = 0;
PRAGMA user_version=42;
PRAGMA application_id=1364283732;
`
)

// fingerprint identifies populate's data (random BLOBs included).
const fingerprint = `SELECT (SELECT count(*) || ',' || total(id) || ',' || total(length(b)) || ',' || total(id * length(v)) || ',' || sum(v LIKE '%!') FROM t)
 || '|' || (SELECT hex(substr(b, 1, 16)) FROM t WHERE id = 333)
 || '|' || (SELECT group_concat(k || '=' || n, ',') FROM (SELECT k, n FROM w ORDER BY k))
 || '|' || (SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_schema WHERE name NOT LIKE '%nqlite%' ORDER BY name))`

// source says how a source database is made.
type source struct {
	pageSize   int
	autoVacuum string // "", "full", "incremental"
	journal    string // delete, truncate, persist, memory, off, wal
	keepWAL    bool   // leave committed transactions in FILE-wal
}

func (s source) pragmas() string {
	p := fmt.Sprintf("PRAGMA page_size=%d;\n", s.pageSize)
	if s.autoVacuum != "" {
		p += "PRAGMA auto_vacuum=" + s.autoVacuum + ";\n"
	}
	return p + "PRAGMA journal_mode=" + s.journal + ";\n"
}

// checkHeader checks that the file at path has what s asked for, as its
// 100-byte SQLite header says: the page size (bytes 16-17, 1 for 65536),
// WAL or rollback journal (bytes 18-19: 2 or 1), auto_vacuum (bytes 52-55
// not 0) and incremental vacuum (bytes 64-67), so a test case covers the
// file it names.
func (s source) checkHeader(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := make([]byte, 100)
	if _, err := io.ReadFull(f, h); err != nil {
		t.Fatal(err)
	}
	be := func(b []byte) uint32 {
		var v uint32
		for _, x := range b {
			v = v<<8 | uint32(x)
		}
		return v
	}
	pageSize := int(be(h[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	wal := h[18] == 2 && h[19] == 2
	av := ""
	if be(h[52:56]) != 0 {
		av = "full"
		if be(h[64:68]) != 0 {
			av = "incremental"
		}
	}
	if pageSize != s.pageSize || wal != (s.journal == "wal") || av != s.autoVacuum {
		t.Fatalf("source header: page size %d, wal %v, auto_vacuum %q; want %d, %v, %q", pageSize, wal, av, s.pageSize, s.journal == "wal", s.autoVacuum)
	}
}

// withShell makes the database at path with the sqlite3 shell.
func (s source) withShell(t *testing.T, path string) {
	t.Helper()
	script := s.pragmas()
	args := []string{"-bail"}
	if s.keepWAL {
		args = append(args, "-cmd", ".dbconfig no_ckpt_on_close on")
		script += "PRAGMA wal_autocheckpoint=0;\n"
	}
	script += populate1
	if s.keepWAL {
		script += "PRAGMA wal_checkpoint;\n" // part 1 in the file, part 2 in the -wal
	}
	script += populate2
	cmd := exec.Command("sqlite3", append(args, path)...)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sqlite3: %v\n%s", err, out)
	}
}

// withZombiezen makes the database at path with zombiezen.com/go/sqlite.
// For keepWAL the files are copied while the connection is open (a
// database copied while in use), as closing it checkpoints the -wal.
func (s source) withZombiezen(t *testing.T, path string) {
	t.Helper()
	apply.SQLiteRandomness().Lock() // SQLite beside nodes in this process (apply.SQLiteRandomness)
	defer apply.SQLiteRandomness().Unlock()
	at := path
	if s.keepWAL {
		at = filepath.Join(t.TempDir(), "live.db")
	}
	c, err := sqlite.OpenConn(at, sqlite.OpenReadWrite|sqlite.OpenCreate)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exec := func(sql string) {
		t.Helper()
		if err := sqlitex.ExecuteScript(c, sql, nil); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for _, q := range strings.Split(strings.TrimSpace(s.pragmas()), "\n") {
		if err := sqlitex.ExecuteTransient(c, q, nil); err != nil { // outside a transaction
			t.Fatalf("%s: %v", q, err)
		}
	}
	if s.keepWAL {
		exec("PRAGMA wal_autocheckpoint=0;")
	}
	exec(populate1)
	if s.keepWAL {
		if err := sqlitex.ExecuteTransient(c, "PRAGMA wal_checkpoint", nil); err != nil {
			t.Fatal(err)
		}
	}
	exec(populate2)
	if s.keepWAL {
		copyFile(t, at, path)
		copyFile(t, at+"-wal", path+"-wal")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fileFacts reads fingerprint, user_version and application_id from a
// copy of the database at path (with its -wal when withWAL), leaving the
// source files as they are; ok is false when the copy has no such data.
func fileFacts(t *testing.T, path string, withWAL bool) (facts string, ok bool) {
	t.Helper()
	apply.SQLiteRandomness().Lock() // SQLite beside nodes in this process (apply.SQLiteRandomness)
	defer apply.SQLiteRandomness().Unlock()
	cp := filepath.Join(t.TempDir(), "copy.db")
	copyFile(t, path, cp)
	if withWAL {
		copyFile(t, path+"-wal", cp+"-wal")
	}
	c, err := sqlite.OpenConn(cp, sqlite.OpenReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var parts []string
	for _, q := range []string{fingerprint, "PRAGMA user_version", "PRAGMA application_id"} {
		err := sqlitex.ExecuteTransient(c, q, &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
			parts = append(parts, s.ColumnText(0))
			return nil
		}})
		if err != nil {
			return err.Error(), false
		}
	}
	return strings.Join(parts, " / "), true
}

// nodeRead runs one read on node's own copy of main and returns the first
// column of its rows, as text.
func nodeRead(t *testing.T, n *servicetest.Node, sql string) string {
	t.Helper()
	p, err := n.DB("main").Prepare(context.Background(), []api.Statement{{SQL: sql}})
	if err != nil {
		t.Fatalf("%s: %s: %v", n.ID(), sql, err)
	}
	res, _, err := p.Run(context.Background(), 0)
	if err != nil || res[0].Error != "" {
		t.Fatalf("%s: %s: %v %+v", n.ID(), sql, err, res)
	}
	var out []string
	for _, row := range res[0].Values {
		out = append(out, fmt.Sprint(row[0]))
	}
	return strings.Join(out, ",")
}

// nodeFacts is fileFacts read on a node.
func nodeFacts(t *testing.T, n *servicetest.Node) string {
	t.Helper()
	var parts []string
	for _, q := range []string{fingerprint, "PRAGMA user_version", "PRAGMA application_id"} {
		parts = append(parts, nodeRead(t, n, q))
	}
	return strings.Join(parts, " / ")
}

var restoredSeq = regexp.MustCompile(`at sequence (\d+) on every node`)

// loadObjects lists the objects under load/main/ in the snapshot bucket.
func loadObjects(t *testing.T, url string) []string {
	t.Helper()
	nc := servicetest.Connect(t, url)
	js, _ := jetstream.New(nc)
	obj, err := js.ObjectStore(context.Background(), api.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obj.List(context.Background())
	if err != nil && err != jetstream.ErrNoObjectsFound {
		t.Fatal(err)
	}
	var names []string
	for _, info := range infos {
		if strings.HasPrefix(info.Name, "load/main/") {
			names = append(names, info.Name)
		}
	}
	return names
}

// TestRestore_FileKinds restores SQLite files of every journal mode, page
// size and auto_vacuum setting, made by the sqlite3 shell and by
// zombiezen, with nqctl restore into two nodes: both hold the data,
// user_version and application_id afterwards, in WAL mode, at the load's
// sequence. A WAL database whose -wal holds committed transactions not
// checkpointed into the file is restored with them.
func TestRestore_FileKinds(t *testing.T) {
	url, nodes := twoNodes(t)
	mustRun(t, nil, "--server", url, "CREATE TABLE before(x)")
	shell := func(t *testing.T) {
		if _, err := exec.LookPath("sqlite3"); err != nil {
			t.Skip("sqlite3 is not installed (Debian: apt-get install -y sqlite3)")
		}
	}
	for _, tc := range []struct {
		name  string
		src   source
		shell bool
	}{
		{"sqlite3/delete", source{pageSize: 4096, journal: "delete"}, true},
		{"sqlite3/truncate", source{pageSize: 1024, journal: "truncate"}, true},
		{"sqlite3/persist", source{pageSize: 8192, journal: "persist", autoVacuum: "full"}, true},
		{"sqlite3/memory", source{pageSize: 2048, journal: "memory", autoVacuum: "incremental"}, true},
		{"sqlite3/off", source{pageSize: 16384, journal: "off"}, true},
		{"sqlite3/wal", source{pageSize: 4096, journal: "wal"}, true},
		{"sqlite3/wal-uncheckpointed", source{pageSize: 4096, journal: "wal", keepWAL: true}, true},
		{"sqlite3/page512-full", source{pageSize: 512, journal: "delete", autoVacuum: "full"}, true},
		{"sqlite3/page65536-incremental", source{pageSize: 65536, journal: "delete", autoVacuum: "incremental"}, true},
		{"sqlite3/wal-page512-uncheckpointed", source{pageSize: 512, journal: "wal", keepWAL: true, autoVacuum: "incremental"}, true},
		{"sqlite3/wal-page65536-uncheckpointed", source{pageSize: 65536, journal: "wal", keepWAL: true, autoVacuum: "full"}, true},
		{"sqlite3/wal-page32768-incremental", source{pageSize: 32768, journal: "wal", autoVacuum: "incremental"}, true},
		{"zombiezen/delete", source{pageSize: 4096, journal: "delete"}, false},
		{"zombiezen/persist-page1024-full", source{pageSize: 1024, journal: "persist", autoVacuum: "full"}, false},
		{"zombiezen/memory-page2048", source{pageSize: 2048, journal: "memory"}, false},
		{"zombiezen/off-page32768-incremental", source{pageSize: 32768, journal: "off", autoVacuum: "incremental"}, false},
		{"zombiezen/truncate-page512-incremental", source{pageSize: 512, journal: "truncate", autoVacuum: "incremental"}, false},
		{"zombiezen/wal-page65536-full", source{pageSize: 65536, journal: "wal", autoVacuum: "full"}, false},
		{"zombiezen/wal-uncheckpointed", source{pageSize: 4096, journal: "wal", keepWAL: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "src.db")
			if tc.shell {
				shell(t)
				tc.src.withShell(t, path)
			} else {
				tc.src.withZombiezen(t, path)
			}
			tc.src.checkHeader(t, path)
			want, ok := fileFacts(t, path, tc.src.keepWAL)
			if !ok {
				t.Fatalf("source: %s", want)
			}
			if !strings.HasSuffix(want, " / 42 / 1364283732") {
				t.Fatalf("source facts %q: want user_version 42, application_id 1364283732", want)
			}
			if tc.src.keepWAL {
				if alone, _ := fileFacts(t, path, false); alone == want {
					t.Fatal("the source's -wal holds nothing the file lacks: the test proves nothing")
				}
			}
			o := mustRun(t, nil, "restore", "--server", url, path)
			m := restoredSeq.FindStringSubmatch(o.stderr)
			if m == nil {
				t.Fatalf("restore: %s", o.stderr)
			}
			if tc.src.keepWAL != strings.Contains(o.stderr, "with its write-ahead log") {
				t.Errorf("restore output %q: the -wal upload is not reported right", o.stderr)
			}
			seq, _ := strconv.ParseUint(m[1], 10, 64)
			for _, n := range nodes {
				servicetest.WaitFor(t, 20*time.Second, n.ID()+" to apply the load", func() bool { return n.DB("main").Applied() >= seq })
				if got := nodeFacts(t, n); got != want {
					t.Errorf("%s holds\n %s\nwant\n %s", n.ID(), got, want)
				}
				if got := nodeRead(t, n, "PRAGMA journal_mode"); got != "wal" {
					t.Errorf("%s: journal_mode %s, want wal", n.ID(), got)
				}
				if got := nodeRead(t, n, "SELECT value FROM _nqlite_meta WHERE key = 'applied_seq'"); got != fmt.Sprint(seq) {
					t.Errorf("%s: applied_seq %s, want %d", n.ID(), got, seq)
				}
				if got := nodeRead(t, n, "SELECT count(*) FROM sqlite_schema WHERE name = 'before'"); got != "0" {
					t.Errorf("%s: the table from before the restore survived", n.ID())
				}
			}
			for _, name := range loadObjects(t, url) {
				if strings.HasSuffix(name, "-wal") {
					t.Errorf("uploaded -wal object %s left in the bucket after the merge", name)
				}
			}
			// Writes go on, on every node.
			mustRun(t, nil, "--server", url, "INSERT INTO w VALUES('z', 26)")
		})
	}
}

// TestRestore_SQLiteShellDump: a dump made by sqlite3's .dump (starting
// with PRAGMA foreign_keys=OFF, which nqlite refuses in requests) loads.
func TestRestore_SQLiteShellDump(t *testing.T) {
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Skip("sqlite3 is not installed (Debian: apt-get install -y sqlite3)")
	}
	url, nodes := twoNodes(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "src.db")
	source{pageSize: 4096, journal: "delete"}.withShell(t, db)
	dump, err := exec.Command("sqlite3", db, ".dump").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(dump), "PRAGMA foreign_keys=OFF;") {
		t.Fatalf("sqlite3's dump starts %.40q", dump)
	}
	file := filepath.Join(dir, "dump.sql")
	os.WriteFile(file, dump, 0o644)
	o := mustRun(t, nil, "restore", "--server", url, file)
	m := restoredSeq.FindStringSubmatch(o.stderr)
	if m == nil || !strings.Contains(o.stderr, "(SQL dump") {
		t.Fatalf("restore: %s", o.stderr)
	}
	seq, _ := strconv.ParseUint(m[1], 10, 64)
	want, _ := fileFacts(t, db, false)
	want = strings.TrimSuffix(want, " / 42 / 1364283732") // a dump has no user_version
	for _, n := range nodes {
		servicetest.WaitFor(t, 20*time.Second, n.ID()+" to apply the load", func() bool { return n.DB("main").Applied() >= seq })
		if got := nodeRead(t, n, fingerprint); got != want {
			t.Errorf("%s holds %s, want %s", n.ID(), got, want)
		}
	}
}

// TestRestore_Unusable: files nothing can load are refused with their
// reason, by nqctl before uploading or by the node before publishing, and
// nothing changes: same data on every node, no new stream entry, no load
// object left behind.
func TestRestore_Unusable(t *testing.T) {
	url, nodes := twoNodes(t)
	mustRun(t, nil, "--server", url, "CREATE TABLE keep(x); INSERT INTO keep VALUES(1), (2)")
	nc := servicetest.Connect(t, url)
	dir := t.TempDir()

	good := filepath.Join(dir, "good.db")
	source{pageSize: 4096, journal: "wal", keepWAL: true}.withZombiezen(t, good)
	random := make([]byte, 64<<10)
	rand.Read(random)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodData, _ := os.ReadFile(good)
	walData, _ := os.ReadFile(good + "-wal")
	corrupt := append([]byte(nil), goodData...)
	for off := 4096; off+512 <= len(corrupt); off += 4096 {
		copy(corrupt[off+100:off+612], random) // every page after the first
	}
	// A database in delete mode, and the -wal of a 1024-byte-page database.
	other := filepath.Join(dir, "other.db")
	source{pageSize: 1024, journal: "wal", keepWAL: true}.withZombiezen(t, other)
	otherWAL, _ := os.ReadFile(other + "-wal")
	hot := write("hot.db", goodData)
	write("hot.db-journal", append([]byte{0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7}, random[:1000]...))
	mismatched := write("mismatched.db", goodData)
	write("mismatched.db-wal", otherWAL)

	facts := func() []string {
		var out []string
		for _, n := range nodes {
			out = append(out, nodeRead(t, n, "SELECT group_concat(x) FROM keep")+" @"+fmt.Sprint(n.DB("main").Applied()))
		}
		return out
	}
	// The baseline once both nodes applied the table (a node's rows may be
	// committed a moment before its applied sequence moves).
	servicetest.WaitFor(t, 10*time.Second, "both nodes apply the table", func() bool {
		a := nodes[0].DB("main").Applied()
		return a >= 1 && nodes[1].DB("main").Applied() == a
	})
	before := facts()
	unchanged := func(t *testing.T) {
		t.Helper()
		if got := facts(); fmt.Sprint(got) != fmt.Sprint(before) {
			t.Errorf("nodes changed: %v, want %v", got, before)
		}
		if objs := loadObjects(t, url); len(objs) > 0 {
			t.Errorf("load objects left behind: %v", objs)
		}
	}

	// Through nqctl restore.
	for _, tc := range []struct{ name, file, want string }{
		{"random bytes", write("random.bin", random), "neither a SQLite database (no SQLite header) nor SQL text"},
		{"encrypted", write("encrypted.db", append(random[:16:16], goodData[16:]...)), "neither a SQLite database"},
		{"corrupt", write("corrupt.db", corrupt), "the SQLite database is corrupt: PRAGMA quick_check"},
		{"truncated", write("truncated.db", goodData[:60]), "shorter than the 100-byte SQLite header"},
		{"-wal without its db", write("orphan.db-wal", walData), "is a SQLite write-ahead log (a -wal file), not a database"},
		{"hot journal", hot, "hot.db-journal is a hot rollback journal"},
		{"-wal of another database", mismatched, "it is another database's write-ahead log"},
		{"dump with a failing statement", write("bad.sql", []byte("CREATE TABLE a(x);\nINSERT INTO a VALUES(1);\nINSERT INTO nope VALUES(2);\n")), "statement 3 fails: no such table: nope"},
	} {
		t.Run("nqctl/"+tc.name, func(t *testing.T) {
			o := nqctl(t, nil, "restore", "--server", url, tc.file)
			if o.code != exitFailed || !strings.Contains(o.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", o.code, o.stderr, exitFailed, tc.want)
			}
			unchanged(t)
		})
	}

	// Through the load endpoint, for the node's own checks.
	js, _ := jetstream.New(nc)
	obj, err := js.ObjectStore(context.Background(), api.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string, data []byte) string {
		info, err := obj.PutBytes(context.Background(), name, data)
		if err != nil {
			t.Fatal(err)
		}
		return info.Digest
	}
	for _, tc := range []struct {
		name string
		data []byte
		sql  bool
		want string
	}{
		{"random bytes", random, false, "not a SQLite database: the file does not start with the SQLite header"},
		{"a -wal as the database", walData, false, "this is a SQLite write-ahead log (a -wal file), not a database"},
		{"binary as SQL", random, true, "the SQL text is not valid UTF-8"},
	} {
		t.Run("endpoint/"+tc.name, func(t *testing.T) {
			name := "load/main/endpoint-test"
			digest := put(name, tc.data)
			defer obj.Delete(context.Background(), name)
			body, _ := json.Marshal(api.LoadRequest{Bucket: api.SnapshotBucket, Object: name, Digest: digest, SQL: tc.sql})
			msg, err := nc.Request(service.LoadSubject("main"), body, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if code, text := msg.Header.Get("Nats-Service-Error-Code"), msg.Header.Get("Nats-Service-Error"); code != "400" || !strings.Contains(text, tc.want) {
				t.Fatalf("reply %s %q, want 400 and %q", code, text, tc.want)
			}
		})
	}
	t.Run("endpoint/-wal with a SQL dump", func(t *testing.T) {
		code, text := loadRequest(t, nc, api.LoadRequest{Bucket: api.SnapshotBucket, Object: "load/main/x", Digest: "d", SQL: true, WALObject: "load/main/x-wal", WALDigest: "d"})
		if code != "400" || !strings.Contains(text, "a wal_object goes with a SQLite file") {
			t.Fatalf("reply %s %q", code, text)
		}
	})
	t.Run("endpoint/another database's load object", func(t *testing.T) {
		code, text := loadRequest(t, nc, api.LoadRequest{Bucket: api.SnapshotBucket, Object: "load/other/x", Digest: "d"})
		if code != "400" || !strings.Contains(text, "load objects of main are under load/main/") {
			t.Fatalf("reply %s %q", code, text)
		}
	})
	unchanged(t)
}

func loadRequest(t *testing.T, nc *nats.Conn, req api.LoadRequest) (code, text string) {
	t.Helper()
	body, _ := json.Marshal(req)
	msg, err := nc.Request(service.LoadSubject("main"), body, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return msg.Header.Get("Nats-Service-Error-Code"), msg.Header.Get("Nats-Service-Error")
}
