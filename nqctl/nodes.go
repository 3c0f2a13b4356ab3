package main

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// statsQuiet is how long nodes and .nodes wait for more replies after the
// last one, like "nats micro stats".
const statsQuiet = 300 * time.Millisecond

// collectStats collects the micro STATS replies of every nqlite node
// (client.Stats): it waits up to wait for the first, then until no reply
// came for quiet (or twice the first round trip), or until expect replies
// came (0: no such limit).
func collectStats(ctx context.Context, nc *nats.Conn, wait, quiet time.Duration, expect int) ([]client.NodeStats, error) {
	return client.New(nc).Stats(ctx, client.StatsOptions{Wait: wait, Quiet: quiet, Expect: expect})
}

// nodesResult turns stats into a result to print in any output mode: the
// main columns (node, db, version, applied, lag, uptime, requests, rtt_ms,
// and state when the nodes report one), or with all every field of the
// stats.
func nodesResult(stats []client.NodeStats, now time.Time, all bool) *api.Result {
	withErr, withState, withCP := false, false, false
	for _, s := range stats {
		withErr = withErr || s.StreamError != ""
		withState = withState || s.State != ""
		withCP = withCP || s.CheckpointSeq > 0 || s.CheckpointError != ""
	}
	res := &api.Result{Columns: []string{"node", "db", "version", "applied", "lag", "uptime", "requests", "rtt_ms"}}
	if all {
		res.Columns = []string{"node", "db", "version", "applied_seq", "stream_last_seq", "lag", "skipped", "waiting",
			"requests", "errors", "uptime", "rtt_ms", "id", "started"}
	}
	if withState {
		res.Columns = append(res.Columns, "state")
	}
	if withCP {
		res.Columns = append(res.Columns, "checkpoint", "agrees")
	}
	if all {
		res.Columns = append(res.Columns, "digest", "checkpoint_nodes", "diverged_seq", "heals", "checkpoint_error")
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
		if !s.Started.IsZero() {
			uptime = now.Sub(s.Started).Round(time.Second).String()
		}
		rtt := float64(s.RTT.Microseconds()) / 1000
		row := []any{s.Node, s.DB, s.Version, int64(s.Applied), int64(s.Lag), uptime, int64(s.Requests), rtt}
		if all {
			row = []any{s.Node, s.DB, s.Version, int64(s.Applied), int64(s.StreamLastSeq), int64(s.Lag), int64(s.Skipped),
				s.Waiting, int64(s.Requests), int64(s.Errors), uptime, rtt, s.ID, s.Started.UTC().Format(time.RFC3339)}
		}
		if withState {
			row = append(row, opt(s.State))
		}
		if withCP {
			var cp any
			if s.CheckpointSeq > 0 {
				cp = int64(s.CheckpointSeq)
			}
			row = append(row, cp, opt(s.CheckpointStatus))
		}
		if all {
			row = append(row, opt(s.Digest), int64(s.CheckpointNodes), int64(s.DivergedSeq), int64(s.Heals), opt(s.CheckpointError))
		}
		if withErr {
			row = append(row, opt(s.StreamError))
		}
		res.Values = append(res.Values, row)
	}
	return res
}
