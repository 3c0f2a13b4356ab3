package service_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// BenchmarkChanges measures single-row inserts into a database with the
// change feed off and into one with it on, side by side on the same three
// clustered nats-servers (R3 streams, R3 change stream): three nodes
// serve database "plain" (feed off) and three other nodes database "feed"
// (--changes, every node publishing), in alternating rounds of the same
// run, with 1 and 16 clients. b.N is the number of inserts of each.
//
//	go test -run '^$' -bench BenchmarkChanges -benchtime 5000x ./service/
func BenchmarkChanges(b *testing.B) {
	servers := servicetest.StartCluster(b, 3)
	for i, s := range servers {
		for _, on := range []bool{false, true} {
			cfg := service.Config{NodeID: fmt.Sprintf("n%d", i+1), Databases: []string{"plain"}, Replicas: 3, DataDir: b.TempDir(), Logger: benchLogger()}
			if on {
				cfg.NodeID, cfg.Databases = fmt.Sprintf("f%d", i+1), []string{"feed"}
				cfg.Changes = service.ChangesConfig{Enabled: true}
			}
			servicetest.StartNode(b, s.ClientURL(), cfg)
		}
	}
	cs := benchConnect(b, benchURLs(servers))
	ctx := context.Background()
	for _, db := range []string{"plain", "feed"} {
		resp, err := cs.cl[0].Query(ctx, db, client.Request{Statements: []api.Statement{{SQL: "CREATE TABLE ins(id INTEGER PRIMARY KEY, v TEXT NOT NULL)"}}})
		if err != nil || benchCheck(resp, -1) != nil {
			b.Fatalf("create %s: %v %+v", db, err, resp)
		}
	}
	var seq atomic.Int64
	insert := func(db string, clients int) func(c, k int) error {
		return func(c, k int) error {
			n := seq.Add(1)
			resp, err := cs.cl[benchPick(clients, c, k)].Query(ctx, db, client.Request{Statements: []api.Statement{{
				SQL: "INSERT INTO ins(v) VALUES(?)", Params: []any{"value-" + strconv.FormatInt(n, 10)}}}})
			if err != nil {
				return err
			}
			return benchCheck(resp, -1)
		}
	}
	var sb strings.Builder
	sb.WriteString("\ninserts with the change feed off and on, 3 nodes each, same servers (R3), alternating rounds\n\n")
	sb.WriteString("| clients | feed off ops/s | feed on ops/s | on/off | p50 ms off | p50 ms on | p99 ms off | p99 ms on |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, clients := range []int{1, benchMaxClients} {
		var on, off benchStats
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			on, off = benchPaired(b, clients, b.N, insert("feed", clients), insert("plain", clients))
			on.report(b)
			b.ReportMetric(off.opsPerSec(), "off-ops/s")
			b.ReportMetric(benchMS(off.p50), "off-p50-ms")
			if o := off.opsPerSec(); o > 0 {
				b.ReportMetric(100*on.opsPerSec()/o, "on-%-of-off")
			}
		})
		if on.ops > 0 {
			fmt.Fprintf(&sb, "| %d | %.0f | %.0f | %.0f%% | %.3f | %.3f | %.3f | %.3f |\n", clients, off.opsPerSec(), on.opsPerSec(),
				100*on.opsPerSec()/off.opsPerSec(), benchMS(off.p50), benchMS(on.p50), benchMS(off.p99), benchMS(on.p99))
		}
	}
	// Every insert is one event, once.
	js, _ := jetstream.New(servicetest.Connect(b, servers[0].ClientURL()))
	var want int64
	resp, err := cs.cl[0].Query(ctx, "feed", client.Request{Level: api.LevelStrong, Statements: []api.Statement{{SQL: "SELECT count(*) FROM ins"}}, Format: api.FormatValues})
	if err != nil || benchCheck(resp, -1) != nil {
		b.Fatalf("count: %v", err)
	}
	want = resp.Results[0].Values[0][0].(int64)
	str, err := js.Stream(ctx, api.ChangesStreamName("feed"))
	if err != nil {
		b.Fatal(err)
	}
	servicetest.WaitFor(b, 30*time.Second, "every insert in the change stream", func() bool {
		info, err := str.Info(ctx)
		return err == nil && int64(info.State.Msgs) == want
	})
	fmt.Fprintf(&sb, "\nchange stream: %d events for %d rows inserted\n", want, want)
	fmt.Print(sb.String())
}
