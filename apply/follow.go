package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MaxBatch is the most entries applied in one SQLite transaction. Entries
// that are already waiting are grouped; a lone entry is applied at once.
const MaxBatch = 1024

// Follow consumes the stream with an ordered consumer starting after the
// applied sequence, and applies its entries in stream order until ctx is
// done. It returns nil when ctx is done, a *GapError when the entries it
// needs next were purged from the stream (restore from a snapshot, then
// Follow again), and an error when the apply itself fails (for example, a
// full disk): it never skips an entry.
//
// Ordered consumers recreate themselves after reconnects and missed
// heartbeats from the last delivered sequence (nats.go jetstream
// semantics), so redelivered messages are dropped by sequence.
func (db *DB) Follow(ctx context.Context, js jetstream.JetStream, stream string) error {
	var (
		cons jetstream.Consumer
		err  error
	)
	if first, err := streamFirstSeq(ctx, js, stream); err == nil && first > db.Applied()+1 {
		return &GapError{Applied: db.Applied(), FirstSeq: first}
	}
	for {
		cfg := jetstream.OrderedConsumerConfig{}
		if a := db.Applied(); a > 0 {
			// Without DeliverByStartSequencePolicy, OptStartSeq is ignored.
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = a + 1
		}
		cons, err = js.OrderedConsumer(ctx, stream, cfg)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		db.log.Warn("create ordered consumer, retrying", "stream", stream, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
	ch := make(chan jetstream.Msg, 2*MaxBatch)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case ch <- m:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxMessages(MaxBatch))
	if err != nil {
		return fmt.Errorf("consume %s: %w", stream, err)
	}
	defer cc.Stop()

	batch := make([]Msg, 0, MaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			batch = appendMsg(batch, m)
		}
	drain:
		for len(batch) < MaxBatch {
			select {
			case m := <-ch:
				batch = appendMsg(batch, m)
			default:
				break drain
			}
		}
		// Apply contiguous runs; at each hole, find out why entries are
		// missing: purged (restore from a snapshot) or deleted from the
		// middle of the stream by an operator.
		for rest := batch; len(rest) > 0; {
			if a := db.Applied(); rest[0].Seq > a+1 {
				first, err := streamFirstSeq(ctx, js, stream)
				if err == nil && first > a+1 {
					return &GapError{Applied: a, FirstSeq: first}
				}
				db.log.Warn("stream entries missing before this one: deleted from the stream", "applied", a, "next", rest[0].Seq)
			}
			n := 1
			for n < len(rest) && rest[n].Seq == rest[n-1].Seq+1 {
				n++
			}
			if err := db.applyWithRetry(ctx, rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
	}
}

func appendMsg(batch []Msg, m jetstream.Msg) []Msg {
	md, err := m.Metadata()
	if err != nil {
		return batch // not a stream message
	}
	return append(batch, Msg{Seq: md.Sequence.Stream, Data: m.Data()})
}

// applyWithRetry retries a failing batch (a busy or full disk is often
// temporary) until ctx is done; it never moves past an entry it could not
// apply.
func (db *DB) applyWithRetry(ctx context.Context, batch []Msg) error {
	if len(batch) == 0 {
		return nil
	}
	delay := 100 * time.Millisecond
	for {
		err := db.ApplyBatch(batch)
		if err == nil || errors.Is(err, ErrClosed) {
			return err
		}
		db.log.Error("apply failed, retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		if delay < 5*time.Second {
			delay *= 2
		}
	}
}

func streamFirstSeq(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.FirstSeq, nil
}
