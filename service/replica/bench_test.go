package replica_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client/nqsql"
	"github.com/nqlite/nqlite/service/replica"
	"github.com/nqlite/nqlite/service/servicetest"
)

// benchRows is how many rows the point-read table holds (as in
// service's BenchmarkCluster).
const benchRows = 10000

// BenchmarkReplica_PointRead reads one row by primary key of a
// 10,000-row table through database/sql, from one goroutine and from 16,
// with the same query and the same node two ways: the replica's *sql.DB
// (local: in-process, service.Node.Do) and the nqsql driver over NATS to
// that node (nats: one nats-server on loopback, in the same process).
// The floors under them, from one goroutine: plain SQLite on the node's
// file (sqlite), apply's read path (apply) and Node.Do without
// database/sql (do). Each sub-benchmark reports ops/s and cpu-us/op (see
// measure.report). The figures are in the README ("Embedded replica").
//
//	go test -run '^$' -bench BenchmarkReplica_PointRead -benchtime 200000x -count 3 ./service/replica/
func BenchmarkReplica_PointRead(b *testing.B) {
	ns := servicetest.StartServer(b)
	nc := servicetest.Connect(b, ns.ClientURL())
	ctx := context.Background()
	r, err := replica.Start(ctx, nc, service.Config{NodeID: "r1", DataDir: b.TempDir(), Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Stop() })
	local, err := r.DB("main")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := local.ExecContext(ctx, `CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
		WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < `+fmt.Sprint(benchRows)+`)
		INSERT INTO kv(id, v) SELECT x, printf('value-%08d', x) FROM c`); err != nil {
		b.Fatal(err)
	}
	c, err := nqsql.NewConnector(servicetest.Connect(b, ns.ClientURL()))
	if err != nil {
		b.Fatal(err)
	}
	remote := sql.OpenDB(c)
	remote.SetMaxIdleConns(16)
	b.Cleanup(func() { remote.Close() })

	// The floor: the same read on a plain read-only SQLite connection to
	// the node's file (zombiezen, the statement prepared once), and through
	// apply's read path (Prepare, Plan.Run) without the service and the
	// driver.
	path := r.Node().DB("main").Path()
	b.Run("sqlite/1", func(b *testing.B) {
		c, err := sqlite.OpenConn(path, sqlite.OpenReadOnly|sqlite.OpenWAL|sqlite.OpenNoMutex)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		st := c.Prep("SELECT v FROM kv WHERE id = ?")
		m := startMeasure()
		for i := 0; i < b.N; i++ {
			st.BindInt64(1, 1+int64(rand.IntN(benchRows)))
			if row, err := st.Step(); err != nil || !row {
				b.Fatalf("step: %v %v", row, err)
			}
			_ = st.ColumnText(0)
			st.Reset()
		}
		m.report(b)
	})
	b.Run("apply/1", func(b *testing.B) {
		adb := r.Node().DB("main")
		// With a deadline, as every request has.
		dctx, cancel := context.WithTimeout(ctx, time.Hour)
		defer cancel()
		m := startMeasure()
		for i := 0; i < b.N; i++ {
			p, err := adb.Prepare(dctx, []api.Statement{{SQL: "SELECT v FROM kv WHERE id = ?", Params: []any{1 + int64(rand.IntN(benchRows))}}})
			if err != nil {
				b.Fatal(err)
			}
			if res, _, err := p.Run(dctx, 0); err != nil || len(res[0].Values) != 1 {
				b.Fatalf("run: %v %v", res, err)
			}
		}
		m.report(b)
	})
	b.Run("do/1", func(b *testing.B) {
		m := startMeasure()
		for i := 0; i < b.N; i++ {
			resp, err := r.Node().Do(ctx, "main", &api.Request{Statements: []api.Statement{{SQL: "SELECT v FROM kv WHERE id = ?", Params: []any{1 + int64(rand.IntN(benchRows))}}}}, false)
			if err != nil || len(resp.Results[0].Values) != 1 {
				b.Fatalf("do: %v %v", resp, err)
			}
		}
		m.report(b)
	})
	for _, tt := range []struct {
		name string
		db   *sql.DB
	}{{"local", local}, {"nats", remote}} {
		// The query a program would prepare once.
		st, err := tt.db.PrepareContext(ctx, "SELECT v FROM kv WHERE id = ?")
		if err != nil {
			b.Fatal(err)
		}
		read := func(id int64) error {
			var v string
			if err := st.QueryRowContext(ctx, id).Scan(&v); err != nil {
				return err
			}
			if want := fmt.Sprintf("value-%08d", id); v != want {
				return fmt.Errorf("id %d: got %q, want %q", id, v, want)
			}
			return nil
		}
		b.Run(tt.name+"/1", func(b *testing.B) {
			m := startMeasure()
			for i := 0; i < b.N; i++ {
				if err := read(1 + int64(rand.IntN(benchRows))); err != nil {
					b.Fatal(err)
				}
			}
			m.report(b)
		})
		b.Run(tt.name+"/16", func(b *testing.B) {
			// 16 goroutines: RunParallel starts parallelism × GOMAXPROCS.
			b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
			var failed atomic.Value
			m := startMeasure()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := read(1 + int64(rand.IntN(benchRows))); err != nil {
						failed.CompareAndSwap(nil, err)
						return
					}
				}
			})
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
			m.report(b)
		})
		st.Close()
	}
}

// measure is the wall-clock and CPU time of a benchmark's loop.
type measure struct {
	wall time.Time
	cpu  time.Duration
}

func startMeasure() measure { return measure{wall: time.Now(), cpu: cpuTime()} }

// report reports ops/s (wall clock) and cpu-us/op: the CPU time of the
// whole process (user and system, every goroutine: the driver, the node,
// SQLite, the nats-server for the NATS case, and GC) per operation, which
// the load of other programs on the machine changes far less than ops/s.
func (m measure) report(b *testing.B) {
	wall, cpu := time.Since(m.wall), cpuTime()-m.cpu
	b.ReportMetric(float64(b.N)/wall.Seconds(), "ops/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
