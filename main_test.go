package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/client/nqsql"
	"github.com/nqlite/nqlite/service/servicetest"
)

// The embedded nats-server fsyncs every stored message unless --js-sync
// relaxes it: an acknowledged write of the one-command default survives a
// power cut.
func TestStartEmbedded_JSSync(t *testing.T) {
	for _, tc := range []struct {
		sync     string
		always   bool
		interval time.Duration
	}{
		{"always", true, 0},
		{"2m", false, 2 * time.Minute},
	} {
		c := config{dataDir: t.TempDir(), nodeID: "n1", natsListen: "", jsSync: tc.sync}
		ns, err := startEmbedded(c)
		if err != nil {
			t.Fatal(err)
		}
		js := ns.JetStreamConfig()
		ns.Shutdown()
		ns.WaitForShutdown()
		if js == nil || js.SyncAlways != tc.always || (tc.interval != 0 && js.SyncInterval != tc.interval) {
			t.Fatalf("--js-sync %s: got %+v", tc.sync, js)
		}
	}
	if _, err := startEmbedded(config{dataDir: t.TempDir(), nodeID: "n1", jsSync: "sometimes"}); err == nil {
		t.Fatal("--js-sync sometimes: no error")
	}
}

// The tests below build the nqlite binary (once) and run it, to send it
// real signals.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// nqliteBin returns the path of the nqlite binary built from this package.
func nqliteBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the nqlite binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nqlite-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "nqlite")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// lockedBuffer collects a process's stderr.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a running nqlite process.
type proc struct {
	cmd   *exec.Cmd
	logs  *lockedBuffer
	done  chan struct{}
	state *os.ProcessState
}

// startNQLite runs the nqlite binary with args; its log goes to the test's
// log when the test fails. It is killed at cleanup if still running.
func startNQLite(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(nqliteBin(t), args...), logs: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("nqlite %s log:\n%s", strings.Join(args, " "), p.logs.String())
		}
	})
	return p
}

// waitLog waits until the process logged a line containing s.
func (p *proc) waitLog(t *testing.T, s string) {
	t.Helper()
	servicetest.WaitFor(t, 30*time.Second, "nqlite to log "+s, func() bool { return strings.Contains(p.logs.String(), s) })
}

