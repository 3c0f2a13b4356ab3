package stream

import (
	"context"
	"time"
)

// A strong read needs the stream's last sequence as of a moment after it
// began: an answer to a stream info request sent after the read arrived.
// Many strong reads at once share such requests, as etcd's ReadIndex
// batches reads: one request is in flight at a time; reads arriving while
// it is in flight cannot use its answer (it may have been sent before
// they began) and share the next one, sent as soon as it returns.

// lastSeqCall is one shared stream info request.
type lastSeqCall struct {
	done chan struct{}
	seq  uint64
	err  error
}

// LastSeq returns the stream's last sequence as JetStream reported it in
// answer to a request sent after LastSeq was called, so it covers every
// message acknowledged before the call. Concurrent calls share requests:
// at most one is in flight per Stream, and at most one more is waiting.
func (s *Stream) LastSeq(ctx context.Context) (uint64, error) {
	s.lsMu.Lock()
	var c *lastSeqCall
	if s.lsInflight == nil {
		c = &lastSeqCall{done: make(chan struct{})}
		s.lsInflight = c
		go s.runLastSeq(c)
	} else {
		if s.lsNext == nil {
			s.lsNext = &lastSeqCall{done: make(chan struct{})}
		}
		c = s.lsNext
	}
	s.lsMu.Unlock()
	select {
	case <-c.done:
		return c.seq, c.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// runLastSeq makes the request of c, then starts the waiting one, if any.
func (s *Stream) runLastSeq(c *lastSeqCall) {
	for c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := s.Bounds(ctx)
		cancel()
		c.seq, c.err = st.LastSeq, err
		close(c.done)
		s.lsMu.Lock()
		c, s.lsNext = s.lsNext, nil
		s.lsInflight = c
		s.lsMu.Unlock()
	}
}
