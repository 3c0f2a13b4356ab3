package main

import (
	"testing"
	"time"
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
