package service

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/nqlite/nqlite/service/api"
)

// The node answers the NATS service protocol (ADR-32: $SRV.PING, $SRV.INFO,
// $SRV.STATS, each bare, .<name> and .<name>.<id>) itself, with micro's
// own wire types (micro.Ping, micro.Info, micro.Stats), around its own
// concurrent dispatch. micro's framework runs one handler call at a time
// per endpoint and times that call: a handler that hands the request to a
// worker (as nqlite must, for concurrent reads and pipelined writes) makes
// micro report ~2 us per request and no errors. Here a request is counted
// when its answer is sent: num_requests, num_errors (every 4xx and 5xx
// answer), last_error and processing_time measure arrival to response.
// The count is taken just before the answer is sent, so a client that
// sends its next request on the answer always finds the first counted
// (the deadline of a 504 answers on a timer goroutine: recorded after the
// send, its error could land after the next request's).

// endpoint is one subject the node serves, with its statistics.
type endpoint struct {
	name     string
	subject  string
	metadata map[string]string
	handle   func(*request)
	db       *database // for the per-endpoint data in STATS
	// noQueue: every node answers (a plain subscription, no queue group),
	// as for nqlite.check.<db>.
	noQueue bool
	sub     *nats.Subscription

	mu        sync.Mutex
	requests  int
	errors    int
	lastError string
	total     time.Duration
}

func (e *endpoint) record(d time.Duration, errText string) {
	e.mu.Lock()
	e.requests++
	e.total += d
	if errText != "" {
		e.errors++
		e.lastError = errText
	}
	e.mu.Unlock()
}

// queue returns the endpoint's queue group ("" for none).
func (e *endpoint) queue() string {
	if e.noQueue {
		return ""
	}
	return QueueGroup
}

func (e *endpoint) stats() *micro.EndpointStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := &micro.EndpointStats{Name: e.name, Subject: e.subject, QueueGroup: e.queue(),
		NumRequests: e.requests, NumErrors: e.errors, LastError: e.lastError, ProcessingTime: e.total}
	if e.requests > 0 {
		s.AverageProcessingTime = e.total / time.Duration(e.requests)
	}
	return s
}

// request is one request to an endpoint. Exactly one of Respond or Error
// answers it; the answer is what the endpoint's statistics count.
type request struct {
	msg   *nats.Msg
	ep    *endpoint
	start time.Time
	once  sync.Once
}

// Data returns the request body.
func (r *request) Data() []byte { return r.msg.Data }

// Subject returns the subject the request was sent to.
func (r *request) Subject() string { return r.msg.Subject }

// Respond answers with body.
func (r *request) Respond(body []byte) error {
	var err error
	r.once.Do(func() {
		r.ep.record(time.Since(r.start), "")
		err = r.msg.Respond(body)
	})
	return err
}

// Error answers with the request-level error e: the micro error headers
// (Nats-Service-Error-Code: e.Code, Nats-Service-Error: e.Message),
// Nqlite-Error-Code: e.Kind, and e's body (api.Error.Body).
func (r *request) Error(e *api.Error) error {
	var err error
	r.once.Do(func() {
		code := strconv.Itoa(e.Code)
		m := nats.NewMsg(r.msg.Reply)
		m.Header.Set(micro.ErrorCodeHeader, code)
		m.Header.Set(micro.ErrorHeader, e.Message)
		m.Header.Set(api.ErrorKindHeader, string(e.Kind))
		m.Data = e.Body()
		r.ep.record(time.Since(r.start), code+":"+e.Message)
		err = r.msg.RespondMsg(m)
	})
	return err
}

// protocol answers the service protocol for the node.
type protocol struct {
	n       *Node
	id      string
	started time.Time
	eps     []*endpoint
	subs    []*nats.Subscription
}

func (n *Node) identity() micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: ServiceName, ID: n.proto.id, Version: Version, Metadata: map[string]string{"node": n.cfg.NodeID}}
}

// serveEndpoints subscribes every endpoint in queue group QueueGroup and
// the service protocol's subjects.
func (n *Node) serveEndpoints(eps []*endpoint) error {
	p := &protocol{n: n, id: nuid.Next(), started: time.Now().UTC(), eps: eps}
	n.proto = p
	for _, ep := range eps {
		ep := ep
		handler := func(m *nats.Msg) {
			r := &request{msg: m, ep: ep, start: time.Now()}
			n.dispatch(r, func() { ep.handle(r) })
		}
		var sub *nats.Subscription
		var err error
		if ep.noQueue {
			sub, err = n.nc.Subscribe(ep.subject, handler)
		} else {
			sub, err = n.nc.QueueSubscribe(ep.subject, QueueGroup, handler)
		}
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", ep.subject, err)
		}
		sub.SetPendingLimits(-1, -1)
		ep.sub = sub
	}
	for _, v := range []struct {
		verb   micro.Verb
		answer func() any
	}{
		{micro.PingVerb, func() any { return micro.Ping{ServiceIdentity: n.identity(), Type: micro.PingResponseType} }},
		{micro.InfoVerb, p.info},
		{micro.StatsVerb, p.stats},
	} {
		for _, id := range [][2]string{{"", ""}, {ServiceName, ""}, {ServiceName, p.id}} {
			subject, err := micro.ControlSubject(v.verb, id[0], id[1])
			if err != nil {
				return err
			}
			answer := v.answer
			sub, err := n.nc.Subscribe(subject, func(m *nats.Msg) {
				b, err := json.Marshal(answer())
				if err == nil {
					m.Respond(b)
				}
			})
			if err != nil {
				return fmt.Errorf("subscribe %s: %w", subject, err)
			}
			p.subs = append(p.subs, sub)
		}
	}
	return nil
}

func (p *protocol) info() any {
	info := micro.Info{ServiceIdentity: p.n.identity(), Type: micro.InfoResponseType, Description: "replicated SQLite over NATS JetStream", Endpoints: []micro.EndpointInfo{}}
	for _, ep := range p.eps {
		info.Endpoints = append(info.Endpoints, micro.EndpointInfo{Name: ep.name, Subject: ep.subject, QueueGroup: ep.queue(), Metadata: ep.metadata})
	}
	return info
}

func (p *protocol) stats() any {
	st := micro.Stats{ServiceIdentity: p.n.identity(), Type: micro.StatsResponseType, Started: p.started, Endpoints: []*micro.EndpointStats{}}
	data := map[*database]json.RawMessage{} // one stats read per database, not per endpoint
	for _, ep := range p.eps {
		es := ep.stats()
		if ep.db != nil {
			if _, ok := data[ep.db]; !ok {
				b, _ := json.Marshal(p.n.stats(ep.db))
				data[ep.db] = b
			}
			es.Data = data[ep.db]
		}
		st.Endpoints = append(st.Endpoints, es)
	}
	return st
}

// stopEndpoints drains the endpoints' subscriptions (requests already
// delivered still reach dispatch, which forwards them once the node is
// stopping) and unsubscribes the protocol's.
func (n *Node) stopEndpoints() error {
	if n.proto == nil {
		return nil
	}
	var first error
	for _, ep := range n.proto.eps {
		if ep.sub != nil {
			if err := ep.sub.Drain(); err != nil && first == nil {
				first = err
			}
		}
	}
	for _, s := range n.proto.subs {
		s.Unsubscribe()
	}
	return first
}
