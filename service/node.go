package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/feed"
	"github.com/nqlite/nqlite/service/stream"
	"github.com/nqlite/nqlite/snapshot"
)

// Config configures a Node.
type Config struct {
	// NodeID names this node in responses, entries and micro metadata.
	NodeID string
	// DataDir holds one SQLite file per database: <DataDir>/<db>.sqlite.
	DataDir string
	// Databases served by this node (default ["main"]).
	Databases []string
	// Replicas of each stream (JetStream R1 or R3...), default 1.
	Replicas int
	// Readers is the number of read connections per database (default 4).
	Readers int
	// Duplicates is the stream's duplicate window for idempotency keys
	// (default 2 minutes, JetStream's default).
	Duplicates time.Duration
	// JSDomain selects a JetStream domain (leaf nodes), "" for the local one.
	JSDomain string
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Snapshot configures snapshots to the Object Store, restores and
	// stream purges.
	Snapshot SnapshotConfig
	// MaxEntrySteps and MaxEntryBytes are the budget of every entry this
	// node accepts: SQLite VM steps (1 to MaxEntrySteps, default
	// DefaultMaxEntrySteps) and bytes written (default
	// DefaultMaxEntryBytes); 0 is the default.
	// The budget travels in the entry, so every node applies it with the
	// accepting node's budget (see apply.Budget).
	MaxEntrySteps uint64
	MaxEntryBytes uint64
	// Changes configures the change feed of every database this node
	// serves (off by default).
	Changes ChangesConfig
}

// ChangesConfig configures the change feed: every row change committed by
// an entry is published as JSON (api.Change) into the JetStream stream
// NQLITE_CHANGES_<db> on nqlite.changes.<db>.<table>, once each and in
// stream order, by whichever node with the feed on applies it first (see
// package service/feed). The stream has the entry stream's replicas.
type ChangesConfig struct {
	// Enabled turns the feed on for every database of the node.
	Enabled bool
	// Tables, when not empty, are the only tables published; every node
	// with the feed on must give the same list (the stream keeps it).
	Tables []string
	// MaxAge and MaxBytes bound what the change stream keeps (0: no
	// limit), oldest events first.
	MaxAge   time.Duration
	MaxBytes int64
	// LostAfter: see feed.Config (default 30 s).
	LostAfter time.Duration
}

// Node serves databases over NATS.
type Node struct {
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	proto *protocol // the endpoints and the service protocol (micro.go)
	log   *slog.Logger
	dbs   map[string]*database
	subj  map[string]*database // endpoint subject -> database
	snaps *snapshot.Store      // nil when snapshots are disabled
	bg    sync.WaitGroup       // snapshot loops

	ctx      context.Context // cancelled by Stop: ends followers and requests
	cancel   context.CancelFunc
	inflight sync.WaitGroup
	stopOnce sync.Once
	mu       sync.RWMutex
	stopping bool // endpoints unsubscribed: requests still delivered are forwarded
	work     chan func()
}

// state is what a database on this node is doing, as stats report it.
type state int32

const (
	serving      state = iota
	restoring          // replacing its file with a snapshot: requests get 503
	incompatible       // met an entry of a newer format: requests get 503 until upgraded
)

func (s state) String() string {
	switch s {
	case serving:
		return "serving"
	case restoring:
		return "restoring"
	case incompatible:
		return "incompatible"
	}
	return fmt.Sprintf("state(%d)", int32(s))
}

// database is one database served by this node: the state machine (apply)
// and the stream it follows.
type database struct {
	name     string
	db       *apply.DB
	str      *stream.Stream
	feed     *feed.Feed    // nil unless the change feed is on
	done     chan error    // follower's result
	state    atomic.Int32  // a state
	lastSnap atomic.Uint64 // sequence of the latest stored snapshot known here
	restores atomic.Uint64 // restores from a snapshot while running

	refreshing atomic.Bool  // a background stream-state refresh runs
	streamErr  atomic.Value // string: the last refresh's error, "" if none
}

func (d *database) getState() state  { return state(d.state.Load()) }
func (d *database) setState(s state) { d.state.Store(int32(s)) }

// errRestoring answers requests while the database is being replaced by a
// snapshot.
var errRestoring = api.Errorf(api.CodeUnavailable, "this node is restoring its database from a snapshot: retry shortly, or ask another node")

// errIncompatible answers requests once the node met an entry it cannot
// apply (a newer entry format).
var errIncompatible = api.Errorf(api.CodeUnavailable, "this node met a stream entry of a newer format than it can apply and stopped applying this database: upgrade this node (see Rolling upgrades in the README), or ask another node")

