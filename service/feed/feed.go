// Package feed publishes a database's change feed: every row change an
// entry commits, as a JSON event (api.Change) in the JetStream stream
// NQLITE_CHANGES_<db>, once each and in stream order, with no leader:
// every node that has the feed on publishes what it applies, and
// JetStream's expected-last-sequence check lets exactly one publish of
// each event land.
//
// The trick is that every node knows where each event goes. apply counts
// the committed changes as replicated state (apply.ChangeCounts, stored
// with the data, the same on every node at the same sequence), so the
// k-th change a batch hands over is event number before.Count()+k of the
// database's history, and its position in the change stream is that
// number minus the stream's base (the count when the stream was created,
// kept in its metadata). A node publishes event P with
// Nats-Expected-Last-Sequence P-1 and Nats-Msg-Id P: the first publish
// lands, any other is refused or a duplicate, and a refusal tells the
// node only that P is already stored. To keep the traffic near one
// publish per event, the node that accepted an entry publishes its events
// at once and the others first wait a moment for them (they follow the
// change stream's headers); see DESIGN.md beside this file for the
// argument, nodes far behind, retention and the failure cases.
//
// The feed knows JetStream and apply's change types; it knows nothing of
// SQLite or micro.
package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
)

// Config describes a database's change feed.
type Config struct {
	// DB is the database's name; Node this node's id (each event carries
	// its publisher's in the Nqlite-Node header).
	DB, Node string
	// Tables, when not empty, are the only tables whose changes are
	// published (SQLite's case-insensitive ASCII matching). Every node of
	// a database must publish the same tables: they are kept in the
	// stream's metadata, and Open refuses another list.
	Tables []string
	// Replicas of the change stream (default 1).
	Replicas int
	// MaxAge and MaxBytes limit what the change stream keeps (0: no
	// limit); the oldest events go first.
	MaxAge   time.Duration
	MaxBytes int64
	// Grace is how long a node waits for the node that accepted an entry
	// to publish its events before it publishes them itself (default
	// 250 ms). It waits only for nodes seen publishing in the last minute.
	Grace time.Duration
	// LostAfter is how long a node waits for the events before its own to
	// be published by another node, with the change stream not moving,
	// before it marks them lost (default 30 s; see DESIGN.md).
	LostAfter time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Metadata keys of the change stream.
const (
	metaBase   = "nqlite_base"   // the change count the stream's position 0 stands for
	metaTables = "nqlite_tables" // the published tables, comma separated, "*" for all
)

// NodeHeader names the node that published an event.
const NodeHeader = "Nqlite-Node"

// duplicates is the change stream's duplicate window: concurrent publishes
// of one event by several nodes come within milliseconds; a node further
// behind is turned away by the expected last sequence, not by the window.
const duplicates = 10 * time.Second

// inFlight is the most events one node has in flight at once.
const inFlight = 512

// errCodeMsgIDInProcess is JetStream's answer to a publish whose
// Nats-Msg-Id another publish is storing right now (a replicated stream).
const errCodeMsgIDInProcess jetstream.ErrorCode = 10158

// seenFor is how long a node counts as publishing after its last event.
const seenFor = time.Minute

// Feed publishes one database's change feed.
type Feed struct {
	js    jetstream.JetStream
	cfg   Config
	log   *slog.Logger
	match func(table string) bool // nil: every table

	ctx    context.Context // ends the watcher (Close)
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	base  uint64        // from the stream's metadata
	last  uint64        // the change stream's last sequence, as last seen (only grows)
	moved chan struct{} // closed and replaced when last grows
	str   jetstream.Stream
	seen  map[string]time.Time // publishing nodes, when their last event was seen
}

// Errors of Open that retrying cannot cure: the change stream publishes
// other tables than Config.Tables (ErrTables), or it was not made by
// nqlite (ErrForeign).
var (
	ErrTables  = errors.New("the change stream publishes other tables")
	ErrForeign = errors.New("the change stream was not made by nqlite")
)

// Open creates the change stream of cfg.DB or opens it, checking that it
// publishes cfg.Tables, and starts following its progress. counts are the
// node's change counts now: a new stream starts after them (its base), so
// the feed begins with the next change this node applies. Close stops it.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, counts apply.ChangeCounts) (*Feed, error) {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 250 * time.Millisecond
	}
	if cfg.LostAfter <= 0 {
		cfg.LostAfter = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	f := &Feed{js: js, cfg: cfg, log: cfg.Logger.With("db", cfg.DB, "stream", api.ChangesStreamName(cfg.DB)),
		moved: make(chan struct{}), seen: map[string]time.Time{}, done: make(chan struct{})}
	if len(cfg.Tables) > 0 {
		set := map[string]bool{}
		for _, t := range cfg.Tables {
			set[lowerASCII(t)] = true
		}
		f.match = func(t string) bool { return set[lowerASCII(t)] }
	}
	for {
		err := f.open(ctx, counts)
		if errors.Is(err, ErrTables) || errors.Is(err, ErrForeign) {
			return nil, err
		}
		if err == nil {
			break
		}
		f.log.Info("waiting for JetStream", "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("change stream %s: %w", api.ChangesStreamName(cfg.DB), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	go f.watch()
	return f, nil
}

// Close stops following the change stream.
func (f *Feed) Close() {
	f.cancel()
	<-f.done
}

// tablesMeta is the metadata value of a table list.
func tablesMeta(tables []string) string {
	if len(tables) == 0 {
		return "*"
	}
	l := make([]string, len(tables))
	for i, t := range tables {
		l[i] = lowerASCII(t)
	}
	sort.Strings(l)
	return strings.Join(l, ",")
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func (f *Feed) streamConfig(base uint64) jetstream.StreamConfig {
	db := f.cfg.DB
	dup := duplicates
	if f.cfg.MaxAge > 0 && f.cfg.MaxAge < dup {
		dup = f.cfg.MaxAge
	}
	maxBytes := f.cfg.MaxBytes
	if maxBytes <= 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:        api.ChangesStreamName(db),
		Description: "nqlite change feed of database " + db,
		Subjects:    []string{api.ChangesSubject(db), api.ChangesSubject(db) + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      f.cfg.MaxAge,
		MaxBytes:    maxBytes,
		Replicas:    f.cfg.Replicas,
		Duplicates:  dup,
		AllowDirect: true,
		Metadata:    map[string]string{metaBase: strconv.FormatUint(base, 10), metaTables: tablesMeta(f.cfg.Tables)},
	}
}

// open creates the stream with its base at counts, or adopts the existing
// one (its base; its retention and replicas updated to this node's).
func (f *Feed) open(ctx context.Context, counts apply.ChangeCounts) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	name := api.ChangesStreamName(f.cfg.DB)
	want := f.streamConfig(counts.Count(f.match))
	str, err := f.js.CreateStream(cctx, want)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		str, err = f.js.Stream(cctx, name)
	}
	if err != nil {
		return err
	}
	info := str.CachedInfo()
	have := info.Config
	if t := have.Metadata[metaTables]; t != want.Metadata[metaTables] {
		return fmt.Errorf("%w: %s publishes tables %q, this node was started with %q: give every node of database %s the same --changes-tables, or delete the change stream (nats stream rm %s) so that the next node starts it afresh", ErrTables, name, t, want.Metadata[metaTables], f.cfg.DB, name)
	}
	base, err := strconv.ParseUint(have.Metadata[metaBase], 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s has no valid %s in its metadata (%q): delete it or give the database another name", ErrForeign, name, metaBase, have.Metadata[metaBase])
	}
	if have.MaxAge != want.MaxAge || have.MaxBytes != want.MaxBytes || have.Replicas != want.Replicas || have.Duplicates != want.Duplicates {
		upd := have
		upd.MaxAge, upd.MaxBytes, upd.Replicas, upd.Duplicates = want.MaxAge, want.MaxBytes, want.Replicas, want.Duplicates
		if s, err := f.js.UpdateStream(cctx, upd); err != nil {
			f.log.Warn("cannot update the change stream's limits", "err", err)
		} else {
			str = s
		}
	}
	f.mu.Lock()
	if f.str == nil || f.base != base {
		f.last = 0 // another stream: its own sequences
	}
	f.str, f.base = str, base
	f.mu.Unlock()
	f.noteLast(info.State.LastSeq)
	f.log.Info("change feed", "base", base, "last_seq", info.State.LastSeq, "tables", have.Metadata[metaTables])
	return nil
}

// refresh reads the change stream's last sequence.
func (f *Feed) refresh(ctx context.Context) (uint64, error) {
	f.mu.Lock()
	str := f.str
	f.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := str.Info(cctx)
	if err != nil {
		return 0, err
	}
	return f.noteLast(info.State.LastSeq), nil
}

// noteLast records that the change stream holds at least seq and returns
// the last sequence known.
func (f *Feed) noteLast(seq uint64) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq > f.last {
		f.last = seq
		close(f.moved)
		f.moved = make(chan struct{})
	}
	return f.last
}

