package service

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nuid"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/stream"
)

// MaxCoalesced bounds the requests of one coalesced entry (besides the
// NATS max payload).
const MaxCoalesced = 64

// maxInFlight is how many entries of a database one node publishes at a
// time before further write requests queue to be coalesced: one, so the
// queue is flushed when the previous publish returns (4 in flight measured
// the same in BenchmarkCluster/insert, within this machine's noise).
const maxInFlight = 1

// writer coalesces a database's write requests (group commit): one entry
// of this node is being published at a time; the requests that arrive
// meanwhile queue and are published together as one entry (format
// version 4, one apply.Request each) once that publish returns. A request
// that finds no publish in flight is published at once, by its own
// goroutine, so a lone client waits no longer than without coalescing.
type writer struct {
	mu    sync.Mutex
	busy  int        // entries being published
	queue []*pending // requests waiting for the next entry
}

// pending is a write request waiting in a writer's queue.
type pending struct {
	ctx   context.Context
	req   *api.Request
	r     apply.Request
	size  int            // its size as an entry of its own
	done  chan published // the publish's result, buffered
	taken bool           // under writer.mu: in an entry being published
}

// published is the result of publishing an entry.
type published struct {
	ack stream.Ack
	err error
}

// write publishes the request as an entry, alone or with the requests
// arriving meanwhile (writer), and waits for this node to apply it.
func (n *Node) write(ctx context.Context, d *database, req *api.Request) (*api.Response, error) {
	e := n.newEntry()
	e.Tx, e.Statements, e.ID = req.Transaction, req.Statements, req.ID
	if req.Queue {
		// Answered on the ack: nothing to wait for, nothing to share.
		return n.submit(ctx, d, e, req)
	}
	data := e.Encode()
	if err := n.checkSize(len(data)); err != nil {
		return nil, err
	}
	// Registered before the append, so a fast apply cannot beat it.
	outcome, stopWaiting := d.db.Await(e.Token)
	defer stopWaiting()
	w := &d.writes
	w.mu.Lock()
	if w.busy < maxInFlight {
		w.busy++
		w.mu.Unlock()
		ack, err := n.append(ctx, d, data, req.ID)
		n.published(d)
		return n.answer(ctx, d, req, outcome, ack, err)
	}
	p := &pending{ctx: ctx, req: req, size: len(data), done: make(chan published, 1),
		r: apply.Request{Token: e.Token, ID: req.ID, Seed: e.Seed, Tx: req.Transaction, Statements: req.Statements}}
	w.queue = append(w.queue, p)
	w.mu.Unlock()
	select {
	case r := <-p.done:
		return n.answer(ctx, d, req, outcome, r.ack, r.err)
	case <-ctx.Done():
		w.mu.Lock()
		taken := p.taken
		if !taken {
			w.queue = slices.DeleteFunc(w.queue, func(q *pending) bool { return q == p })
		}
		w.mu.Unlock()
		if !taken {
			return nil, api.NewError(api.KindNotStored, "the write waited for this node's previous entry to be published and timed out (timeout_ms %d) before it was published; it was not stored", req.TimeoutMS)
		}
		return n.answer(ctx, d, req, outcome, stream.Ack{}, fmt.Errorf("%w: no acknowledgement: %v", stream.ErrUnknown, ctx.Err()))
	}
}

