// Package replica embeds an nqlite node in a Go program: the program
// holds a full copy of its databases, reads them in-process through
// database/sql with no NATS round trip, and writes through the stream
// like every node, with read-your-writes.
//
//	r, err := replica.Start(ctx, nc, service.Config{NodeID: "app1", DataDir: "/var/lib/app/nqlite"})
//	defer r.Stop()
//	db, err := r.DB("main")
//	db.QueryRowContext(ctx, "SELECT name FROM users WHERE id = ?", 7).Scan(&name) // the local read pool
//	db.ExecContext(ctx, "INSERT INTO users(name) VALUES(?)", "fiona")             // one stream entry
//
// A Replica is a service.Node (the same start-up, catch-up, apply loop,
// snapshots and endpoints: other programs and nqctl reach it over NATS
// as any node) plus *sql.DBs whose requests run on that node through
// service.Node.Do instead of NATS, with the driver of
// service/client/nqsql (nqsql.NewTransportConnector), so everything the
// driver documents holds: values, per-call options, transactions, errors.
//
// What is local and what is not:
//
//   - A read with the default level (none) runs on this node's read pool,
//     in this process: no NATS, no JSON. It waits only for the after_seq
//     the connector carries (the stream position of its own writes and
//     reads), which this node has applied already unless an AfterSeq
//     names a later entry. It keeps working while NATS is unreachable.
//   - A write is published to the database's JetStream stream as one
//     entry (the NATS round trip to JetStream is the write's cost), and
//     returns once this node applied it, so every later read through the
//     *sql.DB sees it (read-your-writes); every other node applies it
//     from the stream.
//   - A strong read (nqsql.Strong, WithLevel(api.LevelStrong)) appends a
//     barrier to the stream (one JetStream publish, shared by the strong
//     reads arriving meanwhile), waits until this node has applied what
//     came before it, then reads locally; with JetStream unreachable it
//     fails with 503.
//
// StartEmbedded runs the nats-server in the program too (package
// service/embedded, as the nqlite command does), standalone with
// JetStream or as a leaf node of a hub.
package replica

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/client/nqsql"
	"github.com/nqlite/nqlite/service/embedded"
)

// Replica is an nqlite node running in this process, with *sql.DBs that
// reach it without NATS.
type Replica struct {
	node  *service.Node
	nc    *nats.Conn
	ownNC bool           // dialed by StartEmbedded: Stop closes it
	ns    *server.Server // StartEmbedded's server, nil for Start

	mu      sync.Mutex
	dbs     []*sql.DB
	stopped bool
}

// ErrStopped is returned by DB and Connector after Stop; requests of a
// *sql.DB after Stop fail with database/sql's "sql: database is closed".
var ErrStopped = errors.New("replica: stopped")

// Start starts a node on nc with cfg exactly as service.Start does (it
// creates or updates the streams, opens or restores the SQLite files,
// catches up with every entry the streams held at start and registers the
// endpoints), and returns once it has. nc stays the caller's: Stop does
// not close it. ctx bounds the start-up.
func Start(ctx context.Context, nc *nats.Conn, cfg service.Config) (*Replica, error) {
	if nc == nil {
		return nil, errors.New("replica: nil NATS connection")
	}
	n, err := service.Start(ctx, nc, cfg)
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	return &Replica{node: n, nc: nc}, nil
}

// ServerOptions configure the nats-server StartEmbedded runs.
type ServerOptions struct {
	// Listen is the server's client address, host:port, for other
	// programs and nodes; "" (the default) listens nowhere: only this
	// program reaches it, in-process.
	Listen string
	// LeafRemotes are hub URLs (nats-leaf://, tls://, ws(s)://; a bare
	// host:port is nats-leaf://): the server joins the hub as a leaf
	// node, with no JetStream of its own, and the node uses the hub's
	// JetStream in the domain service.Config.JSDomain (required then).
	// Without them the server has JetStream of its own, storing under
	// <DataDir>/jetstream.
	LeafRemotes []string
	// LeafCreds is the credentials file of the leaf-node connection.
	LeafCreds string
}

