package service

import (
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/nqlite/nqlite/service/api"
)

// workers is the number of long-lived request goroutines. SQLite (through
// modernc) needs deep stacks; a goroutine per request would grow a fresh
// stack every time. Requests beyond the idle workers get a goroutine of
// their own.
const workers = 32

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

func (n *Node) serve(d *database, r micro.Request, readOnly bool) {
	start := time.Now()
	resp, err := n.handle(d, r.Data(), start, readOnly)
	var body []byte
	if err == nil {
		resp.Node = n.cfg.NodeID
		resp.Time = float64(time.Since(start).Microseconds()) / 1000
		body = resp.AppendJSON(make([]byte, 0, 256))
		if limit := n.nc.MaxPayload(); int64(len(body)) > limit {
			rows := 0
			for _, res := range resp.Results {
				rows += len(res.Values)
			}
			err = api.Errorf(api.CodeTooLarge, "the response is %d bytes (%d rows), over the NATS max payload of %d bytes: select fewer rows or columns (LIMIT/OFFSET)", len(body), rows, limit)
			if resp.Seq > 0 && !resp.Queued && hasWrite(resp) {
				err = api.Errorf(api.CodeTooLarge, "the write was applied as entry %d, but its response is %d bytes (%d rows), over the NATS max payload of %d bytes", resp.Seq, len(body), rows, limit)
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

// hasWrite reports whether a response holds the result of a write.
func hasWrite(resp *api.Response) bool {
	for _, r := range resp.Results {
		if r.Write {
			return true
		}
	}
	return false
}
