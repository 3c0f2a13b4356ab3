// Package servicetest starts real, in-process NATS servers and nqlite
// nodes for tests and benchmarks, like net/http/httptest: one embedded
// nats-server with JetStream, or a three-server JetStream cluster, and
// nodes connected to them, each with its own data dir. Everything stops
// in tb.Cleanup.
package servicetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service"
)

// StartServer starts one nats-server with JetStream on a random loopback
// port, storing under a temporary dir. Each of opts may change its options
// before it starts.
func StartServer(tb testing.TB, opts ...func(*server.Options)) *server.Server {
	tb.Helper()
	o := &server.Options{
		ServerName: "s1",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   tb.TempDir(),
		NoSigs:     true,
		NoLog:      true,
	}
	for _, opt := range opts {
		opt(o)
	}
	return startServer(tb, o)
}

func startServer(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	ns, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats-server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatalf("nats-server %s not ready", opts.ServerName)
	}
	// Keep the options with the port actually bound, for ShutdownServer.
	bound := opts.Clone()
	bound.Port = ns.Addr().(*net.TCPAddr).Port
	serverOpts.Store(ns, bound)
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

var serverOpts sync.Map // *server.Server -> *server.Options

// FreePorts reserves n loopback TCP ports.
func FreePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, n)
	var ls []net.Listener
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// StartCluster starts n clustered nats-servers with JetStream, every one
// with Routes to all, and waits until JetStream has a meta leader. Each
// of opts may change a server's options before it starts (for example
// SyncAlways).
func StartCluster(tb testing.TB, n int, opts ...func(*server.Options)) []*server.Server {
	tb.Helper()
	ports := FreePorts(tb, 2*n)
	var routes []string
	for i := 0; i < n; i++ {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[n+i]))
	}
	servers := make([]*server.Server, n)
	for i := 0; i < n; i++ {
		o := &server.Options{
			ServerName: fmt.Sprintf("s%d", i+1),
			Host:       "127.0.0.1",
			Port:       ports[i],
			JetStream:  true,
			StoreDir:   tb.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster: server.ClusterOpts{
				Name: "nqlite-test",
				Host: "127.0.0.1",
				Port: ports[n+i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
		for _, opt := range opts {
			opt(o)
		}
		servers[i] = startServer(tb, o)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return servers
			}
		}
		if time.Now().After(deadline) {
			tb.Fatal("JetStream cluster elected no meta leader within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Connect returns a client connection to url, closed at cleanup.
func Connect(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		tb.Fatalf("connect %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Node is a started nqlite node and its connection.
type Node struct {
	*service.Node
	NC      *nats.Conn
	DataDir string
	Config  service.Config
	stopped bool
}

// StartNode connects to url and starts a node with cfg. An empty
// cfg.DataDir gets a temporary dir; an empty NodeID gets "n1". The node
// stops at cleanup unless stopped before.
func StartNode(tb testing.TB, url string, cfg service.Config) *Node {
	tb.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = tb.TempDir()
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "n1"
	}
	if cfg.Logger == nil && os.Getenv("NQLITE_TEST_LOG") == "" {
		// Node logs (catching up, skipped entries) only with NQLITE_TEST_LOG=1.
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.Name("nqlite "+cfg.NodeID))
	if err != nil {
		tb.Fatalf("connect %s: %v", url, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := service.Start(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		tb.Fatalf("start node %s: %v", cfg.NodeID, err)
	}
	node := &Node{Node: n, NC: nc, DataDir: cfg.DataDir, Config: cfg}
	tb.Cleanup(func() { node.Stop(tb) })
	return node
}

// Stop stops the node and closes its connection (once).
func (n *Node) Stop(tb testing.TB) {
	tb.Helper()
	if n.stopped {
		return
	}
	n.stopped = true
	if err := n.Node.Stop(); err != nil {
		tb.Errorf("stop node %s: %v", n.ID(), err)
	}
	n.NC.Close()
}

// WaitFor polls cond every 10ms until it returns true or the deadline
// passes, then fails the test with what.
func WaitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
