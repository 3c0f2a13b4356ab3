package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
	"github.com/nqlite/nqlite/snapshot"
)

// errorAnswer is a request-level error answer as it came over NATS.
type errorAnswer struct {
	number, kind string // the Nats-Service-Error-Code and Nqlite-Error-Code headers
	body         map[string]any
	err          *api.Error // what the Go client decodes
}

// requestAnswer sends payload to subject and wants a request-level error
// answer.
func requestAnswer(tb testing.TB, nc *nats.Conn, subject, payload string) errorAnswer {
	tb.Helper()
	msg, err := nc.Request(subject, []byte(payload), 10*time.Second)
	if err != nil {
		tb.Fatalf("%s %s: %v", subject, payload, err)
	}
	a := errorAnswer{number: msg.Header.Get(api.ErrorCodeHeader), kind: msg.Header.Get(api.ErrorKindHeader)}
	if a.number == "" {
		tb.Fatalf("%s %s: answered %s, want an error", subject, payload, msg.Data)
	}
	if err := json.Unmarshal(msg.Data, &a.body); err != nil {
		tb.Fatalf("%s %s: body %s: %v", subject, payload, msg.Data, err)
	}
	code, _ := strconv.Atoi(a.number)
	a.err = api.DecodeError(msg.Data, code, msg.Header.Get(api.ErrorHeader))
	return a
}

// moveStreamSubjects makes the stream of main listen on other subjects
// (restored at cleanup), so nothing stores what is published on
// nqlite.entry.main.
func moveStreamSubjects(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, service.StreamName("main"))
	if err != nil {
		tb.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	old := cfg.Subjects
	cfg.Subjects = []string{service.EntrySubject("main") + ".moved"}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cfg.Subjects = old
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			tb.Error(err)
		}
	})
}

