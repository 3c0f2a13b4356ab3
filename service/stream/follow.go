package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MaxBatch is the most messages Follow hands over in one call of its apply
// function. Messages that are already waiting are grouped; a lone message
// is handed over at once.
const MaxBatch = 1024

// ApplyFunc applies msgs, a run of consecutive stream messages in stream
// order (consecutive in the stream: no message the stream holds lies
// between two of them). It returns nil once all are applied, or an error;
// Follow then stops and returns that error (so the function itself decides
// whether a failure is worth retrying).
type ApplyFunc func(ctx context.Context, msgs []Msg) error

// FollowOptions tune Follow; the zero value is the production setting.
type FollowOptions struct {
	// StallCheck is how often an idle follower asks its consumer whether
	// it holds messages it has not delivered (default 2 s). An ordered
	// pull consumer notices a lost delivery only when a later message
	// arrives: a message the server sent while the pull's reply subject had
	// no interest (a leaf node's link to its hub broke just after its pull
	// request reached the hub) is never seen otherwise, and the node would
	// lag until the next write. Two checks in a row that find messages
	// undelivered, with no progress in between, start a new consumer.
	StallCheck time.Duration
	// Heartbeat is the idle heartbeat asked of the consumer (default 1 s);
	// two missed in a row make nats.go recreate the consumer (its default
	// for ordered consumers is 5 s: 10 s without messages after the server
	// holding the consumer went away).
	Heartbeat time.Duration
	// OnEvent, when set, is told of every irregularity Follow met and dealt
	// with (see Event); a non-nil return ends Follow with that error, so
	// the caller may decide that, say, a deleted entry must stop it.
	OnEvent func(Event) error

	// drop, in tests, loses a delivery before Follow sees it, as a broken
	// link would.
	drop func(seq uint64) bool
	// again, in tests, returns messages to deliver once more right after
	// m, as a consumer started again from an older sequence, or a delivery
	// repeated after a reconnect, would.
	again func(m Msg) []Msg
	// consumeErr, in tests, is told of the consumer's errors (nats.go's
	// ConsumeErrHandler; ErrNoHeartbeat starts a reset). It runs under
	// the consumer's lock: it must not block.
	consumeErr func(error)
	// noLocal, in tests of the consumer's faults, turns the local path
	// off: only the consumer's deliveries are applied.
	noLocal bool
	// infoCalls, in tests, is told of each consumer Info call of a stall
	// check as it starts (+1) and returns (-1); checked of each check.
	infoCalls func(delta int)
	checked   func()
}

// maxHeld bounds the acknowledged appends a follower keeps until it
// reaches them (it is behind); beyond it, their deliveries are applied.
const maxHeld = 256

// EventKind names what Follow met.
type EventKind int

const (
	// Deleted: messages From..To are gone from the middle of the stream
	// (an operator deleted them): Follow goes on after them.
	Deleted EventKind = iota + 1
	// Lost: message From is still in the stream but did not arrive before
	// a later one (lost in transit, or an old consumer's message handed
	// over late after a consumer reset): Follow starts a new consumer at
	// From.
	Lost
	// Stalled: the consumer holds messages it does not deliver: Follow
	// starts a new consumer at From.
	Stalled
)

