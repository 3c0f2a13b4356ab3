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
	// Checkpoint configures the checkpoints of the running digest, which
	// nodes compare to find a diverged copy (on by default).
	Checkpoint CheckpointConfig
	// Apply, when set, adjusts the apply.Options of database db before its
	// file is opened. Tests use it (apply.Options.Mutate makes one node
	// apply an entry differently); a node has no use for it.
	Apply func(db string, o *apply.Options)
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
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	proto  *protocol // the endpoints and the service protocol (micro.go)
	log    *slog.Logger
	dbs    map[string]*database
	subj   map[string]*database           // endpoint subject -> database
	snaps  atomic.Pointer[snapshot.Store] // nil while JetStream was not reached, or snapshots are disabled
	snapMu sync.Mutex                     // serializes opening snaps
	bg     sync.WaitGroup                 // snapshot loops

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
	offline            // JetStream not reached since start: level none reads are served from the local copy, the rest gets 503
	failing            // applying fails for a reason of this node's (disk full, I/O): requests get 503, apply retries
	starting           // no local copy yet: waiting for JetStream
	diverged           // its running digest differs from the majority's at a checkpoint: requests get 503 while it heals
)

func (s state) String() string {
	switch s {
	case serving:
		return "serving"
	case restoring:
		return "restoring"
	case incompatible:
		return "incompatible"
	case offline:
		return "offline"
	case failing:
		return "failing"
	case starting:
		return "starting"
	case diverged:
		return "diverged"
	}
	return fmt.Sprintf("state(%d)", int32(s))
}

// database is one database served by this node: the state machine (apply)
// and the stream it follows.
type database struct {
	name      string
	path      string
	db        *apply.DB                     // set before the database is served (by runDatabase when !local)
	local     bool                          // a usable local copy was opened at start
	str       atomic.Pointer[stream.Stream] // nil until JetStream was reached
	connected chan struct{}                 // closed once str is set
	waits     atomic.Int64                  // awaitStart's wake-ups (export_test.go: StartWakes)
	ready     chan struct{}                 // closed once caught up with the stream as it was when reached (markReady)
	readySeq  uint64                        // the stream's last sequence when reached (set before anything calls markReady)
	readyOnce sync.Once                     // closes ready once
	feed      *feed.Feed                    // nil unless the change feed is on (set by runDatabase before it follows)
	done      chan error                    // runDatabase's result
	state     atomic.Int32                  // a state
	lastSnap  atomic.Uint64                 // sequence of the latest stored snapshot known here
	restores  atomic.Uint64                 // restores from a snapshot while running

	cps          *checkpoints                       // nil when checkpoints are disabled
	healReq      atomic.Pointer[healRequest]        // a restore the follow loop is asked to make (heal.go)
	followCancel atomic.Pointer[context.CancelFunc] // stops the running Follow
	heals        atomic.Uint64                      // heals since start
	answering    atomic.Bool                        // a heal request of another node is being served

	failure    atomic.Value // string: why applying fails (state failing)
	refreshing atomic.Bool  // a background stream-state refresh runs
	streamErr  atomic.Value // string: the last refresh's error, "" if none

	writes writer // coalesces the write requests (write.go)
}

func (d *database) getState() state { return state(d.state.Load()) }

// stream returns d's stream, nil while JetStream was not reached.
func (d *database) stream() *stream.Stream { return d.str.Load() }

// store returns the snapshot store, nil while JetStream was not reached or
// when snapshots are disabled.
func (n *Node) store() *snapshot.Store { return n.snaps.Load() }
func (d *database) setState(s state)   { d.state.Store(int32(s)) }

// errRestoring answers requests while the database is being replaced by a
// snapshot.
var errRestoring = api.NewError(api.KindRestoring, "this node is restoring its database from a snapshot: retry shortly, or ask another node")

// errOffline answers what needs JetStream while the node has not reached
// it since start (what says what was not done).
func errOffline(d *database, kind api.ErrorKind, what string) error {
	return api.NewError(kind, "this node has not reached JetStream since it started (serving its local copy of %s offline, level none reads only): %s; retry later or ask another node", d.name, what)
}

// errFailing answers requests while this node cannot apply entries.
func errFailing(d *database) error {
	msg, _ := d.failure.Load().(string)
	return api.Errorf(api.CodeUnavailable, "this node cannot apply entries of %s (%s) and retries; its copy is behind: ask another node", d.name, msg)
}

