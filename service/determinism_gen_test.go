package service_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/nqlite/nqlite/service/api"
)

// A workload of the determinism fuzzer: requests sent in order, the first
// of which creates the schema.
type workload []wreq

type wreq struct {
	stmts []api.Statement
	tx    bool
}

// String renders a workload as SQL, one request a line, for a failure
// report.
func (w workload) String() string {
	var b strings.Builder
	for i, r := range w {
		fmt.Fprintf(&b, "-- request %d", i+1)
		if r.tx {
			b.WriteString(" (transaction)")
		}
		b.WriteByte('\n')
		for _, st := range r.stmts {
			b.WriteString(st.SQL)
			if len(st.Params) > 0 {
				fmt.Fprintf(&b, " -- params %#v", st.Params)
			}
			b.WriteString(";\n")
		}
	}
	return b.String()
}

// detSchema covers DEFAULTs drawing on the entry (random, now), stored and
// virtual generated columns, CHECK, expression and partial indexes, views,
// triggers that write, fail and roll back, WITHOUT ROWID, STRICT and
// AUTOINCREMENT tables, and FTS5, R*Tree and Geopoly virtual tables.
var detSchema = []string{
	`CREATE TABLE t0(id INTEGER PRIMARY KEY, a INTEGER, b REAL, c TEXT, d BLOB,
		r INTEGER DEFAULT (random()), rb BLOB DEFAULT (randomblob(4)), ts TEXT DEFAULT CURRENT_TIMESTAMP,
		sub TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')), jd REAL DEFAULT (julianday('now')),
		g1 REAL GENERATED ALWAYS AS (b * 2.5 + a) STORED,
		g2 TEXT GENERATED ALWAYS AS (printf('%.17g|%s|%!.20e', b, upper(c), b)) VIRTUAL,
		g3 REAL AS (ln(abs(b) + 1) + pow(abs(b) + 1, 0.37) + log2(abs(a) + 2)) STORED,
		CHECK (a IS NULL OR a <> 4242))`,
	`CREATE TABLE t1(k TEXT PRIMARY KEY, v, n INTEGER) WITHOUT ROWID`,
	`CREATE TABLE t2(x REAL, y TEXT, z)`,
	`CREATE TABLE t3(id INTEGER PRIMARY KEY AUTOINCREMENT, s TEXT UNIQUE, n INTEGER NOT NULL DEFAULT 0)`,
	`CREATE TABLE st(i INTEGER, r REAL, t TEXT, b BLOB, a ANY) STRICT`,
	`CREATE TABLE log(id INTEGER PRIMARY KEY, what TEXT, at TEXT, rnd INTEGER, lid INTEGER, ch INTEGER)`,
	`CREATE TABLE fx(id INTEGER PRIMARY KEY, name TEXT, v)`,
	`CREATE INDEX t0_lc ON t0(lower(c))`,
	`CREATE INDEX t0_ab ON t0(a + b) WHERE a > 0`,
	`CREATE INDEX t0_day ON t0(date(ts), g3)`,
	`CREATE INDEX t2_xy ON t2(round(x, 2), y)`,
	`CREATE VIEW v0 AS SELECT id, a * b AS p, c || '!' AS e, g2 FROM t0`,
	`CREATE TRIGGER t0_ai AFTER INSERT ON t0 BEGIN
		INSERT INTO log(what, at, rnd, lid, ch) VALUES('t0 ' || new.id, datetime('now', 'subsec'), random(), last_insert_rowid(), changes());
	END`,
	`CREATE TRIGGER t0_au AFTER UPDATE OF a ON t0 WHEN new.a < -1000000 BEGIN SELECT RAISE(ABORT, 'too small'); END`,
	`CREATE TRIGGER t3_bd BEFORE DELETE ON t3 WHEN old.n = 13 BEGIN SELECT RAISE(ROLLBACK, 'unlucky'); END`,
	`CREATE TRIGGER t2_ai AFTER INSERT ON t2 BEGIN UPDATE t3 SET n = n + 1 WHERE s = new.y; INSERT INTO log(what, rnd) VALUES('t2', random()); END`,
	`CREATE VIRTUAL TABLE ft USING fts5(title, body)`,
	`CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1, y0, y1)`,
	`CREATE VIRTUAL TABLE gp USING geopoly(name)`,
	`INSERT INTO t2(rowid, x, y) VALUES(9223372036854775807, 0.5, 'max')`,
}