// StartEmbedded starts a nats-server in this process (package
// service/embedded: the server the nqlite command starts without
// --nats-url), connects to it in-process and starts the node on it as
// Start does. cfg.DataDir is required: it holds the SQLite files and,
// without LeafRemotes, the JetStream store (<DataDir>/jetstream). The
// server is named after cfg.NodeID and takes cfg.JSDomain as its
// JetStream domain (or, as a leaf, as the hub's). Stop stops the node, then
// closes the connection and shuts the server down. Errors: a bad
// ServerOptions field wraps an *embedded.OptionError; a server that does
// not start wraps embedded.ErrNotReady.
func StartEmbedded(ctx context.Context, cfg service.Config, so ServerOptions) (*Replica, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("replica: StartEmbedded needs Config.DataDir (the SQLite files and the JetStream store)")
	}
	if len(so.LeafRemotes) > 0 && cfg.JSDomain == "" {
		return nil, errors.New("replica: LeafRemotes need Config.JSDomain, the JetStream domain of the hub")
	}
	if len(so.LeafRemotes) == 0 && so.LeafCreds != "" {
		return nil, errors.New("replica: LeafCreds needs LeafRemotes")
	}
	ns, err := embedded.Start(embedded.Options{
		Name:        cfg.NodeID,
		StoreDir:    filepath.Join(cfg.DataDir, "jetstream"),
		Listen:      so.Listen,
		JSDomain:    cfg.JSDomain,
		LeafRemotes: so.LeafRemotes,
		LeafCreds:   so.LeafCreds,
	})
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	shutdown := func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("nqlite "+cfg.NodeID),
		nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		shutdown()
		return nil, fmt.Errorf("replica: connect to the embedded nats-server: %w", err)
	}
	r, err := Start(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		shutdown()
		return nil, err
	}
	r.ownNC, r.ns = true, ns
	return r, nil
}

// DB returns a *sql.DB on database name whose requests run on this node
// (see the package doc for what is local), through the driver of
// service/client/nqsql with opts (nqsql.WithLevel, WithTimeout,
// WithReadOnly; WithDB is name). Each call returns a new *sql.DB with its
// own stream position (read-your-writes within it). The pool keeps up to
// 16 idle connections (database/sql's default is 2; a connection here is
// a few bytes, no socket). Stop closes it; closing it earlier is fine.
// Errors: name not served by this node (service.Config.Databases) wraps
// service.ErrNoDatabase; after Stop, ErrStopped.
func (r *Replica) DB(name string, opts ...nqsql.Option) (*sql.DB, error) {
	c, err := r.Connector(name, opts...)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(c)
	db.SetMaxIdleConns(16)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		db.Close()
		return nil, ErrStopped
	}
	r.dbs = append(r.dbs, db)
	return db, nil
}

// Connector returns a connector on database name running its requests on
// this node (nqsql.NewTransportConnector with r as the Transport), for
// sql.OpenDB or to read its Seq. Unlike DB, Stop does not close what is
// opened on it. Errors as DB's.
func (r *Replica) Connector(name string, opts ...nqsql.Option) (*nqsql.Connector, error) {
	r.mu.Lock()
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		return nil, ErrStopped
	}
	if r.node.DB(name) == nil {
		return nil, fmt.Errorf("replica: %w %q", service.ErrNoDatabase, name)
	}
	return nqsql.NewTransportConnector(r, append(append([]nqsql.Option(nil), opts...), nqsql.WithDB(name))...)
}

// Do runs req on database db of this node, in-process (service.Node.Do):
// r is an nqsql.Transport. ep is client.QueryEndpoint or
// client.ReadEndpoint (writes refused with 403).
func (r *Replica) Do(ctx context.Context, db string, ep client.Endpoint, req *api.Request) (*api.Response, error) {
	return r.node.Do(ctx, db, req, ep == client.ReadEndpoint)
}

// Node returns the node, for what the *sql.DB does not give: its id,
// its databases' apply.DB (applied sequence), service.Node.Do.
func (r *Replica) Node() *service.Node { return r.node }

// Conn returns the node's NATS connection (StartEmbedded's in-process
// one, or Start's nc): other NATS clients in the program may share it.
func (r *Replica) Conn() *nats.Conn { return r.nc }

// Server returns StartEmbedded's nats-server (nil after Start), for its
// ClientURL and the like.
func (r *Replica) Server() *server.Server { return r.ns }

// Stop closes every *sql.DB DB returned, stops the node (its endpoints
// stop, requests in flight finish, the batch being applied commits, the
// SQLite files close: see service.Node.Stop) and, after StartEmbedded,
// closes the connection and shuts the nats-server down. It may be called
// more than once; later calls return nil.
func (r *Replica) Stop() error {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	dbs := r.dbs
	r.dbs = nil
	r.mu.Unlock()
	var errs []error
	for _, db := range dbs {
		errs = append(errs, db.Close())
	}
	errs = append(errs, r.node.Stop())
	if r.ownNC {
		r.nc.Close()
	}
	if r.ns != nil {
		r.ns.Shutdown()
		r.ns.WaitForShutdown()
	}
	return errors.Join(errs...)
}
