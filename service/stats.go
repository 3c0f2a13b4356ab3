package service

import (
	"context"
	"time"
)

// Stats is the endpoint data in micro STATS replies.
type Stats struct {
	DB            string `json:"db"`
	Node          string `json:"node"`
	Applied       uint64 `json:"applied_seq"`
	StreamLastSeq uint64 `json:"stream_last_seq"`
	Lag           uint64 `json:"lag"`
	Skipped       uint64 `json:"skipped"`
	Waiting       int64  `json:"waiting"` // requests waiting for this node to apply a sequence
	// State is "serving", or "restoring" while the node replaces its
	// database with a snapshot (requests get 503 meanwhile).
	State string `json:"state"`
	// SnapshotSeq is the sequence of the latest stored snapshot this node
	// knows of (0: none).
	SnapshotSeq uint64 `json:"snapshot_seq"`
	// Restores counts restores from a snapshot while running (self-healing
	// after a purge), since start.
	Restores uint64 `json:"restores"`
	// ForeignSQLite counts entries applied since start that a node on
	// another SQLite version accepted (apply.DB.ForeignSQLite).
	ForeignSQLite uint64 `json:"foreign_sqlite"`
	// StreamAgeMS is how old the stream state above is, in milliseconds:
	// STATS reports what the node last learned of the stream (from
	// deliveries, acknowledgements, strong reads, a refresh it starts
	// when the state is over a second old) and never waits for JetStream.
	StreamAgeMS int64  `json:"stream_age_ms"`
	StreamError string `json:"stream_error,omitempty"`
}

func (n *Node) stats(d *database) Stats {
	s := Stats{DB: d.name, Node: n.cfg.NodeID, Applied: d.db.Applied(), Skipped: d.db.Skipped(), Waiting: d.db.Waiting(),
		State: d.getState().String(), SnapshotSeq: d.lastSnap.Load(), Restores: d.restores.Load(), ForeignSQLite: d.db.ForeignSQLite()}
	st, at := d.str.Cached()
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
	if at.IsZero() || time.Since(at) > time.Second {
		n.refreshBounds(d)
	}
	return s
}

// refreshBounds asks JetStream for d's stream state in the background, one
// request at a time, for the next STATS.
func (n *Node) refreshBounds(d *database) {
	if !d.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer d.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		defer cancel()
		if _, err := d.str.Bounds(ctx); err != nil {
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