// detFuncs calls every built-in function nqlite allows in a write; X is
// replaced by a REAL expression, I by an INTEGER one, S by a TEXT one.
var detFuncs = []string{
	"abs(I)", "abs(X)", "ceil(X)", "ceiling(X)", "floor(X)", "trunc(X)", "round(X)", "round(X, 3)", "sign(X)",
	"sqrt(abs(X))", "exp(X / 100)", "ln(abs(X) + 0.5)", "log(abs(X) + 0.5)", "log10(abs(X) + 0.5)", "log2(abs(X) + 0.5)",
	"log(2.5, abs(X) + 0.5)", "pow(abs(X), 1.37)", "power(1.0001, X)", "sin(X)", "cos(X)", "tan(X)", "asin(X / (abs(X) + 1))",
	"acos(X / (abs(X) + 1))", "atan(X)", "atan2(X, 3.1)", "sinh(X / 100)", "cosh(X / 100)", "tanh(X)", "asinh(X)",
	"acosh(abs(X) + 1)", "atanh(X / (abs(X) + 1))", "degrees(X)", "radians(X)", "mod(X, 7.3)", "mod(I, 7)", "pi() * X",
	"I + 9223372036854775807", "I * 9223372036854775807", "-9223372036854775808 - I", "CAST(X AS INTEGER)", "CAST(X AS TEXT)",
	"CAST(S AS REAL)", "CAST(S AS NUMERIC)", "X / 3", "I / 3", "I % 5", "I << 3", "I >> 2", "~I", "I & 255", "I | 1",
	"printf('%d %5.2f %e %g %x %s %q %Q %w %c %%', I, X, X, X, I, S, S, S, S, S)", "format('%.20g', X)", "printf('%!.30f', X)",
	"lower(S)", "upper(S)", "length(S)", "octet_length(S)", "hex(S)", "unhex(hex(S))", "quote(X)", "quote(S)", "trim(S)",
	"ltrim(S, 'ab')", "rtrim(S)", "substr(S, 2, 3)", "substring(S, -2)", "replace(S, 'a', 'zz')", "instr(S, 'a')",
	"char(65 + abs(I) % 26, 0x263A)", "unicode(S)", "soundex(S)", "concat(S, I, X)", "concat_ws('-', S, I)",
	"S LIKE '%a%'", "S GLOB '*a*'", "like('%b%', S)", "glob('*b*', S)", "typeof(X)", "zeroblob(3)", "nullif(I, 0)",
	"ifnull(NULL, S)", "coalesce(NULL, X)", "iif(I > 0, S, X)", "likely(I)", "unlikely(I)", "likelihood(I, 0.3)",
	"subtype(S)", "json_object('a', I, 'b', X, 'c', S)", "json_array(I, X, S)", "json(json_array(X))", "jsonb(json_array(X))",
	"json_extract(json_object('x', X), '$.x')", "json_set('{}', '$.k', S)", "json_insert('[1]', '$[#]', I)",
	"json_replace('{\"a\":1}', '$.a', X)", "json_remove('[1,2,3]', '$[1]')", "json_patch('{\"a\":1}', json_object('b', S))",
	"json_type(json_array(X), '$[0]')", "json_valid(S)", "json_quote(S)", "json_array_length('[1,2]')", "json_error_position(S)",
	"json_pretty(json_object('a', X))", "jsonb_object('a', S)", "jsonb_array(X)", "jsonb_extract(jsonb_array(I), '$[0]')",
	"jsonb_set(jsonb('{}'), '$.a', X)", "jsonb_insert(jsonb('[]'), '$[#]', S)", "jsonb_replace(jsonb('[0]'), '$[0]', I)",
	"jsonb_remove(jsonb('[1,2]'), '$[0]')", "jsonb_patch(jsonb('{}'), json_object('z', X))", "X -> '$'", "json_object('k', X) ->> '$.k'",
	"date('now')", "time('now', '+1 hour')", "datetime('now', 'subsec')", "julianday('now')", "unixepoch('now', 'subsec')",
	"strftime('%Y %j %W %s %f %J', 'now')", "timediff('now', '2000-01-01')", "current_date", "current_time", "current_timestamp",
	"datetime(abs(I) % 4000000000, 'unixepoch')", "date(2451545.0 + X)", "strftime('%f', 2451545.0 + X / 7)",
	"julianday('2024-02-29 12:34:56.789', '+' || (abs(I) % 1000) || ' days')", "timediff(julianday('now'), 2451545.0 + X)",
	"random()", "randomblob(8)", "hex(randomblob(abs(I) % 16 + 1))", "changes()", "last_insert_rowid()",
	"geopoly_area(geopoly_regular(0, 0, abs(X) + 1, 6))", "geopoly_json(geopoly_regular(X, 1, 2, 5))",
	"geopoly_svg(geopoly_regular(1, X, 2, 4))", "geopoly_blob('[[0,0],[1,0],[1,1],[0,0]]')", "geopoly_ccw('[[0,0],[0,1],[1,1],[0,0]]')",
	"geopoly_bbox(geopoly_regular(X, X, 3, 7))", "geopoly_contains_point(geopoly_regular(0, 0, 10, 8), X / 1000, 1)",
	"geopoly_within(geopoly_regular(0, 0, 1, 4), geopoly_regular(0, 0, 3, 4))", "geopoly_overlap(geopoly_regular(0, 0, 1, 4), geopoly_regular(X, 0, 1, 4))",
	"geopoly_json(geopoly_xform(geopoly_regular(0, 0, 1, 4), 1.5, X / 100, 0, 1, 2, 3))", "sqlite_log(1, S)",
}