// errIncompatible answers requests once the node met an entry it cannot
// apply (a newer entry format).
var errIncompatible = api.NewError(api.KindIncompatible, "this node met a stream entry of a newer format than it can apply and stopped applying this database: upgrade this node (see Rolling upgrades in the README), or ask another node")

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
	cfg.Checkpoint.defaults()
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
	for _, name := range cfg.Databases {
		if _, dup := n.dbs[name]; dup {
			continue
		}
		d, err := n.openDatabase(name)
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
	for _, name := range cfg.Databases {
		if err := n.awaitStart(ctx, n.dbs[name]); err != nil {
			n.Stop()
			return nil, err
		}
	}
	if err := n.register(); err != nil {
		n.Stop()
		return nil, err
	}
	// Once Start returns, the server knows the endpoints' subscriptions.
	// (FlushWithContext refuses a context without a deadline.) A node
	// serving a copy offline may not reach NATS at all: it starts all the
	// same, and nats.go sends the subscriptions when it connects.
	for _, d := range n.dbs {
		if d.getState() == offline {
			n.nc.FlushTimeout(time.Second)
			return n, nil
		}
	}
	fctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		fctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	if err := n.nc.FlushWithContext(fctx); err != nil {
		n.Stop()
		return nil, fmt.Errorf("flush: %w", err)
	}
	return n, nil
}

// OfflineGrace is how long Start waits for JetStream before it serves a
// database it holds a local copy of offline: level none reads from the
// copy, 503 for the rest, until JetStream is reached (the node then
// catches up by itself). A database without a local copy waits for
// JetStream however long it takes.
const OfflineGrace = 3 * time.Second

// openDatabase opens the local copy of database name if it holds a
// usable one (state offline until JetStream is reached) and starts run,
// which reaches the stream, restores or rebuilds the file if needed, and
// follows the stream.
func (n *Node) openDatabase(name string) (*database, error) {
	d := &database{name: name, path: filepath.Join(n.cfg.DataDir, name+".sqlite"),
		connected: make(chan struct{}), ready: make(chan struct{}), done: make(chan error, 1)}
	d.setState(starting)
	if !n.cfg.Checkpoint.Disabled {
		d.cps = newCheckpoints(n, d)
	}
	if _, err := apply.ReadSnapshotInfo(n.ctx, d.path); err == nil {
		db, err := apply.Open(d.path, n.applyOptions(d))
		if err != nil {
			return nil, err
		}
		d.db, d.local = db, true
		d.setState(offline)
	}
	go func() { d.done <- n.runDatabase(d) }()
	return d, nil
}

func (n *Node) applyOptions(d *database) apply.Options {
	opts := apply.Options{Node: n.cfg.NodeID, Readers: n.cfg.Readers, Logger: n.log.With("db", d.name)}
	if n.cfg.Changes.Enabled {
		// d.feed is set before the follower starts (runDatabase).
		opts.OnChanges = func(ctx context.Context, before apply.ChangeCounts, entries []apply.EntryChanges) error {
			return d.feed.Publish(ctx, before, entries)
		}
	}
	if !n.cfg.Snapshot.Disabled {
		opts.Loader = n.loader(d)
	}
	if d.cps != nil {
		opts.OnDigest = d.cps.onDigest
	}
	if n.cfg.Apply != nil {
		n.cfg.Apply(d.name, &opts)
	}
	return opts
}

// awaitStart waits until d may be served: caught up with its stream as it
// was when reached, or, holding a local copy, JetStream not reached within
// OfflineGrace. ctx bounds the wait.
//
// Each wake-up of its loop is counted (d.waits): at most three (reached,
// then caught up or stopped), never a loop spinning on the closed
// connected channel while the node catches up.
func (n *Node) awaitStart(ctx context.Context, d *database) error {
	var grace <-chan time.Time
	if d.local {
		t := time.NewTimer(OfflineGrace)
		defer t.Stop()
		grace = t.C
	} else {
		n.log.Info("waiting for JetStream: no local copy of the database to serve meanwhile", "db", d.name, "stream", StreamName(d.name))
	}
	connected := d.connected
	for {
		d.waits.Add(1)
		select {
		case <-d.ready:
			return nil
		case <-connected:
			// Reached: catch up before serving. A closed channel is always
			// ready, so it is selected no more.
			connected, grace = nil, nil
		case <-grace:
			n.log.Warn("JetStream not reachable: serving the local copy offline (level none reads); writes and strong reads get 503 until it is reached", "db", d.name, "applied", d.db.Applied())
			return nil
		case err := <-d.done:
			d.done <- err // for Stop
			if err == nil {
				err = errors.New("stopped")
			}
			return fmt.Errorf("database %s: %w", d.name, err)
		case <-ctx.Done():
			return fmt.Errorf("start %s: %w", d.name, ctx.Err())
		}
	}
}

