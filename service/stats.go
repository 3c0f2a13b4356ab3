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
	Restores    uint64 `json:"restores"`
	StreamError string `json:"stream_error,omitempty"`
}

func (n *Node) stats(d *database) Stats {
	s := Stats{DB: d.name, Node: n.cfg.NodeID, Applied: d.db.Applied(), Skipped: d.db.Skipped(), Waiting: d.db.Waiting(),
		State: d.getState().String(), SnapshotSeq: d.lastSnap.Load(), Restores: d.restores.Load()}
	ctx, cancel := context.WithTimeout(n.ctx, time.Second)
	defer cancel()
	if b, err := d.str.Bounds(ctx); err != nil {
		s.StreamError = err.Error()
	} else {
		s.StreamLastSeq = b.LastSeq
		if s.StreamLastSeq > s.Applied {
			s.Lag = s.StreamLastSeq - s.Applied
		}
	}
	return s
}

// Stats returns the micro stats data of database name (see Stats).
func (n *Node) Stats(name string) Stats {
	if d := n.dbs[name]; d != nil {
		return n.stats(d)
	}
	return Stats{}
}