// detAggregates are aggregate and window function calls over t0.
var detAggregates = []string{
	"SELECT 'sum', sum(b) FROM t0", "SELECT 'avg', avg(b) FROM t0", "SELECT 'total', total(a) FROM t0",
	"SELECT 'count', count(*) || '/' || count(c) FROM t0", "SELECT 'gc', group_concat(c, ',') FROM (SELECT c FROM t0 ORDER BY id)",
	"SELECT 'sa', string_agg(quote(b), ';') FROM (SELECT b FROM t0 ORDER BY id)", "SELECT 'mm', max(b) || min(a) FROM t0",
	"SELECT 'jga', json_group_array(a) FROM (SELECT a FROM t0 ORDER BY id)", "SELECT 'jgo', json_group_object(id, c) FROM t0",
	"SELECT 'jbga', jsonb_group_array(b) FROM (SELECT b FROM t0 ORDER BY id)", "SELECT 'jbgo', jsonb_group_object(id, a) FROM t0",
	"SELECT 'suml', sum(a) FROM t0", "SELECT 'gbb', geopoly_group_bbox(_shape) FROM gp",
	"SELECT 'win', group_concat(w, ' ') FROM (SELECT row_number() OVER w || rank() OVER w || dense_rank() OVER w || percent_rank() OVER w || cume_dist() OVER w || ntile(3) OVER w || quote(lag(a) OVER w) || quote(lead(b, 2, 0) OVER w) || quote(first_value(c) OVER w) || quote(last_value(a) OVER w) || quote(nth_value(b, 2) OVER w) AS w FROM t0 WINDOW w AS (ORDER BY id))",
	"SELECT 'ti', group_concat(name || type || pk, ',') FROM pragma_table_info('t0')",
	"SELECT 'txi', group_concat(name || hidden, ',') FROM pragma_table_xinfo('t0')",
	"SELECT 'tl', group_concat(name || type || ncol, ',') FROM (SELECT * FROM pragma_table_list ORDER BY name)",
	"SELECT 'il', group_concat(name || \"unique\" || origin || partial, ',') FROM pragma_index_list('t0')",
	"SELECT 'ii', group_concat(seqno || cid || quote(name), ',') FROM pragma_index_info('t0_ab')",
	"SELECT 'ixi', group_concat(seqno || cid || quote(name) || key, ',') FROM pragma_index_xinfo('t2_xy')",
	"SELECT 'fk', count(*) FROM pragma_foreign_key_list('t0')", "SELECT 'fkc', count(*) FROM pragma_foreign_key_check",
	"SELECT 'cl', group_concat(name, ',') FROM pragma_collation_list",
	"SELECT 'pv', user_version || '/' || (SELECT application_id FROM pragma_application_id) || (SELECT encoding FROM pragma_encoding) || (SELECT page_size FROM pragma_page_size) || (SELECT auto_vacuum FROM pragma_auto_vacuum) FROM pragma_user_version",
	"SELECT 'schema', group_concat(type || name || tbl_name, ',') FROM (SELECT * FROM sqlite_schema ORDER BY name)",
	"SELECT 'snip', snippet(ft, 1, '[', ']', '...', 4) || highlight(ft, 0, '<', '>') FROM ft WHERE ft MATCH 'alpha OR beta' ORDER BY rank LIMIT 1",
	"SELECT 'rt', group_concat(id, ',') FROM rt WHERE x0 < 50 AND x1 > 10",
	"SELECT 'rtc', rtreecheck('rt')", "SELECT 'rtd', rtreedepth(data) FROM rt_node WHERE nodeno = 1",
	"SELECT 'rtn', rtreenode(2, data) FROM rt_node WHERE nodeno = 1",
	"SELECT 'gpw', group_concat(name, ',') FROM gp WHERE geopoly_overlap(_shape, geopoly_regular(0, 0, 50, 8))",
}