func (k EventKind) String() string {
	switch k {
	case Deleted:
		return "deleted"
	case Lost:
		return "lost"
	case Stalled:
		return "stalled"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is an irregularity of the stream's delivery that Follow dealt with.
type Event struct {
	Kind     EventKind
	From, To uint64 // the sequences concerned (To: Deleted only)
}

// GapError is returned by Follow when the next message the caller needs
// was purged from the stream (below its first sequence): the caller must
// restore from a snapshot, then Follow again from after it.
type GapError struct {
	Next     uint64 // the sequence the caller needed
	FirstSeq uint64 // the stream's first sequence
}

func (e *GapError) Error() string {
	return fmt.Sprintf("the stream starts at sequence %d but this node needs %d next: entries %d-%d were purged; restore from a snapshot", e.FirstSeq, e.Next, e.Next, e.FirstSeq-1)
}

// IsGap reports whether err is a *GapError.
func IsGap(err error) bool {
	var g *GapError
	return errors.As(err, &g)
}

// Follow delivers the stream's messages from sequence next on to apply, in
// stream order, with an ordered consumer, until ctx is done (it then
// returns nil), apply fails (that error), OnEvent returns an error, or the
// message needed next was purged (a *GapError). It never skips a message
// the stream holds and never hands one over twice.
//
// Ordered consumers recreate themselves after reconnects and missed
// heartbeats from the last delivered sequence (nats.go jetstream
// semantics), so redelivered messages are dropped by sequence. Holes are
// checked: below the stream's first sequence is a GapError, still in the
// stream is Lost (new consumer), gone from the middle is Deleted (go on).
//
// The local path: a message this Stream appended (Append, Barrier) is
// applied as soon as JetStream acknowledged it and every message before it
// is applied, from the bytes appended, without waiting for the consumer
// to deliver it; the delivery is then dropped by sequence. An
// acknowledgement says the stream stores exactly those bytes at that
// sequence (a duplicate's is not used: it names another message), so the
// run handed to apply is the one the consumer would hand over. It saves
// the delivery's latency: in a clustered stream, the consumer may sit on
// a follower server, which stores (and with sync_interval always,
// fsyncs) a message only after the leader acknowledged it.
func (s *Stream) Follow(ctx context.Context, next uint64, opts FollowOptions, apply ApplyFunc) error {
	if opts.StallCheck <= 0 {
		opts.StallCheck = 2 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = time.Second
	}
	if next == 0 {
		next = 1
	}
	f := &follower{s: s, opts: opts, apply: apply, next: next}
	for {
		restart, err := f.run(ctx)
		if err != nil || !restart || ctx.Err() != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

type follower struct {
	s     *Stream
	opts  FollowOptions
	apply ApplyFunc
	next  uint64 // the sequence to apply next
}

func (f *follower) event(ev Event) error {
	if f.opts.OnEvent != nil {
		return f.opts.OnEvent(ev)
	}
	return nil
}

// gap returns a *GapError when the stream no longer holds f.next because
// it was purged; nil when it does or cannot say.
func (f *follower) gap(ctx context.Context) error {
	st, err := f.s.Bounds(ctx)
	if err == nil && st.FirstSeq > f.next {
		return &GapError{Next: f.next, FirstSeq: st.FirstSeq}
	}
	return nil
}

// run runs one ordered consumer; restart reports that it must be replaced.
func (f *follower) run(ctx context.Context) (restart bool, err error) {
	if err := f.gap(ctx); err != nil {
		return false, err
	}
	var cons jetstream.Consumer
	for {
		cfg := jetstream.OrderedConsumerConfig{}
		if f.next > 1 {
			// Without DeliverByStartSequencePolicy, OptStartSeq is ignored.
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = f.next
		}
		cons, err = f.s.js.OrderedConsumer(ctx, f.s.cfg.Name, cfg)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false, nil
		}
		f.s.log.Warn("create ordered consumer, retrying", "stream", f.s.cfg.Name, "err", err)
		select {
		case <-ctx.Done():
			return false, nil
		case <-time.After(500 * time.Millisecond):
		}
	}
	ch := make(chan Msg, 2*MaxBatch)
	local := make(chan Msg, maxHeld)
	if !f.opts.noLocal {
		f.s.sink.Store(&local)
		defer f.s.sink.CompareAndSwap(&local, nil)
	}
	held := make(map[uint64]Msg) // acknowledged appends past f.next
	stop := make(chan struct{})
	var got received
	probe := infoProbe{calls: f.opts.infoCalls}
	consumeOpts := []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(MaxBatch), jetstream.PullHeartbeat(f.opts.Heartbeat)}
	if f.opts.consumeErr != nil {
		consumeOpts = append(consumeOpts, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { f.opts.consumeErr(err) }))
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata() // parsed once, here
		if err != nil {
			return // not a stream message
		}
		if f.opts.drop != nil && f.opts.drop(md.Sequence.Stream) {
			return
		}
		got.note(md)
		f.s.noteLast(md.Sequence.Stream + md.NumPending)
		msg := Msg{Seq: md.Sequence.Stream, Data: m.Data()}
		select {
		case ch <- msg:
		case <-stop:
		case <-ctx.Done():
		}
		if f.opts.again != nil {
			for _, r := range f.opts.again(msg) {
				select {
				case ch <- r:
				case <-stop:
				case <-ctx.Done():
				}
			}
		}
	}, consumeOpts...)
	if err != nil {
		return false, fmt.Errorf("consume %s: %w", f.s.cfg.Name, err)
	}
	defer func() {
		close(stop) // a callback still blocked on ch returns
		// An ordered consumer's Stop waits for a reset in progress: with
		// JetStream unreachable, its attempt to create the next consumer
		// (up to 10 s) and the back-off after it. Once ctx is done nobody
		// waits for that: the consumer stops in the background.
		stopped := make(chan struct{})
		go func() {
			cc.Stop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
		}
	}()

	tick := time.NewTicker(f.opts.StallCheck)
	defer tick.Stop()
	suspect, suspectAt := false, uint64(0) // the last check found messages undelivered, at next suspectAt
	batch := make([]Msg, 0, MaxBatch)
	run := make([]Msg, 0, 16) // a run of held messages
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return false, nil
		case m := <-ch:
			batch = append(batch, m)
		case m := <-local:
			f.hold(held, m)
			for drained := false; !drained; {
				select {
				case m := <-local:
					f.hold(held, m)
				default:
					drained = true
				}
			}
			if err := f.applyHeld(ctx, held, run); err != nil {
				if ctx.Err() != nil {
					return false, nil
				}
				return false, err
			}
			continue
		case <-tick.C:
			// Only reached while apply is idle.
			if f.opts.checked != nil {
				f.opts.checked()
			}
			behind, info := consumerBehind(ctx, cons, &got, &probe, f.opts.StallCheck/2)
			if behind && suspect && suspectAt == f.next {
				f.s.log.Warn("consumer stopped delivering entries: starting a new one", "stream", f.s.cfg.Name,
					"next", f.next, "delivered", info.Delivered.Stream, "pending", info.NumPending)
				if err := f.event(Event{Kind: Stalled, From: f.next}); err != nil {
					return false, err
				}
				go func(name string) {
					dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					f.s.js.DeleteConsumer(dctx, f.s.cfg.Name, name)
				}(info.Name)
				return true, nil
			}
			suspect, suspectAt = behind, f.next
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
		// Hand over runs without holes; at each hole, find out why
		// messages are missing (unless the local path holds them).
		for rest := batch; ; {
			if err := f.applyHeld(ctx, held, run); err != nil {
				if ctx.Err() != nil {
					return false, nil
				}
				return false, err
			}
			for len(rest) > 0 && rest[0].Seq < f.next {
				rest = rest[1:] // redelivered: already applied
			}
			if len(rest) == 0 {
				break
			}
			if rest[0].Seq > f.next {
				restart, err := f.hole(ctx, rest[0].Seq)
				if err != nil || restart {
					return restart, err
				}
			}
			n := 1
			for n < len(rest) && rest[n].Seq == rest[n-1].Seq+1 {
				n++
			}
			if err := f.apply(ctx, rest[:n]); err != nil {
				if ctx.Err() != nil {
					return false, nil
				}
				return false, err
			}
			f.next = rest[n-1].Seq + 1
			rest = rest[n:]
		}
	}
}