// TestErrorCodes: every error kind a real situation can produce, on real
// servers, on the endpoint that produces it: the headers (number and
// kind), the body ({"error", "code", "node"} and "seq" exactly when the
// entry is stored), the Go client's errors.Is, and whether the stream
// moved. "restoring" is set by the same state check as "incompatible"
// (tested here) while a restore runs, which a test cannot hold
// deterministically; "internal" is a bug and has no situation.
func TestErrorCodes(t *testing.T) {
	ns := servicetest.StartServer(t)
	node := servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1", Readers: 1})
	nc := servicetest.Connect(t, ns.ClientURL())
	c := client.New(nc)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ok(t, do(t, c, "CREATE TABLE t(x)"))
	query, read := service.QuerySubject("main"), service.ReadSubject("main")
	endless := `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c`
	timed := func(sql string, ms int) string {
		return fmt.Sprintf(`{"statements": [%s], "timeout_ms": %d}`, api.AppendString(nil, sql), ms)
	}

	for _, tc := range []struct {
		name     string
		kind     api.ErrorKind
		sentinel error
		subject  string
		payload  string
		msg      string                    // the message holds it
		setup    func(t *testing.T) func() // before the request; returns what to undo after it
		stored   bool                      // the answer has a "seq": the stream's last sequence
		moves    bool                      // the stream may move (else it must not)
	}{
		{name: "bad request", kind: api.KindBadRequest, sentinel: client.ErrBadRequest, subject: query, payload: `{"statements": `, msg: "request object"},
		{name: "bad snapshot request", kind: api.KindBadRequest, sentinel: client.ErrBadRequest, subject: service.SnapshotSubject("main"), payload: `nope`, msg: "snapshot request"},
		{name: "bad load request", kind: api.KindBadRequest, sentinel: client.ErrBadRequest, subject: service.LoadSubject("main"), payload: `nope`, msg: "load request"},
		{name: "forbidden", kind: api.KindForbidden, sentinel: client.ErrForbidden, subject: query, payload: `ATTACH 'x.db' AS x`, msg: "ATTACH"},
		{name: "write on the read endpoint", kind: api.KindForbidden, sentinel: client.ErrForbidden, subject: read, payload: `INSERT INTO t VALUES(1)`, msg: "only reads"},
		{name: "response too large", kind: api.KindTooLarge, sentinel: client.ErrTooLarge, subject: read, payload: `SELECT randomblob(900000)`, msg: "max payload"},
		{name: "applied write, response too large", kind: api.KindTooLarge, sentinel: client.ErrTooLarge, subject: query,
			payload: `INSERT INTO t VALUES(zeroblob(900000)) RETURNING x`, msg: "the write was applied as entry", stored: true, moves: true},
		{name: "stored, not applied in time", kind: api.KindStored, sentinel: client.ErrStored, subject: query,
			payload: timed("INSERT INTO t VALUES(2)", 200), msg: "is stored and will be applied", stored: true, moves: true,
			setup: func(t *testing.T) func() { return node.DB("main").Hold() }},
		{name: "duplicate, not applied in time", kind: api.KindStored, sentinel: client.ErrStored, subject: query,
			payload: `{"statements": ["INSERT INTO t VALUES(3)"], "id": "dup", "timeout_ms": 200}`, msg: "duplicate of entry", stored: true,
			setup: func(t *testing.T) func() {
				release := node.DB("main").Hold()
				ok(t, do(t, c, `{"statements": ["INSERT INTO t VALUES(3)"], "id": "dup", "queue": true}`))
				return release
			}},
		{name: "not stored: refused by the stream", kind: api.KindNotStored, sentinel: client.ErrNotStored, subject: query,
			payload: `INSERT INTO t VALUES(5)`, msg: "did not store the write",
			setup: func(t *testing.T) func() {
				s, err := js.Stream(context.Background(), service.StreamName("main"))
				if err != nil {
					t.Fatal(err)
				}
				cfg := s.CachedInfo().Config
				cfg.MaxMsgSize = 16
				if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
					t.Fatal(err)
				}
				return func() {
					cfg.MaxMsgSize = -1
					if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
						t.Fatal(err)
					}
				}
			}},
		{name: "not stored: no JetStream answers", kind: api.KindNotStored, sentinel: client.ErrNotStored, subject: query,
			payload: `INSERT INTO t VALUES(6)`, msg: "JetStream is unreachable",
			setup: func(t *testing.T) func() { moveStreamSubjects(t, js); return func() {} }},
		{name: "unknown: no acknowledgement", kind: api.KindUnknown, sentinel: client.ErrUnknown, subject: query,
			payload: timed("INSERT INTO t VALUES(7)", 300), msg: "may or may not be stored",
			setup: func(t *testing.T) func() {
				// Something listens on the entry subject, but it is no
				// stream and never acknowledges.
				moveStreamSubjects(t, js)
				sub, err := nc.SubscribeSync(service.EntrySubject("main"))
				if err != nil {
					t.Fatal(err)
				}
				nc.Flush()
				return func() { sub.Unsubscribe() }
			}},
		{name: "after_seq not reached", kind: api.KindNotReached, sentinel: client.ErrNotReached, subject: read,
			payload: `{"statements": ["SELECT 1"], "after_seq": 1000000, "timeout_ms": 50}`, msg: "did not reach 1000000"},
		{name: "snapshot after_seq not reached", kind: api.KindNotReached, sentinel: client.ErrNotReached, subject: service.SnapshotSubject("main"),
			payload: `{"after_seq": 1000000, "timeout_ms": 50}`, msg: "did not reach 1000000"},
		{name: "strong not reached", kind: api.KindNotReached, sentinel: client.ErrNotReached, subject: read,
			payload: `{"statements": ["SELECT 1"], "level": "strong", "timeout_ms": 100}`, msg: "did not reach",
			setup: func(t *testing.T) func() {
				release := node.DB("main").Hold()
				ok(t, do(t, c, `{"statements": ["INSERT INTO t VALUES(8)"], "queue": true}`))
				return release
			}},
		{name: "read interrupted", kind: api.KindReadTimeout, sentinel: client.ErrReadTimeout, subject: read,
			payload: timed(endless, 100), msg: "interrupted"},
		{name: "no free read connection", kind: api.KindReadTimeout, sentinel: client.ErrReadTimeout, subject: read,
			payload: timed("SELECT 1", 100), msg: "no read connection",
			setup: func(t *testing.T) func() {
				// The node's one read connection runs an endless read
				// until its timeout; once it has it, the request waits.
				done := make(chan struct{})
				go func() {
					defer close(done)
					nc.Request(read, []byte(timed(endless, 1500)), 10*time.Second)
				}()
				servicetest.WaitFor(t, 10*time.Second, "the read connection to be taken", func() bool {
					msg, err := nc.Request(read, []byte(timed("SELECT 1", 50)), 10*time.Second)
					return err == nil && strings.Contains(msg.Header.Get(api.ErrorHeader), "no read connection")
				})
				return func() { <-done }
			}},
		{name: "unavailable: another load runs", kind: api.KindUnavailable, sentinel: client.ErrUnavailable, subject: service.LoadSubject("main"),
			payload: fmt.Sprintf(`{"bucket": %q, "object": "load/main/x", "digest": "SHA-256=x"}`, snapshot.Bucket), msg: "another load",
			setup: func(t *testing.T) func() {
				st, err := snapshot.Open(context.Background(), js, snapshot.Options{Node: "test"})
				if err != nil {
					t.Fatal(err)
				}
				release, err := st.ClaimLoad(context.Background(), "main")
				if err != nil {
					t.Fatal(err)
				}
				return release
			}},
		{name: "incompatible entry", kind: api.KindIncompatible, sentinel: client.ErrIncompatible, subject: read,
			payload: `SELECT 1`, msg: "newer format",
			setup: func(t *testing.T) func() {
				if _, err := js.Publish(context.Background(), service.EntrySubject("main"), []byte("nq\x63future")); err != nil {
					t.Fatal(err)
				}
				servicetest.WaitFor(t, 10*time.Second, "state incompatible", func() bool { return node.Stats("main").State == "incompatible" })
				return func() {}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			undo := func() {}
			if tc.setup != nil {
				undo = tc.setup(t)
			}
			before := streamLastSeq(t, nc, "main")
			a := requestAnswer(t, nc, tc.subject, tc.payload)
			undo()
			after := streamLastSeq(t, nc, "main")
			if a.kind != string(tc.kind) || a.number != strconv.Itoa(tc.kind.Code()) {
				t.Errorf("headers: %s %s, want %d %s (%s)", a.number, a.kind, tc.kind.Code(), tc.kind, a.err.Message)
			}
			if a.body["code"] != string(tc.kind) || a.body["node"] != "n1" || !strings.Contains(fmt.Sprint(a.body["error"]), tc.msg) {
				t.Errorf("body %v: want code %s, node n1 and an error containing %q", a.body, tc.kind, tc.msg)
			}
			if !errors.Is(a.err, tc.sentinel) || a.err.Kind != tc.kind || a.err.Node != "n1" {
				t.Errorf("decoded %#v: want kind %s matching its sentinel", a.err, tc.kind)
			}
			seq, hasSeq := client.StoredSeq(a.err)
			switch {
			case tc.stored && (!hasSeq || seq != after):
				t.Errorf("seq %d (%v), want the stored entry %d", seq, hasSeq, after)
			case !tc.stored && hasSeq:
				t.Errorf("seq %d: nothing of this request is stored", seq)
			case !tc.moves && streamEntries(t, nc, "main", before, after) != 0:
				t.Errorf("the stream moved from %d to %d: no entry may be published (a strong read's barrier may)", before, after)
			}
		})
	}
}

