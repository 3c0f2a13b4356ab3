package service_test

// Benchmarks of an nqlite cluster, each figure measured beside the same
// figure for a bare NATS echo responder on the same servers in the same run:
// the echo is this machine's limit, the ratio is what we track.
//
//	go test -run '^$' -bench . -benchtime 20000x ./service/
//
// runs in one to three minutes on two cores (-benchtime 2000x for a quick
// look) and prints, besides the usual benchmark lines, one markdown table
// per benchmark, ready for the README:
//
//   - BenchmarkCluster: three clustered nats-servers and three nodes (R3
//     stream) in this process; single-row inserts with 1 and 16 clients,
//     point reads (SELECT by primary key of a 10,000-row table) with 1 and
//     16 clients, strong reads with 1 and 16 clients, the echo responder with 1
//     and 16 clients, and, as the floor of a write, a bare R3 JetStream
//     publish (jspub) with 1 and 16 clients. b.N is the number of requests
//     of each sub-benchmark, shared by its clients.
//   - BenchmarkCatchUp: a fresh node started NQLITE_BENCH_CATCHUP (default
//     100,000) entries behind, beside the rate a bare ordered consumer reads
//     the same stream at. Each run catches up one node, whatever b.N.
//   - BenchmarkProcesses: builds the nqlite binary, runs a node process
//     per nats-server (three clustered servers by default; with
//     NQLITE_BENCH_NATS=process the servers are nats-server processes
//     too, NQLITE_BENCH_SERVERS=1 runs one server, R1), loads them with
//     the scenarios of BenchmarkCluster and reports every node's resident
//     memory (VmRSS) after the load. Skipped with -short or
//     NQLITE_BENCH_RSS=0.
//
// The nats-servers fsync every stored message before acknowledging it, as
// the node's embedded server does by default (--js-sync always);
// NQLITE_BENCH_SYNC=default measures with JetStream's default sync
// interval instead.
//
// Besides ns/op (here wall time per request, all clients together: the
// inverse of throughput), every load sub-benchmark reports ops/s, p50-ms
// and p99-ms, the percentiles taken over every request's own latency.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
	"github.com/nqlite/nqlite/service/stream"
)

const (
	// benchDB is the database the benchmarks use; benchEchoDB is the
	// "database" the echo responders answer (subject nqlite.query.echo), so
	// echo requests take exactly the client path of nqlite requests.
	benchDB     = "main"
	benchEchoDB = "echo"
	// benchRows is how many rows the point-read table holds.
	benchRows = 10000
	// benchMaxClients is the most concurrent clients of a scenario.
	benchMaxClients = 16
	// benchRounds is the most rounds benchPaired alternates.
	benchRounds = 5
)

// benchStats are the figures of one measured load.
type benchStats struct {
	ops      int
	elapsed  time.Duration
	p50, p99 time.Duration
}

func (s benchStats) opsPerSec() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ops) / s.elapsed.Seconds()
}

// report adds ops/s, p50-ms and p99-ms to the benchmark's output.
func (s benchStats) report(b *testing.B) {
	b.ReportMetric(s.opsPerSec(), "ops/s")
	b.ReportMetric(benchMS(s.p50), "p50-ms")
	b.ReportMetric(benchMS(s.p99), "p99-ms")
}

func benchMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchPercentile returns the nearest-rank percentile p (0-100) of sorted d.
func benchPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// benchLoad sends n requests from clients goroutines (each its own request
// loop, n split between them) and times every request. op sends request k
// of client c and returns its error; the first error stops every client.
// It returns the latencies, unsorted, and the wall time.
func benchLoad(clients, n int, op func(c, k int) error) ([]time.Duration, time.Duration, error) {
	lat := make([][]time.Duration, clients)
	var (
		failed   atomic.Bool
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for c := 0; c < clients; c++ {
		count := n / clients
		if c < n%clients {
			count++
		}
		lat[c] = make([]time.Duration, 0, count)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < count && !failed.Load(); k++ {
				t := time.Now()
				if err := op(c, k); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("client %d, request %d: %w", c, k, err) })
					failed.Store(true)
					return
				}
				lat[c] = append(lat[c], time.Since(t))
			}
		}()
	}
	wg.Wait()
	return slices.Concat(lat...), time.Since(start), firstErr
}

// benchStatsOf sorts lat and returns its figures.
func benchStatsOf(lat []time.Duration, elapsed time.Duration) benchStats {
	slices.Sort(lat)
	return benchStats{ops: len(lat), elapsed: elapsed, p50: benchPercentile(lat, 50), p99: benchPercentile(lat, 99)}
}