// waitLast waits until the change stream is known to hold pos, for at
// most d; it reports whether it does.
func (f *Feed) waitLast(ctx context.Context, pos uint64, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		f.mu.Lock()
		last, moved := f.last, f.moved
		f.mu.Unlock()
		if last >= pos {
			return true
		}
		select {
		case <-moved:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// watch follows the change stream's progress (headers only) for as long
// as the feed is open: the last sequence, and which nodes publish.
func (f *Feed) watch() {
	defer close(f.done)
	for f.ctx.Err() == nil {
		f.mu.Lock()
		from := f.last + 1
		f.mu.Unlock()
		cons, err := f.js.OrderedConsumer(f.ctx, api.ChangesStreamName(f.cfg.DB), jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from, HeadersOnly: true})
		if err == nil {
			var it jetstream.MessagesContext
			if it, err = cons.Messages(); err == nil {
				stop := context.AfterFunc(f.ctx, it.Stop)
				for {
					m, err := it.Next()
					if err != nil {
						break
					}
					if md, err := m.Metadata(); err == nil {
						if node := m.Headers().Get(NodeHeader); node != "" {
							f.mu.Lock()
							f.seen[node] = time.Now()
							f.mu.Unlock()
						}
						f.noteLast(md.Sequence.Stream)
					}
				}
				stop()
				it.Stop()
			}
		}
		select {
		case <-f.ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// others reports whether every entry of the batch was accepted by a node
// other than this one that published events in the last minute: then
// that node publishes them, and this one need not unless it does not.
func (f *Feed) others(entries []apply.EntryChanges) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range entries {
		n := entries[i].Node
		if n == f.cfg.Node || time.Since(f.seen[n]) > seenFor {
			return false
		}
	}
	return true
}

// forget marks the accepting nodes of entries as not publishing (they did
// not within the grace period).
func (f *Feed) forget(entries []apply.EntryChanges) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range entries {
		delete(f.seen, entries[i].Node)
	}
}

// event is one event to publish: the n-th counted change (or reset) of
// the database, at position n - base of the change stream.
type event struct {
	n       uint64
	subject string
	data    []byte
}

// Publish makes sure the change stream holds the events of entries, the
// batch a node is about to commit (an apply.ChangesFunc): it publishes
// those no node has published yet and returns once every one is stored,
// by this node or another. It returns early only when ctx is done (the
// batch is then rolled back and applied again later).
func (f *Feed) Publish(ctx context.Context, before apply.ChangeCounts, entries []apply.EntryChanges) error {
	f.mu.Lock()
	base := f.base
	f.mu.Unlock()
	n := before.Count(f.match) // changes and resets before the batch
	var evs []event
	for i := range entries {
		e := &entries[i]
		if e.Reset {
			n++
			if n > base {
				c := api.Change{Seq: e.Seq, Time: e.Time, Op: api.OpReset}
				evs = append(evs, event{n: n, subject: api.ChangesSubject(f.cfg.DB), data: c.AppendJSON(nil)})
			}
		}
		for j := range e.Changes {
			ch := &e.Changes[j]
			if f.match != nil && !f.match(ch.Table) {
				continue
			}
			n++
			if n <= base {
				continue // before the stream began: nothing to encode
			}
			evs = append(evs, event{n: n, subject: api.ChangeSubject(f.cfg.DB, ch.Table), data: changeJSON(e, j)})
		}
	}
	if len(evs) == 0 {
		return nil
	}
	if f.others(entries) {
		// The accepting node publishes these events as it commits them:
		// give it a moment, then publish what is still missing.
		if f.waitLast(ctx, evs[len(evs)-1].n-base, f.cfg.Grace) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.forget(entries)
	}
	return f.publish(ctx, evs)
}

// changeJSON encodes change j of entry e.
func changeJSON(e *apply.EntryChanges, j int) []byte {
	ch := &e.Changes[j]
	c := api.Change{Seq: e.Seq, Index: j, Time: e.Time, Op: ch.Op.String(), Table: ch.Table,
		RowID: ch.RowID, NewRowID: ch.NewRowID, WithoutRowID: ch.WithoutRowID, Columns: ch.Columns, Old: ch.Old, New: ch.New}
	for _, k := range ch.PK {
		c.PK = append(c.PK, ch.Columns[k])
	}
	return c.AppendJSON(nil)
}

// publish stores evs (consecutive, ascending) in the change stream,
// skipping what it already holds.
func (f *Feed) publish(ctx context.Context, evs []event) error {
	delay := 50 * time.Millisecond
	var waitSince time.Time // since when the events before evs have not come
	var waitLast uint64
	for {
		f.mu.Lock()
		last, base := f.last, f.base
		f.mu.Unlock()
		for len(evs) > 0 && evs[0].n <= base+last {
			evs = evs[1:] // stored, or before the stream began
		}
		if len(evs) == 0 {
			return nil
		}
		if first := evs[0].n - base; first > last+1 {
			// The events before ours are not stored yet: another node
			// behind this one will publish them (this node did not apply
			// them: its database jumped ahead with a restore, or its feed
			// was switched on later). Wait for them; if nothing is
			// published for LostAfter, nobody can: mark them lost.
			l, err := f.refresh(ctx)
			if err == nil && l+1 >= first {
				continue
			}
			if err == nil && (waitSince.IsZero() || l != waitLast) {
				waitSince, waitLast = time.Now(), l
			}
			if err == nil && time.Since(waitSince) >= f.cfg.LostAfter {
				f.log.Error("change events were never published by any node: marking them lost", "from", l+1, "to", first-1)
				var lost []event
				for p := l + 1; p < first; p++ {
					c := api.Change{Op: api.OpLost}
					lost = append(lost, event{n: base + p, subject: api.ChangesSubject(f.cfg.DB), data: c.AppendJSON(nil)})
				}
				evs = append(lost, evs...)
				waitSince = time.Time{}
				continue
			}
			if err != nil {
				f.log.Warn("change stream unreachable, retrying", "err", err)
			}
			f.waitLast(ctx, first-1, delay)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			delay = min(2*delay, time.Second)
			continue
		}
		waitSince = time.Time{}
		err := f.send(ctx, base, evs)
		if err == nil {
			delay = 50 * time.Millisecond
			continue // re-check: every event is stored or being stored by another node
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errNoStream) {
			if err = f.reopen(ctx, evs[0].n-1); err == nil {
				continue
			}
		}
		f.log.Warn("publishing change events failed, retrying", "err", err)
		if err := sleep(ctx, delay); err != nil {
			return err
		}
		delay = min(2*delay, 5*time.Second)
	}
}

var errNoStream = errors.New("the change stream does not exist")

// reopen recreates a change stream that was deleted; it starts after the
// count start (the event this node publishes next is its first).
func (f *Feed) reopen(ctx context.Context, start uint64) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := f.js.Stream(cctx, api.ChangesStreamName(f.cfg.DB))
	cancel()
	if err == nil {
		return errors.New("no JetStream server answered for the change stream")
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err // JetStream unreachable: retry
	}
	f.log.Warn("the change stream was deleted: creating it again; it starts with the changes this node publishes next", "count", start)
	return f.open(ctx, apply.ChangeCounts{Resets: start})
}

// send publishes evs, window by window, each at its position in a stream
// of base base, and waits for the acknowledgements. It returns nil when
// every publish was stored or refused because its position was taken (it
// then reads how far the stream is).
func (f *Feed) send(ctx context.Context, base uint64, evs []event) error {
	for len(evs) > 0 {
		n := min(len(evs), inFlight)
		futs := make([]jetstream.PubAckFuture, 0, n)
		var perr error
		for _, ev := range evs[:n] {
			pos := ev.n - base
			msg := &nats.Msg{Subject: ev.subject, Data: ev.data, Header: nats.Header{NodeHeader: []string{f.cfg.Node}}}
			fut, err := f.js.PublishMsgAsync(msg, jetstream.WithExpectStream(api.ChangesStreamName(f.cfg.DB)),
				jetstream.WithExpectLastSequence(pos-1), jetstream.WithMsgID(strconv.FormatUint(pos, 10)))
			if err != nil {
				perr = err
				break
			}
			futs = append(futs, fut)
		}
		taken := uint64(0) // the highest position another node stored or is storing
		for i, fut := range futs {
			select {
			case ack := <-fut.Ok():
				if pos := evs[i].n - base; ack.Sequence != pos {
					// Only a foreign publisher on the feed's subjects can do this.
					return fmt.Errorf("change event %d was stored at sequence %d: something else publishes into %s (deny clients publishing to nqlite.changes.>)", pos, ack.Sequence, api.ChangesStreamName(f.cfg.DB))
				}
				f.noteLast(ack.Sequence)
			case err := <-fut.Err():
				var apiErr *jetstream.APIError
				switch {
				case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
					apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant || apiErr.ErrorCode == errCodeMsgIDInProcess):
					taken = max(taken, evs[i].n-base)
				case errors.Is(err, jetstream.ErrNoStreamResponse):
					perr = errNoStream
				default:
					if perr == nil {
						perr = err
					}
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if perr != nil {
			return perr
		}
		if taken > 0 {
			// Another node stores these positions (a refusal says only
			// that the position is taken, or our previous one was): wait
			// until the stream shows them, else ask it how far it is.
			if !f.waitLast(ctx, taken, time.Second) && ctx.Err() == nil {
				_, err := f.refresh(ctx)
				return err
			}
			return ctx.Err()
		}
		evs = evs[n:]
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
