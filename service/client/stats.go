package client

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/nqlite/nqlite/service/api"
)

// NodeStats is one database of one node, from the node's micro STATS
// reply.
type NodeStats struct {
	// Node is the node id (micro metadata "node"), else the micro ID.
	Node    string
	ID      string // the micro instance id
	Version string
	Started time.Time
	// RTT is the time from the request to this node's reply.
	RTT time.Duration
	// Requests and Errors add up every endpoint of the database
	// (query_<db>, read_<db>, snapshot_<db>, load_<db>).
	Requests int
	Errors   int
	// Stats is the node's data on the database (from its query_<db>
	// endpoint); Stats.DB is set even when HasData is false.
	api.Stats
	// HasData is false for a node that sent no endpoint data (an older
	// version): only DB, Requests and Errors are known.
	HasData bool
}

// StatsOptions say how long Stats collects replies.
type StatsOptions struct {
	// Wait bounds the whole collection (default 5s): without any reply by
	// then, Stats fails with ErrNoNode.
	Wait time.Duration
	// Quiet ends the collection once no reply came for this long (default
	// 300ms, like `nats micro stats`), or twice the first reply's round
	// trip when that is longer (a loaded system answers slowly).
	Quiet time.Duration
	// Expect ends the collection once this many nodes replied (0: no such
	// limit).
	Expect int
}

// Stats sends one micro STATS request to every nqlite node
// ($SRV.STATS.nqlite) and collects the replies (see StatsOptions). It
// returns one NodeStats per node and database, sorted by node, then
// database. No node answering wraps ErrNoNode.
func (c *Client) Stats(ctx context.Context, o StatsOptions) ([]NodeStats, error) {
	subject, err := micro.ControlSubject(micro.StatsVerb, api.ServiceName, "")
	if err != nil {
		return nil, err
	}
	var out []NodeStats
	err = c.gather(ctx, subject, nil, o, "micro STATS", func(data []byte, rtt time.Duration) bool {
		var st micro.Stats
		if err := json.Unmarshal(data, &st); err != nil {
			return false // not a stats reply
		}
		out = append(out, nodeStats(&st, rtt)...)
		return true
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].DB < out[j].DB
	})
	return out, nil
}

// gather publishes one request on subject, which every node answers, and
// hands each reply to take (with the time since the request) until o says
// the collection ends; take returns false for a reply it did not count.
// No node answering wraps ErrNoNode (what names the request).
func (c *Client) gather(ctx context.Context, subject string, body []byte, o StatsOptions, what string, take func(data []byte, rtt time.Duration) bool) error {
	if o.Wait <= 0 {
		o.Wait = 5 * time.Second
	}
	if o.Quiet <= 0 {
		o.Quiet = 300 * time.Millisecond
	}
	quiet := o.Quiet
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("%s: subscribe: %w", what, err)
	}
	defer sub.Unsubscribe()
	start := time.Now()
	if err := c.nc.PublishRequest(subject, inbox, body); err != nil {
		return fmt.Errorf("%s: request: %w", what, err)
	}
	deadline := start.Add(o.Wait)
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
				return ctx.Err()
			}
			break // quiet or deadline
		}
		if len(msg.Data) == 0 && msg.Header.Get("Status") == "503" {
			return fmt.Errorf("%w: no nqlite node answers on NATS (no responders to %s)", ErrNoNode, what)
		}
		rtt := time.Since(start)
		if !take(msg.Data, rtt) {
			continue
		}
		replies++
		if replies == 1 {
			quiet = max(quiet, 2*rtt)
		}
		if o.Expect > 0 && replies >= o.Expect {
			break
		}
	}
	if replies == 0 {
		return fmt.Errorf("%w: no nqlite node answered %s within %v", ErrNoNode, what, o.Wait)
	}
	return nil
}

// nodeStats turns one node's STATS reply into one NodeStats per database.
// A node has several endpoints per database (query_<db>, read_<db>...):
// their requests add up, and the data comes from query_<db>.
func nodeStats(st *micro.Stats, rtt time.Duration) []NodeStats {
	node := st.Metadata["node"]
	if node == "" {
		node = st.ID
	}
	var out []NodeStats
	byDB := map[string]int{}
	for _, ep := range st.Endpoints {
		var d api.Stats
		hasData := len(ep.Data) > 0 && json.Unmarshal(ep.Data, &d) == nil && d.DB != ""
		db := d.DB
		if !hasData {
			db = ep.Subject[strings.LastIndexByte(ep.Subject, '.')+1:]
		}
		i, ok := byDB[db]
		if !ok {
			i = len(out)
			byDB[db] = i
			out = append(out, NodeStats{Node: node, ID: st.ID, Version: st.Version, Started: st.Started, RTT: rtt, Stats: api.Stats{DB: db}})
		}
		ns := &out[i]
		ns.Requests += ep.NumRequests
		ns.Errors += ep.NumErrors
		if hasData && (!ns.HasData || strings.HasPrefix(ep.Name, "query_")) {
			ns.HasData = true
			ns.Stats = d
		}
	}
	return out
}
