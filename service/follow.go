package service

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/stream"
)

// follow runs the apply loop of d: it follows d's stream from after the
// applied sequence and applies what arrives, restoring from the stored
// snapshot by itself when the entries it needs next were purged (requests
// get 503 "restoring" meanwhile). It returns when the node stops (nil) or
// when following cannot go on.
func (n *Node) follow(d *database) error {
	failures := 0
	for {
		fctx, cancel := context.WithCancel(n.ctx)
		d.followCancel.Store(&cancel)
		if d.healReq.Load() != nil {
			cancel() // asked before this Follow began
		}
		err := d.stream().Follow(fctx, d.db.Applied()+1, stream.FollowOptions{}, n.applyFunc(d))
		d.followCancel.Store(nil)
		cancel()
		if h := d.healReq.Swap(nil); h != nil && n.ctx.Err() == nil {
			h.done <- n.restoreHeal(d, h)
			continue
		}
		if !stream.IsGap(err) || n.store() == nil || n.ctx.Err() != nil {
			return err
		}
		d.setState(restoring)
		n.log.Warn("entries this node needs were purged: restoring from the snapshot", "db", d.name, "err", err)
		_, rerr := n.store().Restore(n.ctx, d.name, d.db)
		if rerr == nil {
			d.restores.Add(1) // counted before a start waiting on it returns
		}
		d.setState(serving)
		d.markReady()
		if rerr == nil {
			failures = 0
			continue
		}
		// A restore can fail for a while (JetStream unreachable, a newer
		// snapshot replacing the object): a person is needed only when it
		// keeps failing.
		failures++
		delay := min(time.Second<<min(failures-1, 5), 30*time.Second)
		level := slog.LevelWarn
		if failures >= restoreFailuresLogged {
			level = slog.LevelError
		}
		n.log.Log(n.ctx, level, "restore from snapshot failed, retrying", "db", d.name, "attempt", failures, "retry_in", delay, "err", rerr)
		select {
		case <-n.ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}

// applyFunc returns the stream.ApplyFunc of d: it applies a run of
// entries with apply.DB.ApplyBatch and retries a failing batch (a busy or
// full disk is often temporary) with backoff until it succeeds or the
// node stops: it never moves past an entry it could not apply.
func (n *Node) applyFunc(d *database) stream.ApplyFunc {
	batch := make([]apply.Msg, 0, stream.MaxBatch)
	return func(ctx context.Context, msgs []stream.Msg) error {
		batch = batch[:0]
		for _, m := range msgs {
			batch = append(batch, apply.Msg{Seq: m.Seq, Data: m.Data})
		}
		delay := 100 * time.Millisecond
		for attempt := 1; ; attempt++ {
			err := d.db.ApplyBatch(ctx, batch)
			if err == nil || errors.Is(err, apply.ErrClosed) || ctx.Err() != nil {
				if err == nil && d.getState() == failing {
					d.setState(serving)
					n.log.Info("applying again", "db", d.name, "seq", batch[len(batch)-1].Seq)
				}
				return err
			}
			var inc *apply.IncompatibleError
			if errors.As(err, &inc) {
				// Retrying cannot help: only an upgrade of this node can.
				// The entries before it are applied; stop here, serve 503.
				d.setState(incompatible)
				n.log.Error("stream entry of a newer format: this node stopped applying the database; upgrade it", "db", d.name, "seq", inc.Seq, "version", inc.Version, "reads", apply.EntryVersion)
				<-ctx.Done()
				return ctx.Err()
			}
			// A full disk, an I/O error, a file locked by another process:
			// never an outcome (apply.ErrLocal), so the node stops here,
			// says so and retries until the cause is gone.
			d.failure.Store(err.Error())
			d.setState(failing)
			level := slog.LevelWarn
			if attempt >= 3 {
				level = slog.LevelError
			}
			n.log.Log(ctx, level, "cannot apply entries: retrying; requests get 503 meanwhile", "db", d.name, "seq", batch[0].Seq, "attempt", attempt, "retry_in", delay, "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(delay):
			}
			if delay < 5*time.Second {
				delay *= 2
			}
		}
	}
}
