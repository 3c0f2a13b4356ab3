// Package embedded starts the nats-server an nqlite node embeds: the one
// the nqlite command starts when given no --nats-url, and the one
// replica.StartEmbedded starts inside an application. It is a plain
// nats-server (github.com/nats-io/nats-server/v2) with JetStream, or a
// leaf node of a hub with no JetStream of its own; it knows nothing of
// nqlite's databases.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configure Start. The zero value is a server with JetStream
// storing in the current directory and listening nowhere.
type Options struct {
	// Name is the server's name (the nqlite command uses the node id).
	Name string
	// StoreDir is where JetStream stores streams (the nqlite command uses
	// <data-dir>/jetstream). A leaf node (LeafRemotes) has no store.
	StoreDir string
	// Listen is the client address, host:port; "" listens nowhere:
	// connect in-process with nats.InProcessServer.
	Listen string
	// JSDomain is this server's JetStream domain ("" none). With
	// LeafRemotes, this server has no JetStream: JSDomain is then the
	// hub's domain, which the node uses, and is not set on the server.
	JSDomain string
	// LeafRemotes are hub URLs (nats-leaf://, tls://, ws(s)://; a bare
	// host:port is nats-leaf://): the server joins the hub as a leaf node
	// over one outbound connection and has no JetStream of its own.
	LeafRemotes []string
	// LeafCreds is the credentials file of the leaf-node connection.
	LeafCreds string
	// SyncInterval is how often JetStream fsyncs stored messages; 0 (the
	// default) fsyncs every message before acknowledging it (nats-server's
	// sync_interval: always), so an acknowledged write survives a power
	// cut. JetStream's own default is 2 minutes.
	SyncInterval time.Duration
}

// OptionError is an Options field that cannot be used: Field is its name
// ("Listen", "LeafRemotes"), Value the bad value.
type OptionError struct {
	Field string
	Value string
	Err   error
}

func (e *OptionError) Error() string { return fmt.Sprintf("%s %q: %v", e.Field, e.Value, e.Err) }

func (e *OptionError) Unwrap() error { return e.Err }

// ErrNotReady is wrapped by Start when the server did not accept
// connections within 30 seconds (most often: its Listen address is in
// use).
var ErrNotReady = errors.New("embedded nats-server did not start")

// Start starts a nats-server with o and waits until it accepts
// connections. The caller shuts it down (Shutdown, WaitForShutdown).
// Errors: a bad Listen or LeafRemotes is an *OptionError; a server that
// does not become ready wraps ErrNotReady.
func Start(o Options) (*server.Server, error) {
	opts, err := ServerOptions(o)
	if err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("%w (is %s already in use?)", ErrNotReady, o.Listen)
	}
	return ns, nil
}

// ServerOptions returns the nats-server options Start uses for o.
func ServerOptions(o Options) (*server.Options, error) {
	opts := &server.Options{
		ServerName: o.Name,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      true,
	}
	if o.SyncInterval > 0 {
		opts.SyncInterval = o.SyncInterval
	} else {
		opts.SyncAlways = true
	}
	if o.JSDomain != "" {
		opts.JetStreamDomain = o.JSDomain
	}
	if len(o.LeafRemotes) > 0 {
		// A leaf node of the hub: no JetStream here (the stream lives in
		// the hub's domain), and one outbound connection to the hub.
		opts.JetStream, opts.StoreDir, opts.JetStreamDomain = false, "", ""
		remote := &server.RemoteLeafOpts{Credentials: o.LeafCreds}
		for _, s := range o.LeafRemotes {
			u, err := ParseLeafURL(s)
			if err != nil {
				return nil, &OptionError{Field: "LeafRemotes", Value: s, Err: err}
			}
			remote.URLs = append(remote.URLs, u)
		}
		opts.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
		// Notice a silently dead link (no reset, no FIN) within about
		// 15 s instead of NATS's default of minutes: until then, writes
		// wait out their timeout instead of failing at once with 503.
		opts.PingInterval, opts.MaxPingsOut = 5*time.Second, 2
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		h, p, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, &OptionError{Field: "Listen", Value: o.Listen, Err: err}
		}
		port, err := strconv.Atoi(p)
		if err != nil {
			return nil, &OptionError{Field: "Listen", Value: o.Listen, Err: errors.New("bad port")}
		}
		opts.Host, opts.Port = h, port
	}
	return opts, nil
}

// ParseLeafURL parses a hub URL; a bare host:port is nats-leaf://.
func ParseLeafURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "nats-leaf://" + s
	}
	return url.Parse(s)
}
