package apply

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkSteps measures how many SQLite VM steps per second the apply
// connection runs for simple loops inside a write, the figure behind
// DefaultSteps:
//
//	go test ./apply/ -run '^$' -bench BenchmarkSteps -benchtime 5x
//
// cte is a recursive CTE counting to 1M (17 steps per row), crossjoin a
// count(*) over a 1000 x 1000 cross join of a table (about 2 steps per
// row), triggers one insert whose two levels of triggers insert 1M rows,
// insert a 100k-row INSERT ... SELECT into an indexed table.
func BenchmarkSteps(b *testing.B) {
	for _, bc := range []struct{ name, sql string }{
		{"cte", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000000) INSERT INTO t SELECT count(*) FROM c"},
		{"crossjoin", "INSERT INTO t SELECT count(*) FROM k AS a, k AS b"},
		{"triggers", "INSERT INTO f1 VALUES(1)"},
		{"insert", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000) INSERT INTO u(a, b) SELECT 'row ' || x, x * 7 FROM c"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			db := openDB(b, filepath.Join(b.TempDir(), "db.sqlite"))
			setup := entry(1, 1, false, "CREATE TABLE t(x)", "CREATE TABLE k(x)",
				"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000) INSERT INTO k SELECT x FROM c",
				"CREATE TABLE f1(x)", "CREATE TABLE f2(x)", "CREATE TABLE f3(x)",
				"CREATE TRIGGER tf1 AFTER INSERT ON f1 BEGIN INSERT INTO f2 SELECT x FROM k; END",
				"CREATE TRIGGER tf2 AFTER INSERT ON f2 BEGIN INSERT INTO f3 SELECT x FROM k; END",
				"CREATE TABLE u(id INTEGER PRIMARY KEY, a TEXT, b INT)", "CREATE INDEX u_b ON u(b)")
			if err := db.ApplyBatch(context.Background(), []Msg{{Seq: 1, Data: setup}}); err != nil {
				b.Fatal(err)
			}
			var steps uint64
			db.traceCost = func(_ uint64, spent Budget) { steps += spent.Steps }
			data := (&Entry{Node: "n1", Token: "t", Budget: Budget{Steps: MaxSteps, Bytes: 1 << 30},
				Statements: stmts(bc.sql)}).Encode()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := db.ApplyBatch(context.Background(), []Msg{{Seq: uint64(i + 2), Data: data}}); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.ReportMetric(float64(steps)/float64(b.N), "steps/op")
			b.ReportMetric(float64(steps)/el.Seconds()/1e6, "Msteps/s")
		})
	}
}

// BenchmarkBytes measures how fast the apply connection writes large
// values (16 rows of a 16 MB zeroblob per entry), the figure behind
// DefaultBytes:
//
//	go test ./apply/ -run '^$' -bench BenchmarkBytes -benchtime 3x
func BenchmarkBytes(b *testing.B) {
	db := openDB(b, filepath.Join(b.TempDir(), "db.sqlite"))
	if err := db.ApplyBatch(context.Background(), []Msg{{Seq: 1, Data: entry(1, 1, false, "CREATE TABLE t(x)")}}); err != nil {
		b.Fatal(err)
	}
	var n uint64
	db.traceCost = func(_ uint64, spent Budget) { n += spent.Bytes }
	data := (&Entry{Node: "n1", Token: "t", Budget: Budget{Steps: MaxSteps, Bytes: 1 << 40}, Statements: stmts(
		"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 16) INSERT INTO t SELECT zeroblob(16000000) FROM c",
		"DELETE FROM t")}).Encode()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := db.ApplyBatch(context.Background(), []Msg{{Seq: uint64(i + 2), Data: data}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds()/1e6, "MB/s")
}

// BenchmarkLargeValues measures statements whose every step builds or
// copies a multi-megabyte value (up to 100 rows per op), on the default
// budget, in entry format version 5, which charges large allocations as
// steps (valuemem.go): the figures behind DESIGN.md "Large values":
//
//	go test ./apply/ -run '^$' -bench BenchmarkLargeValues -benchtime 1x
//
// The first four stop with the budget error; steps/op is what they were
// charged, ms/op how long that took, ns/step the time a charged step took.
// length16MB reads a 16 MB text held in a register (a constant subquery)
// at every row, charged as a value held. instr100KB and replace100KB are
// one instr() or replace() of a 10 KB
// needle in a 100 KB haystack (10 rows), quadratic in one step with
// SQLite's built-ins, linear with nqlite's (strfuncs.go); cte1100B is
// what is still not charged: a recursive CTE carrying a value just under
// the threshold (100,000 rows, 2.1M steps; the default budget is 24 times
// as many).
func BenchmarkLargeValues(b *testing.B) {
	for _, bc := range []struct{ name, sql string }{
		{"printf16MB", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100) INSERT INTO t SELECT count(length(printf('%.*c', 16000000+x%2, 'x'))) FROM c"},
		{"hexzeroblob8MB", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100) INSERT INTO t SELECT count(length(hex(zeroblob(8000000+x%2)))) FROM c"},
		{"cte1MB", "WITH RECURSIVE c(x, s) AS (SELECT 1, printf('%.*c', 1000000, 'x') UNION ALL SELECT x+1, s FROM c WHERE x < 100) INSERT INTO t SELECT count(length(s)) FROM c"},
		{"cte16MB", "WITH RECURSIVE c(x, s) AS (SELECT 1, printf('%.*c', 16000000, 'x') UNION ALL SELECT x+1, s FROM c WHERE x < 100) INSERT INTO t SELECT count(length(s)) FROM c"},
		{"length16MB", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100) INSERT INTO t SELECT sum(length((SELECT printf('%.*c', 16000000, 'x'))) + x) FROM c"},
		{"cte1100B", "WITH RECURSIVE c(x, s) AS (SELECT 1, printf('%.*c', 1100, 'x') UNION ALL SELECT x+1, s FROM c WHERE x < 100000) INSERT INTO t SELECT count(length(s)) FROM c"},
		{"instr100KB", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 10) INSERT INTO t SELECT sum(instr(printf('%.*c', 100000, 'a'), printf('%.*c', 10000+x%2, 'a') || 'b')) FROM c"},
		{"replace100KB", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 10) INSERT INTO t SELECT sum(length(replace(printf('%.*c', 100000, 'a'), printf('%.*c', 10000+x%2, 'a') || 'b', 'c'))) FROM c"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			db := openDB(b, filepath.Join(b.TempDir(), "db.sqlite"))
			if err := db.ApplyBatch(context.Background(), []Msg{{Seq: 1, Data: entry(1, 1, false, "CREATE TABLE t(x)")}}); err != nil {
				b.Fatal(err)
			}
			var steps uint64
			db.traceCost = func(_ uint64, spent Budget) { steps += spent.Steps }
			data := (&Entry{Node: "n1", Token: "t", Budget: Budget{Steps: DefaultSteps, Bytes: DefaultBytes}, Statements: stmts(bc.sql)}).Encode()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := db.ApplyBatch(context.Background(), []Msg{{Seq: uint64(i + 2), Data: data}}); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.ReportMetric(float64(steps)/float64(b.N), "steps/op")
			b.ReportMetric(el.Seconds()*1000/float64(b.N), "ms/op")
			b.ReportMetric(float64(el.Nanoseconds())/float64(steps), "ns/step")
		})
	}
}