var detWords = []string{"alpha", "beta", "gamma", "delta", "épsilon", "ζήτα", "日本", "emoji 😀", "a'b", `q"u`, "", " sp ", "NULL", "12", "1e3", "0x1F", "-0.0", "9223372036854775808"}

type detGen struct {
	r     *rand.Rand
	extra int  // tables created by the workload
	cols  bool // lit may name t0's columns b and c
}

func (g *detGen) word() string { return detWords[g.r.IntN(len(detWords))] }

func (g *detGen) int() int64 {
	switch g.r.IntN(8) {
	case 0:
		return []int64{0, 1, -1, math.MaxInt64, math.MinInt64, math.MaxInt64 - 1, math.MinInt64 + 1, 4242, 13}[g.r.IntN(9)]
	case 1:
		return g.r.Int64()
	default:
		return g.r.Int64N(2000) - 1000
	}
}

func (g *detGen) real() float64 {
	switch g.r.IntN(8) {
	case 0:
		return []float64{0, math.Copysign(0, -1), 1e308, -1e308, 5e-324, 2.2250738585072014e-308, 0.1, 1.0 / 3, 9007199254740993, math.MaxFloat64}[g.r.IntN(10)]
	case 1:
		return math.Ldexp(g.r.Float64(), g.r.IntN(2000)-1000)
	default:
		return (g.r.Float64() - 0.5) * math.Pow(10, float64(g.r.IntN(12)))
	}
}

// realText is a decimal text for SQLite to convert to REAL.
func (g *detGen) realText() string {
	switch g.r.IntN(3) {
	case 0:
		return strconv.FormatFloat(g.real(), 'g', -1, 64)
	case 1:
		return fmt.Sprintf("%d.%de%d", g.r.Int64N(1e18), g.r.Int64N(1e18), g.r.IntN(620)-310)
	default:
		return strconv.FormatFloat(g.real(), 'e', g.r.IntN(25), 64)
	}
}

func (g *detGen) lit(kind byte) string {
	switch kind {
	case 'I':
		return strconv.FormatInt(g.int(), 10)
	case 'X':
		switch g.r.IntN(3) {
		case 0:
			if g.cols {
				return "b"
			}
			return strconv.FormatFloat(g.real(), 'g', -1, 64)
		case 1:
			return "(" + g.realText() + ")"
		}
		return "CAST('" + g.realText() + "' AS REAL)"
	default:
		if g.cols && g.r.IntN(3) == 0 {
			return "c"
		}
		return "'" + strings.ReplaceAll(g.word(), "'", "''") + "'"
	}
}

