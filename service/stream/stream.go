// Package stream owns a database's JetStream stream: it creates it,
// appends entries to it (with idempotency keys), follows it in order from a
// sequence (reporting holes, purged gaps and stalls), knows its bounds
// (first and last sequence) and purges it. It is the only place in nqlite
// that talks to the entry stream; it knows JetStream, not SQLite or micro.
//
// A Stream carries opaque message bodies: what an entry means is package
// apply's business. See DESIGN.md beside this file for the trade-offs.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config describes a database's stream.
type Config struct {
	// Name is the JetStream stream name (NQLITE_<db>).
	Name string
	// Subject is the one subject entries are published on
	// (nqlite.entry.<db>).
	Subject string
	// Description is stored in the stream's configuration.
	Description string
	// Replicas is the stream's replica count (default 1).
	Replicas int
	// Duplicates is the duplicate window for idempotency keys (Nats-Msg-Id):
	// JetStream stores a message whose id it saw within the window once
	// (default 2 minutes, JetStream's default).
	Duplicates time.Duration
	// Barrier is the body of the no-op message Barrier appends (the
	// service's is apply.Barrier(): every node's apply skips it); the
	// stream carries it opaque. Empty: Barrier fails with ErrNoBarrier.
	Barrier []byte
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Stream is one database's entry stream.
type Stream struct {
	js   jetstream.JetStream
	cfg  Config
	str  jetstream.Stream
	log  *slog.Logger
	pubs []jetstream.PublishOpt // options of every Append

	mu     sync.Mutex
	state  State     // the latest stream state seen
	seenAt time.Time // when state was read; zero: never

	// sink is the running follower's inbox of this Stream's own
	// acknowledged appends (Follow's local path), nil when none runs.
	sink atomic.Pointer[chan Msg]

	bMu       sync.Mutex   // Barrier's shared appends (barrier.go)
	bInflight *barrierCall // the append in flight
	bNext     *barrierCall // the one to send when it returns
	barriers  atomic.Uint64
}

// State is what the stream held when it was last asked.
type State struct {
	// FirstSeq is the sequence of the oldest message still stored (after a
	// purge, everything below it is gone); LastSeq the newest. An empty
	// stream that never held a message has both 0.
	FirstSeq, LastSeq uint64
}

// Open creates the stream or updates its configuration, retrying while
// JetStream is not ready (a fresh cluster may not have elected its meta
// leader yet) until ctx is done.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Stream, error) {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Stream{js: js, cfg: cfg, log: cfg.Logger, pubs: []jetstream.PublishOpt{jetstream.WithExpectStream(cfg.Name)}}
	scfg := jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: cfg.Description,
		Subjects:    []string{cfg.Subject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.Duplicates,
		AllowDirect: true,
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		str, err := js.CreateOrUpdateStream(cctx, scfg)
		cancel()
		if err == nil {
			s.str = str
			s.note(str.CachedInfo().State)
			return s, nil
		}
		s.log.Info("waiting for JetStream", "stream", cfg.Name, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Name returns the stream's name.
func (s *Stream) Name() string { return s.cfg.Name }

// Subject returns the subject entries are published on.
func (s *Stream) Subject() string { return s.cfg.Subject }

func (s *Stream) note(st jetstream.StreamState) {
	s.mu.Lock()
	// Never let an older answer overwrite a newer one.
	if st.LastSeq >= s.state.LastSeq {
		s.state.LastSeq = st.LastSeq
	}
	if st.FirstSeq >= s.state.FirstSeq {
		s.state.FirstSeq = st.FirstSeq
	}
	s.seenAt = time.Now()
	s.mu.Unlock()
}

// noteLast records that the stream holds at least last (a delivered
// message's sequence plus the consumer's pending count).
func (s *Stream) noteLast(last uint64) {
	s.mu.Lock()
	if last >= s.state.LastSeq {
		s.state.LastSeq = last
		s.seenAt = time.Now()
	}
	s.mu.Unlock()
}

// Bounds asks JetStream for the stream's first and last sequence now (one
// stream info round trip, answered by the stream leader from its store,
// or by any member while the stream has no leader). The last sequence
// covers what the answering server stored, not necessarily every message
// another server already delivered: a strong read needs Barrier.
func (s *Stream) Bounds(ctx context.Context) (State, error) {
	info, err := s.str.Info(ctx)
	if err != nil {
		return State{}, fmt.Errorf("stream %s info: %w", s.cfg.Name, err)
	}
	s.note(info.State)
	return State{FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq}, nil
}

// Cached returns the latest state this Stream saw (from Bounds, Open or an
// acknowledged Append) and when it saw it, without asking JetStream. The
// time is zero when nothing was seen yet.
func (s *Stream) Cached() (State, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.seenAt
}

// Holds reports whether the stream still stores the message at seq:
// false when it was purged or deleted, an error when JetStream cannot say.
func (s *Stream) Holds(ctx context.Context, seq uint64) (bool, error) {
	_, err := s.str.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// PurgeBelow removes the messages below keep (a stored snapshot covers
// them). It never purges what the stream does not hold any more and
// returns the new first sequence, or 0 when nothing was purged.
func (s *Stream) PurgeBelow(ctx context.Context, keep uint64) (uint64, error) {
	st, err := s.Bounds(ctx)
	if err != nil {
		return 0, err
	}
	if keep <= 1 || st.FirstSeq >= keep {
		return 0, nil
	}
	if err := s.str.Purge(ctx, jetstream.WithPurgeSequence(keep)); err != nil {
		return 0, fmt.Errorf("purge %s below %d: %w", s.cfg.Name, keep, err)
	}
	s.note(jetstream.StreamState{FirstSeq: keep, LastSeq: st.LastSeq})
	return keep, nil
}

// local hands an acknowledged append to the running follower, if any,
// without ever blocking the publisher: a full inbox only means the
// consumer's delivery of m is applied instead.
func (s *Stream) local(m Msg) {
	if ch := s.sink.Load(); ch != nil {
		select {
		case *ch <- m:
		default:
		}
	}
}

// Msg is one stream message: its stream sequence and body.
type Msg struct {
	Seq  uint64
	Data []byte
}

// Ack is JetStream's acknowledgement of an Append.
type Ack struct {
	// Seq is the entry's stream sequence; for a duplicate, the sequence of
	// the message first stored with that idempotency key.
	Seq uint64
	// Duplicate: the idempotency key was seen within the duplicate window,
	// and nothing new was stored.
	Duplicate bool
}

// Errors of Append. Each says whether the entry is stored:
//   - ErrNotStored (wrapped): JetStream certainly did not store it (no
//     server answers on the subject, or the stream refused it): safe to
//     retry.
//   - ErrUnknown (wrapped): the acknowledgement was lost or late (the
//     connection dropped, ctx ended first): the entry may or may not be
//     stored; retry with the same idempotency key.
var (
	ErrNotStored = errors.New("the entry was not stored")
	ErrUnknown   = errors.New("the entry may or may not be stored")
)

// ErrNoResponders wraps ErrNotStored: NATS answered "no responders" on the
// entry subject (after nats.go's retries): no JetStream server that holds
// the stream is reachable, for example while a leaf node's link to its hub
// is down (the leaf server drops the hub's interest with the link).
var ErrNoResponders = fmt.Errorf("%w: no JetStream server answers", ErrNotStored)

// Append publishes data as one message with JetStream's expected-stream
// check and, when id is not empty, the idempotency key id (Nats-Msg-Id),
// and waits for the acknowledgement until ctx is done. Many Appends may be
// in flight at once (asynchronous publishes).
//
// Once JetStream acknowledged data as a new message (not a duplicate), a
// Follow running on this Stream may apply it from data at once, before
// its consumer delivers it (see Follow): data must not change after
// Append is called.
func (s *Stream) Append(ctx context.Context, data []byte, id string) (Ack, error) {
	msg := &nats.Msg{Subject: s.cfg.Subject, Data: data}
	opts := s.pubs
	if id != "" {
		opts = append(opts[:len(opts):len(opts)], jetstream.WithMsgID(id))
	}
	fut, err := s.js.PublishMsgAsync(msg, opts...)
	if err != nil {
		return Ack{}, fmt.Errorf("%w: publish: %v", ErrNotStored, err)
	}
	select {
	case ack := <-fut.Ok():
		s.mu.Lock()
		if ack.Sequence > s.state.LastSeq {
			s.state.LastSeq = ack.Sequence
		}
		s.mu.Unlock()
		if !ack.Duplicate {
			s.local(Msg{Seq: ack.Sequence, Data: data})
		}
		return Ack{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
	case err := <-fut.Err():
		var apiErr *jetstream.APIError
		switch {
		case errors.Is(err, jetstream.ErrNoStreamResponse):
			return Ack{}, ErrNoResponders
		case errors.As(err, &apiErr):
			return Ack{}, fmt.Errorf("%w: %v", ErrNotStored, err)
		default:
			// The connection dropped before the ack (nats: disconnected):
			// the entry may be stored all the same.
			return Ack{}, fmt.Errorf("%w: %v", ErrUnknown, err)
		}
	case <-ctx.Done():
		return Ack{}, fmt.Errorf("%w: no acknowledgement: %v", ErrUnknown, ctx.Err())
	}
}
