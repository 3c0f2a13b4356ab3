package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/nqlite/nqlite/service/servicetest"
)

// natsJSModules returns the node_modules directory holding nats.js
// (@nats-io/transport-node, @nats-io/services): $NQLITE_NATSJS_MODULES,
// which .ci/run fills with npm from testdata/natsjs/package.json (the
// versions it pins). The test skips without it or without node.
func natsJSModules(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("NQLITE_NATSJS_MODULES")
	if dir == "" {
		t.Skip("nats.js is not installed: copy testdata/natsjs/package.json into DIR, npm install --prefix DIR, then NQLITE_NATSJS_MODULES=DIR/node_modules")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed")
	}
	for _, pkg := range []string{"@nats-io/transport-node", "@nats-io/services"} {
		if _, err := os.Stat(filepath.Join(dir, pkg)); err != nil {
			t.Fatalf("NQLITE_NATSJS_MODULES=%s: %v", dir, err)
		}
	}
	return dir
}

// pingNodes returns the service ids of the nqlite nodes answering one
// $SRV.PING.nqlite within wait, by node id.
func pingNodes(t *testing.T, nc *nats.Conn, wait time.Duration) map[string]string {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING.nqlite", inbox, nil); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for end := time.Now().Add(wait); ; {
		msg, err := sub.NextMsg(time.Until(end))
		if err != nil {
			return got
		}
		var p micro.Ping
		if json.Unmarshal(msg.Data, &p) == nil {
			got[p.Metadata["node"]] = p.ID
		}
	}
}

// TestNATSJS_Client runs testdata/natsjs/client.js, a client written with
// nats.js, against two nqlite processes on one NATS server: the three
// request forms with values JavaScript makes, the exact integers past 2^53
// JSON.parse cannot hold, a request error read by nats.js's ServiceError,
// and ping, info and stats through @nats-io/services, answered by both
// nodes.
func TestNATSJS_Client(t *testing.T) {
	modules := natsJSModules(t)
	addr := freeAddr(t)
	url := "nats://" + addr
	startNQLite(t, "--data-dir", t.TempDir(), "--nats-listen", addr, "--node-id", "js1")
	nc := serving(t, url)
	startNQLite(t, "--data-dir", t.TempDir(), "--nats-url", url, "--node-id", "js2")
	var ids map[string]string
	servicetest.WaitFor(t, 60*time.Second, "both nodes to answer a ping", func() bool {
		ids = pingNodes(t, nc, 500*time.Millisecond)
		return len(ids) == 2
	})
	servicetest.WaitFor(t, 60*time.Second, "node js2 to serve", func() bool {
		msg, err := nc.Request("$SRV.STATS.nqlite."+ids["js2"], nil, 2*time.Second)
		return err == nil && strings.Contains(string(msg.Data), `"state":"serving"`)
	})

	cmd := exec.Command("node", filepath.Join("testdata", "natsjs", "client.js"))
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "NATS_URL="+url, "NQLITE_NODES=js1,js2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node client.js: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "ok js1,js2" {
		t.Errorf("node client.js: %q, want ok js1,js2", got)
	}
}