// fill replaces X, I and S in a template (as whole words).
func (g *detGen) fill(tpl string) string {
	var b strings.Builder
	for i := 0; i < len(tpl); i++ {
		ch := tpl[i]
		word := (i == 0 || !isIdent(tpl[i-1])) && (i+1 == len(tpl) || !isIdent(tpl[i+1]))
		if word && (ch == 'X' || ch == 'I' || ch == 'S') {
			b.WriteString(g.lit(ch))
			continue
		}
		b.WriteByte(ch)
	}
	return b.String()
}

func isIdent(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func st(sql string, params ...any) api.Statement { return api.Statement{SQL: sql, Params: params} }

// genWorkload generates n requests from seed.
func genWorkload(seed uint64, n int) workload {
	g := &detGen{r: rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))}
	w := workload{{stmts: stmts(detSchema...)}}
	for len(w) < n {
		w = append(w, g.request())
	}
	return w
}

func (g *detGen) request() wreq {
	r := g.r
	if r.IntN(10) == 0 {
		// Several statements, in a transaction or with savepoints.
		var req wreq
		req.tx = r.IntN(2) == 0
		k := 2 + r.IntN(4)
		if !req.tx && r.IntN(2) == 0 {
			req.stmts = append(req.stmts, st("SAVEPOINT s1"))
			for i := 0; i < k; i++ {
				req.stmts = append(req.stmts, g.stmt())
			}
			req.stmts = append(req.stmts, st([]string{"ROLLBACK TO s1", "RELEASE s1"}[r.IntN(2)]), g.stmt(), st("RELEASE s1"))
			return req
		}
		if !req.tx && r.IntN(2) == 0 {
			req.stmts = append(req.stmts, st("BEGIN"))
			for i := 0; i < k; i++ {
				req.stmts = append(req.stmts, g.stmt())
			}
			req.stmts = append(req.stmts, st([]string{"COMMIT", "ROLLBACK", "SELECT 1"}[r.IntN(3)]))
			return req
		}
		for i := 0; i < k; i++ {
			req.stmts = append(req.stmts, g.stmt())
		}
		return req
	}
	return wreq{stmts: []api.Statement{g.stmt()}}
}

