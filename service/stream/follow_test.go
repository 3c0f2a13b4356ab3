package stream

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startServer starts an embedded nats-server with JetStream on a random
// loopback port; restart shuts it down and starts it again on the same port
// and store, as a restart of the same server.
func startServer(tb testing.TB) (url string, restart func()) {
	tb.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: tb.TempDir(), NoSigs: true, NoLog: true}
	var mu sync.Mutex
	var ns *server.Server
	start := func() {
		s, err := server.NewServer(opts)
		if err != nil {
			tb.Fatalf("nats-server: %v", err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			tb.Fatal("nats-server not ready")
		}
		opts = opts.Clone()
		opts.Port = s.Addr().(*net.TCPAddr).Port
		mu.Lock()
		ns = s
		mu.Unlock()
	}
	start()
	tb.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return fmt.Sprintf("nats://127.0.0.1:%d", opts.Port), func() {
		mu.Lock()
		s := ns
		mu.Unlock()
		s.Shutdown()
		s.WaitForShutdown()
		start()
	}
}

// openStream connects to url and opens the stream TEST on subject t.entry.
func openStream(tb testing.TB, url string) (*Stream, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, js, Config{Name: "TEST", Subject: "t.entry"})
	if err != nil {
		tb.Fatal(err)
	}
	return s, js
}

// appendN appends n messages "m<seq>" and returns the last sequence.
func appendN(tb testing.TB, s *Stream, n int) uint64 {
	tb.Helper()
	var last uint64
	for i := 0; i < n; i++ {
		ack, err := s.Append(context.Background(), []byte("m"), "")
		if err != nil {
			tb.Fatal(err)
		}
		last = ack.Seq
	}
	return last
}

// recorder is an ApplyFunc that records what it was handed and fails the
// test on anything out of order or handed twice.
type recorder struct {
	tb   testing.TB
	mu   sync.Mutex
	seqs []uint64
	hook func(m Msg) // called before a message is recorded
}

func (r *recorder) apply(ctx context.Context, msgs []Msg) error {
	for i, m := range msgs {
		if i > 0 && m.Seq != msgs[i-1].Seq+1 {
			r.tb.Errorf("run with a hole: %d after %d", m.Seq, msgs[i-1].Seq)
		}
		if r.hook != nil {
			r.hook(m)
		}
		r.mu.Lock()
		if n := len(r.seqs); n > 0 && m.Seq <= r.seqs[n-1] {
			r.tb.Errorf("sequence %d handed over after %d", m.Seq, r.seqs[n-1])
		}
		r.seqs = append(r.seqs, m.Seq)
		r.mu.Unlock()
	}
	return nil
}

func (r *recorder) last() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seqs) == 0 {
		return 0
	}
	return r.seqs[len(r.seqs)-1]
}

func (r *recorder) got() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.seqs...)
}

