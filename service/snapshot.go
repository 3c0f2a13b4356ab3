package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

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
	info, err := apply.ReadSnapshotInfo(ctx, path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		exists = false
	case err != nil && ctx.Err() != nil:
		return err // stopped during the check: the file was not judged
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
	if n.store() == nil {
		if behind {
			return fmt.Errorf("database %s: the stream starts at %d, this node has applied %d, and snapshots are disabled: cannot rebuild", d.name, firstSeq, applied)
		}
		return nil
	}
	tmp, meta, err := n.store().Fetch(ctx, d.name, filepath.Dir(path))
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

// restoreFailuresLogged and snapshotFailuresLogged are how many failures in
// a row make a restore or a snapshot an ERROR (a person should look);
// fewer are WARN, as they usually clear by themselves.
const (
	restoreFailuresLogged  = 5
	snapshotFailuresLogged = 3
)

// snapshotLoop takes a snapshot of d whenever this node has applied
// Threshold entries beyond the latest stored one, checked every Interval.
func (n *Node) snapshotLoop(d *database) {
	defer n.bg.Done()
	cfg := n.cfg.Snapshot
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if d.db.Applied() < d.lastSnap.Load()+cfg.Threshold || d.getState() != serving {
			continue // nothing to do, or not now (a diverged node never stores its copy)
		}
		_, _, err := n.takeSnapshot(n.ctx, d)
		switch {
		case err == nil:
			failures = 0
		case errors.Is(err, snapshot.ErrBusy):
			// Another node won the race for the claim: it uploads.
			n.log.Debug("snapshot taken by another node", "db", d.name)
		case n.ctx.Err() != nil:
		default:
			failures++
			level := slog.LevelWarn
			if failures >= snapshotFailuresLogged {
				level = slog.LevelError
			}
			n.log.Log(n.ctx, level, "snapshot failed, trying again at the next check", "db", d.name, "failures_in_a_row", failures, "err", err)
		}
	}
}

// takeSnapshot stores a snapshot of d if it is newer than the stored one,
// then purges the entries it covers (keeping Retain).
func (n *Node) takeSnapshot(ctx context.Context, d *database) (*snapshot.Meta, bool, error) {
	return n.takeSnapshotWith(ctx, d, snapshot.TakeOptions{})
}

// takeSnapshotWith is takeSnapshot with options (see snapshot.TakeOptions).
// A snapshot this node stores is also a checkpoint of its digest.
func (n *Node) takeSnapshotWith(ctx context.Context, d *database, o snapshot.TakeOptions) (*snapshot.Meta, bool, error) {
	if n.store() == nil {
		return nil, false, api.Errorf(api.CodeUnavailable, "snapshots are disabled on this node")
	}
	if d.getState() == diverged {
		return nil, false, errDiverged(d)
	}
	// The snapshot package asks the stream's owner to purge what the
	// new snapshot covers, keeping Retain entries below it.
	if str := d.stream(); str != nil {
		o.Purge = str
	}
	o.Retain = n.cfg.Snapshot.Retain
	meta, taken, err := n.store().TakeWith(ctx, d.name, d.db, n.cfg.DataDir, o)
	if meta != nil {
		d.lastSnap.Store(meta.Seq)
		if taken && d.cps != nil {
			d.cps.snapshotTaken(ctx, meta)
		}
	}
	return meta, taken, err
}

// SnapshotReply is the reply of nqlite.snapshot.<db>.
type SnapshotReply = api.SnapshotReply

// snapshotHandler serves nqlite.snapshot.<db>: take a snapshot now. The
// request may be empty or {"after_seq": N, "timeout_ms": M}: the node first
// applies sequence N, so the snapshot holds it.
func (n *Node) snapshotHandler(d *database) func(*request) {
	return func(r *request) {
		func() {
			var req struct {
				AfterSeq  uint64 `json:"after_seq"`
				TimeoutMS int    `json:"timeout_ms"`
			}
			if len(r.Data()) > 0 {
				if err := json.Unmarshal(r.Data(), &req); err != nil {
					n.fail(d, r, api.Errorf(api.CodeBadRequest, `snapshot request: %v (send nothing, or {"after_seq": N, "timeout_ms": M})`, err))
					return
				}
			}
			if req.TimeoutMS <= 0 {
				req.TimeoutMS = 10 * 60 * 1000
			}
			ctx, cancel := context.WithTimeout(n.ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
			defer cancel()
			if err := d.db.WaitApplied(ctx, req.AfterSeq); err != nil {
				n.fail(d, r, api.NewError(api.KindNotReached, "this node has applied up to sequence %d and did not reach %d within timeout_ms %d", d.db.Applied(), req.AfterSeq, req.TimeoutMS))
				return
			}
			meta, taken, err := n.takeSnapshot(ctx, d)
			var ae *api.Error
			switch {
			case errors.Is(err, snapshot.ErrBusy):
				n.fail(d, r, api.Errorf(api.CodeUnavailable, "another node is uploading a snapshot of %s: retry shortly", d.name))
				return
			case errors.As(err, &ae):
				n.fail(d, r, err)
				return
			case err != nil:
				// JetStream's Object Store or this node's disk: not a bug
				// of the request, and nothing was published.
				n.log.Warn("snapshot request failed", "db", d.name, "err", err)
				n.fail(d, r, api.Errorf(api.CodeUnavailable, "snapshot of %s: %v", d.name, err))
				return
			}
			b, _ := json.Marshal(SnapshotReply{DB: meta.DB, Object: meta.Object, Bucket: meta.Bucket, Seq: meta.Seq,
				Node: meta.Node, Time: meta.Time, Pages: meta.Pages, Size: meta.Size, Digest: meta.Digest, Taken: taken})
			r.Respond(b)
		}()
	}
}
