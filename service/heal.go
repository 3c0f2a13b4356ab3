package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/snapshot"
)

// Healing a diverged node, without a leader and without node-to-node
// links:
//
//  1. The diverged node looks at the stored snapshot. It restores from it
//     when another node made it and a majority of the nodes reporting the
//     snapshot's sequence hold the snapshot's digest (the node that
//     stores a snapshot publishes a checkpoint at its sequence, and every
//     node that can tell its digest there answers).
//  2. Otherwise it puts a heal request (api.HealKey) into the checkpoint
//     bucket. Every agreeing node that sees it waits until it applied the
//     requested sequence and the stored snapshot's, and stores a snapshot
//     of its own, replacing one at the same sequence (the snapshot claim
//     lets one of them upload). Their checkpoints at its sequence vouch
//     for it; step 1 then succeeds.
//  3. The restore is verified (the object's content hash and digest
//     against the file, snapshot.Fetch; the digest against the majority
//     here), replaces the file under the apply loop, and the node follows
//     the stream from the snapshot's sequence, publishing its checkpoints
//     again from there.

// healRequest asks the follow loop of a database to restore from want.
type healRequest struct {
	want *snapshot.Meta
	done chan error
}

// heal runs while d is diverged (first: the first differing checkpoint):
// it finds or asks for a snapshot a majority vouches for and has the
// follow loop restore from it.
func (n *Node) heal(d *database, first uint64) {
	ctx := n.ctx
	store := n.store()
	if store == nil {
		n.log.Error("diverged and snapshots are disabled: this node cannot heal by itself; stop it, remove its file and start it again", "db", d.name)
		return
	}
	asked := time.Time{}
	delay := 500 * time.Millisecond
	for ctx.Err() == nil && d.getState() == diverged {
		m, err := store.Latest(ctx, d.name)
		if err == nil && n.vouched(d, m) {
			err = n.healFrom(ctx, d, m)
			if err == nil {
				return
			}
			n.log.Warn("heal: restore failed, trying again", "db", d.name, "snapshot_seq", m.Seq, "err", err)
		} else if time.Since(asked) > 30*time.Second {
			seq := first
			if m != nil {
				seq = max(seq, m.Seq)
			}
			if err := n.askHeal(ctx, d, seq); err != nil {
				n.log.Warn("heal: cannot ask the agreeing nodes for a snapshot", "db", d.name, "err", err)
			} else {
				asked = time.Now()
				n.log.Info("heal: asked the agreeing nodes for a snapshot", "db", d.name, "seq", seq)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// vouched reports whether d may restore from m: made by another node,
// carrying a digest that a majority of the nodes reporting its sequence
// hold.
func (n *Node) vouched(d *database, m *snapshot.Meta) bool {
	if m == nil || m.Node == n.cfg.NodeID || m.RunningDigest == "" || d.cps == nil {
		return false
	}
	dg, _, ok := d.cps.majorityAt(m.Seq, m.DigestOrigin, m.DigestFormat)
	return ok && dg == m.RunningDigest
}

// askHeal puts d's heal request into the checkpoint bucket.
func (n *Node) askHeal(ctx context.Context, d *database, seq uint64) error {
	if d.cps == nil || d.cps.kv == nil {
		return errors.New("the checkpoint bucket is not open")
	}
	b, _ := json.Marshal(api.HealRequest{DB: d.name, Node: n.cfg.NodeID, Seq: seq})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := d.cps.kv.Put(pctx, api.HealKey(d.name, n.cfg.NodeID), b)
	return err
}

// healFrom has the follow loop restore d from m and waits for it.
func (n *Node) healFrom(ctx context.Context, d *database, m *snapshot.Meta) error {
	h := &healRequest{want: m, done: make(chan error, 1)}
	d.healReq.Store(h)
	if cancel := d.followCancel.Load(); cancel != nil {
		(*cancel)()
	}
	select {
	case err := <-h.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// restoreHeal runs in the follow loop, which is stopped: it fetches the
// stored snapshot, checks it is the one vouched for, and replaces d's
// file with it.
func (n *Node) restoreHeal(d *database, h *healRequest) error {
	store := n.store()
	tmp, m, err := store.Fetch(n.ctx, d.name, filepath.Dir(d.path))
	if err != nil {
		return err
	}
	if m.Seq != h.want.Seq || m.RunningDigest != h.want.RunningDigest {
		os.Remove(tmp)
		return fmt.Errorf("the stored snapshot changed (now sequence %d) since it was vouched for", m.Seq)
	}
	d.setState(restoring)
	err = d.db.Replace(tmp)
	if err != nil {
		os.Remove(tmp)
		d.setState(diverged)
		return err
	}
	st := d.db.Digest()
	if st.Digest.String() != m.RunningDigest {
		// Fetch checked the file against the object; this is a bug.
		d.setState(diverged)
		return fmt.Errorf("the restored file's digest %s is not the snapshot's %s", st.Digest, m.RunningDigest)
	}
	d.cps.healed(m.Seq)
	d.heals.Add(1)
	d.setState(serving)
	d.markReady()
	n.log.Info("healed: restored from a snapshot a majority of the nodes vouch for; applying from there", "db", d.name, "seq", m.Seq, "taken_by", m.Node, "digest", m.RunningDigest)
	if d.cps.kv != nil {
		dctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		d.cps.kv.Delete(dctx, api.HealKey(d.name, n.cfg.NodeID))
		cancel()
	}
	return nil
}

// answerHeal serves another node's heal request, in the background: if
// this node agrees with the majority, it stores a snapshot at or past the
// requested sequence and the stored snapshot's, replacing one at the same
// sequence unless that one is already vouched for.
func (n *Node) answerHeal(d *database, h api.HealRequest) {
	if n.store() == nil || d.cps == nil || !d.answering.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer d.answering.Store(false)
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Minute)
		defer cancel()
		if d.getState() != serving || !d.cps.agreeing() {
			return
		}
		latest, err := n.store().Latest(ctx, d.name)
		if err != nil && !errors.Is(err, snapshot.ErrNoSnapshot) {
			return
		}
		target := h.Seq
		if latest != nil {
			if latest.Node != h.Node && n.vouched(d, latest) && latest.Seq >= h.Seq {
				return // the diverged node can restore from it
			}
			target = max(target, latest.Seq)
		}
		if err := d.db.WaitApplied(ctx, target); err != nil {
			return
		}
		if d.getState() != serving || !d.cps.agreeing() {
			return
		}
		m, taken, err := n.takeSnapshotWith(ctx, d, snapshot.TakeOptions{Replace: true})
		switch {
		case errors.Is(err, snapshot.ErrBusy):
			// Another agreeing node uploads.
		case err != nil:
			n.log.Warn("heal request: snapshot failed", "db", d.name, "for", h.Node, "err", err)
		case taken:
			n.log.Info("heal request: stored a snapshot for a diverged node", "db", d.name, "for", h.Node, "seq", m.Seq)
		}
	}()
}
