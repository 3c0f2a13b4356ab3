package client

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/service/api"
)

// WatchOptions choose what Watch delivers.
type WatchOptions struct {
	// Tables, when not empty, are the only tables whose row changes are
	// delivered (names as SQLite matches them, case-insensitively); resets
	// and lost events are always delivered.
	Tables []string
	// Since, when not 0, starts with the changes of the entry at stream
	// sequence Since (the seq of a write's response) or the first entry
	// after it that changed rows, as far as the change stream still keeps
	// them; 0 delivers only changes made from now on.
	Since uint64
	// All starts with the oldest event the change stream keeps (Since is
	// then ignored).
	All bool
	// JSDomain selects a JetStream domain ("" for the local one).
	JSDomain string
}

// ErrNoFeed is wrapped by Watch's error when the database has no change
// stream (no node runs with --changes).
var ErrNoFeed = errors.New("the database has no change feed")

// Watch delivers the change feed of database db (every row change
// committed, in stream order, once each; see api.Change), of the given
// tables (none: every table), from now on, until ctx is done or an error
// is yielded (which ends the sequence). It follows the change stream with
// an ordered consumer, so reconnects and server restarts lose nothing.
//
//	for ch, err := range c.Watch(ctx, "main", "orders") {
//		if err != nil { ... }
//		fmt.Println(ch.Op, ch.Table, ch.RowID)
//	}
func (c *Client) Watch(ctx context.Context, db string, tables ...string) iter.Seq2[api.Change, error] {
	return c.WatchWith(ctx, db, WatchOptions{Tables: tables})
}

// WatchWith is Watch with options (a start in the past, a domain).
func (c *Client) WatchWith(ctx context.Context, db string, o WatchOptions) iter.Seq2[api.Change, error] {
	return func(yield func(api.Change, error) bool) {
		cons, err := c.watchConsumer(ctx, db, o)
		if err != nil {
			yield(api.Change{}, err)
			return
		}
		msgs, err := cons.Messages()
		if err != nil {
			yield(api.Change{}, fmt.Errorf("watch %s: %w", db, err))
			return
		}
		defer msgs.Stop()
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-ctx.Done():
				msgs.Stop()
			case <-done:
			}
		}()
		for {
			m, err := msgs.Next()
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					return
				}
				yield(api.Change{}, fmt.Errorf("watch %s: %w", db, err))
				return
			}
			ch, err := api.DecodeChange(m.Data())
			if err != nil {
				if !yield(api.Change{}, fmt.Errorf("watch %s: %w", db, err)) {
					return
				}
				continue
			}
			if md, err := m.Metadata(); err == nil {
				ch.Position = md.Sequence.Stream
			}
			if !yield(*ch, nil) {
				return
			}
		}
	}
}

// watchConsumer creates the ordered consumer of a watch.
func (c *Client) watchConsumer(ctx context.Context, db string, o WatchOptions) (jetstream.Consumer, error) {
	var js jetstream.JetStream
	var err error
	if o.JSDomain != "" {
		js, err = jetstream.NewWithDomain(c.nc, o.JSDomain)
	} else {
		js, err = jetstream.New(c.nc)
	}
	if err != nil {
		return nil, err
	}
	name := api.ChangesStreamName(db)
	str, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w %s: no stream %s (start the nodes with --changes)", ErrNoFeed, db, name)
	}
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", db, err)
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
	if len(o.Tables) > 0 {
		cfg.FilterSubjects = []string{api.ChangesSubject(db)}
		seen := map[string]bool{}
		for _, t := range o.Tables {
			if s := api.ChangeSubject(db, t); !seen[s] {
				seen[s] = true
				cfg.FilterSubjects = append(cfg.FilterSubjects, s)
			}
		}
	}
	switch {
	case o.All:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case o.Since > 0:
		start, err := findStart(ctx, str, o.Since)
		if err != nil {
			return nil, fmt.Errorf("watch %s: find the changes of entry %d: %w", db, o.Since, err)
		}
		// Without DeliverByStartSequencePolicy, OptStartSeq is ignored.
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := js.OrderedConsumer(ctx, name, cfg)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", db, err)
	}
	return cons, nil
}

// findStart returns the change stream sequence of the first event of an
// entry at sequence since or later: events are in entry order, so a
// binary search over the stream (direct gets) finds it. Lost events, and
// sequences retention or an operator removed, are stepped over.
func findStart(ctx context.Context, str jetstream.Stream, since uint64) (uint64, error) {
	info, err := str.Info(ctx)
	if err != nil {
		return 0, err
	}
	lo, hi := info.State.FirstSeq, info.State.LastSeq+1 // answer in [lo, hi]
	if info.State.Msgs == 0 {
		return hi, nil
	}
	// entryAt returns the entry sequence of the first event at or after
	// pos that has one (and its position), or hi if none before hi.
	entryAt := func(pos uint64) (uint64, uint64, error) {
		for p := pos; p < hi; p++ {
			m, err := str.GetMsg(ctx, p)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return 0, 0, err
			}
			ch, err := api.DecodeChange(m.Data)
			if err != nil || ch.Op == api.OpLost {
				continue
			}
			return ch.Seq, p, nil
		}
		return 0, hi, nil
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		seq, p, err := entryAt(mid)
		if err != nil {
			return 0, err
		}
		if p == hi || seq >= since {
			hi = mid
		} else {
			lo = p + 1
		}
	}
	return lo, nil
}
