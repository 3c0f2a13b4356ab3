package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nqlite/nqlite/service/api"
)

// ErrStopped answers Do once the node is stopping or stopped (a 503 *api.Error,
// usable with errors.Is).
var ErrStopped = api.Errorf(api.CodeUnavailable, "this nqlite node is stopping or stopped: it runs no more requests")

// ErrNoDatabase is wrapped (with the name) by Do for a database this node
// does not serve (Config.Databases).
var ErrNoDatabase = errors.New("this node does not serve the database")

// Do runs req on database db on this node, from this process: what the
// node does with a request that arrives on nqlite.query.<db> (readOnly
// false) or nqlite.read.<db> (readOnly true), without NATS carrying the
// request or its response and without JSON. The same code runs it
// (handle and Do share run): the database's state, read consistency
// (Level, AfterSeq), classification by SQLite, a read on this node's read
// pool, or a write published to the stream (its own entry, or coalesced
// with others: see write.go) and answered
// once this node has applied it (so a later read through this node sees
// it), idempotency keys and queued writes alike. Only a write touches
// NATS (JetStream), and a strong read (the stream's last sequence).
//
// req is checked with api.CheckRequest (its defaults filled into a copy:
// req itself is not changed, nor kept after Do returns). The request's
// deadline is TimeoutMS (default api.DefaultTimeoutMS) from the call, or
// ctx's when sooner; Stop ends it too. Unlike on NATS, the response has no
// size limit (no message carries it: a read keeps all its rows in memory),
// and Do is not counted in micro stats. The response's Node and Time are
// set as on NATS; the caller owns it.
//
// Errors: request-level failures are *api.Error with the kind and number
// the endpoint would answer (the README's request-level errors table;
// 413 only for a request too large as an entry); a ctx that ended before
// the request ran is read_timeout (504: nothing was published); when ctx
// itself ended, the error also wraps ctx.Err(). A database not served
// here wraps ErrNoDatabase; after Stop, ErrStopped.
func (n *Node) Do(ctx context.Context, db string, req *api.Request, readOnly bool) (*api.Response, error) {
	start := time.Now()
	d := n.dbs[db]
	if d == nil {
		return nil, fmt.Errorf("%w %q (it serves %v)", ErrNoDatabase, db, n.cfg.Databases)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, api.NewError(api.KindReadTimeout, "the request's context ended before it ran; nothing was published"))
	}
	r := *req
	if err := api.CheckRequest(&r); err != nil {
		return nil, err
	}
	n.mu.RLock()
	if n.stopping {
		n.mu.RUnlock()
		return nil, ErrStopped
	}
	n.inflight.Add(1)
	n.mu.RUnlock()
	defer n.inflight.Done()

	// As on NATS, the request's context is the node's (Stop ends it) with
	// the request's deadline; the caller's ctx, when it can end at all,
	// ends it too. (The cheap order: one context and one timer when the
	// caller's ctx is Background, as database/sql passes it by default.)
	rctx, cancel := context.WithDeadline(n.ctx, start.Add(time.Duration(r.TimeoutMS)*time.Millisecond))
	defer cancel()
	if ctx.Done() != nil {
		defer context.AfterFunc(ctx, cancel)()
	}
	resp, err := n.run(rctx, d, &r, readOnly, 0)
	if err != nil {
		if api.ErrorCode(err) == api.CodeInternal {
			n.log.Error("request failed", "db", d.name, "err", err)
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("%w: %w", cerr, err)
		}
		return nil, err
	}
	resp.Node = n.cfg.NodeID
	resp.Time = float64(time.Since(start).Microseconds()) / 1000
	return resp, nil
}
