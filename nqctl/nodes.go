package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/nqlite/nqlite/service/api"
)

// serviceName is the micro service name every nqlite node registers.
const serviceName = "nqlite"

// statsQuiet is how long nodes and .nodes wait for more replies after the
// last one, like "nats micro stats".
const statsQuiet = 300 * time.Millisecond

// nodeStat is one database of one node, from its micro STATS reply.
type nodeStat struct {
	node        string // the node id (metadata "node"), else the micro id
	id          string // the micro instance id
	version     string
	db          string
	applied     uint64
	streamLast  uint64
	lag         uint64
	skipped     uint64
	waiting     int64
	requests    int
	errors      int
	started     time.Time
	rtt         time.Duration
	streamError string
	state       string
	hasData     bool
}

// endpointData is the node's endpoint data in STATS replies (service.Stats,
// decoded here so that nqctl does not link the node).
type endpointData struct {
	DB            string `json:"db"`
	Node          string `json:"node"`
	Applied       uint64 `json:"applied_seq"`
	StreamLastSeq uint64 `json:"stream_last_seq"`
	Lag           uint64 `json:"lag"`
	Skipped       uint64 `json:"skipped"`
	Waiting       int64  `json:"waiting"`
	StreamError   string `json:"stream_error"`
	State         string `json:"state"` // newer nodes: serving, catching up...
}

// collectStats sends a micro STATS request to every nqlite node and
// collects all the replies: it waits up to wait for the first, then until
// no reply came for quiet, or twice the first reply's round trip if that
// is longer (a loaded system answers slowly), or until expect replies came
// (0: no such limit), or wait has passed.
func collectStats(ctx context.Context, nc *nats.Conn, wait, quiet time.Duration, expect int) ([]nodeStat, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	start := time.Now()
	subject, err := micro.ControlSubject(micro.StatsVerb, serviceName, "")
	if err != nil {
		return nil, err
	}
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("request stats: %w", err)
	}
	deadline := start.Add(wait)
	var out []nodeStat
	replies := 0
	for {
		timeout := time.Until(deadline)
		if replies > 0 {
			timeout = min(timeout, quiet)
		}
		if timeout <= 0 {
			break
		}
		wctx, cancel := context.WithTimeout(ctx, timeout)
		msg, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			break // quiet or deadline
		}
		if len(msg.Data) == 0 && msg.Header.Get("Status") == "503" {
			return nil, fmt.Errorf("%w: no nqlite node answers on NATS (no responders to micro STATS)", errNoNode)
		}
		replies++
		rtt := time.Since(start)
		if replies == 1 {
			quiet = max(quiet, 2*rtt)
		}
		var st micro.Stats
		if err := json.Unmarshal(msg.Data, &st); err != nil {
			continue // not a stats reply
		}
		node := st.Metadata["node"]
		if node == "" {
			node = st.ID
		}
		// A node has one or more endpoints per database (query_<db>, and
		// others in later versions): one row per database, with the
		// requests of all its endpoints.
		byDB := map[string]int{}
		for _, ep := range st.Endpoints {
			var d endpointData
			hasData := len(ep.Data) > 0 && json.Unmarshal(ep.Data, &d) == nil && d.DB != ""
			db := d.DB
			if !hasData {
				db = ep.Subject[strings.LastIndexByte(ep.Subject, '.')+1:]
			}
			i, ok := byDB[db]
			if !ok {
				i = len(out)
				byDB[db] = i
				out = append(out, nodeStat{node: node, id: st.ID, version: st.Version, started: st.Started, rtt: rtt, db: db})
			}
			ns := &out[i]
			ns.requests += ep.NumRequests
			ns.errors += ep.NumErrors
			if hasData && (!ns.hasData || strings.HasPrefix(ep.Name, "query_")) {
				ns.hasData = true
				ns.applied, ns.streamLast, ns.lag = d.Applied, d.StreamLastSeq, d.Lag
				ns.skipped, ns.waiting, ns.streamError, ns.state = d.Skipped, d.Waiting, d.StreamError, d.State
			}
		}
		if expect > 0 && replies >= expect {
			break
		}
	}
	if replies == 0 {
		return nil, fmt.Errorf("%w: no nqlite node answered micro STATS within %v", errNoNode, wait)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].node != out[j].node {
			return out[i].node < out[j].node
		}
		return out[i].db < out[j].db
	})
	return out, nil
}

// nodesResult turns stats into a result to print in any output mode: the
// main columns (node, db, version, applied, lag, uptime, requests, rtt_ms,
// and state when the nodes report one), or with all every field of the
// stats.
func nodesResult(stats []nodeStat, now time.Time, all bool) *api.Result {
	withErr, withState := false, false
	for _, s := range stats {
		withErr = withErr || s.streamError != ""
		withState = withState || s.state != ""
	}
	res := &api.Result{Columns: []string{"node", "db", "version", "applied", "lag", "uptime", "requests", "rtt_ms"}}
	if all {
		res.Columns = []string{"node", "db", "version", "applied_seq", "stream_last_seq", "lag", "skipped", "waiting",
			"requests", "errors", "uptime", "rtt_ms", "id", "started"}
	}
	if withState {
		res.Columns = append(res.Columns, "state")
	}
	if withErr {
		res.Columns = append(res.Columns, "stream_error")
	}
	opt := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	for _, s := range stats {
		uptime := ""
		if !s.started.IsZero() {
			uptime = now.Sub(s.started).Round(time.Second).String()
		}
		rtt := float64(s.rtt.Microseconds()) / 1000
		row := []any{s.node, s.db, s.version, int64(s.applied), int64(s.lag), uptime, int64(s.requests), rtt}
		if all {
			row = []any{s.node, s.db, s.version, int64(s.applied), int64(s.streamLast), int64(s.lag), int64(s.skipped),
				s.waiting, int64(s.requests), int64(s.errors), uptime, rtt, s.id, s.started.UTC().Format(time.RFC3339)}
		}
		if withState {
			row = append(row, opt(s.state))
		}
		if withErr {
			row = append(row, opt(s.streamError))
		}
		res.Values = append(res.Values, row)
	}
	return res
}
