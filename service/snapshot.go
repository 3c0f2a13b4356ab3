package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/snapshot"
)

// SnapshotConfig configures snapshots (package snapshot).
type SnapshotConfig struct {
	// Disabled turns off snapshots, restores and purges.
	Disabled bool
	// Threshold: a node snapshots a database once it has applied this
	// many entries beyond the latest stored snapshot (default 8192).
	Threshold uint64
	// Interval between threshold checks (default 1 minute).
	Interval time.Duration
	// Retain: after a snapshot at sequence S, entries below S-Retain are
	// purged from the stream (default Threshold).
	Retain uint64
}

func (c *SnapshotConfig) defaults() {
	if c.Threshold == 0 {
		c.Threshold = 8192
	}
	if c.Interval <= 0 {
		c.Interval = time.Minute
	}
	if c.Retain == 0 {
		c.Retain = c.Threshold
	}
}

// SnapshotSubject returns the subject that takes a snapshot of db now (see
// api.SnapshotSubject).
func SnapshotSubject(db string) string { return api.SnapshotSubject(db) }

// prepareLocal makes sure the local file of d can be opened and followed
// before apply.Open: a file that fails PRAGMA quick_check is moved aside
// (<file>.corrupt-<unix time>); a missing file, or one older than the
// stream's first sequence - 1, is replaced by the stored snapshot,
// verified and moved into place atomically. Without a snapshot, a node
// replays the stream from the start, which works while nothing was purged.
func (n *Node) prepareLocal(ctx context.Context, d *database, path string, firstSeq uint64) error {
	applied, exists := uint64(0), true
	info, err := apply.ReadSnapshotInfo(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		exists = false
	case err != nil:
		aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().Unix())
		n.log.Error("local database unreadable: moving it aside and rebuilding", "db", d.name, "err", err, "moved_to", aside)
		if err := os.Rename(path, aside); err != nil {
			return fmt.Errorf("move aside %s: %w", path, err)
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			os.Rename(path+suffix, aside+suffix)
		}
		exists = false
	default:
		applied = info.Seq
	}
	behind := firstSeq > applied+1
	if exists && !behind {
		return nil
	}
	if n.snaps == nil {
		if behind {
			return fmt.Errorf("database %s: the stream starts at %d, this node has applied %d, and snapshots are disabled: cannot rebuild", d.name, firstSeq, applied)
		}
		return nil
	}
	tmp, meta, err := n.snaps.Fetch(ctx, d.name, filepath.Dir(path))
	if errors.Is(err, snapshot.ErrNoSnapshot) {
		if behind {
			return fmt.Errorf("database %s: the stream starts at %d, this node has applied %d, and no snapshot is stored: cannot rebuild", d.name, firstSeq, applied)
		}
		return nil // replay the whole stream
	}
	if err != nil {
		return err
	}
	if meta.Seq+1 < firstSeq {
		os.Remove(tmp)
		return fmt.Errorf("database %s: the stored snapshot holds sequence %d but the stream starts at %d", d.name, meta.Seq, firstSeq)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(path + suffix)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	n.log.Info("restored from snapshot at start", "db", d.name, "seq", meta.Seq, "bytes", meta.Size, "taken_by", meta.Node)
	return nil
}

