package service

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service/api"
)

// workers is the number of long-lived request goroutines. SQLite (through
// modernc) needs deep stacks; a goroutine per request would grow a fresh
// stack every time. Requests beyond the idle workers get a goroutine of
// their own.
const workers = 32

// register serves the endpoints of every database: nqlite.query.<db> and
// nqlite.read.<db>, nqlite.check.<db> (every node answers it) and, with snapshots, nqlite.snapshot.<db> and
// nqlite.load.<db>, all in queue group QueueGroup, and the service
// protocol (micro.go).
func (n *Node) register() error {
	var eps []*endpoint
	for _, d := range n.dbs {
		d := d
		eps = append(eps,
			&endpoint{name: "query_" + d.name, subject: QuerySubject(d.name), db: d,
				metadata: map[string]string{"db": d.name, "read_only": "false"},
				handle:   func(r *request) { n.serve(d, r, false) }},
			&endpoint{name: "read_" + d.name, subject: ReadSubject(d.name), db: d,
				metadata: map[string]string{"db": d.name, "read_only": "true"},
				handle:   func(r *request) { n.serve(d, r, true) }},
			&endpoint{name: "check_" + d.name, subject: api.ContentSubject(d.name), db: d, noQueue: true,
				metadata: map[string]string{"db": d.name}, handle: n.checkHandler(d)})
		if !n.cfg.Snapshot.Disabled {
			eps = append(eps,
				&endpoint{name: "snapshot_" + d.name, subject: SnapshotSubject(d.name), db: d,
					metadata: map[string]string{"db": d.name}, handle: n.snapshotHandler(d)},
				&endpoint{name: "load_" + d.name, subject: LoadSubject(d.name), db: d,
					metadata: map[string]string{"db": d.name}, handle: n.loadHandler(d)})
		}
	}
	return n.serveEndpoints(eps)
}

// dispatch runs job for request r on a worker, counted as in flight, or
// forwards r to another node when this one is stopping.
func (n *Node) dispatch(r *request, job func()) {
	n.mu.RLock()
	if n.stopping {
		n.mu.RUnlock()
		if !r.ep.noQueue { // every other node answers those itself
			n.forward(r)
		}
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
func (n *Node) forward(r *request) {
	msg := &nats.Msg{Subject: r.msg.Subject, Reply: r.msg.Reply, Data: r.msg.Data, Header: r.msg.Header}
	if err := n.nc.PublishMsg(msg); err != nil {
		n.log.Warn("forward request while stopping", "subject", r.Subject(), "err", err)
	}
}

func (n *Node) serve(d *database, r *request, readOnly bool) {
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
				e := api.Errorf(api.CodeTooLarge, "the write was applied as entry %d, but its response is %d bytes (%d rows), over the NATS max payload of %d bytes: do not send it again", resp.Seq, len(body), rows, limit)
				e.Seq = resp.Seq
				err = e
			}
		}
	}
	if err != nil {
		n.fail(d, r, err)
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

// fail answers r with err as a request-level error of database d: an
// *api.Error in err's chain keeps its number, kind, message and seq;
// any other error is a bug (500 internal) and is logged.
func (n *Node) fail(d *database, r *request, err error) {
	var e *api.Error
	if !errors.As(err, &e) {
		e = api.NewError(api.KindInternal, "%s", err.Error())
	} else {
		c := *e
		e = &c
		if e.Kind == "" {
			// An error made without a kind (api.Errorf with a number
			// several kinds share) is a bug: no code may be left out, and
			// its number (408, 504) would say something nobody checked.
			n.log.Error("request error without a code", "db", d.name, "code", e.Code, "err", err)
			e.Kind, e.Code = api.KindInternal, api.CodeInternal
		}
		if msg := err.Error(); msg != e.Message {
			e.Message = msg // the context wrapped around it
		}
	}
	if e.Kind == api.KindInternal {
		n.log.Error("request failed", "db", d.name, "err", err)
	}
	e.Node = n.cfg.NodeID
	r.Error(e)
}