// follow runs Follow in the background; stop cancels it and returns its
// result.
func follow(tb testing.TB, s *Stream, next uint64, opts FollowOptions, r *recorder) (stop func() error, done <-chan error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	fin := make(chan struct{})
	var res error
	go func() {
		res = s.Follow(ctx, next, opts, r.apply)
		ch <- res
		close(fin)
	}()
	stop = func() error {
		cancel()
		<-fin
		return res
	}
	tb.Cleanup(func() { stop() })
	return stop, ch
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func seqs(from, to uint64, except ...uint64) []uint64 {
	skip := map[uint64]bool{}
	for _, e := range except {
		skip[e] = true
	}
	var out []uint64
	for q := from; q <= to; q++ {
		if !skip[q] {
			out = append(out, q)
		}
	}
	return out
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// events collects the events Follow reports.
type events struct {
	mu  sync.Mutex
	evs []Event
}

func (e *events) on(ev Event) error {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.mu.Unlock()
	return nil
}

func (e *events) count(k EventKind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.evs {
		if ev.Kind == k {
			n++
		}
	}
	return n
}

func TestFollow_InOrderFromSequence(t *testing.T) {
	url, _ := startServer(t)
	s, _ := openStream(t, url)
	appendN(t, s, 20)
	r := &recorder{tb: t}
	follow(t, s, 6, FollowOptions{}, r)
	waitFor(t, "seq 20", func() bool { return r.last() == 20 })
	if got, want := r.got(), seqs(6, 20); !equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// A hole whose message the stream still holds was lost in transit: Follow
// starts a new consumer at it and never applies past it.
func TestFollow_LostInTransit(t *testing.T) {
	url, _ := startServer(t)
	s, _ := openStream(t, url)
	appendN(t, s, 10)
	var dropped sync.Once
	ev := &events{}
	opts := FollowOptions{OnEvent: ev.on, drop: func(seq uint64) bool {
		lost := false
		if seq == 4 {
			dropped.Do(func() { lost = true })
		}
		return lost
	}}
	r := &recorder{tb: t}
	follow(t, s, 1, opts, r)
	waitFor(t, "seq 10", func() bool { return r.last() == 10 })
	if got, want := r.got(), seqs(1, 10); !equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := ev.count(Lost); got != 1 {
		t.Fatalf("Lost events: got %d, want 1", got)
	}
}

// Entries purged while the follower needs them: a GapError naming the
// sequence needed and the stream's new first sequence, at start and in
// the middle of following.
func TestFollow_PurgedGap(t *testing.T) {
	url, _ := startServer(t)
	s, _ := openStream(t, url)
	appendN(t, s, 10)
	ctx := context.Background()
	if _, err := s.PurgeBelow(ctx, 6); err != nil {
		t.Fatal(err)
	}
	// At start.
	err := s.Follow(ctx, 3, FollowOptions{}, (&recorder{tb: t}).apply)
	var gap *GapError
	if !errors.As(err, &gap) || gap.Next != 3 || gap.FirstSeq != 6 {
		t.Fatalf("at start: got %v, want a GapError{Next: 3, FirstSeq: 6}", err)
	}

	// In the middle: the follower applies 6 and 7, is held while 8 and 9
	// are purged and lost on the way (so the next it sees is 10).
	held, release := make(chan struct{}), make(chan struct{})
	r := &recorder{tb: t, hook: func(m Msg) {
		if m.Seq == 7 {
			close(held)
			<-release
		}
	}}
	opts := FollowOptions{drop: func(seq uint64) bool { return seq == 8 || seq == 9 }}
	_, done := follow(t, s, 6, opts, r)
	<-held
	if _, err := s.PurgeBelow(ctx, 10); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case err := <-done:
		if !errors.As(err, &gap) || gap.Next != 8 || gap.FirstSeq != 10 {
			t.Fatalf("in the middle: got %v, want a GapError{Next: 8, FirstSeq: 10}", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Follow did not return a GapError")
	}
	if got, want := r.got(), seqs(6, 7); !equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
}

// Messages an operator deleted from the middle of the stream are reported
// and passed over; OnEvent may also stop Follow there.
func TestFollow_DeletedByOperator(t *testing.T) {
	url, _ := startServer(t)
	s, js := openStream(t, url)
	appendN(t, s, 8)
	ctx := context.Background()
	str, err := js.Stream(ctx, "TEST")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []uint64{3, 4} {
		if err := str.DeleteMsg(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	ev := &events{}
	r := &recorder{tb: t}
	follow(t, s, 1, FollowOptions{OnEvent: ev.on}, r)
	waitFor(t, "seq 8", func() bool { return r.last() == 8 })
	if got, want := r.got(), seqs(1, 8, 3, 4); !equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	ev.mu.Lock()
	evs := append([]Event(nil), ev.evs...)
	ev.mu.Unlock()
	if len(evs) != 1 || evs[0] != (Event{Kind: Deleted, From: 3, To: 4}) {
		t.Fatalf("events: got %v, want one Deleted 3-4", evs)
	}

	errStrict := errors.New("strict: an entry was deleted")
	strict := FollowOptions{OnEvent: func(ev Event) error {
		if ev.Kind == Deleted {
			return errStrict
		}
		return nil
	}}
	r2 := &recorder{tb: t}
	if err := s.Follow(ctx, 1, strict, r2.apply); !errors.Is(err, errStrict) {
		t.Fatalf("strict: got %v, want %v", err, errStrict)
	}
	if got, want := r2.got(), seqs(1, 2); !equal(got, want) {
		t.Fatalf("strict applied %v, want %v", got, want)
	}
}

// A consumer that stops delivering (its last message lost, and nothing
// after it to reveal the hole) is found by the stall check and replaced.
func TestFollow_Stalled(t *testing.T) {
	url, _ := startServer(t)
	s, _ := openStream(t, url)
	appendN(t, s, 5)
	var dropped sync.Once
	ev := &events{}
	opts := FollowOptions{StallCheck: 50 * time.Millisecond, OnEvent: ev.on, drop: func(seq uint64) bool {
		lost := false
		if seq == 5 {
			dropped.Do(func() { lost = true })
		}
		return lost
	}}
	r := &recorder{tb: t}
	follow(t, s, 1, opts, r)
	waitFor(t, "seq 5", func() bool { return r.last() == 5 })
	if got, want := r.got(), seqs(1, 5); !equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := ev.count(Stalled); got != 1 {
		t.Fatalf("Stalled events: got %d, want 1", got)
	}
}

// A restart of the nats-server while following: the ordered consumer is
// recreated after the reconnect, and the messages delivered again after it
// (a test hook repeats the three before the first one after the restart,
// as a consumer started again from an older sequence would) are dropped
// by sequence: every message is handed over once, in order.
func TestFollow_RedeliveryAfterReconnect(t *testing.T) {
	url, restart := startServer(t)
	s, _ := openStream(t, url)
	appendN(t, s, 10)
	var mu sync.Mutex
	seen := map[uint64]Msg{}
	redelivered := 0
	opts := FollowOptions{again: func(m Msg) []Msg {
		mu.Lock()
		defer mu.Unlock()
		seen[m.Seq] = m
		if m.Seq != 11 || redelivered > 0 {
			return nil
		}
		out := []Msg{seen[8], seen[9], seen[10], m}
		redelivered = len(out)
		return out
	}}
	r := &recorder{tb: t}
	follow(t, s, 1, opts, r)
	waitFor(t, "seq 10", func() bool { return r.last() == 10 })
	restart()
	var last uint64
	waitFor(t, "appends after the restart", func() bool {
		ack, err := s.Append(context.Background(), []byte("m"), "")
		if err == nil {
			last = ack.Seq
		}
		return err == nil
	})
	for i := 0; i < 9; i++ {
		ack, err := s.Append(context.Background(), []byte("m"), "")
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Seq
	}
	waitFor(t, fmt.Sprintf("seq %d", last), func() bool { return r.last() == last })
	if got, want := r.got(), seqs(1, last); !equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if redelivered != 4 {
		t.Fatalf("%d messages delivered again, want 4 (8-11)", redelivered)
	}
}

// An ApplyFunc error ends Follow with that error; Follow starts again from
// any sequence.
func TestFollow_ApplyError(t *testing.T) {
	url, _ := startServer(t)
	s, _ := openStream(t, url)
	appendN(t, s, 3)
	errDisk := errors.New("disk full")
	err := s.Follow(context.Background(), 1, FollowOptions{}, func(ctx context.Context, msgs []Msg) error { return errDisk })
	if !errors.Is(err, errDisk) {
		t.Fatalf("got %v, want %v", err, errDisk)
	}
}

// stallingProxy forwards TCP connections to target until stall is set;
// from then on it drops every byte while the connections stay open, as a
// network that silently lost the route (only missed heartbeats tell).
func stallingProxy(tb testing.TB, target string) (addr string, stall *atomic.Bool) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	stall = new(atomic.Bool)
	var mu sync.Mutex
	var conns []net.Conn
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !stall.Load() {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	return ln.Addr().String(), stall
}

// Follow returns once its context is done even while its ordered
// consumer is resetting after missed heartbeats (a stalled network):
// nats.go's Stop waits for the reset's attempt to create the next
// consumer, up to 10 s, and a node's Stop must not. The deadline here is
// half that attempt's timeout: without the fix Follow returns only when
// the attempt times out.
func TestFollow_StopWhileConsumerResets(t *testing.T) {
	url, _ := startServer(t)
	addr, stall := stallingProxy(t, strings.TrimPrefix(url, "nats://"))
	s, _ := openStream(t, "nats://"+addr)
	appendN(t, s, 1)
	var resets atomic.Int32
	r := &recorder{tb: t}
	stop, _ := follow(t, s, 1, FollowOptions{Heartbeat: 500 * time.Millisecond, consumeErr: func(err error) {
		if errors.Is(err, jetstream.ErrNoHeartbeat) {
			resets.Add(1)
		}
	}}, r)
	waitFor(t, "message 1", func() bool { return r.last() == 1 })
	stall.Store(true)
	waitFor(t, "missed heartbeats to start a consumer reset", func() bool { return resets.Load() > 0 })
	done := make(chan error, 1)
	go func() { done <- stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Follow: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return within 5 s of its context's end")
	}
}

func TestStream_AppendAndBounds(t *testing.T) {
	url, _ := startServer(t)
	s, _ := openStream(t, url)
	ctx := context.Background()
	a1, err := s.Append(ctx, []byte("x"), "id-1")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := s.Append(ctx, []byte("x"), "id-1")
	if err != nil {
		t.Fatal(err)
	}
	if !a2.Duplicate || a2.Seq != a1.Seq {
		t.Fatalf("second append with the same id: got %+v, want a duplicate of %d", a2, a1.Seq)
	}
	appendN(t, s, 4)
	b, err := s.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b != (State{FirstSeq: 1, LastSeq: 5}) {
		t.Fatalf("bounds: got %+v, want 1-5", b)
	}
	if first, err := s.PurgeBelow(ctx, 3); err != nil || first != 3 {
		t.Fatalf("purge below 3: got %d, %v", first, err)
	}
	if first, err := s.PurgeBelow(ctx, 2); err != nil || first != 0 {
		t.Fatalf("purge below 2 after 3: got %d, %v, want nothing purged", first, err)
	}
	if held, err := s.Holds(ctx, 2); err != nil || held {
		t.Fatalf("holds 2 after purge: got %v, %v", held, err)
	}
	if c, at := s.Cached(); c.FirstSeq != 3 || c.LastSeq != 5 || at.IsZero() {
		t.Fatalf("cached: got %+v at %v", c, at)
	}
}

// No JetStream server on the subject: ErrNoResponders, which is
// ErrNotStored.
func TestStream_AppendNotStored(t *testing.T) {
	url, _ := startServer(t)
	s, js := openStream(t, url)
	if err := js.DeleteStream(context.Background(), "TEST"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Append(context.Background(), []byte("x"), "")
	if !errors.Is(err, ErrNoResponders) || !errors.Is(err, ErrNotStored) {
		t.Fatalf("got %v, want ErrNoResponders (ErrNotStored)", err)
	}
}

// Strong reads share barriers: while one is in flight, every Barrier
// call waits for the next, one append for all of them, whose sequence
// is above every message acknowledged before the calls.
func TestStream_BarrierShared(t *testing.T) {
	url, _ := startServer(t)
	s, _ := openStream(t, url)
	s.cfg.Barrier = []byte("barrier")
	ctx := context.Background()
	ack, err := s.Append(ctx, []byte("m"), "")
	if err != nil {
		t.Fatal(err)
	}
	// A barrier in flight that the test ends.
	held := &barrierCall{done: make(chan struct{})}
	s.bMu.Lock()
	s.bInflight = held
	s.bMu.Unlock()
	const callers = 20
	type result struct {
		seq uint64
		err error
	}
	results := make(chan result, callers)
	for i := 0; i < callers; i++ {
		go func() {
			seq, err := s.Barrier(ctx)
			results <- result{seq, err}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.bMu.Lock()
		n := 0
		if s.bNext != nil {
			n = s.bNext.callers
		}
		s.bMu.Unlock()
		if n == callers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d Barrier calls waiting for the next barrier", n, callers)
		}
		time.Sleep(time.Millisecond)
	}
	if next := s.barrierDone(held); next != nil {
		go s.runBarrier(next)
	}
	var first uint64
	for i := 0; i < callers; i++ {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.seq <= ack.Seq {
			t.Fatalf("barrier %d, not after the ack of %d", r.seq, ack.Seq)
		}
		if i == 0 {
			first = r.seq
		} else if r.seq != first {
			t.Fatalf("barriers %d and %d: want one shared", first, r.seq)
		}
	}
	if got := s.Barriers(); got != 1 {
		t.Fatalf("%d barrier appends for %d calls, want 1", got, callers)
	}
	// A later call gets a barrier of its own, after the first.
	if seq, err := s.Barrier(ctx); err != nil || seq <= first {
		t.Fatalf("next barrier: %d, %v; want after %d", seq, err, first)
	}
}

// Without a barrier body, Barrier says so.
func TestStream_BarrierUnconfigured(t *testing.T) {
	url, _ := startServer(t)
	s, _ := openStream(t, url)
	if _, err := s.Barrier(context.Background()); !errors.Is(err, ErrNoBarrier) {
		t.Fatalf("got %v, want ErrNoBarrier", err)
	}
}

// The local path: a message this Stream appended is applied from its
// acknowledgement once every message before it is applied (here one
// appended by another node, whose delivery is held back), even if its own
// delivery never arrives, and the body applied is the one appended.
func TestFollow_LocalAppend(t *testing.T) {
	url, _ := startServer(t)
	s, _ := openStream(t, url)
	other, _ := openStream(t, url)
	release := make(chan struct{})
	r, bodies := localFollow(t, s, release, 2) // only the local path can apply 2
	ctx := context.Background()
	if ack, err := other.Append(ctx, []byte("another node's"), ""); err != nil || ack.Seq != 1 {
		t.Fatalf("other append: %+v, %v", ack, err)
	}
	if ack, err := s.Append(ctx, []byte("mine"), ""); err != nil || ack.Seq != 2 {
		t.Fatalf("append: %+v, %v", ack, err)
	}
	if got := r.got(); len(got) != 0 {
		t.Fatalf("applied %v before sequence 1 arrived", got)
	}
	close(release)
	waitFor(t, "seq 2", func() bool { return r.last() == 2 })
	if got, want := r.got(), seqs(1, 2); !equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	b := bodies()
	if got, want := b[1]+"|"+b[2], "another node's|mine"; got != want {
		t.Fatalf("bodies: got %q, want %q", got, want)
	}
}

// A duplicate's acknowledgement names the message first stored with the
// idempotency key, whose body may differ from the one appended again: the
// local path never applies it, the consumer delivers the original.
func TestFollow_LocalSkipsDuplicate(t *testing.T) {
	url, _ := startServer(t)
	s, _ := openStream(t, url)
	other, _ := openStream(t, url)
	release := make(chan struct{})
	r, bodies := localFollow(t, s, release)
	ctx := context.Background()
	if ack, err := other.Append(ctx, []byte("original"), "id-1"); err != nil || ack.Seq != 1 {
		t.Fatalf("other append: %+v, %v", ack, err)
	}
	if ack, err := s.Append(ctx, []byte("retry, coalesced otherwise"), "id-1"); err != nil || !ack.Duplicate || ack.Seq != 1 {
		t.Fatalf("append again: %+v, %v; want a duplicate of 1", ack, err)
	}
	close(release)
	waitFor(t, "seq 1", func() bool { return r.last() == 1 })
	if got, want := bodies()[1], "original"; got != want {
		t.Fatalf("seq 1 applied as %q, want %q", got, want)
	}
}

// localFollow starts a follower of s from 1 whose delivery of sequence 1
// waits until release is closed, and whose deliveries of the sequences in
// lost never arrive; bodies returns what was applied, by sequence.
func localFollow(t *testing.T, s *Stream, release <-chan struct{}, lost ...uint64) (r *recorder, bodies func() map[uint64]string) {
	t.Helper()
	opts := FollowOptions{drop: func(seq uint64) bool {
		if seq == 1 {
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		return slices.Contains(lost, seq)
	}}
	var mu sync.Mutex
	got := map[uint64]string{}
	r = &recorder{tb: t, hook: func(m Msg) {
		mu.Lock()
		got[m.Seq] = string(m.Data)
		mu.Unlock()
	}}
	follow(t, s, 1, opts, r)
	waitFor(t, "the follower's local path", func() bool { return s.sink.Load() != nil })
	return r, func() map[uint64]string {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(got)
	}
}

// A stall check waits for the consumer's Info no longer than its timeout,
// and while nats.go holds the ordered consumer's lock through a reset (a
// stalled network: Info waits for the lock whatever its context says),
// the checks share the one call in flight rather than leave one goroutine
// behind each.
func TestFollow_StallChecksDuringReset(t *testing.T) {
	url, _ := startServer(t)
	addr, stall := stallingProxy(t, strings.TrimPrefix(url, "nats://"))
	s, _ := openStream(t, "nats://"+addr)
	appendN(t, s, 1)
	var resets, checks, inFlight, most atomic.Int32
	r := &recorder{tb: t}
	_, _ = follow(t, s, 1, FollowOptions{Heartbeat: 500 * time.Millisecond, StallCheck: 40 * time.Millisecond,
		consumeErr: func(err error) {
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				resets.Add(1)
			}
		},
		checked: func() { checks.Add(1) },
		infoCalls: func(delta int) {
			n := inFlight.Add(int32(delta))
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
		}}, r)
	waitFor(t, "message 1", func() bool { return r.last() == 1 })
	stall.Store(true)
	waitFor(t, "missed heartbeats to start a consumer reset", func() bool { return resets.Load() > 0 })
	from := checks.Load()
	waitFor(t, "ten stall checks during the reset", func() bool { return checks.Load() >= from+10 })
	if got := most.Load(); got > 1 {
		t.Fatalf("%d consumer Info calls in flight at once, want at most 1", got)
	}
}
