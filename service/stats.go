package service

import (
	"context"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/stream"
	"time"
)

// Stats is the endpoint data in micro STATS replies (see api.Stats).
type Stats = api.Stats

func (n *Node) stats(d *database) Stats {
	if d.db == nil {
		return Stats{DB: d.name, Node: n.cfg.NodeID, State: d.getState().String()}
	}
	s := Stats{DB: d.name, Node: n.cfg.NodeID, Applied: d.db.Applied(), Skipped: d.db.Skipped(), Waiting: d.db.Waiting(),
		State: d.getState().String(), SnapshotSeq: d.lastSnap.Load(), Restores: d.restores.Load(), ForeignSQLite: d.db.ForeignSQLite()}
	s.Digest = d.db.Digest().Digest.String()
	s.Heals = d.heals.Load()
	d.writes.mu.Lock()
	s.Publishing, s.WritesQueued = d.writes.busy, len(d.writes.queue)
	d.writes.mu.Unlock()
	if d.cps != nil {
		d.cps.fill(&s)
	}
	var st stream.State
	var at time.Time
	str := d.stream()
	if str != nil {
		st, at = str.Cached()
	}
	s.StreamLastSeq = max(st.LastSeq, s.Applied)
	s.Lag = s.StreamLastSeq - s.Applied
	if at.IsZero() {
		s.StreamAgeMS = -1
	} else {
		s.StreamAgeMS = time.Since(at).Milliseconds()
	}
	if e, _ := d.streamErr.Load().(string); e != "" {
		s.StreamError = e
	}
	if str != nil && (at.IsZero() || time.Since(at) > time.Second) {
		n.refreshBounds(str, d)
	}
	return s
}

// refreshBounds asks JetStream for d's stream state in the background, one
// request at a time, for the next STATS.
func (n *Node) refreshBounds(str *stream.Stream, d *database) {
	if !d.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer d.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		defer cancel()
		if _, err := str.Bounds(ctx); err != nil {
			d.streamErr.Store(err.Error())
		} else {
			d.streamErr.Store("")
		}
	}()
}

// Stats returns the micro stats data of database name (see Stats).
func (n *Node) Stats(name string) Stats {
	if d := n.dbs[name]; d != nil {
		return n.stats(d)
	}
	return Stats{}
}
