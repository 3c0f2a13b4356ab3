package service_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/servicetest"
)

// TestNode_ServiceProtocol drives the NATS service protocol (ADR-32) on its
// real subjects after a mix of good and bad requests: requests, errors,
// last error and processing time per endpoint describe what happened,
// measured from arrival to answer, not the hand-over to a worker.
func TestNode_ServiceProtocol(t *testing.T) {
	ns, node, c := single(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	stats := func() map[string]*micro.EndpointStats {
		t.Helper()
		msg, err := nc.Request("$SRV.STATS.nqlite", nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var st micro.Stats
		if err := json.Unmarshal(msg.Data, &st); err != nil {
			t.Fatalf("%v: %s", err, msg.Data)
		}
		if st.Type != micro.StatsResponseType || st.Name != "nqlite" || st.Metadata["node"] != "n1" || st.Started.IsZero() {
			t.Fatalf("stats: %s", msg.Data)
		}
		out := map[string]*micro.EndpointStats{}
		for _, e := range st.Endpoints {
			out[e.Subject] = e
		}
		return out
	}
	ok(t, do(t, c, "CREATE TABLE t(x)"))                                                // good write
	ok(t, do(t, c, "SELECT * FROM t"))                                                  // good read
	doErr(t, c, `{"statements": ["SELECT 1"], "after_seq": 1000000, "timeout_ms": 50}`) // 504
	doErr(t, c, `{"statements": "SELECT 1", "nope": 1}`)                                // 400
	doErr(t, c, "ATTACH 'x.db' AS x")                                                   // 403
	if code, _ := requestErr(t, nc, service.ReadSubject("main"), []byte("INSERT INTO t VALUES(1)")); code != 403 {
		t.Fatalf("write on the read endpoint: code %d, want 403", code)
	}

	// A write whose apply is held: its processing time covers the wait,
	// and the endpoint answers other requests meanwhile; it is counted
	// when it is answered.
	release := node.DB("main").Hold()
	done := make(chan error, 1)
	go func() {
		_, err := c.Do(context.Background(), "main", []byte("INSERT INTO t VALUES(2)"), 0)
		done <- err
	}()
	servicetest.WaitFor(t, 10*time.Second, "the held write to be stored", func() bool {
		return node.Stats("main").StreamLastSeq >= 2
	})
	held := time.Now()
	ok(t, do(t, c, "SELECT count(*) FROM t")) // answered while the write waits
	if q := stats()["nqlite.query.main"]; q.NumRequests != 6 || q.NumErrors != 3 {
		t.Errorf("query endpoint while a write is held: %d requests, %d errors; want 6 and 3 (the held write not answered yet)", q.NumRequests, q.NumErrors)
	}
	const atLeast = 30 * time.Millisecond
	servicetest.WaitFor(t, time.Second, "30 ms to pass", func() bool { return time.Since(held) >= atLeast })
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	st := stats()
	q, r := st["nqlite.query.main"], st["nqlite.read.main"]
	if q == nil || r == nil {
		t.Fatalf("endpoints: %v", st)
	}
	if q.NumRequests != 7 || q.NumErrors != 3 {
		t.Errorf("query endpoint: %d requests, %d errors; want 7 and 3 (504, 400, 403)", q.NumRequests, q.NumErrors)
	}
	if !strings.HasPrefix(q.LastError, "403:") {
		t.Errorf("query endpoint: last error %q, want the 403", q.LastError)
	}
	if q.ProcessingTime < atLeast || q.AverageProcessingTime != q.ProcessingTime/7 {
		t.Errorf("query endpoint: processing time %v (average %v), want at least %v: the held write's wait", q.ProcessingTime, q.AverageProcessingTime, atLeast)
	}
	if r.NumRequests != 1 || r.NumErrors != 1 || !strings.HasPrefix(r.LastError, "403:") {
		t.Errorf("read endpoint: %+v, want 1 request, 1 error (403)", r)
	}
	var data service.Stats
	if err := json.Unmarshal(q.Data, &data); err != nil || data.DB != "main" || data.Applied != 2 {
		t.Errorf("endpoint data: %s (%v)", q.Data, err)
	}

	// PING and INFO, on every form of the subject.
	for _, subject := range []string{"$SRV.PING", "$SRV.PING.nqlite", "$SRV.INFO.nqlite"} {
		msg, err := nc.Request(subject, nil, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		var info micro.Info
		if err := json.Unmarshal(msg.Data, &info); err != nil || info.Name != "nqlite" || info.ID == "" || info.Version != service.Version {
			t.Fatalf("%s: %s (%v)", subject, msg.Data, err)
		}
		if strings.HasPrefix(subject, "$SRV.INFO") && len(info.Endpoints) != 5 {
			t.Fatalf("%s: %d endpoints, want 5 (query, read, check, snapshot, load): %s", subject, len(info.Endpoints), msg.Data)
		}
		if _, err := nc.Request("$SRV.PING.nqlite."+info.ID, nil, 5*time.Second); err != nil {
			t.Fatalf("ping by id: %v", err)
		}
	}
}

// TestNode_StatsCachedStreamState: STATS reports the stream state the node
// already knows, with its age, and asks JetStream for a fresh one at most
// once a second in the background, never once per endpoint and request:
// a burst of STATS requests (five endpoints each) makes at most one
// stream info request per second of the burst, plus the one in flight.
// The test counts the stream info requests on their real subject.
func TestNode_StatsCachedStreamState(t *testing.T) {
	ns, _, c := single(t)
	ok(t, do(t, c, "CREATE TABLE t(x); INSERT INTO t VALUES(1)"))
	nc := servicetest.Connect(t, ns.ClientURL())
	var infos atomic.Int64
	sub, err := nc.Subscribe("$JS.API.STREAM.INFO."+service.StreamName("main"), func(*nats.Msg) { infos.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	const burst = 40
	start := time.Now()
	for i := 0; i < burst; i++ {
		msg, err := nc.Request("$SRV.STATS.nqlite", nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var st micro.Stats
		if err := json.Unmarshal(msg.Data, &st); err != nil {
			t.Fatal(err)
		}
		for _, e := range st.Endpoints {
			var data service.Stats
			if e.Data == nil {
				continue // nqlite.check.<db> carries none
			}
			if err := json.Unmarshal(e.Data, &data); err != nil || data.StreamLastSeq != 1 || data.Lag != 0 || data.StreamAgeMS < 0 {
				t.Fatalf("%s data %s (%v): want the stream's last sequence 1, lag 0 and its age", e.Subject, e.Data, err)
			}
		}
	}
	elapsed := time.Since(start)
	if err := nc.Flush(); err != nil { // the subscription saw every request sent so far
		t.Fatal(err)
	}
	if got, most := infos.Load(), int64(elapsed/time.Second)+2; got > most {
		t.Fatalf("%d STATS requests over %v made %d stream info requests, want at most %d", burst, elapsed, got, most)
	}
}
