package apply

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
// semantics), so redelivered messages are dropped by sequence. A consumer
// that stops delivering entries the stream holds (see StallCheck) is
// replaced by a new one starting after the applied sequence.
func (db *DB) Follow(ctx context.Context, js jetstream.JetStream, stream string) error {
	for {
		stalled, err := db.follow(ctx, js, stream)
		if err != nil || !stalled || ctx.Err() != nil {
			return err
		}
	}
}

// StallCheck is how often an idle follower asks its consumer whether it
// holds entries it has not delivered. An ordered pull consumer notices a
// lost delivery only when a later message arrives: a message the server
// sent while the pull's reply subject had no interest (a leaf node's link
// to its hub broke just after its pull request reached the hub) is never
// seen otherwise, and the node would lag until the next write. Two checks
// in a row finding entries undelivered, with no progress in between,
// recreate the consumer.
const StallCheck = 2 * time.Second

// Heartbeat is the idle heartbeat the follower asks of its consumer; two
// missed in a row make nats.go recreate the consumer (its default for
// ordered consumers is 5 s: 10 s without entries after the server holding
// the consumer went away).
const Heartbeat = time.Second

// follow runs one ordered consumer; it returns stalled when that consumer
// stopped delivering entries it holds.
func (db *DB) follow(ctx context.Context, js jetstream.JetStream, stream string) (stalled bool, err error) {
	var cons jetstream.Consumer
	if first, err := streamFirstSeq(ctx, js, stream); err == nil && first > db.Applied()+1 {
		return false, &GapError{Applied: db.Applied(), FirstSeq: first}
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
			return false, nil
		}
		db.log.Warn("create ordered consumer, retrying", "stream", stream, "err", err)
		select {
		case <-ctx.Done():
			return false, nil
		case <-time.After(500 * time.Millisecond):
		}
	}
	ch := make(chan Msg, 2*MaxBatch)
	stop := make(chan struct{})
	var got received
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata() // parsed once, here
		if err != nil {
			return // not a stream message
		}
		got.note(md)
		select {
		case ch <- Msg{Seq: md.Sequence.Stream, Data: m.Data()}:
		case <-stop:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxMessages(MaxBatch), jetstream.PullHeartbeat(Heartbeat))
	if err != nil {
		return false, fmt.Errorf("consume %s: %w", stream, err)
	}
	defer func() {
		cc.Stop()
		close(stop) // a callback still blocked on ch returns
	}()

	tick := time.NewTicker(StallCheck)
	defer tick.Stop()
	suspect, suspectAt := false, uint64(0) // the last check found entries undelivered, at applied suspectAt
	batch := make([]Msg, 0, MaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return false, nil
		case m := <-ch:
			batch = append(batch, m)
		case <-tick.C:
			// Only reached while the apply loop is idle (not held, not
			// applying).
			applied := db.Applied()
			behind, info := consumerBehind(ctx, cons, &got)
			if behind && suspect && suspectAt == applied {
				db.log.Warn("consumer stopped delivering entries: recreating it", "stream", stream,
					"applied", applied, "delivered", info.Delivered.Stream, "pending", info.NumPending)
				go func(name string) {
					dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					js.DeleteConsumer(dctx, stream, name)
				}(info.Name)
				return true, nil
			}
			suspect, suspectAt = behind, applied
			continue
		}
	drain:
		for len(batch) < MaxBatch {
			select {
			case m := <-ch:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		// Apply contiguous runs; at each hole, find out why entries are
		// missing: purged (restore from a snapshot), lost in transit (start
		// a consumer again after the applied sequence), or deleted from the
		// middle of the stream by an operator (go on).
		for rest := batch; len(rest) > 0; {
			if a := db.Applied(); rest[0].Seq > a+1 {
				first, err := streamFirstSeq(ctx, js, stream)
				if err == nil && first > a+1 {
					return false, &GapError{Applied: a, FirstSeq: first}
				}
				if !entryDeleted(ctx, js, stream, a+1) {
					// The stream still holds the entry, or cannot say: it
					// was lost on the way here. (A consumer reset after
					// missed heartbeats can hand over an old consumer's
					// last message after the new one's first.)
					db.log.Warn("an entry did not arrive: starting a new consumer after the applied sequence", "stream", stream, "applied", a, "next", rest[0].Seq)
					return true, nil
				}
				db.log.Warn("stream entries missing before this one: deleted from the stream", "applied", a, "next", rest[0].Seq)
			}
			n := 1
			for n < len(rest) && rest[n].Seq == rest[n-1].Seq+1 {
				n++
			}
			if err := db.applyWithRetry(ctx, rest[:n]); err != nil {
				return false, err
			}
			rest = rest[n:]
		}
	}
}

// received is the last message an ordered consumer handed over: the
// server-side consumer it came from and its consumer sequence.
type received struct {
	mu   sync.Mutex
	name string
	seq  uint64
}

func (r *received) note(md *jetstream.MsgMetadata) {
	r.mu.Lock()
	r.name, r.seq = md.Consumer, md.Sequence.Consumer
	r.mu.Unlock()
}

// consumerBehind reports whether the consumer holds entries it has not
// delivered here: pending on the server, or counted as delivered there but
// never received (consumer sequences count deliveries only, unlike stream
// sequences, which skip deleted messages), or the consumer is gone (with
// its server, or deleted).
func consumerBehind(ctx context.Context, cons jetstream.Consumer, got *received) (bool, *jetstream.ConsumerInfo) {
	ictx, cancel := context.WithTimeout(ctx, StallCheck/2)
	defer cancel()
	info, err := cons.Info(ictx)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return true, &jetstream.ConsumerInfo{}
	}
	if err != nil {
		return false, nil // JetStream unreachable: nothing to catch up with now
	}
	got.mu.Lock()
	var seen uint64
	if got.name == info.Name {
		seen = got.seq
	}
	got.mu.Unlock()
	return info.NumPending > 0 || info.Delivered.Consumer > seen, info
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

// entryDeleted reports whether the stream no longer holds sequence seq
// (deleted by an operator); false when it holds it or cannot tell.
func entryDeleted(ctx context.Context, js jetstream.JetStream, stream string, seq uint64) bool {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false
	}
	_, err = s.GetMsg(ctx, seq)
	return errors.Is(err, jetstream.ErrMsgNotFound)
}
