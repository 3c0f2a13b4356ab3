package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/apply"
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
