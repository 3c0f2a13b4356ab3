package service

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/snapshot"
)

// Checkpoints: every node publishes its running digest (apply.DB.Digest,
// advanced by every entry in the entry's own transaction) into the KV
// bucket api.CheckpointBucket at every multiple of CheckpointConfig.Every,
// at every snapshot it stores, and for any sequence another node
// published that it can still tell (apply.DB.DigestAt). It watches the
// bucket and compares, per checkpoint, the comparable digests (same
// format and origin) of the nodes that reported it:
//
//   - a majority (more than half of the reporters) holds this node's
//     digest: "agrees";
//   - a majority holds another digest: this node is diverged. It refuses
//     every request (503 diverged), logs the first differing checkpoint,
//     and heals (heal.go): it restores from a snapshot whose digest a
//     majority vouches for, made by another node, and replays;
//   - no majority (two nodes that differ, or three that all differ):
//     "split", reported in stats and logged, and no node acts on its own:
//     the operator decides (nqctl check, then nqctl restore or a restart
//     from a chosen node's snapshot).
//
// A checkpoint that is missing or unreadable is no divergence: the node
// keeps serving and says so in stats (checkpoint_error). The digest only
// observes: nothing here changes what an entry does.

// CheckpointConfig configures checkpoints of the running digest.
type CheckpointConfig struct {
	// Disabled turns off publishing and comparing checkpoints (the digest
	// is still computed and kept in the file).
	Disabled bool
	// Every is the checkpoint interval in entries: a node publishes its
	// digest at every multiple of Every (default 1000). Nodes with
	// different intervals still compare at the multiples they share, and
	// each answers the others' checkpoints it can tell.
	Every uint64
	// MaxAge is how long the bucket keeps a checkpoint (default 24h): a
	// node catching up later than that has nothing to compare with for
	// those sequences.
	MaxAge time.Duration
}

func (c *CheckpointConfig) defaults() {
	if c.Every == 0 {
		c.Every = 1000
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 24 * time.Hour
	}
}

// keepCheckpoints is how many checkpoint sequences a node keeps reports
// of in memory (the newest).
const keepCheckpoints = 256

// checkpoints is the checkpoint state of one database on this node.
type checkpoints struct {
	n  *Node
	d  *database
	kv jetstream.KeyValue

	progress chan struct{} // a batch committed (OnDigest): publish what is due

	mu        sync.Mutex
	reports   map[uint64]map[string]api.Checkpoint // seq -> node -> report (this node's own included)
	asked     map[uint64]bool                      // seqs other nodes reported: this node answers once it can
	published map[uint64]bool                      // seqs this node published
	nextEvery uint64                               // the next multiple of Every to publish
	last      uint64                               // latest checkpoint compared
	lastNodes int
	status    string
	diverged  uint64 // first differing checkpoint (0: none)
	majority  map[uint64]string
	splitLog  map[uint64]bool // split checkpoints already logged (once each, not at every late report)
	pubErr    string
	heals     map[string]api.HealRequest // open heal requests of other nodes, by node
}

func newCheckpoints(n *Node, d *database) *checkpoints {
	return &checkpoints{n: n, d: d, progress: make(chan struct{}, 1),
		reports: map[uint64]map[string]api.Checkpoint{}, asked: map[uint64]bool{}, published: map[uint64]bool{},
		majority: map[uint64]string{}, splitLog: map[uint64]bool{}, heals: map[string]api.HealRequest{}}
}

// onDigest is apply.Options.OnDigest: it wakes the loop without blocking
// the apply.
func (c *checkpoints) onDigest(apply.DigestState) {
	select {
	case c.progress <- struct{}{}:
	default:
	}
}

// openCheckpointBucket creates or updates the checkpoint bucket.
func (n *Node) openCheckpointBucket(ctx context.Context) (jetstream.KeyValue, error) {
	return n.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      api.CheckpointBucket,
		Description: "nqlite: each node's running digest per database at checkpoints",
		History:     1,
		TTL:         n.cfg.Checkpoint.MaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    n.cfg.Replicas,
	})
}