// follow runs the apply loop of d, restoring from the stored snapshot by
// itself when the entries it needs next were purged; meanwhile requests
// get 503 "restoring". It returns when the node stops or the apply fails.
func (n *Node) follow(d *database) error {
	for {
		err := d.db.Follow(n.ctx, n.js, d.stream)
		if !apply.IsGap(err) || n.snaps == nil || n.ctx.Err() != nil {
			return err
		}
		d.restoring.Store(true)
		n.log.Warn("entries this node needs were purged: restoring from the snapshot", "db", d.name, "err", err)
		_, rerr := n.snaps.Restore(n.ctx, d.name, d.db)
		d.restoring.Store(false)
		if rerr == nil {
			d.restores.Add(1)
		} else {
			n.log.Error("restore from snapshot failed, retrying", "db", d.name, "err", rerr)
			select {
			case <-n.ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
}

// snapshotLoop takes a snapshot of d whenever this node has applied
// Threshold entries beyond the latest stored one, checked every Interval.
func (n *Node) snapshotLoop(d *database) {
	defer n.bg.Done()
	cfg := n.cfg.Snapshot
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if d.db.Applied() < d.lastSnap.Load()+cfg.Threshold {
			continue
		}
		if _, _, err := n.takeSnapshot(n.ctx, d); err != nil && !errors.Is(err, snapshot.ErrBusy) && n.ctx.Err() == nil {
			n.log.Error("snapshot failed", "db", d.name, "err", err)
		}
	}
}

// takeSnapshot stores a snapshot of d if it is newer than the stored one,
// then purges the entries it covers (keeping Retain).
func (n *Node) takeSnapshot(ctx context.Context, d *database) (*snapshot.Meta, bool, error) {
	if n.snaps == nil {
		return nil, false, api.Errorf(api.CodeUnavailable, "snapshots are disabled on this node")
	}
	meta, taken, err := n.snaps.Take(ctx, d.name, d.db, n.cfg.DataDir)
	if err != nil {
		return nil, false, err
	}
	d.lastSnap.Store(meta.Seq)
	if taken {
		first, err := snapshot.Purge(ctx, d.str, meta.Seq, n.cfg.Snapshot.Retain)
		if err != nil {
			return meta, taken, err
		}
		if first > 0 {
			n.log.Info("stream purged", "db", d.name, "first_seq", first, "snapshot_seq", meta.Seq)
		}
	}
	return meta, taken, nil
}

// SnapshotReply is the reply of nqlite.snapshot.<db>.
type SnapshotReply = api.SnapshotReply

// snapshotHandler serves nqlite.snapshot.<db>: take a snapshot now. The
// request may be empty or {"after_seq": N, "timeout_ms": M}: the node first
// applies sequence N, so the snapshot holds it.
func (n *Node) snapshotHandler(d *database) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		n.dispatch(r, func() {
			var req struct {
				AfterSeq  uint64 `json:"after_seq"`
				TimeoutMS int    `json:"timeout_ms"`
			}
			if len(r.Data()) > 0 {
				if err := json.Unmarshal(r.Data(), &req); err != nil {
					r.Error("400", "snapshot request: "+err.Error(), api.ErrorBody("snapshot request: "+err.Error()+` (send nothing, or {"after_seq": N, "timeout_ms": M})`, n.cfg.NodeID))
					return
				}
			}
			if req.TimeoutMS <= 0 {
				req.TimeoutMS = 10 * 60 * 1000
			}
			ctx, cancel := context.WithTimeout(n.ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
			defer cancel()
			fail := func(code int, msg string) {
				r.Error(strconv.Itoa(code), msg, api.ErrorBody(msg, n.cfg.NodeID))
			}
			if err := d.db.WaitApplied(ctx, req.AfterSeq); err != nil {
				fail(api.CodeTimeout, fmt.Sprintf("this node did not apply sequence %d within timeout_ms", req.AfterSeq))
				return
			}
			meta, taken, err := n.takeSnapshot(ctx, d)
			if errors.Is(err, snapshot.ErrBusy) {
				fail(api.CodeUnavailable, "another node is uploading a snapshot of "+d.name+": retry shortly")
				return
			}
			if err != nil {
				fail(api.ErrorCode(err), err.Error())
				return
			}
			b, _ := json.Marshal(SnapshotReply{DB: meta.DB, Object: meta.Object, Bucket: meta.Bucket, Seq: meta.Seq,
				Node: meta.Node, Time: meta.Time, Pages: meta.Pages, Size: meta.Size, Digest: meta.Digest, Taken: taken})
			r.Respond(b)
		})
	})
}