// TestErrorCodes_Client: the Go client's errors for a stored write (the
// sequence, for after_seq) and a read that does not reach its sequence,
// which before the codes were both 408.
func TestErrorCodes_Client(t *testing.T) {
	_, node, c := single(t)
	ok(t, do(t, c, "CREATE TABLE t(x)"))
	release := node.DB("main").Hold()
	_, err := c.Query(context.Background(), "main", client.Request{Statements: stmts("INSERT INTO t VALUES(1)"), TimeoutMS: 100})
	seq, stored := client.StoredSeq(err)
	if !errors.Is(err, client.ErrStored) || !stored || api.ErrorCode(err) != api.CodeTimeout {
		t.Fatalf("write on a held node: %v (seq %d), want 408 stored with its seq", err, seq)
	}
	_, err = c.Read(context.Background(), "main", client.Request{Statements: stmts("SELECT count(*) FROM t"), AfterSeq: seq, TimeoutMS: 100})
	if !errors.Is(err, client.ErrNotReached) || errors.Is(err, client.ErrStored) || api.ErrorCode(err) != api.CodeGatewayTimeout {
		t.Fatalf("read after the stored write on a held node: %v, want 504 not_reached", err)
	}
	release()
	resp, err := c.Read(context.Background(), "main", client.Request{Statements: stmts("SELECT count(*) FROM t"), AfterSeq: seq, Format: api.FormatValues})
	if err != nil || resp.Results[0].Values[0][0] != int64(1) {
		t.Fatalf("read with after_seq %d once released: %+v %v", seq, resp, err)
	}
	// No reply at all is unknown too.
	if err := fmt.Errorf("x: %w", &client.NoReplyError{Wait: time.Second, Err: context.DeadlineExceeded}); !errors.Is(err, client.ErrUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no reply: %v does not match ErrUnknown and the context's error", err)
	}
}
