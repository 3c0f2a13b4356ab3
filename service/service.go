// Package service is nqlite's NATS face: it registers the NATS micro
// service "nqlite", decodes requests on nqlite.query.<db>, answers reads
// from the local database, publishes writes as entries to the database's
// JetStream stream and replies once this node has applied them.
//
// It reaches SQLite only through package apply. See DESIGN.md beside this
// file for the trade-offs.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/snapshot"
)

// Version is the semantic version the node registers with micro.
const Version = "0.1.0"

// ServiceName is the micro service name every node registers.
const ServiceName = api.ServiceName

// QueueGroup is the micro queue group of every endpoint: a request goes to
// exactly one node (the nearest, by NATS queue-group routing).
const QueueGroup = api.QueueGroup

// QuerySubject returns the request subject of database db (see
// api.QuerySubject).
func QuerySubject(db string) string { return api.QuerySubject(db) }

// ReadSubject returns the read-only request subject of database db (see
// api.ReadSubject).
func ReadSubject(db string) string { return api.ReadSubject(db) }

// MaxStatements is the most statements one request may hold.
const MaxStatements = 10000

// EntrySubject returns the subject entries of db are published on (see
// api.EntrySubject).
func EntrySubject(db string) string { return api.EntrySubject(db) }

// StreamName returns the JetStream stream of db (see api.StreamName).
func StreamName(db string) string { return api.StreamName(db) }

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
}

// Node serves databases over NATS.
type Node struct {
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	svc   micro.Service
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

// workers is the number of long-lived request goroutines. SQLite (through
// modernc) needs deep stacks; a goroutine per request would grow a fresh
// stack every time. Requests beyond the idle workers get a goroutine of
// their own.
const workers = 32

type database struct {
	name      string
	stream    string
	db        *apply.DB
	str       jetstream.Stream
	done      chan error    // follower's result
	restoring atomic.Bool   // restoring from a snapshot: requests get 503
	lastSnap  atomic.Uint64 // sequence of the latest stored snapshot known here
	restores  atomic.Uint64 // restores from a snapshot while running
}

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

func (n *Node) openDatabase(ctx context.Context, name string) (*database, error) {
	d := &database{name: name, stream: StreamName(name), done: make(chan error, 1)}
	scfg := jetstream.StreamConfig{
		Name:        d.stream,
		Description: "nqlite entries of database " + name,
		Subjects:    []string{EntrySubject(name)},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Replicas:    n.cfg.Replicas,
		Duplicates:  n.cfg.Duplicates,
		AllowDirect: true,
	}
	// In a fresh cluster the meta leader may not be elected yet: retry.
	var err error
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		d.str, err = n.js.CreateOrUpdateStream(cctx, scfg)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("stream %s: %w", d.stream, err)
		}
		n.log.Info("waiting for JetStream", "stream", d.stream, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stream %s: %w", d.stream, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	info, err := d.str.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", d.stream, err)
	}
	last := info.State.LastSeq
	path := filepath.Join(n.cfg.DataDir, name+".sqlite")
	if err := n.prepareLocal(ctx, d, path, info.State.FirstSeq); err != nil {
		return nil, err
	}
	opts := apply.Options{Node: n.cfg.NodeID, Readers: n.cfg.Readers, Logger: n.log.With("db", name)}
	if n.snaps != nil {
		opts.Loader = n.loader
	}
	d.db, err = apply.Open(path, opts)
	if err != nil {
		return nil, err
	}
	if n.snaps != nil {
		if m, err := n.snaps.Latest(ctx, name); err == nil {
			d.lastSnap.Store(m.Seq)
		}
		n.bg.Add(1)
		go n.snapshotLoop(d)
	}
	go func() { d.done <- n.follow(d) }()
	n.log.Info("catching up", "db", name, "applied", d.db.Applied(), "stream_last_seq", last)
	if err := d.db.WaitApplied(ctx, last); err != nil {
		n.cancel()
		<-d.done
		d.db.Close()
		return nil, fmt.Errorf("catch up %s to sequence %d: %w", name, last, err)
	}
	return d, nil
}

