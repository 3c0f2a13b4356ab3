package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/client/nqsql"
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

// SIGTERM in the middle of an entry that would run for minutes: the
// nqlite process (built from this package, one-command default with an
// embedded nats-server) ends well within 10 s, and after a restart the
// interrupted entry is applied again, exactly once.
func TestMain_SIGTERMDuringLongEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the nqlite binary")
	}
	bin := filepath.Join(t.TempDir(), "nqlite")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	start := func(steps string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, "--data-dir", dir, "--node-id", "n1", "--nats-listen", addr, "--max-entry-steps", steps, "--log-level", "error")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	cmd := start("4000000000")
	var nc *nats.Conn
	deadline := time.Now().Add(30 * time.Second)
	for {
		if nc, err = nats.Connect("nats://"+addr, nats.MaxReconnects(-1)); err == nil {
			if _, err = nc.Request("nqlite.query.main", []byte("CREATE TABLE t(x)"), 2*time.Second); err == nil {
				break
			}
			nc.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not serving: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer nc.Close()
	msg, err := nc.Request("nqlite.query.main", []byte(`{"statements": ["INSERT INTO t VALUES('in the entry')", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c WHERE x < 0"], "queue": true}`), 5*time.Second)
	if err != nil || !strings.Contains(string(msg.Data), `"queued":true`) {
		t.Fatalf("queued write: %v %s", err, msg.Data)
	}
	// Wait until the node is inside the entry: a strong read waits for it.
	go nc.Request("nqlite.query.main", []byte(`{"statements": ["SELECT 1"], "level": "strong", "timeout_ms": 60000}`), 60*time.Second)
	time.Sleep(200 * time.Millisecond) // let the apply start (the outcome does not depend on it)
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		t.Logf("stopped %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("nqlite did not end within 10 s of SIGTERM")
	}
	nc.Close()

	// The file holds everything before the entry and nothing of it: the
	// entry is applied again, whole and once, when the node starts again.
	info, err := apply.ReadSnapshotInfo(context.Background(), filepath.Join(dir, "main.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	var seq struct {
		Seq uint64 `json:"seq"`
	}
	json.Unmarshal(msg.Data, &seq)
	if info.Seq != seq.Seq-1 {
		t.Fatalf("applied sequence in the file: %d, want %d", info.Seq, seq.Seq-1)
	}
}

// The "done when": a Go program opens the nqlite command's node
// (built from this package and run as `go run .` runs it: the one-command
// default with an embedded nats-server) with sql.Open("nqlite", DSN),
// loads Chinook and runs queries on it, through database/sql alone.
func TestMain_DatabaseSQL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the nqlite binary")
	}
	data, err := os.ReadFile("../shared/testdata/chinook/Chinook_Sqlite.sql")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("../shared/testdata/chinook/Chinook_Sqlite.sql is absent beside the checkout")
	}
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "nqlite")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
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
