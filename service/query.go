package service

import (
	"context"
	"time"

	"github.com/nqlite/nqlite/service/api"
)

// handle runs one request payload that arrived on an endpoint and returns
// its response or an *api.Error (any other error is answered as
// internal). Every error before n.write means nothing was published.
func (n *Node) handle(d *database, data []byte, start time.Time, readOnly bool) (*api.Response, error) {
	req, err := api.ParseRequest(data)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithDeadline(n.ctx, start.Add(time.Duration(req.TimeoutMS)*time.Millisecond))
	defer cancel()
	// Rows are kept up to twice the max payload (an estimate bounding
	// memory); serve checks the exact size of the response.
	return n.run(ctx, d, req, readOnly, 2*int(n.nc.MaxPayload()))
}

// run runs a decoded request, whether it came over NATS (handle) or from
// this process (Do): the state of the database, read consistency,
// classification, then a local read or one stream entry. ctx carries the
// request's deadline. maxBytes bounds the rows a read keeps (0: no bound).
func (n *Node) run(ctx context.Context, d *database, req *api.Request, readOnly bool, maxBytes int) (*api.Response, error) {
	switch d.getState() {
	case restoring:
		return nil, errRestoring
	case incompatible:
		return nil, errIncompatible
	case failing:
		return nil, errFailing(d)
	case diverged:
		return nil, errDiverged(d)
	}
	if len(req.Statements) > MaxStatements {
		return nil, api.Errorf(api.CodeBadRequest, "the request holds %d statements, over the limit of %d: split it", len(req.Statements), MaxStatements)
	}
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
		if str := d.stream(); str == nil {
			// Offline: nothing to catch up with now.
		} else if b, err := str.Bounds(ctx); err == nil && b.LastSeq > d.db.Applied() {
			if err := d.db.WaitApplied(ctx, b.LastSeq); err != nil {
				return nil, api.NewError(api.KindNotReached, "a statement cannot be prepared on this node, which has applied up to sequence %d and did not reach the stream's %d within timeout_ms %d; nothing was published", d.db.Applied(), b.LastSeq, req.TimeoutMS)
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
		results, seq, err := plan.Run(ctx, maxBytes)
		if err != nil {
			return nil, err
		}
		return &api.Response{Results: results, Seq: seq, Format: req.Format}, nil
	}
	plan.Close()
	return n.write(ctx, d, req)
}

// waitConsistency applies the read consistency of the request: level
// strong waits for the sequence before a barrier appended after the
// request arrived (Stream.Barrier, shared with the strong reads arriving
// meanwhile), which follows every entry stored before; after_seq waits
// for that sequence.
func (n *Node) waitConsistency(ctx context.Context, d *database, req *api.Request) error {
	target := req.AfterSeq
	if req.Level == api.LevelStrong {
		str := d.stream()
		if str == nil {
			return errOffline(d, api.KindUnavailable, "level strong needs a barrier in the stream")
		}
		seq, err := str.Barrier(ctx)
		if err != nil {
			return api.Errorf(api.CodeUnavailable, "level strong needs a barrier in the stream, but JetStream is unreachable: %v", err)
		}
		// Every entry stored before the barrier is below it, and the
		// barrier itself changes nothing: seq-1 is enough, so the read
		// need not wait for the barrier's own delivery here.
		target = max(target, seq-1)
	}
	if target == 0 || d.db.Applied() >= target {
		return nil
	}
	if err := d.db.WaitApplied(ctx, target); err != nil {
		return api.NewError(api.KindNotReached, "this node has applied up to sequence %d and did not reach %d within timeout_ms %d; nothing was published", d.db.Applied(), target, req.TimeoutMS)
	}
	return nil
}
