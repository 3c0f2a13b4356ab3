package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// BenchmarkSnapshotRestore times a snapshot to the Object Store and a
// restore of a fresh node from it, for a database of
// NQLITE_BENCH_SNAPSHOT_MB megabytes (default 64; the README's figures use
// 1024). It reports the peak resident memory of the process (nats-server,
// nodes and all) to show the copy is streamed, not held in memory.
//
//	NQLITE_BENCH_SNAPSHOT_MB=1024 go test -run '^$' -bench SnapshotRestore -benchtime 1x ./service/
func BenchmarkSnapshotRestore(b *testing.B) {
	mb := 64
	if v, err := strconv.Atoi(os.Getenv("NQLITE_BENCH_SNAPSHOT_MB")); err == nil && v > 0 {
		mb = v
	}
	// One database per run whatever b.N is (like BenchmarkCatchUp): the
	// figures are times of one snapshot and one restore.
	benchSnapshotRestore(b, mb)
}

func benchSnapshotRestore(b *testing.B, mb int) {
	ns := servicetest.StartServer(b)
	cfg := func(id string) service.Config {
		return service.Config{NodeID: id, Snapshot: service.SnapshotConfig{Interval: time.Hour}}
	}
	n1 := servicetest.StartNode(b, ns.ClientURL(), cfg("n1"))
	nc := servicetest.Connect(b, ns.ClientURL())
	c := client.New(nc)
	ctx := context.Background()
	if _, err := c.QueryString(ctx, "main", "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)"); err != nil {
		b.Fatal(err)
	}
	// 8 MB per entry: 1,000 rows of 8,000 random bytes.
	fill := "INSERT INTO big(b) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 1000) SELECT randomblob(8000) FROM n"
	start := time.Now()
	for done := 0; done < mb; done += 8 {
		if _, err := c.Query(ctx, "main", client.Request{Statements: stmts(fill), TimeoutMS: 60000}); err != nil {
			b.Fatal(err)
		}
	}
	st, _ := os.Stat(filepath.Join(n1.DataDir, "main.sqlite"))
	wal, _ := os.Stat(filepath.Join(n1.DataDir, "main.sqlite-wal"))
	size := st.Size()
	if wal != nil {
		size += wal.Size()
	}
	b.Logf("filled %d MB in %v", size>>20, time.Since(start).Round(time.Millisecond))

	b.ResetTimer()
	t0 := time.Now()
	msg, err := nc.Request(service.SnapshotSubject("main"), nil, 30*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	snapTime := time.Since(t0)
	var reply service.SnapshotReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil || !reply.Taken {
		b.Fatalf("snapshot reply %s: %v", msg.Data, err)
	}
	t1 := time.Now()
	n2 := servicetest.StartNode(b, ns.ClientURL(), cfg("n2"))
	restoreTime := time.Since(t1)
	b.StopTimer()
	if n2.DB("main").Applied() != n1.DB("main").Applied() {
		b.Fatalf("restored node at %d, want %d", n2.DB("main").Applied(), n1.DB("main").Applied())
	}
	hwm := vmHWM()
	b.ReportMetric(float64(reply.Size)/(1<<20), "snapshot-MB")
	b.ReportMetric(snapTime.Seconds(), "snapshot-s")
	b.ReportMetric(restoreTime.Seconds(), "restore-s")
	b.ReportMetric(float64(hwm)/(1<<20), "process-peak-RSS-MB")
	fmt.Printf("\n| database | snapshot (VACUUM INTO + upload) | restore of a fresh node (download + verify + open) | peak RSS of the whole process |\n|---:|---:|---:|---:|\n| %d MB | %.1f s | %.1f s | %d MB |\n",
		reply.Size>>20, snapTime.Seconds(), restoreTime.Seconds(), hwm>>20)
}

// vmHWM returns this process's peak resident memory in bytes (Linux).
func vmHWM() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