// benchPaired measures op against the echo in alternating rounds: n
// requests of each, from clients clients, split into up to benchRounds
// rounds of echo then op. Pairing the rounds keeps the ratio meaningful
// when the machine's load drifts (other processes, CPU frequency). The
// benchmark timer runs only during op's rounds, so ns/op is op's.
func benchPaired(b *testing.B, clients, n int, op, echo func(c, k int) error) (nq, ec benchStats) {
	b.Helper()
	rounds := max(1, min(benchRounds, n/(20*clients)))
	var nqLat, ecLat []time.Duration
	var nqTime, ecTime time.Duration
	b.StopTimer()
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		m := n / rounds
		if r < n%rounds {
			m++
		}
		lat, el, err := benchLoad(clients, m, echo)
		if err != nil {
			b.Fatalf("echo: %v", err)
		}
		ecLat, ecTime = append(ecLat, lat...), ecTime+el
		b.StartTimer()
		lat, el, err = benchLoad(clients, m, op)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		nqLat, nqTime = append(nqLat, lat...), nqTime+el
	}
	return benchStatsOf(nqLat, nqTime), benchStatsOf(ecLat, ecTime)
}

// benchReportPaired reports op's ops/s, p50-ms and p99-ms, the echo's
// echo-ops/s and echo-p50-ms, and their ratios: ops-%-of-echo and
// p50-x-echo.
func benchReportPaired(b *testing.B, nq, ec benchStats) {
	nq.report(b)
	b.ReportMetric(ec.opsPerSec(), "echo-ops/s")
	b.ReportMetric(benchMS(ec.p50), "echo-p50-ms")
	if e := ec.opsPerSec(); e > 0 {
		b.ReportMetric(100*nq.opsPerSec()/e, "ops-%-of-echo")
	}
	if ec.p50 > 0 {
		b.ReportMetric(float64(nq.p50)/float64(ec.p50), "p50-x-echo")
	}
}

// benchLastSeq returns the last sequence of the database's stream.
func benchLastSeq(b *testing.B, js jetstream.JetStream) uint64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	str, err := js.Stream(ctx, service.StreamName(benchDB))
	if err != nil {
		b.Fatal(err)
	}
	return str.CachedInfo().State.LastSeq
}

// benchReportCoalesced reports how many write requests an entry carried
// on average (requests coalesced by the nodes' writers).
func benchReportCoalesced(b *testing.B, requests int, entries uint64) {
	if entries > 0 {
		b.ReportMetric(float64(requests)/float64(entries), "requests/entry")
	}
}