// published is called when an entry of d's writer was published: the
// requests queued meanwhile are published next (flush), or the writer is
// idle.
func (n *Node) published(d *database) {
	w := &d.writes
	w.mu.Lock()
	if len(w.queue) == 0 {
		w.busy--
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	go n.flush(d) // keeps the publish slot
}

// flush publishes the queued requests of d's writer, as many per entry
// as fit (MaxCoalesced, the NATS max payload), one entry at a time, until
// the queue is empty.
func (n *Node) flush(d *database) {
	w := &d.writes
	limit := int(n.nc.MaxPayload())
	for {
		w.mu.Lock()
		k, size := 0, 0
		for k < len(w.queue) && k < MaxCoalesced && (k == 0 || size+w.queue[k].size <= limit) {
			size += w.queue[k].size
			k++
		}
		if k == 0 {
			w.busy--
			w.mu.Unlock()
			return
		}
		group := slices.Clone(w.queue[:k])
		w.queue = slices.Delete(w.queue, 0, k)
		for _, p := range group {
			p.taken = true
		}
		w.mu.Unlock()
		// Each request was checked alone, and the sum of those sizes bounds
		// the entry's (the header is written once).
		e := n.newEntry()
		first := group[0].r
		e.Token, e.ID, e.Seed, e.Tx, e.Statements = first.Token, first.ID, first.Seed, first.Tx, first.Statements
		id := first.ID // alone, it keeps JetStream's deduplication
		if len(group) > 1 {
			id = ""
			e.More = make([]apply.Request, 0, len(group)-1)
			for _, p := range group[1:] {
				e.More = append(e.More, p.r)
			}
		}
		ctx, cancel := groupContext(n.ctx, group)
		ack, err := n.append(ctx, d, e.Encode(), id)
		cancel()
		for _, p := range group {
			p.done <- published{ack, err}
		}
	}
}

// groupContext is the context of a coalesced entry's publish: it ends
// with the node's, or at the latest deadline of its requests.
func groupContext(parent context.Context, group []*pending) (context.Context, context.CancelFunc) {
	var last time.Time
	for _, p := range group {
		dl, ok := p.ctx.Deadline()
		if !ok {
			return context.WithCancel(parent)
		}
		if dl.After(last) {
			last = dl
		}
	}
	return context.WithDeadline(parent, last)
}

// newEntry returns an entry accepted by this node now: its token, time,
// random seed, this node's budget, SQLite version and duplicate window
// (Keep, for the request ids).
func (n *Node) newEntry() *apply.Entry {
	return &apply.Entry{Node: n.cfg.NodeID, Token: nuid.Next(), Time: time.Now().UnixMilli(), Seed: rand.Int64(),
		Budget: apply.Budget{Steps: n.cfg.MaxEntrySteps, Bytes: n.cfg.MaxEntryBytes}, SQLite: apply.SQLiteVersion(),
		Keep: n.cfg.Duplicates.Milliseconds()}
}

// checkSize refuses an entry of size bytes over the NATS max payload.
func (n *Node) checkSize(size int) error {
	if limit := n.nc.MaxPayload(); int64(size) > limit {
		return api.Errorf(api.CodeTooLarge, "the request is %d bytes as a stream entry, over the NATS max payload of %d bytes: split it into several requests", size, limit)
	}
	return nil
}

// append appends an entry (data) to d's stream, with the idempotency key
// id ("" for none) as its Nats-Msg-Id.
func (n *Node) append(ctx context.Context, d *database, data []byte, id string) (stream.Ack, error) {
	str := d.stream()
	if str == nil {
		return stream.Ack{}, errOffline(d, api.KindNotStored, "the write was not stored")
	}
	return str.Append(ctx, data, id)
}

// submit appends entry e to d's stream and, unless req.Queue, waits for
// this node to apply it; req also gives the idempotency key, the timeout
// (for messages) and the response format.
func (n *Node) submit(ctx context.Context, d *database, e *apply.Entry, req *api.Request) (*api.Response, error) {
	data := e.Encode()
	if err := n.checkSize(len(data)); err != nil {
		return nil, err
	}
	var outcome <-chan apply.Outcome
	if !req.Queue {
		// Registered before the append, so a fast apply cannot beat it.
		ch, stopWaiting := d.db.Await(e.Token)
		defer stopWaiting()
		outcome = ch
	}
	ack, err := n.append(ctx, d, data, req.ID)
	return n.answer(ctx, d, req, outcome, ack, err)
}

// answer answers a write request from the result of publishing its entry
// (ack, err) and, unless req.Queue, its outcome on this node.
func (n *Node) answer(ctx context.Context, d *database, req *api.Request, outcome <-chan apply.Outcome, ack stream.Ack, err error) (*api.Response, error) {
	var aerr *api.Error
	switch {
	case errors.As(err, &aerr):
		return nil, err
	case errors.Is(err, stream.ErrNoResponders):
		return nil, unreachable(d)
	case errors.Is(err, stream.ErrNotStored):
		return nil, api.NewError(api.KindNotStored, "JetStream did not store the write: %v", err)
	case errors.Is(err, stream.ErrUnknown) && ctx.Err() != nil:
		return nil, api.NewError(api.KindUnknown, "JetStream did not acknowledge the write within timeout_ms %d; it may or may not be stored: retry with the same id to be safe", req.TimeoutMS)
	case errors.Is(err, stream.ErrUnknown) && outcome != nil:
		// The connection dropped before the ack: the entry may be stored
		// all the same, and then this node applies it once reconnected.
		return awaitUnacked(ctx, d, req, outcome, err)
	case err != nil:
		return nil, api.NewError(api.KindUnknown, "JetStream did not acknowledge the write (%v); it may or may not be stored: retry with the same id to be safe", err)
	}
	if ack.Duplicate {
		return n.streamDuplicate(ctx, d, req, ack.Seq)
	}
	if req.Queue {
		return &api.Response{Results: []api.Result{}, Seq: ack.Seq, Queued: true, Format: req.Format}, nil
	}
	select {
	case o := <-outcome:
		return outcomeResponse(ctx, d, req, o)
	case <-ctx.Done():
		return nil, stored(ack.Seq, "entry %d is stored and will be applied, but this node did not apply it within timeout_ms %d: read with after_seq %d to see it", ack.Seq, req.TimeoutMS, ack.Seq)
	}
}

// outcomeResponse is the answer of a request applied on this node (o): its
// results, or, for a request whose id this node found recorded (a retry
// of a request applied at o.Seq), the duplicate answer.
func outcomeResponse(ctx context.Context, d *database, req *api.Request, o apply.Outcome) (*api.Response, error) {
	if o.Duplicate {
		return duplicate(ctx, d, req, o.Seq)
	}
	return &api.Response{Results: o.Results, Seq: o.Seq, Format: req.Format}, nil
}

// duplicate answers a retried request whose original is entry seq
// (JetStream's deduplication by Nats-Msg-Id, or the request ids apply
// records): no results, once this node applied seq.
func duplicate(ctx context.Context, d *database, req *api.Request, seq uint64) (*api.Response, error) {
	if err := d.db.WaitApplied(ctx, seq); err != nil {
		return nil, stored(seq, "duplicate of entry %d, which is stored and will be applied, but this node has not applied it within timeout_ms %d: read with after_seq %d to see it", seq, req.TimeoutMS, seq)
	}
	return &api.Response{Results: []api.Result{}, Seq: seq, Duplicate: true, Format: req.Format}, nil
}

// streamDuplicate answers a write JetStream reported as a duplicate of
// the message with the same Nats-Msg-Id at estimate. That sequence is
// only JetStream's estimate while the original is still being proposed in
// a clustered stream (it can be another message's after a leader change),
// so the answer's seq is the one this node recorded when it applied the
// original request (apply.DB.RequestSeq), looked up once the node applied
// estimate and, if the record is not there yet, once it applied a barrier
// appended now (after the original, which JetStream has seen). Without a
// record even then (an original of a format before request ids), the
// estimate is the answer.
func (n *Node) streamDuplicate(ctx context.Context, d *database, req *api.Request, estimate uint64) (*api.Response, error) {
	if err := d.db.WaitApplied(ctx, estimate); err != nil {
		return nil, stored(estimate, "duplicate of entry %d, which is stored and will be applied, but this node has not applied it within timeout_ms %d: read with after_seq %d to see it", estimate, req.TimeoutMS, estimate)
	}
	for try := 0; try < 2; try++ {
		seq, ok, err := d.db.RequestSeq(ctx, req.ID)
		if err != nil {
			return nil, err
		}
		if ok {
			return duplicate(ctx, d, req, seq)
		}
		if try == 1 {
			break
		}
		str := d.stream()
		if str == nil {
			break
		}
		b, err := str.Barrier(ctx)
		if err != nil || d.db.WaitApplied(ctx, b) != nil {
			break
		}
	}
	// No record: the original is an entry of a format before request ids
	// (written before an upgrade, within the duplicate window), for which
	// JetStream's answer is all there is.
	return duplicate(ctx, d, req, estimate)
}

// stored is the error of a write stored as entry seq that this node did
// not apply in time: api.KindStored with its seq.
func stored(seq uint64, format string, args ...any) *api.Error {
	e := api.NewError(api.KindStored, format, args...)
	e.Seq = seq
	return e
}

// unreachable is the error of a write that NATS could not deliver to any
// JetStream server: no server holding the stream is reachable from this
// node's NATS server. On a leaf node this is the answer, within a few
// hundred milliseconds, while the link to the hub is down (the leaf server
// drops the hub's interest with the link), instead of waiting out the
// request's timeout.
func unreachable(d *database) error {
	return api.NewError(api.KindNotStored, "JetStream is unreachable: no server answers for stream %s on %s (is the leaf node's link to its hub down?); the write was not stored", StreamName(d.name), EntrySubject(d.name))
}

// awaitUnacked waits, until the request's deadline, for this node to apply
// an entry whose acknowledgement was lost (cause): if JetStream stored it,
// the outcome arrives as for any write.
func awaitUnacked(ctx context.Context, d *database, req *api.Request, outcome <-chan apply.Outcome, cause error) (*api.Response, error) {
	select {
	case o := <-outcome:
		return outcomeResponse(ctx, d, req, o)
	case <-ctx.Done():
		return nil, api.NewError(api.KindUnknown, "JetStream did not acknowledge the write (%v) and this node has not applied it within timeout_ms %d; it may or may not be stored: retry with the same id to be safe", cause, req.TimeoutMS)
	}
}