// run publishes and compares d's checkpoints until the node stops.
func (c *checkpoints) run(ctx context.Context) {
	n, d := c.n, c.d
	for c.kv == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := n.openCheckpointBucket(cctx)
		cancel()
		if err == nil {
			c.kv = kv
			break
		}
		c.setError(fmt.Sprintf("open bucket %s: %v", api.CheckpointBucket, err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	c.mu.Lock()
	every := n.cfg.Checkpoint.Every
	c.nextEvery = (d.db.Applied()/every + 1) * every
	c.mu.Unlock()
	for ctx.Err() == nil {
		w, err := c.kv.Watch(ctx, api.CheckpointFilter(d.name))
		if err != nil {
			c.setError(fmt.Sprintf("watch %s: %v", api.CheckpointBucket, err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		c.watch(ctx, w)
		if ctx.Err() != nil {
			// The watcher's subscription ends with ctx by itself
			// (nats.Context); Stop would wait for JetStream to delete
			// its consumer, the API timeout when JetStream is
			// unreachable, and hold up the node's Stop.
			return
		}
		w.Stop()
	}
}

// watch handles the bucket's updates and this node's progress until ctx
// is done or the watcher ends.
func (c *checkpoints) watch(ctx context.Context, w jetstream.KeyWatcher) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil {
				c.received(e)
			}
		case <-c.progress:
		case <-tick.C:
		}
		c.publishDue(ctx)
	}
}

// received records one bucket update: another node's checkpoint or heal
// request. This node's own reports come from its own state, never the
// bucket (after a heal, the bucket still holds its old ones).
func (c *checkpoints) received(e jetstream.KeyValueEntry) {
	db, seq, heal, ok := api.ParseCheckpointKey(e.Key())
	if !ok || db != c.d.name {
		return
	}
	me := c.n.cfg.NodeID
	if heal {
		if e.Operation() != jetstream.KeyValuePut {
			return
		}
		var h api.HealRequest
		if json.Unmarshal(e.Value(), &h) != nil || h.Node == me || h.DB != db {
			return
		}
		c.mu.Lock()
		c.heals[h.Node] = h
		c.mu.Unlock()
		c.n.answerHeal(c.d, h)
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	var cp api.Checkpoint
	if json.Unmarshal(e.Value(), &cp) != nil || cp.Node == me || cp.DB != db || cp.Seq != seq {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.record(cp)
	if !c.published[seq] {
		c.asked[seq] = true
	}
	c.evaluate(seq)
}

// record keeps cp, dropping the oldest sequences beyond keepCheckpoints.
// c.mu is held.
func (c *checkpoints) record(cp api.Checkpoint) {
	m := c.reports[cp.Seq]
	if m == nil {
		m = map[string]api.Checkpoint{}
		c.reports[cp.Seq] = m
	}
	m[cp.Node] = cp
	if len(c.reports) <= keepCheckpoints {
		return
	}
	seqs := make([]uint64, 0, len(c.reports))
	for s := range c.reports {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for _, s := range seqs[:len(seqs)-keepCheckpoints] {
		delete(c.reports, s)
		delete(c.asked, s)
		delete(c.published, s)
		delete(c.majority, s)
		delete(c.splitLog, s)
	}
}

// publishDue publishes this node's digest at every checkpoint it has
// reached and not published: multiples of Every and the sequences other
// nodes reported.
func (c *checkpoints) publishDue(ctx context.Context) {
	applied := c.d.db.Applied()
	every := c.n.cfg.Checkpoint.Every
	var due []uint64
	c.mu.Lock()
	for ; c.nextEvery <= applied; c.nextEvery += every {
		due = append(due, c.nextEvery)
	}
	for s := range c.asked {
		if s <= applied {
			due = append(due, s)
			delete(c.asked, s)
		}
	}
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i] < due[j] })
	for _, s := range due {
		c.publish(ctx, s)
	}
}

// publish publishes this node's digest at seq, if the node can still
// tell it, and compares.
func (c *checkpoints) publish(ctx context.Context, seq uint64) {
	st, ok := c.d.db.DigestAt(seq)
	if !ok {
		return // too old for the ring, or replaced meanwhile
	}
	cp := api.Checkpoint{DB: c.d.name, Seq: seq, Node: c.n.cfg.NodeID, Digest: st.Digest.String(), Origin: st.Origin, Format: st.Format}
	c.mu.Lock()
	if c.published[seq] {
		c.mu.Unlock()
		return
	}
	c.published[seq] = true
	c.record(cp)
	c.evaluate(seq)
	c.mu.Unlock()
	if c.kv == nil {
		return
	}
	b, _ := json.Marshal(cp)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.kv.Put(pctx, api.CheckpointKey(c.d.name, seq, cp.Node), b); err != nil {
		if ctx.Err() == nil {
			c.setError(fmt.Sprintf("publish checkpoint %d: %v", seq, err))
			c.n.log.Warn("cannot publish checkpoint (the node keeps serving)", "db", c.d.name, "seq", seq, "err", err)
		}
		return
	}
	c.setError("")
}

// setError records the checkpoint error stats report ("" clears it).
func (c *checkpoints) setError(msg string) {
	c.mu.Lock()
	c.pubErr = msg
	c.mu.Unlock()
}

// evaluate compares the reports of seq with this node's and acts on a
// divergence. c.mu is held.
func (c *checkpoints) evaluate(seq uint64) {
	me := c.n.cfg.NodeID
	reports := c.reports[seq]
	mine, ok := reports[me]
	if !ok {
		return
	}
	count := map[string]int{}
	total := 0
	for _, r := range reports {
		if r.Comparable(mine) {
			count[r.Digest]++
			total++
		}
	}
	status, majority := "split", ""
	for dg, k := range count {
		if 2*k > total {
			majority = dg
		}
	}
	switch {
	case total == 1:
		status = "alone"
	case majority == mine.Digest:
		status = "agrees"
	case majority != "":
		status = "differs"
	}
	if majority != "" {
		c.majority[seq] = majority
	}
	if seq >= c.last {
		c.last, c.lastNodes, c.status = seq, total, status
	}
	switch status {
	case "differs":
		c.diverge(seq)
	case "split":
		if c.splitLog[seq] {
			return // every further report of seq would log it again
		}
		c.splitLog[seq] = true
		c.n.log.Warn("nodes disagree at a checkpoint and no majority holds one digest: nqctl check shows which; the operator decides", "db", c.d.name, "seq", seq, "digests", count, "this_node", mine.Digest)
	}
}

// diverge marks the database diverged at checkpoint seq and starts the
// heal. c.mu is held.
func (c *checkpoints) diverge(seq uint64) {
	first := seq
	me := c.n.cfg.NodeID
	for s, m := range c.majority {
		if r, ok := c.reports[s][me]; ok && r.Digest != m && s < first {
			first = s
		}
	}
	if c.diverged != 0 {
		c.diverged = min(c.diverged, first)
		return
	}
	c.diverged = first
	d := c.d
	c.n.log.Error("this node's copy diverged from the cluster's: its running digest differs from the one a majority of the nodes reported; it refuses requests and heals from a snapshot of an agreeing node",
		"db", d.name, "seq", seq, "first_differing_checkpoint", first, "applied", d.db.Applied(), "digest", c.reports[seq][me].Digest, "majority", c.majority[seq])
	d.setState(diverged)
	go c.n.heal(d, first)
}

// majorityAt returns the digest a majority of the nodes reporting seq
// agree on (with origin and format), and whether there is one.
func (c *checkpoints) majorityAt(seq, origin uint64, format int) (string, int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	count := map[string]int{}
	total := 0
	for _, r := range c.reports[seq] {
		if r.Origin == origin && r.Format == format {
			count[r.Digest]++
			total++
		}
	}
	for dg, k := range count {
		if 2*k > total {
			return dg, total, true
		}
	}
	return "", total, false
}

// healed resets what this node reported past seq (a restore took it back
// there: it reports those checkpoints again as it applies them) and
// clears the divergence.
func (c *checkpoints) healed(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	me := c.n.cfg.NodeID
	for s, m := range c.reports {
		if s > seq {
			delete(m, me)
			delete(c.published, s)
		}
	}
	every := c.n.cfg.Checkpoint.Every
	c.nextEvery = (seq/every + 1) * every
	c.diverged = 0
	c.status = ""
}

// agreeing reports whether this node may vouch for its copy: not
// diverged, and its latest compared checkpoint agrees (or none was
// compared yet).
func (c *checkpoints) agreeing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.diverged == 0 && (c.status == "" || c.status == "agrees" || c.status == "alone")
}

// fill adds the checkpoint fields to s.
func (c *checkpoints) fill(s *Stats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.CheckpointSeq, s.CheckpointNodes, s.CheckpointStatus = c.last, c.lastNodes, c.status
	s.DivergedSeq = c.diverged
	s.CheckpointError = c.pubErr
}

// snapshotTaken publishes this node's checkpoint at a snapshot it stored,
// so the others answer theirs and a diverged node can verify the
// snapshot.
func (c *checkpoints) snapshotTaken(ctx context.Context, m *snapshot.Meta) {
	c.publish(ctx, m.Seq)
}

// errDiverged answers requests while d is diverged.
func errDiverged(d *database) error {
	seq := uint64(0)
	if d.cps != nil {
		d.cps.mu.Lock()
		seq = d.cps.diverged
		d.cps.mu.Unlock()
	}
	return api.NewError(api.KindDiverged, "this node's copy of %s differs from the one most nodes hold (running digest at checkpoint %d): it answers nothing until it healed from a snapshot of an agreeing node; ask another node", d.name, seq)
}
