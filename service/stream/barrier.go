package stream

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A strong read needs a sequence at or after every message JetStream
// stored before the read began. A stream info answer does not give one in
// a clustered stream: the stream leader answers it from its own store,
// which applies a committed message after a follower may already have
// stored it and delivered it to a consumer placed there (the leader
// acknowledges the publish only once it applied it), and a member of a
// leaderless group answers from its own, possibly stale, store. A barrier
// does: a no-op message appended after the read began is sequenced by the
// stream leader after every message committed before it, and acknowledged
// only once the leader stored all of them.
//
// Many strong reads at once share barriers, as etcd's ReadIndex batches
// reads: one barrier is in flight at a time per Stream; reads arriving
// while it is in flight cannot use its sequence (it may have been
// published before they began) and share the next one, published as soon
// as it returns.

// ErrNoBarrier is returned by Barrier when Config.Barrier is empty.
var ErrNoBarrier = errors.New("stream has no barrier body configured")

// barrierCall is one shared barrier append.
type barrierCall struct {
	done    chan struct{}
	seq     uint64
	err     error
	callers int // Barrier calls sharing it (under Stream.bMu)
}

// barrierTimeout bounds one barrier append, whatever the callers' contexts
// (they share it; each stops waiting when its own context ends).
const barrierTimeout = 5 * time.Second

// Barrier appends a barrier message (Config.Barrier) published after
// Barrier was called and returns its stream sequence: every message
// stored before the call has a lower sequence, whichever server stored or
// delivered it, so a follower that applied up to the returned sequence
// holds every one of them. Concurrent calls share appends: at most one is
// in flight per Stream, and at most one more is waiting. Errors are
// Append's (ErrNotStored, ErrUnknown, wrapped), ctx's, or ErrNoBarrier.
func (s *Stream) Barrier(ctx context.Context) (uint64, error) {
	if len(s.cfg.Barrier) == 0 {
		return 0, ErrNoBarrier
	}
	s.bMu.Lock()
	var c *barrierCall
	if s.bInflight == nil {
		c = &barrierCall{done: make(chan struct{})}
		s.bInflight = c
		go s.runBarrier(c)
	} else {
		if s.bNext == nil {
			s.bNext = &barrierCall{done: make(chan struct{})}
		}
		c = s.bNext
	}
	c.callers++
	s.bMu.Unlock()
	select {
	case <-c.done:
		return c.seq, c.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// runBarrier appends the barrier of c, then starts the waiting one, if any.
func (s *Stream) runBarrier(c *barrierCall) {
	for c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), barrierTimeout)
		ack, err := s.Append(ctx, s.cfg.Barrier, "")
		cancel()
		if err != nil {
			err = fmt.Errorf("stream %s barrier: %w", s.cfg.Name, err)
		}
		c.seq, c.err = ack.Seq, err
		s.barriers.Add(1)
		c = s.barrierDone(c)
	}
}

// barrierDone ends the call in flight, c, and returns the waiting one,
// now in flight, or nil.
func (s *Stream) barrierDone(c *barrierCall) *barrierCall {
	close(c.done)
	s.bMu.Lock()
	defer s.bMu.Unlock()
	c, s.bNext = s.bNext, nil
	s.bInflight = c
	return c
}

// Barriers returns how many barrier appends this Stream made (each
// shared by the Barrier calls that waited for it).
func (s *Stream) Barriers() uint64 { return s.barriers.Load() }