// benchStartEcho subscribes a bare responder to nqlite.query.echo in queue group
// "nqlite" on each server, through its own connection like a node's: it
// replies with the request's data, which the client decodes as an (empty)
// response.
func benchStartEcho(b *testing.B, urls []string) {
	b.Helper()
	for _, url := range urls {
		nc := servicetest.Connect(b, url)
		_, err := nc.QueueSubscribe(service.QuerySubject(benchEchoDB), service.QueueGroup, func(m *nats.Msg) {
			m.Respond(m.Data)
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStartEchoProcess runs the echo responder of benchStartEcho on url
// in a process of its own (this test binary again, running
// TestBenchEchoProcess), as BenchmarkProcesses runs each node: a request
// to it then pays the same waking of another process as a request to a
// node, which an echo in the benchmark's process (awake: its client just
// sent) does not.
func benchStartEchoProcess(b *testing.B, url string) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchEchoProcess$")
	cmd.Env = append(os.Environ(), "NQLITE_BENCH_ECHO="+url)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the echo process exits at EOF
		benchWaitExit(cmd)
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "echo ready") {
		b.Fatalf("echo process on %s: %q, %v", url, line, err)
	}
}

// TestBenchEchoProcess is the echo process of BenchmarkProcesses
// (benchStartEchoProcess); it is skipped unless NQLITE_BENCH_ECHO holds
// the URL to serve on. It answers until its standard input closes.
func TestBenchEchoProcess(t *testing.T) {
	url := os.Getenv("NQLITE_BENCH_ECHO")
	if url == "" {
		t.Skip("the echo process of BenchmarkProcesses, run by it")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.QueueSubscribe(service.QuerySubject(benchEchoDB), service.QueueGroup, func(m *nats.Msg) {
		m.Respond(m.Data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	fmt.Println("echo ready")
	io.Copy(io.Discard, os.Stdin)
}

// benchClients are benchMaxClients client connections, client i on server
// i%len(urls), each also with a JetStream context for the jspub scenario.
type benchClients struct {
	cl []*client.Client
	js []jetstream.JetStream
}

func benchConnect(b *testing.B, urls []string) benchClients {
	b.Helper()
	cs := benchClients{cl: make([]*client.Client, benchMaxClients), js: make([]jetstream.JetStream, benchMaxClients)}
	for i := range cs.cl {
		nc := servicetest.Connect(b, urls[i%len(urls)])
		cs.cl[i] = client.New(nc)
		js, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}
		cs.js[i] = js
	}
	return cs
}

// benchJSStream is the stream of the jspub scenario: file storage and as
// many replicas as a database's stream, on subject benchjs.
const benchJSStream = "BENCHJS"

// benchCreateJSStream creates the jspub scenario's stream.
func benchCreateJSStream(b *testing.B, js jetstream.JetStream, replicas int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: benchJSStream, Subjects: []string{"benchjs"},
		Storage: jetstream.FileStorage, Replicas: replicas, Duplicates: 2 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
}

// benchPick returns the client that sends request k of client c when clients
// run: client c has its own connection; a lone client takes the three
// servers in turn, so its figures do not depend on whether the one it
// would stick to leads the stream.
func benchPick(clients, c, k int) int {
	if clients < 3 {
		return (c + k) % 3 // clients 0, 1 and 2 are on three servers (or all on one)
	}
	return c
}

// benchCheck fails unless resp holds one successful result; rows, when
// not negative, is the number of rows it must return.
func benchCheck(resp *api.Response, rows int) error {
	if len(resp.Results) != 1 {
		return fmt.Errorf("%d results, want 1", len(resp.Results))
	}
	r := resp.Results[0]
	if r.Error != "" {
		return errors.New(r.Error)
	}
	if rows >= 0 && len(r.Rows) != rows {
		return fmt.Errorf("%d rows, want %d", len(r.Rows), rows)
	}
	return nil
}

// benchScenario is one request mix of BenchmarkCluster.
type benchScenario struct {
	kind    string // insert, read, strong, echo or jspub
	clients int
}

func (s benchScenario) name() string { return fmt.Sprintf("%s/clients=%d", s.kind, s.clients) }

// op returns the request function of the scenario.
func (s benchScenario) op(cs benchClients, seq *atomic.Int64) func(c, k int) error {
	ctx := context.Background()
	insert := func(cl *client.Client) error {
		n := seq.Add(1)
		resp, err := cl.Query(ctx, benchDB, client.Request{Statements: []api.Statement{{
			SQL: "INSERT INTO ins(v) VALUES(?)", Params: []any{"value-" + strconv.FormatInt(n, 10)}}}})
		if err != nil {
			return err
		}
		if err := benchCheck(resp, -1); err != nil {
			return err
		}
		if resp.Results[0].RowsAffected != 1 {
			return fmt.Errorf("rows_affected %d, want 1", resp.Results[0].RowsAffected)
		}
		return nil
	}
	read := func(cl *client.Client, level string) error {
		resp, err := cl.Query(ctx, benchDB, client.Request{Level: level, Statements: []api.Statement{{
			SQL: "SELECT id, v FROM kv WHERE id = ?", Params: []any{int64(1 + rand.IntN(benchRows))}}}})
		if err != nil {
			return err
		}
		return benchCheck(resp, 1)
	}
	// The echo sends what an insert sends, so the payloads are alike.
	echoPayload := (&client.Request{Statements: []api.Statement{{
		SQL: "INSERT INTO ins(v) VALUES(?)", Params: []any{"value-1234"}}}}).Encode()
	return func(c, k int) error {
		i := benchPick(s.clients, c, k)
		cl := cs.cl[i]
		switch s.kind {
		case "insert":
			return insert(cl)
		case "read":
			return read(cl, "")
		case "strong":
			return read(cl, api.LevelStrong)
		case "jspub":
			_, err := cs.js[i].Publish(ctx, "benchjs", echoPayload)
			return err
		default:
			resp, err := cl.Do(ctx, benchEchoDB, echoPayload, 0)
			if err != nil {
				return err
			}
			if len(resp.Results) != 0 {
				return errors.New("echo: unexpected results")
			}
			return nil
		}
	}
}

// BenchmarkCluster measures request throughput and latency of a
// three-node cluster (three clustered nats-servers, R3 stream, one node on
// each server, all in this process) beside a bare NATS echo responder on
// the same servers, and beside a bare R3 JetStream publish, which every
// write includes. b.N is the number of requests, shared by the clients;
// clients spread over the three servers (a lone client over all three in
// turn), so each node serves its share.
func BenchmarkCluster(b *testing.B) {
	syncAlways := benchSyncAlways(b)
	servers := servicetest.StartCluster(b, 3, func(o *server.Options) { o.SyncAlways = syncAlways })
	urls := benchURLs(servers)
	for i, s := range servers {
		servicetest.StartNode(b, s.ClientURL(), service.Config{
			NodeID: fmt.Sprintf("n%d", i+1), Replicas: 3, DataDir: b.TempDir(),
			Logger: benchLogger()})
	}
	benchStartEcho(b, urls)
	cs := benchConnect(b, urls)
	benchCreateJSStream(b, cs.js[0], 3)
	benchFill(b, cs.cl[0], urls)

	scenarios := []benchScenario{
		{"insert", 1}, {"insert", benchMaxClients},
		{"read", 1}, {"read", benchMaxClients},
		{"strong", 1}, {"strong", benchMaxClients},
		{"jspub", 1}, {"jspub", benchMaxClients},
	}
	var lines []benchLine
	var seq atomic.Int64
	for _, sc := range scenarios {
		var nq, ec benchStats
		ok := b.Run(sc.name(), func(b *testing.B) {
			echo := benchScenario{"echo", sc.clients}
			before := benchLastSeq(b, cs.js[0])
			nq, ec = benchPaired(b, sc.clients, b.N, sc.op(cs, &seq), echo.op(cs, &seq))
			benchReportPaired(b, nq, ec)
			if sc.kind == "insert" {
				benchReportCoalesced(b, nq.ops, benchLastSeq(b, cs.js[0])-before)
			}
		})
		if ok && nq.ops > 0 { // the last (largest) run's figures
			lines = append(lines, benchClusterLine(sc.name(), nq, ec))
		}
	}
	benchPrint("nqlite cluster (3 nodes, R3 stream, in one process, "+benchSyncName(syncAlways)+") vs bare NATS echo on the same servers, measured in alternating rounds", lines)
}

// benchFill creates the insert table and the point-read table with
// benchRows rows, and waits until every node has applied them.
func benchFill(b *testing.B, cl *client.Client, urls []string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := cl.Query(ctx, benchDB, client.Request{TimeoutMS: 30000, Statements: []api.Statement{
		{SQL: "CREATE TABLE IF NOT EXISTS ins(id INTEGER PRIMARY KEY, v TEXT NOT NULL)"},
		{SQL: "CREATE TABLE IF NOT EXISTS kv(id INTEGER PRIMARY KEY, v TEXT NOT NULL)"},
		{SQL: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?) " +
			"INSERT OR REPLACE INTO kv(id, v) SELECT x, printf('value-%08d', x) FROM c", Params: []any{int64(benchRows)}},
	}})
	if err != nil {
		b.Fatalf("fill: %v", err)
	}
	for i, r := range resp.Results {
		if r.Error != "" {
			b.Fatalf("fill statement %d: %s", i+1, r.Error)
		}
	}
	// Every node must serve the rows: read them with after_seq on each
	// server (a client is routed to the node on its own server).
	for _, url := range urls {
		c := client.New(servicetest.Connect(b, url))
		r, err := c.Query(ctx, benchDB, client.Request{AfterSeq: resp.Seq, TimeoutMS: 30000,
			Statements: []api.Statement{{SQL: "SELECT count(*) AS n FROM kv"}}})
		if err != nil {
			b.Fatalf("fill check: %v", err)
		}
		if err := benchCheck(r, 1); err != nil {
			b.Fatalf("fill check: %v", err)
		}
	}
}

// benchLine is one line of a printed summary table.
type benchLine struct {
	scenario string
	nq, echo benchStats
	hasEcho  bool
	target   string
	met      string // "yes", "no" or ""
}

// benchClusterLine returns the summary line of a BenchmarkCluster
// scenario, with the target where it sets one.
func benchClusterLine(name string, nq, ec benchStats) benchLine {
	l := benchLine{scenario: name, nq: nq, echo: ec, hasEcho: true}
	c16 := strconv.Itoa(benchMaxClients)
	switch name {
	case "insert/clients=1":
		l.target, l.met = "p50 ≤ 3× echo p50", benchYesNo(nq.p50 <= 3*ec.p50)
	case "insert/clients=" + c16:
		l.target, l.met = "ops/s ≥ 25% of echo", benchYesNo(nq.opsPerSec() >= 0.25*ec.opsPerSec())
	case "read/clients=" + c16:
		l.target, l.met = "ops/s ≥ 60% of echo", benchYesNo(nq.opsPerSec() >= 0.60*ec.opsPerSec())
	case "jspub/clients=1", "jspub/clients=" + c16:
		l.target = "reference: the R3 publish inside every write"
	}
	return l
}

func benchYesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// benchPrint prints rows as a markdown table to stdout.
func benchPrint(title string, rows []benchLine) {
	if len(rows) == 0 {
		return
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%s\n\n", title)
	sb.WriteString("| scenario | nqlite ops/s | echo ops/s | ratio | p50 ms | echo p50 ms | p99 ms | echo p99 ms | target | met |\n")
	sb.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, r := range rows {
		echoOps, ratio, echoP50, echoP99 := "-", "-", "-", "-"
		if r.hasEcho {
			echoOps = fmt.Sprintf("%.0f", r.echo.opsPerSec())
			if e := r.echo.opsPerSec(); e > 0 {
				ratio = fmt.Sprintf("%.0f%%", 100*r.nq.opsPerSec()/e)
			}
			if r.echo.p50 > 0 {
				echoP50 = fmt.Sprintf("%.3f", benchMS(r.echo.p50))
				echoP99 = fmt.Sprintf("%.3f", benchMS(r.echo.p99))
				ratio += fmt.Sprintf(" (p50 %.1f×)", float64(r.nq.p50)/float64(r.echo.p50))
			}
		}
		p50, p99 := "-", "-"
		if r.nq.p50 > 0 {
			p50, p99 = fmt.Sprintf("%.3f", benchMS(r.nq.p50)), fmt.Sprintf("%.3f", benchMS(r.nq.p99))
		}
		fmt.Fprintf(&sb, "| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.scenario, r.nq.opsPerSec(), echoOps, ratio, p50, echoP50, p99, echoP99, r.target, r.met)
	}
	fmt.Print(sb.String())
}

// benchLogger keeps only the nodes' warnings and errors, so info logs do
// not interleave with the benchmark output.
func benchLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// benchEnvInt reads a positive integer from the environment, or def.
func benchEnvInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkCatchUp measures how fast a node started
// NQLITE_BENCH_CATCHUP (default 100,000) single-insert entries behind
// applies them: the time from service.Start until its DB's Applied()
// reaches the stream's last sequence (Start returns only then). Beside it,
// "stream-read" is the rate a bare ordered consumer, configured like the
// node's, reads the same stream without applying: the limit of catch-up on
// this machine.
//
// The entries are published straight to the stream (apply.Entry encoded,
// as a node publishes them) while one live node applies them. Each run of
// the entries sub-benchmark catches up one fresh node, whatever b.N; its
// ns/op is nanoseconds per entry.
func BenchmarkCatchUp(b *testing.B) {
	entries := benchEnvInt(b, "NQLITE_BENCH_CATCHUP", 100000)
	servers := servicetest.StartCluster(b, 3)
	servicetest.StartNode(b, servers[0].ClientURL(), service.Config{
		NodeID: "live", Replicas: 3, DataDir: b.TempDir(), Logger: benchLogger()})
	last := benchPublishEntries(b, servers[1].ClientURL(), entries)

	var read, catchUp benchStats
	b.Run("stream-read", func(b *testing.B) {
		read = benchReadStream(b, servers[2].ClientURL(), last)
		benchReportRate(b, read)
	})
	b.Run(fmt.Sprintf("entries=%d", entries), func(b *testing.B) {
		catchUp = benchCatchUpNode(b, servers[2].ClientURL(), last)
		benchReportRate(b, catchUp)
	})
	var rows []benchLine
	if catchUp.ops > 0 {
		r := benchLine{scenario: fmt.Sprintf("catch-up, %d entries behind (entries/s)", catchUp.ops),
			nq: catchUp, echo: read, hasEcho: read.ops > 0, target: "≥ 50,000 entries/s",
			met: benchYesNo(catchUp.opsPerSec() >= 50000)}
		rows = append(rows, r)
	}
	benchPrint("catch-up of a fresh node vs a bare ordered consumer reading the same stream (the \"echo\" column)", rows)
}

// benchReportRate reports a catch-up figure: entries/s, and ns/op as
// nanoseconds per entry.
func benchReportRate(b *testing.B, s benchStats) {
	b.ReportMetric(s.opsPerSec(), "entries/s")
	b.ReportMetric(float64(s.elapsed.Nanoseconds())/float64(max(s.ops, 1)), "ns/op")
}

// benchPublishEntries publishes a CREATE TABLE entry and n-1 single-row insert
// entries to the main stream and returns the stream's last sequence.
func benchPublishEntries(b *testing.B, url string, n int) uint64 {
	b.Helper()
	nc := servicetest.Connect(b, url)
	var pubErrs atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2048),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { pubErrs.Add(1) }))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	subj := service.EntrySubject(benchDB)
	start := time.Now()
	for i := 0; i < n; i++ {
		e := apply.Entry{Node: "loader", Time: time.Now().UnixMilli(), Seed: int64(i)}
		if i == 0 {
			e.Statements = []api.Statement{{SQL: "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)"}}
		} else {
			e.Statements = []api.Statement{{SQL: "INSERT INTO t(v) VALUES(?)", Params: []any{fmt.Sprintf("value-%08d", i)}}}
		}
		data := e.Encode()
		for {
			_, err := js.PublishAsync(subj, data, jetstream.WithExpectStream(service.StreamName(benchDB)))
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				b.Fatalf("publish entry %d: %v", i+1, err)
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				b.Fatal("publishing stalled")
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("publish acks did not arrive")
	}
	if e := pubErrs.Load(); e > 0 {
		b.Fatalf("%d entries were not stored", e)
	}
	str, err := js.Stream(ctx, service.StreamName(benchDB))
	if err != nil {
		b.Fatal(err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("published %d entries in %v (stream last sequence %d)", n, time.Since(start).Round(time.Millisecond), info.State.LastSeq)
	return info.State.LastSeq
}

// benchReadStream reads the main stream from its start to sequence last with an
// ordered consumer and the node's pull size, without applying anything.
func benchReadStream(b *testing.B, url string, last uint64) benchStats {
	b.Helper()
	nc := servicetest.Connect(b, url)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	cons, err := js.OrderedConsumer(ctx, service.StreamName(benchDB), jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	var n atomic.Int64
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		if n.Add(1); md.Sequence.Stream >= last {
			select {
			case <-done:
			default:
				close(done)
			}
		}
	}, jetstream.PullMaxMessages(stream.MaxBatch))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("read %d of %d messages", n.Load(), last)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	return benchStats{ops: int(last), elapsed: elapsed}
}

// benchCatchUpNode starts a fresh node (empty data dir) and times it until it
// has applied the stream up to last.
func benchCatchUpNode(b *testing.B, url string, last uint64) benchStats {
	b.Helper()
	nc := servicetest.Connect(b, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	n, err := service.Start(ctx, nc, service.Config{NodeID: "fresh", Replicas: 3, DataDir: b.TempDir(), Logger: benchLogger()})
	if err != nil {
		b.Fatal(err)
	}
	if err := n.DB(benchDB).WaitApplied(ctx, last); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if err := n.Stop(); err != nil {
		b.Errorf("stop: %v", err)
	}
	return benchStats{ops: int(last), elapsed: elapsed}
}

// BenchmarkProcesses runs nqlite node processes (the binary built from
// this repository), one per nats-server, loads them with single-row
// inserts, point reads and strong reads from 1 and 16 clients (b.N
// requests per scenario, beside the echo in alternating rounds as in
// BenchmarkCluster), and reports every node's resident memory after the
// load, read from /proc/<pid>/status: VmRSS (now) and VmHWM (peak), in MB.
// In-process nodes share one heap, so only separate processes give a
// node's own memory.
//
// The environment chooses the servers (benchServers):
// NQLITE_BENCH_NATS=process runs them as nats-server processes, built from
// the nats-server module this repository requires (the default runs them
// in the benchmark's process); NQLITE_BENCH_SERVERS is 3 (default: three
// clustered servers, R3) or 1 (one server, R1, one node);
// NQLITE_BENCH_SYNC is always (default) or default (benchSyncAlways).
// The clients and the echo responder run in the benchmark's process.
//
// It needs Linux and the go command; it is skipped with -short or
// NQLITE_BENCH_RSS=0.
func BenchmarkProcesses(b *testing.B) {
	if testing.Short() || os.Getenv("NQLITE_BENCH_RSS") == "0" {
		b.Skip("skipped with -short or NQLITE_BENCH_RSS=0")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("needs /proc/<pid>/status (Linux)")
	}
	bin := benchBuild(b, ".", "nqlite")
	urls, title := benchServers(b)
	replicas := len(urls)
	pids := make([]int, len(urls))
	for i, url := range urls {
		pids[i] = benchStartProcess(b, bin, url, fmt.Sprintf("n%d", i+1), replicas)
	}
	for i, url := range urls {
		benchWaitServes(b, url, fmt.Sprintf("n%d", i+1))
	}
	for _, url := range urls {
		benchStartEchoProcess(b, url)
	}
	cs := benchConnect(b, urls)
	benchCreateJSStream(b, cs.js[0], replicas)
	benchFill(b, cs.cl[0], urls)

	var lines []benchLine
	var seq atomic.Int64
	for _, sc := range []benchScenario{
		{"insert", 1}, {"insert", benchMaxClients},
		{"read", 1}, {"read", benchMaxClients},
		{"strong", 1}, {"strong", benchMaxClients},
		{"jspub", 1}, {"jspub", benchMaxClients},
	} {
		var nq, ec benchStats
		ok := b.Run(sc.name(), func(b *testing.B) {
			echo := benchScenario{"echo", sc.clients}
			before := benchLastSeq(b, cs.js[0])
			nq, ec = benchPaired(b, sc.clients, b.N, sc.op(cs, &seq), echo.op(cs, &seq))
			benchReportPaired(b, nq, ec)
			if sc.kind == "insert" {
				benchReportCoalesced(b, nq.ops, benchLastSeq(b, cs.js[0])-before)
			}
		})
		if ok && nq.ops > 0 {
			lines = append(lines, benchProcessLine(sc.name(), nq, ec))
		}
	}
	type mem struct{ rss, hwm float64 }
	mems := make([]mem, len(pids))
	b.Run("rss", func(b *testing.B) {
		worst := 0.0
		for i, pid := range pids {
			rss, hwm, err := benchProcMemMB(pid)
			if err != nil {
				b.Fatal(err)
			}
			mems[i] = mem{rss, hwm}
			b.ReportMetric(rss, fmt.Sprintf("n%d-RSS-MB", i+1))
			worst = max(worst, rss)
		}
		b.ReportMetric(worst, "max-RSS-MB")
	})

	benchPrint(fmt.Sprintf("%d nqlite node processes, %s, vs bare NATS echo on the same servers, measured in alternating rounds", len(urls), title), lines)
	var sb strings.Builder
	sb.WriteString("\nresident memory of each node process after the load (target: VmRSS ≤ 60 MB)\n\n")
	sb.WriteString("| node | VmRSS MB | VmHWM (peak) MB | met |\n|---|---:|---:|---|\n")
	for i, m := range mems {
		if m.rss > 0 {
			fmt.Fprintf(&sb, "| n%d | %.1f | %.1f | %s |\n", i+1, m.rss, m.hwm, benchYesNo(m.rss <= 60))
		}
	}
	fmt.Print(sb.String())
}

// benchProcessLine returns the summary line of a BenchmarkProcesses
// scenario, with issue 9's targets where it sets them relative to the
// echo (the others are absolute figures of another system, compared in
// the README).
func benchProcessLine(name string, nq, ec benchStats) benchLine {
	l := benchLine{scenario: name, nq: nq, echo: ec, hasEcho: true}
	c16 := strconv.Itoa(benchMaxClients)
	switch name {
	case "read/clients=1":
		l.target, l.met = "p50 ≤ echo p50 + 0.040 ms", benchYesNo(nq.p50 <= ec.p50+40*time.Microsecond)
	case "read/clients=" + c16:
		l.target, l.met = "ops/s ≥ 60% of echo", benchYesNo(nq.opsPerSec() >= 0.60*ec.opsPerSec())
	case "jspub/clients=1", "jspub/clients=" + c16:
		l.target = "reference: the publish inside every write"
	}
	return l
}

// benchSyncAlways reports whether the benchmark's nats-servers fsync
// every stored message before acknowledging it (sync_interval: always,
// the nqlite node's default for its embedded server): NQLITE_BENCH_SYNC
// unset or "always"; "default" keeps JetStream's default (fsync every 2
// minutes).
func benchSyncAlways(b *testing.B) bool {
	switch v := os.Getenv("NQLITE_BENCH_SYNC"); v {
	case "", "always":
		return true
	case "default":
		return false
	default:
		b.Fatalf("NQLITE_BENCH_SYNC=%q: want always or default", v)
		return false
	}
}

// benchSyncName names the fsync setting in printed titles.
func benchSyncName(always bool) string {
	if always {
		return "fsync always"
	}
	return "JetStream's default sync interval (2 min)"
}

// benchURLs returns the client URLs of in-process servers.
func benchURLs(servers []*server.Server) []string {
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	return urls
}

// benchBuild builds the main package pkg (a path or an import path, built
// in the repository root) into the benchmark's temp dir as name and
// returns the binary's path. It skips the benchmark without the go
// command.
func benchBuild(b *testing.B, pkg, name string) string {
	b.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		b.Skip("needs the go command to build " + pkg)
	}
	bin := filepath.Join(b.TempDir(), name)
	build := exec.Command(goCmd, "build", "-o", bin, pkg)
	build.Dir = ".." // the repository root: its go.mod decides the versions
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// benchServers starts the nats-servers of BenchmarkProcesses as the
// environment says (see there) and returns their client URLs and a title
// naming the setup.
func benchServers(b *testing.B) (urls []string, title string) {
	b.Helper()
	n := benchEnvInt(b, "NQLITE_BENCH_SERVERS", 3)
	if n != 1 && n != 3 {
		b.Fatalf("NQLITE_BENCH_SERVERS=%d: want 1 or 3", n)
	}
	syncAlways := benchSyncAlways(b)
	shape := fmt.Sprintf("R%d stream on %d nats-server", n, n)
	if n > 1 {
		shape += "s"
	}
	switch mode := os.Getenv("NQLITE_BENCH_NATS"); mode {
	case "", "inprocess":
		opt := func(o *server.Options) { o.SyncAlways = syncAlways }
		servers := []*server.Server{servicetest.StartServer(b, opt)}
		if n > 1 {
			servers = servicetest.StartCluster(b, n, opt)
		}
		return benchURLs(servers), shape + " in the benchmark's process, " + benchSyncName(syncAlways)
	case "process":
		return benchServerProcesses(b, n, syncAlways), shape + " processes, " + benchSyncName(syncAlways)
	default:
		b.Fatalf("NQLITE_BENCH_NATS=%q: want process or inprocess", mode)
		return nil, ""
	}
}

// benchServerProcesses builds nats-server (the version go.mod requires)
// and starts n of it as processes, clustered when n > 1, each with
// JetStream in its own temp dir, and waits until each accepts clients
// and, clustered, JetStream has a meta leader. The processes are killed
// at cleanup.
func benchServerProcesses(b *testing.B, n int, syncAlways bool) []string {
	b.Helper()
	bin := benchBuild(b, "github.com/nats-io/nats-server/v2", "nats-server")
	ports := servicetest.FreePorts(b, 2*n)
	var routes []string
	for i := 0; i < n; i++ {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[n+i]))
	}
	sync := ""
	if syncAlways {
		sync = "sync_interval: always"
	}
	urls := make([]string, n)
	for i := 0; i < n; i++ {
		dir := b.TempDir()
		conf := fmt.Sprintf("server_name: s%d\nlisten: 127.0.0.1:%d\njetstream { store_dir: %q\n%s }\n",
			i+1, ports[i], filepath.Join(dir, "js"), sync)
		if n > 1 {
			conf += fmt.Sprintf("cluster { name: nqlite-bench\nlisten: 127.0.0.1:%d\nroutes: [%s] }\n",
				ports[n+i], strings.Join(routes, ", "))
		}
		cf := filepath.Join(dir, "server.conf")
		if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
			b.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(dir, "server.log"))
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(bin, "-c", cf)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			logf.Close()
		})
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[i])
	}
	// Ready when every server answers and JetStream (clustered: its meta
	// leader) answers account info.
	deadline := time.Now().Add(60 * time.Second)
	for _, url := range urls {
		for {
			err := benchJetStreamReady(url)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("nats-server %s not ready: %v", url, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return urls
}

// benchJetStreamReady returns nil once the server at url accepts a client
// and answers a JetStream account info request.
func benchJetStreamReady(url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// benchStartProcess starts the nqlite binary as node id against url and
// returns its pid. The process is stopped (SIGTERM, then SIGKILL after 10s)
// at cleanup; its log is in the benchmark's temp dir.
func benchStartProcess(b *testing.B, bin, url, id string, replicas int) int {
	b.Helper()
	dir := b.TempDir()
	logf, err := os.Create(filepath.Join(dir, "node.log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--nats-url", url, "--data-dir", filepath.Join(dir, "data"),
		"--node-id", id, "--replicas", strconv.Itoa(replicas), "--log-level", "warn")
	cmd.Env = append(os.Environ(), "NQLITE_DB=") // the flags alone decide
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		benchWaitExit(cmd)
		logf.Close()
	})
	return cmd.Process.Pid
}

// benchWaitExit waits for a process asked to stop, and kills it after 10 s.
func benchWaitExit(cmd *exec.Cmd) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// benchWaitServes waits until node id answers requests sent to url (queue
// groups prefer the responder on the client's own server).
func benchWaitServes(b *testing.B, url, id string) {
	b.Helper()
	cl := client.New(servicetest.Connect(b, url))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := cl.QueryString(ctx, benchDB, "SELECT 1")
		cancel()
		if err == nil && resp.Node == id {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("node %s does not serve on %s (last error: %v)", id, url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// benchProcMemMB returns VmRSS and VmHWM of process pid in MB (2^20 bytes).
func benchProcMemMB(pid int) (rss, hwm float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fields := strings.Fields(v) // "12345 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, fmt.Errorf("pid %d: unexpected %s line %q", pid, k, v)
		}
		kb, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, 0, err
		}
		if k == "VmRSS" {
			rss = kb / 1024
		} else {
			hwm = kb / 1024
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("pid %d: no VmRSS in /proc status (exited?)", pid)
	}
	return rss, hwm, sc.Err()
}