// hold keeps m, an acknowledged append of this Stream, until f.next
// reaches it; one already applied, or beyond maxHeld, is dropped (its
// delivery is applied instead).
func (f *follower) hold(held map[uint64]Msg, m Msg) {
	if m.Seq >= f.next && len(held) < maxHeld {
		held[m.Seq] = m
	}
}

// applyHeld applies the held messages from f.next on that follow each
// other without a hole, if any, in runs of at most MaxBatch, using buf's
// storage, and forgets those below f.next.
func (f *follower) applyHeld(ctx context.Context, held map[uint64]Msg, buf []Msg) error {
	for len(held) > 0 {
		for seq := range held {
			if seq < f.next {
				delete(held, seq)
			}
		}
		run := buf[:0]
		for len(run) < MaxBatch {
			m, ok := held[f.next+uint64(len(run))]
			if !ok {
				break
			}
			run = append(run, m)
		}
		if len(run) == 0 {
			return nil
		}
		if err := f.apply(ctx, run); err != nil {
			return err
		}
		f.next = run[len(run)-1].Seq + 1
	}
	return nil
}

// hole decides what to do when message seq arrived but f.next did not:
// purged (a GapError), still in the stream or unknown (restart: a new
// consumer), or deleted from the middle of the stream (go on from seq).
func (f *follower) hole(ctx context.Context, seq uint64) (restart bool, err error) {
	if err := f.gap(ctx); err != nil {
		return false, err
	}
	held, err := f.s.Holds(ctx, f.next)
	if held || err != nil {
		// The stream still holds the message, or cannot say: it was lost
		// on the way here. (A consumer reset after missed heartbeats can
		// hand over an old consumer's last message after the new one's
		// first.)
		f.s.log.Warn("an entry did not arrive: starting a new consumer at it", "stream", f.s.cfg.Name, "next", f.next, "got", seq)
		if err := f.event(Event{Kind: Lost, From: f.next}); err != nil {
			return false, err
		}
		return true, nil
	}
	// Is everything between gone? A message in between that is still held
	// was lost in transit too.
	for q := f.next + 1; q < seq; q++ {
		if held, err := f.s.Holds(ctx, q); held || err != nil {
			if err := f.event(Event{Kind: Lost, From: f.next}); err != nil {
				return false, err
			}
			return true, nil
		}
	}
	f.s.log.Warn("stream entries missing before this one: deleted from the stream", "stream", f.s.cfg.Name, "from", f.next, "to", seq-1)
	if err := f.event(Event{Kind: Deleted, From: f.next, To: seq - 1}); err != nil {
		return false, err
	}
	f.next = seq
	return false, nil
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

// consumerBehind reports whether the consumer holds messages it has not
// delivered here: pending on the server, or counted as delivered there but
// never received (consumer sequences count deliveries only, unlike stream
// sequences, which skip deleted messages), or the consumer is gone (with
// its server, or deleted).
func consumerBehind(ctx context.Context, cons jetstream.Consumer, got *received, probe *infoProbe, timeout time.Duration) (bool, *jetstream.ConsumerInfo) {
	ictx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	info, err := probe.info(ictx, cons) // ictx's error when it ended first: as unreachable
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

// infoProbe runs the consumer Info calls of a follower's stall checks, at
// most one at a time. nats.go's ordered consumer holds its lock in Info
// and while it recreates its consumer, retrying with backoff while
// JetStream is unreachable: Info then waits for the lock whatever its
// context says, and a stop waited with it (TestLeaf_StopWithHubDown,
// under CPU load). So a check waits for the call no longer than its own
// timeout and leaves it running; the next check waits for that same call
// rather than starting another, so an outage leaves one goroutine behind,
// not one per check (TestFollow_StallChecksDuringReset).
type infoProbe struct {
	pending chan infoAnswer // the call in flight, nil if none
	calls   func(delta int) // FollowOptions.infoCalls
}

type infoAnswer struct {
	ctx  context.Context // the context the call ran with
	info *jetstream.ConsumerInfo
	err  error
}

// info returns the consumer's info, from the call in flight if there is
// one (asking again if that call's check has ended: its context is done),
// or ctx's error when ctx ends first.
func (p *infoProbe) info(ctx context.Context, cons jetstream.Consumer) (*jetstream.ConsumerInfo, error) {
	for {
		if p.pending == nil {
			ch := make(chan infoAnswer, 1)
			p.pending = ch
			if p.calls != nil {
				p.calls(1)
			}
			go func() {
				info, err := cons.Info(ctx)
				if p.calls != nil {
					p.calls(-1)
				}
				ch <- infoAnswer{ctx, info, err}
			}()
		}
		select {
		case a := <-p.pending:
			p.pending = nil
			if a.ctx != ctx {
				continue // the call of an earlier check, cut short by its end
			}
			return a.info, a.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