// signal sends sig and returns when it was sent.
func (p *proc) signal(t *testing.T, sig os.Signal) time.Time {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// waitExit waits for the process to end, at most 10 s after sent (when a
// signal was sent), and returns how it ended.
func (p *proc) waitExit(t *testing.T, sent time.Time) *os.ProcessState {
	t.Helper()
	select {
	case <-p.done:
		t.Logf("ended %v after the signal: %v", time.Since(sent).Round(time.Millisecond), p.state)
		return p.state
	case <-time.After(time.Until(sent.Add(10 * time.Second))):
		t.Fatal("nqlite did not end within 10 s of the signal")
		return nil
	}
}

// wantCleanExit fails unless the process exited with status 0.
func wantCleanExit(t *testing.T, st *os.ProcessState) {
	t.Helper()
	if !st.Exited() || st.ExitCode() != 0 {
		t.Fatalf("nqlite ended with %v, want exit status 0", st)
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// serving connects to url and waits until the node answers a request.
func serving(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	servicetest.WaitFor(t, 60*time.Second, "the node to serve", func() bool {
		_, err := nc.Request("nqlite.query.main", []byte("SELECT 1"), 2*time.Second)
		return err == nil
	})
	return nc
}

// query sends payload to database main and returns the response body,
// failing on request errors.
func query(t *testing.T, nc *nats.Conn, payload string) string {
	t.Helper()
	msg, err := nc.Request("nqlite.query.main", []byte(payload), 60*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", payload, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		t.Fatalf("%s: error %s: %s", payload, code, msg.Data)
	}
	return string(msg.Data)
}

// waiting returns the number of requests the node's stats say wait for
// it to apply a sequence.
func waiting(t *testing.T, nc *nats.Conn) int64 {
	t.Helper()
	msg, err := nc.Request("$SRV.STATS.nqlite", nil, 2*time.Second)
	if err != nil {
		return 0
	}
	var st struct {
		Endpoints []struct {
			Data struct {
				Waiting int64 `json:"waiting"`
			} `json:"data"`
		} `json:"endpoints"`
	}
	json.Unmarshal(msg.Data, &st)
	n := int64(0)
	for _, e := range st.Endpoints {
		n = max(n, e.Data.Waiting)
	}
	return n
}

// walSize returns the size of the WAL of database main in dir (0 if none).
func walSize(dir string) int64 {
	fi, err := os.Stat(filepath.Join(dir, "main.sqlite-wal"))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// longEntry is a write whose first statement inserts 20 MB (more than the
// page cache: its pages spill into the WAL while the entry runs, which
// shows it is under way) and whose second runs until its budget ends:
// about 100M steps, seconds, with --max-entry-steps 100000000.
const longEntry = `{"statements": ["INSERT INTO t VALUES('in the entry')",
	"INSERT INTO t SELECT zeroblob(100) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 200000) SELECT x FROM c)",
	"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c WHERE x < 0"], "queue": true}`

// startLongEntry queues longEntry on a node serving on nc, whose data dir
// is dir, and returns its sequence once the node is inside it.
func startLongEntry(t *testing.T, nc *nats.Conn, dir string) uint64 {
	t.Helper()
	query(t, nc, "CREATE TABLE t(x)")
	before := walSize(dir)
	var seq struct {
		Seq uint64 `json:"seq"`
	}
	json.Unmarshal([]byte(query(t, nc, longEntry)), &seq)
	servicetest.WaitFor(t, 60*time.Second, "the node to be inside the long entry", func() bool { return walSize(dir) > before+4<<20 })
	return seq.Seq
}

// SIGTERM in the middle of a long entry: the nqlite process (the
// one-command default with an embedded nats-server) ends within 10 s,
// cleanly; the file holds nothing of the entry, and once the node is
// started again the entry is applied, exactly once (its first statements
// commit, the endless one fails with the budget error).
func TestMain_SIGTERMDuringLongEntry(t *testing.T) {
	addr, dir := freeAddr(t), t.TempDir()
	args := []string{"--data-dir", dir, "--node-id", "n1", "--nats-listen", addr, "--max-entry-steps", "100000000"}
	p := startNQLite(t, args...)
	nc := serving(t, "nats://"+addr)
	seq := startLongEntry(t, nc, dir)
	wantCleanExit(t, p.waitExit(t, p.signal(t, syscall.SIGTERM)))
	nc.Close()

	info, err := apply.ReadSnapshotInfo(context.Background(), filepath.Join(dir, "main.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Seq != seq-1 {
		t.Fatalf("applied sequence in the file: %d, want %d (the interrupted entry is not applied)", info.Seq, seq-1)
	}

	startNQLite(t, args...)
	nc = serving(t, "nats://"+addr) // caught up: the entry is applied
	got := query(t, nc, `{"statements": ["SELECT count(*) FROM t WHERE x = 'in the entry'", "SELECT count(*) FROM t"], "format": "values"}`)
	if !strings.Contains(got, `"values":[[1]]`) || !strings.Contains(got, `"values":[[200001]]`) {
		t.Fatalf("after the restart: %s, want the entry's rows once (1 marker, 200001 rows)", got)
	}
}

// A second signal ends the process at once (Go's default action), while
// the first one's stop still waits for a request in flight.
func TestMain_SecondSignal(t *testing.T) {
	addr, dir := freeAddr(t), t.TempDir()
	p := startNQLite(t, "--data-dir", dir, "--node-id", "n1", "--nats-listen", addr, "--max-entry-steps", "4000000000")
	nc := serving(t, "nats://"+addr)
	startLongEntry(t, nc, dir)
	// A strong read waits for the long entry: the first signal's stop
	// waits for it (up to 4 s) before it interrupts the entry.
	go nc.Request("nqlite.query.main", []byte(`{"statements": ["SELECT 1"], "level": "strong", "timeout_ms": 60000}`), time.Minute)
	servicetest.WaitFor(t, 30*time.Second, "the strong read to wait", func() bool { return waiting(t, nc) > 0 })
	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, "stopping:")
	st := p.waitExit(t, p.signal(t, syscall.SIGTERM))
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("nqlite ended with %v, want killed by the second SIGTERM", st)
	}
}

// SIGTERM ends the process within 10 s, cleanly, when its external NATS
// is gone: while serving, while serving its copy offline, and while it
// waits for JetStream without a copy (which it says in its log).
func TestMain_SIGTERMWithoutNATS(t *testing.T) {
	ns := servicetest.StartServer(t)
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--node-id", "n1", "--nats-url", ns.ClientURL()}
	p := startNQLite(t, args...)
	nc := serving(t, ns.ClientURL())
	query(t, nc, "CREATE TABLE t(x); INSERT INTO t VALUES(1)")
	servicetest.ShutdownServer(t, ns)
	p.waitLog(t, "NATS disconnected")
	wantCleanExit(t, p.waitExit(t, p.signal(t, syscall.SIGTERM)))

	t.Run("offline", func(t *testing.T) {
		p := startNQLite(t, args...)
		p.waitLog(t, "serving the local copy offline")
		p.waitLog(t, "nqlite node serving")
		wantCleanExit(t, p.waitExit(t, p.signal(t, syscall.SIGTERM)))
	})
	t.Run("no copy", func(t *testing.T) {
		p := startNQLite(t, "--data-dir", t.TempDir(), "--node-id", "n2", "--nats-url", ns.ClientURL())
		p.waitLog(t, "waiting for JetStream: no local copy of the database to serve meanwhile")
		wantCleanExit(t, p.waitExit(t, p.signal(t, syscall.SIGINT)))
	})
}

// The "done when": a Go program opens the nqlite command's node
// (built from this package and run as `go run .` runs it: the one-command
// default with an embedded nats-server) with sql.Open("nqlite", DSN),
// loads Chinook and runs queries on it, through database/sql alone.
func TestMain_DatabaseSQL(t *testing.T) {
	data, err := os.ReadFile("../shared/testdata/chinook/Chinook_Sqlite.sql")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("../shared/testdata/chinook/Chinook_Sqlite.sql is absent beside the checkout")
	}
	if err != nil {
		t.Fatal(err)
	}
	bin := nqliteBin(t)
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--data-dir", t.TempDir(), "--nats-listen", addr, "--log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := sql.Open(nqsql.DriverName, "nats://"+addr+"?db=main&level=strong&timeout=30s")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		err := db.PingContext(pctx)
		pcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not serving: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := db.ExecContext(ctx, strings.TrimPrefix(string(data), "\uFEFF")); err != nil {
		t.Fatalf("load Chinook: %v", err)
	}
	var tracks int64
	var sales float64
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM Track").Scan(&tracks); err != nil || tracks != 3503 {
		t.Errorf("tracks: %d %v, want 3503", tracks, err)
	}
	if err := db.QueryRowContext(ctx, "SELECT SUM(UnitPrice*Quantity) FROM InvoiceLine").Scan(&sales); err != nil || math.Abs(sales-2328.6) > 1e-6 {
		t.Errorf("sales: %v %v, want 2328.6", sales, err)
	}
	rows, err := db.QueryContext(ctx, `SELECT c.Country, round(sum(i.Total), 2) FROM Invoice i JOIN Customer c ON c.CustomerId = i.CustomerId
		GROUP BY c.Country ORDER BY 2 DESC LIMIT 3`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var country string
		var total float64
		if err := rows.Scan(&country, &total); err != nil {
			t.Fatal(err)
		}
		got = append(got, country+" "+strconv.FormatFloat(total, 'f', 2, 64))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want := "USA 523.06, Canada 303.96, France 195.10"; strings.Join(got, ", ") != want {
		t.Errorf("sales by country: got %q, want %q", strings.Join(got, ", "), want)
	}
	var hired time.Time
	if err := db.QueryRowContext(ctx, "SELECT HireDate FROM Employee WHERE EmployeeId = ?", 1).Scan(&hired); err != nil || !hired.Equal(time.Date(2002, 8, 14, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("HireDate: %v %v", hired, err)
	}
	// A transaction: both statements in one entry, all or nothing.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tx.ExecContext(ctx, "INSERT INTO Genre(Name) VALUES(?)", "Chiptune")
	res, _ := tx.ExecContext(ctx, "UPDATE Track SET GenreId = (SELECT GenreId FROM Genre WHERE Name = 'Chiptune') WHERE TrackId = ?", 1)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		t.Errorf("RowsAffected after Commit: %d %v", n, err)
	}
	var genre string
	if err := db.QueryRowContext(ctx, "SELECT g.Name FROM Track t JOIN Genre g USING (GenreId) WHERE t.TrackId = 1").Scan(&genre); err != nil || genre != "Chiptune" {
		t.Errorf("after the transaction: %q %v", genre, err)
	}
}

// The change feed is off by default, and its flags are refused, before
// anything starts, when they cannot take effect.
func TestRun_ChangesFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--changes-tables", "t"}, "need --changes"},
		{[]string{"--changes-max-age", "1h"}, "need --changes"},
		{[]string{"--changes-max-bytes", "1000"}, "need --changes"},
		{[]string{"--changes", "--changes-max-age", "-1s"}, "give 0 (no limit) or more"},
		{[]string{"--changes", "--changes-max-bytes", "-1"}, "give 0 (no limit) or more"},
	} {
		args := append([]string{"--data-dir", t.TempDir(), "--nats-listen", ""}, tc.args...)
		done := make(chan error, 1)
		go func() { done <- run(args) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%q: %v, want an error saying %q", tc.args, err, tc.msg)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%q: the node started instead of refusing the flags", tc.args)
		}
	}
}
