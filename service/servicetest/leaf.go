package servicetest

import (
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// HubDomain is the JetStream domain of the hub started by StartHub.
const HubDomain = "hub"

// Hub is a nats-server with JetStream (domain HubDomain) that accepts
// leaf-node connections.
type Hub struct {
	*server.Server
	// LeafPort is the port leaf nodes connect to.
	LeafPort int
}

// StartHub starts a nats-server with JetStream in domain HubDomain,
// listening for clients and for leaf nodes on random loopback ports.
func StartHub(tb testing.TB) *Hub {
	tb.Helper()
	ports := FreePorts(tb, 2)
	ns := startServer(tb, &server.Options{
		ServerName:      "hub",
		Host:            "127.0.0.1",
		Port:            ports[0],
		JetStream:       true,
		JetStreamDomain: HubDomain,
		StoreDir:        tb.TempDir(),
		NoSigs:          true,
		NoLog:           true,
		// NoAdvertise: leaf nodes must reach the hub only through their
		// Link, not learn its real address and bypass a cut.
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: ports[1], NoAdvertise: true},
	})
	return &Hub{Server: ns, LeafPort: ports[1]}
}

// StartLeaf starts a nats-server named name without JetStream of its own
// that joins hub as a leaf node through a Link (a TCP proxy the test can
// cut), and waits until the leaf connection is up. Clients connect to the
// returned server on loopback; nodes on it use the hub's JetStream with
// service.Config{JSDomain: HubDomain}.
//
// opts, if given, adjust the leaf server's options before it starts (for
// example a short PingInterval, to notice a silent partition quickly).
func StartLeaf(tb testing.TB, hub *Hub, name string, opts ...func(*server.Options)) (*server.Server, *Link) {
	tb.Helper()
	link := NewLink(tb, fmt.Sprintf("127.0.0.1:%d", hub.LeafPort))
	u, err := url.Parse("nats-leaf://" + link.Addr())
	if err != nil {
		tb.Fatal(err)
	}
	o := &server.Options{
		ServerName: name,
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		NoSigs:     true,
		NoLog:      true,
		LeafNode: server.LeafNodeOpts{
			ReconnectInterval: 100 * time.Millisecond,
			Remotes:           []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}},
		},
	}
	for _, f := range opts {
		f(o)
	}
	ns := startServer(tb, o)
	WaitFor(tb, 10*time.Second, name+" to join the hub", func() bool { return ns.NumLeafNodes() == 1 })
	return ns, link
}

// Link is a TCP proxy standing for the network between a leaf node and its
// hub: Cut breaks it, Restore mends it.
type Link struct {
	ln      net.Listener
	target  string
	stalled atomic.Bool
	// allowance is how many more bytes pass before the link stalls by
	// itself (StallAfter); negative: no such limit.
	allowance atomic.Int64
	mu        sync.Mutex
	cut       bool
	conns     map[net.Conn]struct{}
}

// NewLink listens on a random loopback port and forwards every connection
// to target. It closes at cleanup.
func NewLink(tb testing.TB, target string) *Link {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	l := &Link{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	l.allowance.Store(-1)
	go l.accept()
	tb.Cleanup(func() {
		ln.Close()
		l.Cut()
	})
	return l
}

// Addr is the proxy's address (host:port).
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Cut closes every connection through the link and refuses new ones until
// Restore, as a network failure the leaf node notices at once (a reset
// connection).
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for c := range l.conns {
		c.Close()
		delete(l.conns, c)
	}
}

// Stall silently drops every byte in both directions while connections
// stay open, as a network failure nobody is told about (a dead route, a
// NAT that forgot the connection): only missing PONGs reveal it.
func (l *Link) Stall() { l.stalled.Store(true) }

// StallAfter lets n more bytes through (both directions together), then
// stalls the link as Stall does: a way to stall a transfer in its middle,
// say a snapshot download larger than n, without timing. It may be armed
// while the link is cut (the bytes count from Restore); Restore after the
// stall lifts both.
func (l *Link) StallAfter(n int64) { l.allowance.Store(n) }

// Stalled reports whether the link is stalled (by Stall or StallAfter).
func (l *Link) Stalled() bool { return l.stalled.Load() }

// Restore lets connections through again; the leaf node reconnects by
// itself. Connections that lost bytes to Stall are closed first.
func (l *Link) Restore() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stalled.Swap(false) {
		l.allowance.Store(-1)
		for c := range l.conns {
			c.Close()
			delete(l.conns, c)
		}
	}
	l.cut = false
}

func (l *Link) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.serve(c)
	}
}

func (l *Link) serve(c net.Conn) {
	l.mu.Lock()
	cut := l.cut
	l.mu.Unlock()
	if cut {
		c.Close()
		return
	}
	up, err := net.DialTimeout("tcp", l.target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	l.mu.Lock()
	if l.cut {
		l.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	l.conns[c], l.conns[up] = struct{}{}, struct{}{}
	l.mu.Unlock()
	go l.pipe(up, c)
	go l.pipe(c, up)
}

// pipe copies src to dst, dropping what it reads while the link is
// stalled, until either side closes.
func (l *Link) pipe(dst, src net.Conn) {
	defer func() {
		dst.Close()
		src.Close()
		l.mu.Lock()
		delete(l.conns, dst)
		delete(l.conns, src)
		l.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.stalled.Load() && l.allowance.Load() >= 0 && l.allowance.Add(-int64(n)) < 0 {
			l.stalled.Store(true) // these bytes would pass the allowance: dropped
		}
		if n > 0 && !l.stalled.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