func (g *detGen) stmt() api.Statement {
	r := g.r
	switch r.IntN(24) {
	case 0, 1, 2:
		if r.IntN(4) == 0 {
			return st("INSERT INTO t0(id, a, b, c, d) VALUES(?, ?, ?, ?, ?) RETURNING id, r, ts, g1, g2, g3", []any{g.int(), math.MaxInt64, math.MinInt64}[r.IntN(3)], g.int(), g.real(), g.word(), []byte(g.word()))
		}
		return st("INSERT INTO t0(a, b, c, d) VALUES(?, ?, ?, randomblob(3))", g.int(), []any{g.real(), g.realText()}[r.IntN(2)], g.word())
	case 3:
		return st(fmt.Sprintf("INSERT INTO t0(a, b, c) VALUES(%s, %s, %s)", g.lit('I'), g.realText(), g.lit('S')))
	case 4:
		if r.IntN(3) == 0 {
			return st("INSERT INTO t2(rowid, x, y, z) VALUES(?, ?, ?, ?)", []any{int64(math.MaxInt64), int64(math.MinInt64), int64(0)}[r.IntN(3)], g.real(), g.word(), g.int())
		}
		return st("INSERT INTO t2(x, y, z) VALUES(?, ?, randomblob(2))", g.realText(), g.word())
	case 5:
		return st("INSERT INTO t1(k, v, n) VALUES(?, ?, ?) ON CONFLICT(k) DO UPDATE SET v = quote(excluded.v) || v, n = n + excluded.n RETURNING *", g.word(), []any{g.int(), g.real(), g.word(), nil}[r.IntN(4)], g.r.Int64N(5))
	case 6:
		return st([]string{"INSERT OR REPLACE INTO t3(s, n) VALUES(?, ?)", "INSERT OR IGNORE INTO t3(s, n) VALUES(?, ?)", "INSERT INTO t3(s, n) VALUES(?, ?) ON CONFLICT DO NOTHING", "INSERT INTO t3(s, n) VALUES(?, ?)", "INSERT OR ROLLBACK INTO t3(s, n) VALUES(?, ?)", "INSERT OR FAIL INTO t3(s, n) VALUES(?, ?)"}[r.IntN(6)], g.word(), []int64{13, 0, 1, 7}[r.IntN(4)])
	case 7:
		return st([]string{
			"INSERT INTO t2(x, y, z) SELECT b, c, d FROM t0 WHERE id % 7 = ? LIMIT 5",
			"INSERT INTO t0(a, b, c) SELECT n, random() / 1e10, s FROM t3 WHERE id > ? ORDER BY id DESC LIMIT 3",
			"INSERT INTO st(i, r, t, b, a) SELECT a, b, c, d, g2 FROM t0 WHERE a > ? AND typeof(a) = 'integer' AND typeof(b) = 'real' AND typeof(c) = 'text' AND typeof(d) = 'blob' LIMIT 2",
			"INSERT INTO st(i, r, t, b, a) VALUES(?, 1.5, 'x', x'00', 'any')",
			"INSERT INTO log(what, rnd) SELECT e, p FROM v0 WHERE id > ? LIMIT 4",
		}[r.IntN(5)], g.r.Int64N(7))
	case 8:
		tpl := []string{
			"UPDATE t0 SET b = b * 1.5 + ln(abs(a) + 1), c = substr(c, 2) || hex(randomblob(2)) WHERE id % 5 = abs(I) % 5",
			"UPDATE t0 SET a = a - 5000000 WHERE id = (SELECT max(id) FROM t0)",
			"UPDATE t0 SET a = I, b = X WHERE id IN (SELECT id FROM t0 ORDER BY id LIMIT 1 OFFSET abs(I) % 10)",
			"UPDATE t2 SET x = x / 3, y = y || S WHERE rowid % 4 = abs(I) % 4",
			"UPDATE t1 SET v = X WHERE k = S",
			"UPDATE t3 SET n = n + 1 RETURNING id, n",
		}[r.IntN(6)]
		g.cols = strings.HasPrefix(tpl, "UPDATE t0")
		defer func() { g.cols = false }()
		return st(g.fill(tpl))
	case 9:
		return st(g.fill([]string{
			"DELETE FROM t0 WHERE id % 11 = abs(I) % 11",
			"DELETE FROM t3 WHERE n = 13",
			"DELETE FROM t3 WHERE s = S",
			"DELETE FROM t2 WHERE rowid IN (SELECT rowid FROM t2 ORDER BY x LIMIT 3)",
			"DELETE FROM log WHERE id % 3 = 0 RETURNING what",
			"DELETE FROM t1 WHERE n > 2",
		}[r.IntN(6)]))
	case 10, 11, 12, 13:
		f := detFuncs[r.IntN(len(detFuncs))]
		if r.IntN(2) == 0 {
			g.cols = true
			defer func() { g.cols = false }()
			return st(fmt.Sprintf("INSERT INTO fx(name, v) SELECT %s, %s FROM t0 ORDER BY id LIMIT 1 OFFSET %d", quoteSQL(f), g.fill(f), r.IntN(5)))
		}
		return st(fmt.Sprintf("INSERT INTO fx(name, v) VALUES(%s, %s)", quoteSQL(f), g.fill(f)))
	case 14:
		return st("INSERT INTO fx(name, v) " + detAggregates[r.IntN(len(detAggregates))])
	case 15:
		return st(g.fill([]string{
			"INSERT INTO fx(name, v) VALUES('ovf', 9223372036854775807 + I)",
			"INSERT INTO fx(name, v) VALUES('mul', I * I)",
			"INSERT INTO fx(name, v) VALUES('absmin', abs(-9223372036854775808))",
			"INSERT INTO fx(name, v) SELECT 'sumovf', sum(a) FROM (SELECT 9223372036854775807 AS a UNION ALL SELECT I)",
			"INSERT INTO fx(name, v) VALUES('div', I / 0)",
			"INSERT INTO fx(name, v) VALUES('txt', CAST(X AS TEXT) || ' ' || CAST(S AS REAL))",
			"INSERT INTO t3(s) VALUES(CAST(X AS TEXT))",
			"INSERT INTO fx(name, v) VALUES('big', CAST('9223372036854775808' AS INTEGER) || CAST('-1e400' AS REAL))",
		}[r.IntN(8)]))
	case 16:
		return st("INSERT INTO ft(rowid, title, body) VALUES(?, ?, ?)", g.r.Int64N(50), []string{"alpha", "beta", "gamma"}[r.IntN(3)], g.word()+" alpha "+g.word()+" beta")
	case 17:
		return st([]string{"INSERT INTO ft(ft) VALUES('optimize')", "DELETE FROM ft WHERE rowid % 3 = 1", "INSERT INTO ft(ft, rank) VALUES('automerge', 2)", "UPDATE ft SET body = body || ' gamma' WHERE rowid % 2 = 0"}[r.IntN(4)])
	case 18:
		x := g.r.Float64() * 100
		return st("INSERT OR REPLACE INTO rt VALUES(?, ?, ?, ?, ?)", g.r.Int64N(40), x, x+g.r.Float64()*10, x/2, x/2+1)
	case 19:
		return st("INSERT INTO gp(_shape, name) VALUES(geopoly_regular(?, ?, ?, ?), ?)", g.real()/1e10, g.r.Float64()*10, g.r.Float64()*5+0.1, 3+r.IntN(6), g.word())
	case 20:
		g.extra++
		n := g.extra
		return st([]string{
			fmt.Sprintf("CREATE TABLE c%d AS SELECT 1 a, 2 a, 3 a, 4 a, 5 a, 6 a, b, c FROM t0 LIMIT 3", n),
			fmt.Sprintf("ALTER TABLE t2 ADD COLUMN w%d DEFAULT 'w%d'", n, n),
			fmt.Sprintf("CREATE INDEX i%d ON t0(c, g3 * %d)", n, n),
			"DROP INDEX IF EXISTS t2_xy",
			"ANALYZE",
			fmt.Sprintf("CREATE TABLE k%d(a INTEGER PRIMARY KEY, b DEFAULT (datetime('now', '+%d seconds')), c AS (a * 2) STORED)", n, n),
			fmt.Sprintf("CREATE TABLE cv%d AS SELECT * FROM vv%d", n, n-1),
			fmt.Sprintf("ALTER TABLE c%d RENAME TO r%d", n-1, n),
			fmt.Sprintf("CREATE VIEW vv%d AS SELECT a, a, a, a, a, b FROM t0", n),
			"PRAGMA user_version = " + strconv.Itoa(n),
			fmt.Sprintf("DROP TABLE IF EXISTS c%d", n-1),
			"REINDEX",
		}[r.IntN(12)])
	case 21:
		// Failing statements: every node fails them alike.
		return st(g.fill([]string{
			"INSERT INTO t0(id, a) VALUES(1, 4242)",
			"INSERT INTO nosuch VALUES(1)",
			"INSERT INTO t3(s, n) VALUES(NULL, NULL)",
			"INSERT INTO st(i) VALUES('not an integer')",
			"INSERT INTO t0(a, b) VALUES(I, json('{bad'))",
			"INSERT INTO fx(v) VALUES(1) (syntax",
			"INSERT INTO fx(name, v) SELECT 'x', RAISE(IGNORE)",
		}[r.IntN(7)]))
	case 22:
		// Refused before publishing (400): never in the stream.
		return st([]string{"INSERT INTO fx(v) VALUES(total_changes())", "INSERT INTO fx(v) SELECT page_count FROM pragma_page_count", "INSERT INTO fx(v) VALUES(sqlite_version())", "INSERT INTO fx(v) SELECT rootpage FROM sqlite_schema"}[r.IntN(4)])
	default:
		// Reads inside a writing request run on the apply connection.
		return st(g.fill([]string{"SELECT random(), changes(), last_insert_rowid()", "SELECT * FROM t0 ORDER BY id DESC LIMIT 2", "SELECT count(*) FROM log", "SELECT ln(X), pow(X, 2)"}[r.IntN(4)]))
	}
}

func quoteSQL(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