// openStore opens the snapshot store once (retrying until ctx is done);
// nil when snapshots are disabled.
func (n *Node) openStore(ctx context.Context) (*snapshot.Store, error) {
	if n.cfg.Snapshot.Disabled {
		return nil, nil
	}
	n.snapMu.Lock()
	defer n.snapMu.Unlock()
	if s := n.store(); s != nil {
		return s, nil
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := snapshot.Open(cctx, n.js, snapshot.Options{Node: n.cfg.NodeID, Replicas: n.cfg.Replicas, Logger: n.log})
		cancel()
		if err == nil {
			n.snaps.Store(s)
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		n.log.Info("waiting for JetStream", "bucket", snapshot.Bucket, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// runDatabase reaches d's stream (waiting for JetStream as long as it takes),
// rebuilds a missing or unreadable local file, starts the snapshot loop
// and follows the stream until the node stops.
func (n *Node) runDatabase(d *database) error {
	str, err := stream.Open(n.ctx, n.js, stream.Config{
		Name:        StreamName(d.name),
		Subject:     EntrySubject(d.name),
		Description: "nqlite entries of database " + d.name,
		Replicas:    n.cfg.Replicas,
		Duplicates:  n.cfg.Duplicates,
		Barrier:     apply.Barrier(),
		Logger:      n.log,
	})
	if n.ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	store, err := n.openStore(n.ctx)
	if n.ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	var bounds stream.State
	for {
		cctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		bounds, err = str.Bounds(cctx)
		cancel()
		if err == nil {
			break
		}
		n.log.Info("waiting for JetStream", "stream", str.Name(), "err", err)
		select {
		case <-n.ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
	if d.db == nil {
		if err := n.prepareLocal(n.ctx, d, d.path, bounds.FirstSeq); err != nil {
			if n.ctx.Err() != nil {
				return nil
			}
			return err
		}
		db, err := apply.Open(d.path, n.applyOptions(d))
		if err != nil {
			return err
		}
		d.db = db
	} else if store == nil && bounds.FirstSeq > d.db.Applied()+1 {
		return fmt.Errorf("the stream starts at %d, this node has applied %d, and snapshots are disabled: cannot rebuild", bounds.FirstSeq, d.db.Applied())
	}
	if n.cfg.Changes.Enabled {
		c := n.cfg.Changes
		f, err := feed.Open(n.ctx, n.js, feed.Config{DB: d.name, Node: n.cfg.NodeID, Tables: c.Tables, Replicas: n.cfg.Replicas,
			MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, LostAfter: c.LostAfter, Logger: n.log}, d.db.ChangeCounts())
		if n.ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		d.feed = f
	}
	d.str.Store(str)
	d.setState(serving)
	close(d.connected)
	if store != nil {
		if m, err := store.Latest(n.ctx, d.name); err == nil {
			d.lastSnap.Store(m.Seq)
		}
		n.bg.Add(1)
		go n.snapshotLoop(d)
	}
	if d.cps != nil {
		n.bg.Add(1)
		go func() {
			defer n.bg.Done()
			d.cps.run(n.ctx)
		}()
	}
	n.log.Info("catching up", "db", d.name, "applied", d.db.Applied(), "stream_last_seq", bounds.LastSeq)
	d.readySeq = bounds.LastSeq
	go func() {
		if d.db.WaitApplied(n.ctx, bounds.LastSeq) == nil {
			d.markReady()
		}
	}()
	return n.follow(d)
}

// markReady closes d.ready once d has applied d.readySeq and is not in the
// middle of a restore: a restore makes the snapshot's sequence the applied
// one before it ends (apply.DB.Replace), and a node that started serving
// then would answer its first requests 503 restoring. The restores call it
// again once they are done.
func (d *database) markReady() {
	if d.getState() != restoring && d.db.Applied() >= d.readySeq {
		d.readyOnce.Do(func() { close(d.ready) })
	}
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
		// Every step is bounded, so Stop ends within about 10 s in every
		// state: NATS unreachable, an endless entry being applied (its
		// context interrupts it and rolls it back), a stalled download.
		if n.proto != nil {
			errs = append(errs, n.stopEndpoints())
			// Once the server has our unsubscribe, it routes no more requests
			// here; requests it already sent are forwarded to other nodes.
			n.nc.FlushTimeout(time.Second)
		}
		n.mu.Lock()
		n.stopping = true
		n.mu.Unlock()
		waitTimeout(&n.inflight, 4*time.Second)
		close(n.work)
		n.cancel()
		bg := make(chan struct{})
		go func() { n.bg.Wait(); close(bg) }()
		// One deadline for the background loops and the apply loops
		// together (a channel of time.After fires once: each wait needs
		// its own).
		deadline := time.Now().Add(3 * time.Second)
		select {
		case <-bg:
		case <-time.After(time.Until(deadline)):
			errs = append(errs, errors.New("the snapshot or checkpoint loop did not stop within 3s"))
		}
		for _, d := range n.dbs {
			select {
			case err := <-d.done:
				if err != nil {
					errs = append(errs, err)
				}
				if d.feed != nil {
					d.feed.Close()
				}
				if d.db != nil { // runDatabase returned: d.db is settled
					errs = append(errs, d.db.Close())
				}
			case <-time.After(time.Until(deadline)):
				errs = append(errs, fmt.Errorf("database %s: the apply loop did not stop in time; its file is left to the process exit", d.name))
			}
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
