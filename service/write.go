package service

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nuid"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/stream"
)

// write publishes the request as one entry and waits for this node to
// apply it.
func (n *Node) write(ctx context.Context, d *database, req *api.Request) (*api.Response, error) {
	e := n.newEntry()
	e.Tx, e.Statements = req.Transaction, req.Statements
	return n.submit(ctx, d, e, req)
}

// newEntry returns an entry accepted by this node now: its token, time,
// random seed, this node's budget and SQLite version.
func (n *Node) newEntry() *apply.Entry {
	return &apply.Entry{Node: n.cfg.NodeID, Token: nuid.Next(), Time: time.Now().UnixMilli(), Seed: rand.Int64(),
		Budget: apply.Budget{Steps: n.cfg.MaxEntrySteps, Bytes: n.cfg.MaxEntryBytes}, SQLite: apply.SQLiteVersion()}
}

// submit appends entry e to d's stream and, unless req.Queue, waits for
// this node to apply it; req also gives the idempotency key, the timeout
// (for messages) and the response format.
func (n *Node) submit(ctx context.Context, d *database, e *apply.Entry, req *api.Request) (*api.Response, error) {
	data := e.Encode()
	if limit := n.nc.MaxPayload(); int64(len(data)) > limit {
		return nil, api.Errorf(api.CodeTooLarge, "the request is %d bytes as a stream entry, over the NATS max payload of %d bytes: split it into several requests", len(data), limit)
	}
	var outcome <-chan apply.Outcome
	if !req.Queue {
		// Registered before the append, so a fast apply cannot beat it.
		ch, stopWaiting := d.db.Await(e.Token)
		defer stopWaiting()
		outcome = ch
	}
	str := d.stream()
	if str == nil {
		return nil, errOffline(d, api.KindNotStored, "the write was not stored")
	}
	ack, err := str.Append(ctx, data, req.ID)
	switch {
	case errors.Is(err, stream.ErrNoResponders):
		return nil, unreachable(d)
	case errors.Is(err, stream.ErrNotStored):
		return nil, api.NewError(api.KindNotStored, "JetStream did not store the write: %v", err)
	case errors.Is(err, stream.ErrUnknown) && ctx.Err() != nil:
		return nil, api.NewError(api.KindUnknown, "JetStream did not acknowledge the write within timeout_ms %d; it may or may not be stored: retry with the same id to be safe", req.TimeoutMS)
	case errors.Is(err, stream.ErrUnknown) && outcome != nil:
		// The connection dropped before the ack: the entry may be stored
		// all the same, and then this node applies it once reconnected.
		return awaitUnacked(ctx, req, outcome, err)
	case err != nil:
		return nil, api.NewError(api.KindUnknown, "JetStream did not acknowledge the write (%v); it may or may not be stored: retry with the same id to be safe", err)
	}
	if ack.Duplicate {
		if err := d.db.WaitApplied(ctx, ack.Seq); err != nil {
			return nil, stored(ack.Seq, "duplicate of entry %d, which is stored and will be applied, but this node has not applied it within timeout_ms %d: read with after_seq %d to see it", ack.Seq, req.TimeoutMS, ack.Seq)
		}
		return &api.Response{Results: []api.Result{}, Seq: ack.Seq, Duplicate: true, Format: req.Format}, nil
	}
	if req.Queue {
		return &api.Response{Results: []api.Result{}, Seq: ack.Seq, Queued: true, Format: req.Format}, nil
	}
	select {
	case o := <-outcome:
		return &api.Response{Results: o.Results, Seq: o.Seq, Format: req.Format}, nil
	case <-ctx.Done():
		return nil, stored(ack.Seq, "entry %d is stored and will be applied, but this node did not apply it within timeout_ms %d: read with after_seq %d to see it", ack.Seq, req.TimeoutMS, ack.Seq)
	}
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
func awaitUnacked(ctx context.Context, req *api.Request, outcome <-chan apply.Outcome, cause error) (*api.Response, error) {
	select {
	case o := <-outcome:
		return &api.Response{Results: o.Results, Seq: o.Seq, Format: req.Format}, nil
	case <-ctx.Done():
		return nil, api.NewError(api.KindUnknown, "JetStream did not acknowledge the write (%v) and this node has not applied it within timeout_ms %d; it may or may not be stored: retry with the same id to be safe", cause, req.TimeoutMS)
	}
}