func (n *Node) register() error {
	svc, err := micro.AddService(n.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "replicated SQLite over NATS JetStream",
		Metadata:    map[string]string{"node": n.cfg.NodeID},
		QueueGroup:  QueueGroup,
		StatsHandler: func(e *micro.Endpoint) any {
			if d := n.subj[e.Subject]; d != nil {
				return n.stats(d)
			}
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("micro: %w", err)
	}
	n.svc = svc
	for _, d := range n.dbs {
		for _, ep := range []struct {
			name, subject string
			readOnly      bool
		}{{"query_" + d.name, QuerySubject(d.name), false}, {"read_" + d.name, ReadSubject(d.name), true}} {
			err := svc.AddEndpoint(ep.name, n.handler(d, ep.readOnly),
				micro.WithEndpointSubject(ep.subject),
				micro.WithEndpointQueueGroup(QueueGroup),
				micro.WithEndpointMetadata(map[string]string{"db": d.name, "read_only": strconv.FormatBool(ep.readOnly)}))
			if err != nil {
				return fmt.Errorf("micro endpoint %s: %w", ep.subject, err)
			}
		}
		if n.snaps != nil {
			for _, ep := range []struct {
				name, subject string
				h             micro.Handler
			}{{"snapshot_" + d.name, SnapshotSubject(d.name), n.snapshotHandler(d)}, {"load_" + d.name, LoadSubject(d.name), n.loadHandler(d)}} {
				err := svc.AddEndpoint(ep.name, ep.h,
					micro.WithEndpointSubject(ep.subject),
					micro.WithEndpointQueueGroup(QueueGroup),
					micro.WithEndpointMetadata(map[string]string{"db": d.name}))
				if err != nil {
					return fmt.Errorf("micro endpoint %s: %w", ep.subject, err)
				}
			}
		}
	}
	return nil
}

// handler returns the micro handler of an endpoint: it hands the request
// to a worker (micro calls a handler one request at a time per endpoint).
func (n *Node) handler(d *database, readOnly bool) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		n.dispatch(r, func() { n.serve(d, r, readOnly) })
	})
}

// dispatch runs job for request r on a worker, counted as in flight, or
// forwards r to another node when this one is stopping.
func (n *Node) dispatch(r micro.Request, job func()) {
	n.mu.RLock()
	if n.stopping {
		n.mu.RUnlock()
		n.forward(r)
		return
	}
	n.inflight.Add(1)
	n.mu.RUnlock()
	run := func() {
		defer n.inflight.Done()
		job()
	}
	select {
	case n.work <- run:
	default:
		go run()
	}
}

// Stats is the endpoint data in micro STATS replies (see api.Stats).
type Stats = api.Stats

func (n *Node) stats(d *database) Stats {
	s := Stats{DB: d.name, Node: n.cfg.NodeID, Applied: d.db.Applied(), Skipped: d.db.Skipped(), Waiting: d.db.Waiting(),
		State: "serving", SnapshotSeq: d.lastSnap.Load(), Restores: d.restores.Load()}
	if d.restoring.Load() || d.db.Restoring() {
		s.State = "restoring"
	}
	ctx, cancel := context.WithTimeout(n.ctx, time.Second)
	defer cancel()
	if info, err := d.str.Info(ctx); err != nil {
		s.StreamError = err.Error()
	} else {
		s.StreamLastSeq = info.State.LastSeq
		if s.StreamLastSeq > s.Applied {
			s.Lag = s.StreamLastSeq - s.Applied
		}
	}
	return s
}

// Stats returns the micro stats data of database name (see Stats).
func (n *Node) Stats(name string) Stats {
	if d := n.dbs[name]; d != nil {
		return n.stats(d)
	}
	return Stats{}
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
		if n.svc != nil {
			errs = append(errs, n.svc.Stop())
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
			errs = append(errs, d.db.Close())
		}
	})
	return errors.Join(errs...)
}