// Start creates or updates each database's stream, opens its SQLite file,
// resumes applying from the stored sequence, waits until the node has
// applied every entry the stream held at start-up, and only then registers
// the micro service. ctx bounds the start-up.
func Start(ctx context.Context, nc *nats.Conn, cfg Config) (*Node, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("node id is empty")
	}
	if len(cfg.Databases) == 0 {
		cfg.Databases = []string{"main"}
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Snapshot.defaults()
	if cfg.MaxEntrySteps == 0 {
		cfg.MaxEntrySteps = DefaultMaxEntrySteps
	}
	if cfg.MaxEntryBytes == 0 {
		cfg.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if cfg.MaxEntrySteps > MaxEntrySteps {
		return nil, fmt.Errorf("max entry steps %d: at most %d", cfg.MaxEntrySteps, uint64(MaxEntrySteps))
	}
	for _, name := range cfg.Databases {
		if !api.ValidDBName(name) {
			return nil, fmt.Errorf("database name %q: use 1-64 of A-Z a-z 0-9 _ -", name)
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	var js jetstream.JetStream
	var err error
	if cfg.JSDomain != "" {
		js, err = jetstream.NewWithDomain(nc, cfg.JSDomain)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, nc: nc, js: js, log: cfg.Logger, dbs: map[string]*database{}, subj: map[string]*database{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.work = make(chan func())
	for i := 0; i < workers; i++ {
		go func() {
			for f := range n.work {
				f()
			}
		}()
	}
	if !cfg.Snapshot.Disabled {
		for {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			n.snaps, err = snapshot.Open(cctx, js, snapshot.Options{Node: cfg.NodeID, Replicas: cfg.Replicas, Logger: cfg.Logger})
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				n.Stop()
				return nil, fmt.Errorf("snapshot store: %w", err)
			}
			n.log.Info("waiting for JetStream", "bucket", snapshot.Bucket, "err", err)
			time.Sleep(250 * time.Millisecond)
		}
	}
	for _, name := range cfg.Databases {
		if _, dup := n.dbs[name]; dup {
			continue
		}
		d, err := n.openDatabase(ctx, name)
		if err != nil {
			n.Stop()
			return nil, err
		}
		n.dbs[name] = d
		n.subj[QuerySubject(name)] = d
		n.subj[ReadSubject(name)] = d
		n.subj[SnapshotSubject(name)] = d
		n.subj[LoadSubject(name)] = d
	}
	if err := n.register(); err != nil {
		n.Stop()
		return nil, err
	}
	// Once Start returns, the server knows the endpoints' subscriptions.
	if err := n.nc.FlushWithContext(ctx); err != nil {
		n.Stop()
		return nil, fmt.Errorf("flush: %w", err)
	}
	return n, nil
}

// openDatabase opens the stream and the SQLite file of database name,
// starts following the stream and waits until the node has applied what
// the stream held at start-up.
func (n *Node) openDatabase(ctx context.Context, name string) (*database, error) {
	d := &database{name: name, done: make(chan error, 1)}
	var err error
	d.str, err = stream.Open(ctx, n.js, stream.Config{
		Name:        StreamName(name),
		Subject:     EntrySubject(name),
		Description: "nqlite entries of database " + name,
		Replicas:    n.cfg.Replicas,
		Duplicates:  n.cfg.Duplicates,
		Logger:      n.log,
	})
	if err != nil {
		return nil, err
	}
	bounds, err := d.str.Bounds(ctx)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(n.cfg.DataDir, name+".sqlite")
	if err := n.prepareLocal(ctx, d, path, bounds.FirstSeq); err != nil {
		return nil, err
	}
	opts := apply.Options{Node: n.cfg.NodeID, Readers: n.cfg.Readers, Logger: n.log.With("db", name)}
	if n.snaps != nil {
		opts.Loader = n.loader(d)
	}
	if n.cfg.Changes.Enabled {
		// Set before the follower starts, below.
		opts.OnChanges = func(ctx context.Context, before apply.ChangeCounts, entries []apply.EntryChanges) error {
			return d.feed.Publish(ctx, before, entries)
		}
	}
	d.db, err = apply.Open(path, opts)
	if err != nil {
		return nil, err
	}
	if n.cfg.Changes.Enabled {
		c := n.cfg.Changes
		d.feed, err = feed.Open(ctx, n.js, feed.Config{DB: name, Node: n.cfg.NodeID, Tables: c.Tables, Replicas: n.cfg.Replicas,
			MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, LostAfter: c.LostAfter, Logger: n.log}, d.db.ChangeCounts())
		if err != nil {
			d.db.Close()
			return nil, err
		}
	}
	if n.snaps != nil {
		if m, err := n.snaps.Latest(ctx, name); err == nil {
			d.lastSnap.Store(m.Seq)
		}
		n.bg.Add(1)
		go n.snapshotLoop(d)
	}
	go func() { d.done <- n.follow(d) }()
	n.log.Info("catching up", "db", name, "applied", d.db.Applied(), "stream_last_seq", bounds.LastSeq)
	if err := d.db.WaitApplied(ctx, bounds.LastSeq); err != nil {
		n.cancel()
		<-d.done
		if d.feed != nil {
			d.feed.Close()
		}
		d.db.Close()
		return nil, fmt.Errorf("catch up %s to sequence %d: %w", name, bounds.LastSeq, err)
	}
	return d, nil
}

// DB returns the apply.DB of database name, or nil.
func (n *Node) DB(name string) *apply.DB {
	if d := n.dbs[name]; d != nil {
		return d.db
	}
	return nil
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Stop drains the micro endpoints, waits for requests in flight, finishes
// the batch being applied and closes the databases.
func (n *Node) Stop() error {
	var errs []error
	n.stopOnce.Do(func() {
		if n.proto != nil {
			errs = append(errs, n.stopEndpoints())
			// Once the server has our unsubscribe, it routes no more requests
			// here; requests it already sent are forwarded to other nodes.
			n.nc.Flush()
		}
		n.mu.Lock()
		n.stopping = true
		n.mu.Unlock()
		waitTimeout(&n.inflight, 10*time.Second)
		close(n.work)
		n.cancel()
		n.bg.Wait()
		for _, d := range n.dbs {
			if err := <-d.done; err != nil {
				errs = append(errs, err)
			}
			if d.feed != nil {
				d.feed.Close()
			}
			errs = append(errs, d.db.Close())
		}
	})
	return errors.Join(errs...)
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
