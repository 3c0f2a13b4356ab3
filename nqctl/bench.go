package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// benchCommand is "nqctl bench": a quick load test of a running cluster.
// The in-process benchmark that compares with a bare NATS echo is
// "go test -bench . ./service/".
type benchCommand struct{ env *env }

// benchResult is the outcome of one scenario.
type benchResult struct {
	op      string
	ops     int
	errors  int64
	clients int
	elapsed time.Duration
	lat     []time.Duration
}

// Run runs the scenarios and prints a table.
func (c *benchCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	fs := e.flagSet("bench", "", `Measures a running cluster: N requests by C concurrent clients for each
scenario (insert: one-row INSERT; read: point SELECT by primary key;
strong: the same read with level strong), and prints ops/s and latency
percentiles. It works in its own table (created, and dropped at the end
unless --keep).`)
	e.opts.conn.register(fs)
	e.opts.registerOutput(fs)
	n := fs.Int("n", 2000, "requests per scenario")
	clients := fs.Int("c", 8, "concurrent clients")
	ops := fs.String("op", "insert,read", "scenarios, comma separated: insert, read, strong")
	table := fs.String("table", "nqctl_bench", "table to work in")
	keep := fs.Bool("keep", false, "keep the table")
	size := fs.Int("size", 100, "bytes of text per inserted row")
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("bench takes no arguments")
	}
	if *n < 1 || *clients < 1 || *size < 0 {
		return usageErrorf("-n and -c must be at least 1")
	}
	scenarios := strings.Split(*ops, ",")
	for _, s := range scenarios {
		switch s {
		case "insert", "read", "strong":
		default:
			return usageErrorf("--op %q: use insert, read or strong", s)
		}
	}
	mode, err := e.opts.outputMode(modeColumn)
	if err != nil {
		return err
	}
	nc, err := e.dial()
	if err != nil {
		return err
	}
	defer nc.Close()
	out := bufio.NewWriter(e.stdout)
	defer out.Flush()
	s := e.newSession(nc, out, mode)

	tbl := quoteIdent(*table)
	if _, err := s.query(ctx, api.Statement{SQL: "CREATE TABLE " + tbl + "(id INTEGER PRIMARY KEY, v TEXT)"}); err != nil {
		if isConnError(err) {
			return connErrorf("%v", err)
		}
		return failedf("bench: create table %s: %v (drop it, or give --table)", *table, err)
	}
	if !*keep {
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			s.query(cctx, api.Statement{SQL: "DROP TABLE " + tbl})
		}()
	}
	payload := strings.Repeat("x", *size)
	var results []benchResult
	var maxID atomic.Int64
	for _, sc := range scenarios {
		if (sc == "read" || sc == "strong") && maxID.Load() == 0 {
			// Something to read: one request of rows.
			var sts []api.Statement
			for i := 0; i < min(*n, 1000); i++ {
				sts = append(sts, api.Statement{SQL: "INSERT INTO " + tbl + "(v) VALUES(?)", Params: []any{payload}})
			}
			resp, err := s.query(ctx, sts...)
			if err != nil {
				return failedf("bench: fill %s: %v", *table, err)
			}
			maxID.Store(resp.Results[len(resp.Results)-1].LastInsertID)
		}
		var op func(ctx context.Context) error
		switch sc {
		case "insert":
			op = func(ctx context.Context) error {
				resp, err := benchRequest(ctx, nc, s, api.Statement{SQL: "INSERT INTO " + tbl + "(v) VALUES(?)", Params: []any{payload}}, "")
				if err == nil {
					for {
						cur := maxID.Load()
						id := resp.Results[0].LastInsertID
						if id <= cur || maxID.CompareAndSwap(cur, id) {
							break
						}
					}
				}
				return err
			}
		case "read", "strong":
			level := ""
			if sc == "strong" {
				level = api.LevelStrong
			}
			op = func(ctx context.Context) error {
				id := rand.Int64N(maxID.Load()) + 1
				_, err := benchRequest(ctx, nc, s, api.Statement{SQL: "SELECT v FROM " + tbl + " WHERE id = ?", Params: []any{id}}, level)
				return err
			}
		}
		res := runBench(ctx, sc, *n, *clients, op)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		results = append(results, res)
	}
	s.p.result(benchTable(results))
	return nil
}

// benchRequest sends one statement and fails on any error.
func benchRequest(ctx context.Context, nc *nats.Conn, s *session, st api.Statement, level string) (*api.Response, error) {
	req := &client.Request{Statements: []api.Statement{st}, Format: api.FormatValues, Level: level, TimeoutMS: int(s.timeout / time.Millisecond)}
	_, resp, err := send(ctx, nc, s.db, req, s.timeout+time.Second)
	if err != nil {
		return nil, err
	}
	if len(resp.Results) != 1 || resp.Results[0].Error != "" {
		return nil, fmt.Errorf("statement failed: %+v", resp.Results)
	}
	return resp, nil
}

// runBench runs n calls of op by c goroutines and measures each.
func runBench(ctx context.Context, name string, n, c int, op func(context.Context) error) benchResult {
	res := benchResult{op: name, ops: n, clients: c, lat: make([]time.Duration, n)}
	var next atomic.Int64
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				t := time.Now()
				if err := op(ctx); err != nil {
					errs.Add(1)
				}
				res.lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.errors = errs.Load()
	return res
}

// benchTable is the results as a printable result.
func benchTable(results []benchResult) *api.Result {
	res := &api.Result{Columns: []string{"op", "requests", "clients", "ops/s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors"}}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, r := range results {
		lat := append([]time.Duration(nil), r.lat...)
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		pct := func(p float64) time.Duration {
			if len(lat) == 0 {
				return 0
			}
			return lat[min(len(lat)-1, int(p*float64(len(lat))))]
		}
		rate := float64(r.ops) / r.elapsed.Seconds()
		res.Values = append(res.Values, []any{r.op, int64(r.ops), int64(r.clients), float64(int64(rate*10)) / 10,
			ms(pct(0.50)), ms(pct(0.90)), ms(pct(0.99)), ms(lat[len(lat)-1]), r.errors})
	}
	return res
}