// forward republishes a request that reached this node after it began to
// stop to the same subject, with the same reply subject, so another node of
// the queue group answers it (this node no longer subscribes). With no
// other node, the requester times out as it would with no node at all.
func (n *Node) forward(r micro.Request) {
	msg := &nats.Msg{Subject: r.Subject(), Reply: r.Reply(), Data: r.Data(), Header: nats.Header(r.Headers())}
	if err := n.nc.PublishMsg(msg); err != nil {
		n.log.Warn("forward request while stopping", "subject", r.Subject(), "err", err)
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

func (n *Node) serve(d *database, r micro.Request, readOnly bool) {
	start := time.Now()
	resp, err := n.handle(d, r.Data(), start, readOnly)
	var body []byte
	if err == nil {
		resp.Node = n.cfg.NodeID
		resp.Time = float64(time.Since(start).Microseconds()) / 1000
		body = resp.AppendJSON(make([]byte, 0, 256))
		if max := n.nc.MaxPayload(); int64(len(body)) > max {
			rows := 0
			for _, res := range resp.Results {
				rows += len(res.Values)
			}
			err = api.Errorf(api.CodeTooLarge, "the response is %d bytes (%d rows), over the NATS max payload of %d bytes: select fewer rows or columns (LIMIT/OFFSET)", len(body), rows, max)
			if resp.Seq > 0 && !resp.Queued && hasWrite(resp) {
				err = api.Errorf(api.CodeTooLarge, "the write was applied as entry %d, but its response is %d bytes (%d rows), over the NATS max payload of %d bytes", resp.Seq, len(body), rows, max)
			}
		}
	}
	if err != nil {
		code := api.ErrorCode(err)
		msg := err.Error()
		if code == api.CodeInternal {
			n.log.Error("request failed", "db", d.name, "err", err)
		}
		r.Error(strconv.Itoa(code), msg, api.ErrorBody(msg, n.cfg.NodeID))
		return
	}
	if err := r.Respond(body); err != nil {
		n.log.Warn("respond", "db", d.name, "err", err)
	}
}

// handle runs one request and returns its response or an error whose
// api.ErrorCode is the micro error code.
func hasWrite(resp *api.Response) bool {
	for _, r := range resp.Results {
		if r.Write {
			return true
		}
	}
	return false
}

func (n *Node) handle(d *database, data []byte, start time.Time, readOnly bool) (*api.Response, error) {
	req, err := api.ParseRequest(data)
	if err != nil {
		return nil, err
	}
	if d.restoring.Load() {
		return nil, apply.ErrRestoring
	}
	if len(req.Statements) > MaxStatements {
		return nil, api.Errorf(api.CodeBadRequest, "the request holds %d statements, over the limit of %d: split it", len(req.Statements), MaxStatements)
	}
	ctx, cancel := context.WithDeadline(n.ctx, start.Add(time.Duration(req.TimeoutMS)*time.Millisecond))
	defer cancel()
	if err := n.waitConsistency(ctx, d, req); err != nil {
		return nil, err
	}
	plan, err := d.db.Prepare(ctx, req.Statements)
	if err != nil {
		return nil, err
	}
	if plan.Failed() && !plan.Write() {
		// A statement this node cannot prepare may depend on an entry it
		// has not applied yet (a table another node just created): catch
		// up with the stream as it is now and classify again, rather than
		// answer from a stale schema or send a read into the stream.
		plan.Close()
		if info, err := d.str.Info(ctx); err == nil && info.State.LastSeq > d.db.Applied() {
			if err := d.db.WaitApplied(ctx, info.State.LastSeq); err != nil {
				return nil, api.Errorf(api.CodeTimeout, "a statement cannot be prepared on this node, which has applied up to sequence %d and did not reach the stream's %d within timeout_ms %d", d.db.Applied(), info.State.LastSeq, req.TimeoutMS)
			}
		}
		if plan, err = d.db.Prepare(ctx, req.Statements); err != nil {
			return nil, err
		}
	}
	if readOnly && plan.Write() {
		i := plan.FirstWrite()
		plan.Close()
		return nil, api.Errorf(api.CodeForbidden, "statement %d writes, and %s only reads: send writes to %s", i+1, ReadSubject(d.name), QuerySubject(d.name))
	}
	if !plan.Write() {
		// Rows are kept up to twice the max payload (an estimate bounding
		// memory); serve checks the exact size of the response.
		results, seq, err := plan.Run(ctx, 2*int(n.nc.MaxPayload()))
		if err != nil {
			return nil, err
		}
		return &api.Response{Results: results, Seq: seq, Format: req.Format}, nil
	}
	plan.Close()
	return n.write(ctx, d, req)
}

// waitConsistency applies the read consistency of the request: level
// strong waits for the stream's last sequence as of now, after_seq for
// that sequence.
func (n *Node) waitConsistency(ctx context.Context, d *database, req *api.Request) error {
	target := req.AfterSeq
	if req.Level == api.LevelStrong {
		info, err := d.str.Info(ctx)
		if err != nil {
			return api.Errorf(api.CodeUnavailable, "level strong needs the stream's last sequence, but JetStream is unreachable: %v", err)
		}
		target = max(target, info.State.LastSeq)
	}
	if target == 0 || d.db.Applied() >= target {
		return nil
	}
	if err := d.db.WaitApplied(ctx, target); err != nil {
		return api.Errorf(api.CodeTimeout, "this node has applied up to sequence %d and did not reach %d within timeout_ms %d", d.db.Applied(), target, req.TimeoutMS)
	}
	return nil
}

// write publishes the request as one entry and waits for this node to
// apply it.
func (n *Node) write(ctx context.Context, d *database, req *api.Request) (*api.Response, error) {
	e := n.newEntry()
	e.Tx, e.Statements = req.Transaction, req.Statements
	return n.submit(ctx, d, e, req)
}

// newEntry returns an entry accepted by this node now: its token, time and
// random seed.
func (n *Node) newEntry() *apply.Entry {
	return &apply.Entry{Node: n.cfg.NodeID, Token: nuid.Next(), Time: time.Now().UnixMilli(), Seed: rand.Int64()}
}

// submit publishes entry e to d's stream and, unless req.Queue, waits for
// this node to apply it; req also gives the idempotency key, the timeout
// (for messages) and the response format.
func (n *Node) submit(ctx context.Context, d *database, e *apply.Entry, req *api.Request) (*api.Response, error) {
	data := e.Encode()
	if max := n.nc.MaxPayload(); int64(len(data)) > max {
		return nil, api.Errorf(api.CodeTooLarge, "the request is %d bytes as a stream entry, over the NATS max payload of %d bytes: split it into several requests", len(data), max)
	}
	var outcome <-chan apply.Outcome
	if !req.Queue {
		ch, stopWaiting := d.db.Await(e.Token)
		defer stopWaiting()
		outcome = ch
	}
	msg := &nats.Msg{Subject: EntrySubject(d.name), Data: data}
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(d.stream)}
	if req.ID != "" {
		opts = append(opts, jetstream.WithMsgID(req.ID))
	}
	fut, err := n.js.PublishMsgAsync(msg, opts...)
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "JetStream is unreachable, the write was not stored: %v", err)
	}
	var ack *jetstream.PubAck
	select {
	case ack = <-fut.Ok():
	case err := <-fut.Err():
		var apiErr *jetstream.APIError
		switch {
		case errors.Is(err, jetstream.ErrNoStreamResponse):
			// NATS answered "no responders" (after jetstream's retries):
			// nothing listens on the entry subject, so nothing was stored.
			return nil, unreachable(d)
		case errors.As(err, &apiErr):
			return nil, api.Errorf(api.CodeUnavailable, "JetStream did not store the write: %v", err)
		case outcome != nil:
			// The connection dropped before the ack (nats: disconnected):
			// the entry may be stored all the same, and then this node
			// applies it once reconnected.
			return awaitUnacked(ctx, req, outcome, err)
		default:
			return nil, api.Errorf(api.CodeUnavailable, "JetStream did not acknowledge the write (%v); it may or may not be stored: retry with the same id to be safe", err)
		}
	case <-ctx.Done():
		return nil, api.Errorf(api.CodeUnavailable, "JetStream did not acknowledge the write within timeout_ms %d; it may or may not be stored: retry with the same id to be safe", req.TimeoutMS)
	}
	if ack.Duplicate {
		if err := d.db.WaitApplied(ctx, ack.Sequence); err != nil {
			return nil, api.Errorf(api.CodeTimeout, "duplicate of entry %d, which this node has not applied within timeout_ms %d", ack.Sequence, req.TimeoutMS)
		}
		return &api.Response{Results: []api.Result{}, Seq: ack.Sequence, Duplicate: true, Format: req.Format}, nil
	}
	if req.Queue {
		return &api.Response{Results: []api.Result{}, Seq: ack.Sequence, Queued: true, Format: req.Format}, nil
	}
	select {
	case o := <-outcome:
		return &api.Response{Results: o.Results, Seq: o.Seq, Format: req.Format}, nil
	case <-ctx.Done():
		return nil, api.Errorf(api.CodeTimeout, "entry %d is stored and will be applied, but this node did not apply it within timeout_ms %d: read with after_seq %d to see it", ack.Sequence, req.TimeoutMS, ack.Sequence)
	}
}

// unreachable is the error of a write that NATS could not deliver to any
// JetStream server: no server holding the stream is reachable from this
// node's NATS server. On a leaf node this is the answer, within a few
// hundred milliseconds, while the link to the hub is down (the leaf server
// drops the hub's interest with the link), instead of waiting out the
// request's timeout.
func unreachable(d *database) error {
	return api.Errorf(api.CodeUnavailable, "JetStream is unreachable: no server answers for stream %s on %s (is the leaf node's link to its hub down?); the write was not stored", d.stream, EntrySubject(d.name))
}

// awaitUnacked waits, until the request's deadline, for this node to apply
// an entry whose acknowledgement was lost (cause): if JetStream stored it,
// the outcome arrives as for any write.
func awaitUnacked(ctx context.Context, req *api.Request, outcome <-chan apply.Outcome, cause error) (*api.Response, error) {
	select {
	case o := <-outcome:
		return &api.Response{Results: o.Results, Seq: o.Seq, Format: req.Format}, nil
	case <-ctx.Done():
		return nil, api.Errorf(api.CodeUnavailable, "JetStream did not acknowledge the write (%v) and this node has not applied it within timeout_ms %d; it may or may not be stored: retry with the same id to be safe", cause, req.TimeoutMS)
	}
}
