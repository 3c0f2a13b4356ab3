package apply

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"zombiezen.com/go/sqlite"
)

// strArg is one argument of a differential call: a SQLite type and its
// value.
type strArg struct {
	t sqlite.ColumnType
	s string // text or blob bytes
	i int64
	f float64
}

func (a strArg) String() string {
	switch a.t {
	case sqlite.TypeNull:
		return "NULL"
	case sqlite.TypeInteger:
		return fmt.Sprint(a.i)
	case sqlite.TypeFloat:
		return fmt.Sprintf("%v(real)", a.f)
	case sqlite.TypeBlob:
		return fmt.Sprintf("x'%x'", a.s)
	}
	return fmt.Sprintf("%q", a.s)
}

func (a strArg) bind(s *sqlite.Stmt, i int) {
	switch a.t {
	case sqlite.TypeNull:
		s.BindNull(i)
	case sqlite.TypeInteger:
		s.BindInt64(i, a.i)
	case sqlite.TypeFloat:
		s.BindFloat(i, a.f)
	case sqlite.TypeBlob:
		s.BindBytes(i, []byte(a.s))
	default:
		s.BindText(i, a.s)
	}
}

// strTokens are the pieces random strings are made of: ASCII, multi-byte
// UTF-8, NUL, lone continuation bytes, invalid lead bytes, digits and
// number syntax (so numbers' text matches).
var strTokens = []string{"a", "b", "ab", "é", "€", "\U0001F600", "\x00", "\x80", "\xbf", "\xff", "\xc3", "\xe2\x82",
	"1", "2", "0", ".", "5", "e+", "-", " "}

func randBytes(r *rand.Rand, max int) string {
	var b strings.Builder
	for n := r.IntN(max + 1); n > 0; n-- {
		b.WriteString(strTokens[r.IntN(len(strTokens))])
	}
	return b.String()
}

// randArg returns a random argument; if from is not empty, often a piece
// of it, so that needles and patterns are found.
func randArg(r *rand.Rand, from string) strArg {
	var s string
	if from != "" && r.IntN(3) > 0 {
		i := r.IntN(len(from))
		j := i + r.IntN(len(from)-i+1)
		s = from[i:j]
	} else {
		s = randBytes(r, 8)
	}
	switch k := r.IntN(100); {
	case k < 5:
		return strArg{t: sqlite.TypeNull}
	case k < 12:
		return strArg{t: sqlite.TypeInteger, i: []int64{0, 1, -1, 12, 125, -2120, 1 << 40, math.MaxInt64, math.MinInt64}[r.IntN(9)]}
	case k < 19:
		return strArg{t: sqlite.TypeFloat, f: []float64{0, math.Copysign(0, -1), 1.5, 2, -12.125, 1e20, 1e-7, 0.1, 1.0 / 3, math.Inf(1), 5e-324}[r.IntN(11)]}
	case k < 40:
		return strArg{t: sqlite.TypeBlob, s: s}
	}
	return strArg{t: sqlite.TypeText, s: s}
}

// strResult is a call's outcome on one connection: type, value, error.
type strResult struct {
	t   sqlite.ColumnType
	v   string
	err string
}

func callStr(t *testing.T, s *sqlite.Stmt, args []strArg) strResult {
	t.Helper()
	defer s.Reset()
	s.ClearBindings()
	for i, a := range args[:s.BindParamCount()] {
		a.bind(s, i+1)
	}
	if _, err := s.Step(); err != nil {
		return strResult{err: err.Error()}
	}
	r := strResult{t: s.ColumnType(0)}
	switch r.t {
	case sqlite.TypeInteger:
		r.v = fmt.Sprint(s.ColumnInt64(0))
	case sqlite.TypeNull:
	default:
		b := make([]byte, s.ColumnLen(0))
		s.ColumnBytes(0, b)
		r.v = string(b)
	}
	return r
}

// diffConns returns a plain connection (SQLite's instr and replace) and
// one with installLinearStrings, both with length limit lim.
func diffConns(t *testing.T, lim int) (native, linear *sqlite.Conn) {
	t.Helper()
	for _, p := range []**sqlite.Conn{&native, &linear} {
		c, err := openConn(":memory:", sqlite.OpenReadWrite|sqlite.OpenMemory|sqlite.OpenNoMutex)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.Limit(sqlite.LimitLength, int32(lim))
		*p = c
	}
	if err := installLinearStrings(linear); err != nil {
		t.Fatal(err)
	}
	return native, linear
}

// TestInstrReplace_Differential: on random arguments of every type (text
// with NUL bytes, multi-byte, invalid and truncated UTF-8, leading
// continuation bytes, empty; blobs; integers; reals; NULL; mixed), the
// linear instr() and replace() give exactly SQLite's results: type,
// value and error.
func TestInstrReplace_Differential(t *testing.T) {
	native, linear := diffConns(t, MaxValueBytes)
	queries := []string{
		"SELECT instr(?1, ?2)",
		"SELECT replace(?1, ?2, ?3)",
		"SELECT typeof(replace(?1, ?2, ?3)) || typeof(?1) || typeof(?2) || typeof(?3)",
		"SELECT quote(?1) || quote(?2) || instr(?1, ?2) || quote(?1) || quote(?2)",
	}
	r := rand.New(rand.NewPCG(5, 9))
	for _, q := range queries {
		sn, _, err := native.PrepareTransient(q)
		if err != nil {
			t.Fatal(err)
		}
		sl, _, err := linear.PrepareTransient(q)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for i := 0; i < 30000; i++ {
			hay := randArg(r, "")
			if hay.t == sqlite.TypeText || hay.t == sqlite.TypeBlob {
				hay.s = randBytes(r, 12)
			}
			src := hay.s
			if hay.t == sqlite.TypeInteger {
				src = fmt.Sprint(hay.i)
			} else if hay.t == sqlite.TypeFloat {
				src = fmt.Sprint(hay.f)
			}
			args := []strArg{hay, randArg(r, src), randArg(r, "")}
			if i%50 == 0 {
				args[1] = strArg{t: sqlite.TypeText, s: "\x00" + randBytes(r, 2)} // first byte NUL
			}
			a, b := callStr(t, sn, args), callStr(t, sl, args)
			if a != b {
				t.Fatalf("%s with %v: SQLite %+v, linear %+v", q, args, a, b)
			}
			if a.err != "" {
				t.Fatalf("%s with %v: %s", q, args, a.err)
			}
			if a.v != "0" && a.v != "" && a.t != sqlite.TypeNull {
				found++
			}
		}
		sn.Finalize()
		sl.Finalize()
		t.Logf("%s: %d of 30000 non-zero, non-empty", q, found)
	}
}

// TestInstrReplace_LongNeedles: needles and patterns longer than
// shortNeedle (the Knuth-Morris-Pratt path), in periodic haystacks full
// of partial matches, equal SQLite's.
func TestInstrReplace_LongNeedles(t *testing.T) {
	native, linear := diffConns(t, MaxValueBytes)
	r := rand.New(rand.NewPCG(3, 4))
	qs := []string{"SELECT instr(?1, ?2)", "SELECT replace(?1, ?2, ?3)"}
	var sn, sl [2]*sqlite.Stmt
	for i, q := range qs {
		var err error
		if sn[i], _, err = native.PrepareTransient(q); err != nil {
			t.Fatal(err)
		}
		if sl[i], _, err = linear.PrepareTransient(q); err != nil {
			t.Fatal(err)
		}
		defer sn[i].Finalize()
		defer sl[i].Finalize()
	}
	found := 0
	defer func() { t.Logf("%d of 3000 instr() found", found) }()
	units := []string{"a", "ab", "aab", "é", "aé", "\x80a", "€b"}
	for i := 0; i < 3000; i++ {
		u := units[r.IntN(len(units))]
		hay := strings.Repeat(u, 50+r.IntN(400))
		if r.IntN(2) == 0 {
			p := r.IntN(len(hay))
			hay = hay[:p] + units[r.IntN(len(units))] + hay[p:]
		}
		n := 65 + r.IntN(200)
		if n > len(hay) {
			n = len(hay)
		}
		p := r.IntN(len(hay) - n + 1)
		needle := hay[p : p+n]
		if r.IntN(3) == 0 {
			needle = needle[:n-1] + "b"
		}
		ty := sqlite.TypeText
		if r.IntN(4) == 0 {
			ty = sqlite.TypeBlob
		}
		args := []strArg{{t: ty, s: hay}, {t: ty, s: needle}, {t: sqlite.TypeText, s: randBytes(r, 3)}}
		for k := range qs {
			a, b := callStr(t, sn[k], args), callStr(t, sl[k], args)
			if a != b || a.err != "" {
				t.Fatalf("%s with %v: SQLite %+v, linear %+v", qs[k], args, a, b)
			}
			if k == 0 && a.v != "0" {
				found++
			}
		}
	}
}

// TestReplace_LengthLimit: a result over SQLITE_LIMIT_LENGTH, and an X of
// exactly the limit (SQLite's allocates len X + 1 first), fail with
// SQLite's own error, as SQLite's replace() does.
func TestReplace_LengthLimit(t *testing.T) {
	native, linear := diffConns(t, 100)
	q := "SELECT replace(?1, ?2, ?3)"
	sn, _, err := native.PrepareTransient(q)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Finalize()
	sl, _, err := linear.PrepareTransient(q)
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Finalize()
	errors := 0
	for _, c := range []struct {
		x        string
		y, z     string
		wantErrs bool
	}{
		{strings.Repeat("a", 50), "a", "bb", false},
		{strings.Repeat("a", 51), "a", "bb", true},
		{strings.Repeat("a", 99), "b", "cc", false},
		{strings.Repeat("a", 100), "b", "cc", true},
		{strings.Repeat("a", 100), "", "cc", false},
		{strings.Repeat("a", 100), "a", "", true},
		{strings.Repeat("ab", 30), "ab", "xyz", false},
		{strings.Repeat("ab", 40), "ab", "xyz", true},
		{strings.Repeat("ab", 40), "ab", "x", false},
	} {
		args := []strArg{{t: sqlite.TypeText, s: c.x}, {t: sqlite.TypeText, s: c.y}, {t: sqlite.TypeText, s: c.z}}
		a, b := callStr(t, sn, args), callStr(t, sl, args)
		if a != b {
			t.Fatalf("replace(%d bytes, %q, %q): SQLite %+v, linear %+v", len(c.x), c.y, c.z, a, b)
		}
		if (a.err != "") != c.wantErrs {
			t.Fatalf("replace(%d bytes, %q, %q): %+v, want error %v", len(c.x), c.y, c.z, a, c.wantErrs)
		}
		if a.err != "" {
			errors++
			if !strings.Contains(a.err, "string or blob too big") {
				t.Fatalf("error %q", a.err)
			}
		}
	}
	if errors == 0 {
		t.Fatal("no case reached the limit")
	}
}

// naiveInstr is instr()'s definition for valid UTF-8 text: the 1-based
// character position of the first occurrence, or 0.
func naiveInstr(hay, needle string) int {
	i := strings.Index(hay, needle)
	if i < 0 {
		return 0
	}
	return len([]rune(hay[:i])) + 1
}

// TestInstrReplace_ApplyConnection: on the apply connection, in entries,
// instr() and replace() work with megabyte values in linear time (SQLite's
// take seconds for these: a 10 KB needle at every position of 1 MB) with
// the results of a plain Go reference, and wherever the built-ins do:
// CHECK constraints, generated columns, expression indexes, triggers,
// DEFAULTs; a wrong number of arguments fails with SQLite's error.
func TestInstrReplace_ApplyConnection(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	hay := strings.Repeat("é", 1000) + strings.Repeat("a", 1_000_000) + "b"
	needle := strings.Repeat("a", 10_000) + "b"
	wantPos := naiveInstr(hay, needle)
	wantRep := strings.ReplaceAll(hay, needle, "XY")
	bigNeedle := hay[len(hay)-200_000:] // KMP path, 200 KB needle
	res := applyOutcome(t, db, 1, budgetEntry("a", Budget{Steps: DefaultSteps, Bytes: DefaultBytes}, false,
		"CREATE TABLE t(k TEXT PRIMARY KEY, v)",
		"CREATE TABLE big(id INTEGER PRIMARY KEY, s TEXT)",
		fmt.Sprintf("INSERT INTO big VALUES(1, printf('%%.*c', 1000, 'é') || printf('%%.*c', 1000000, 'a') || 'b')"),
		fmt.Sprintf("INSERT INTO t SELECT 'pos', instr(s, printf('%%.*c', 10000, 'a') || 'b') FROM big"),
		fmt.Sprintf("INSERT INTO t SELECT 'rep', replace(s, printf('%%.*c', 10000, 'a') || 'b', 'XY') FROM big"),
		fmt.Sprintf("INSERT INTO t SELECT 'big', instr(s, substr(s, -%d)) FROM big", len([]rune(bigNeedle))),
		"INSERT INTO t SELECT 'blob', instr(CAST(s AS BLOB), CAST('ab' AS BLOB)) FROM big",
		"INSERT INTO t SELECT 'none', instr(s, printf('%.*c', 10001, 'a') || 'c') FROM big",
		"CREATE TABLE schema_uses(a TEXT CHECK (instr(a, 'bad') = 0), b TEXT DEFAULT (replace('x-y', '-', '+')),"+
			" g INT GENERATED ALWAYS AS (instr(a, 'é')) VIRTUAL, h TEXT AS (replace(a, 'é', 'e')) STORED)",
		"CREATE INDEX schema_uses_i ON schema_uses(instr(a, 'z'), replace(a, 'a', 'A'))",
		"CREATE TABLE log(x)",
		"CREATE TRIGGER schema_uses_t AFTER INSERT ON schema_uses BEGIN INSERT INTO log VALUES(replace(new.a, 'z', instr(new.a, 'z'))); END",
		"INSERT INTO schema_uses(a) VALUES('aézz')",
		"INSERT INTO schema_uses(a) VALUES('is bad')",
		"SELECT instr('a')",
		"SELECT replace('a', 'b')",
		"SELECT a, b, g, h FROM schema_uses WHERE instr(a, 'z') = 3 AND replace(a, 'a', 'A') = 'Aézz'",
	))
	want := []string{"", "", "", "", "", "", "", "",
		"", "", "", "", "",
		"CHECK constraint failed: instr(a, 'bad') = 0",
		"wrong number of arguments to function instr() (line 1, column 8)",
		"wrong number of arguments to function replace() (line 1, column 8)",
		""}
	if got := errs(res); !reflect.DeepEqual(got, want) {
		t.Fatalf("errors %q\nwant %q", got, want)
	}
	if got := fmt.Sprint(res[len(res)-1].Values); got != "[[aézz x+y 2 aezz]]" {
		t.Errorf("schema_uses read in the entry: %s", got)
	}
	if got := read(t, db, "SELECT v FROM t WHERE k = 'pos'"); fmt.Sprint(got) != fmt.Sprintf("[[%d]]", wantPos) {
		t.Errorf("instr: %v, want %d", got, wantPos)
	}
	if got := read(t, db, "SELECT v FROM t WHERE k = 'big'"); fmt.Sprint(got) != fmt.Sprintf("[[%d]]", naiveInstr(hay, bigNeedle)) {
		t.Errorf("instr of a 200 KB needle: %v, want %d", got, naiveInstr(hay, bigNeedle))
	}
	if got := read(t, db, "SELECT v FROM t WHERE k = 'blob'"); fmt.Sprint(got) != fmt.Sprintf("[[%d]]", bytes.Index([]byte(hay), []byte("ab"))+1) {
		t.Errorf("instr of blobs: %v", got)
	}
	if got := read(t, db, "SELECT v FROM t WHERE k = 'none'"); fmt.Sprint(got) != "[[0]]" {
		t.Errorf("instr without a match: %v", got)
	}
	if got := read(t, db, "SELECT length(CAST(v AS BLOB)), typeof(v) FROM t WHERE k = 'rep'"); len(got) != 1 {
		t.Fatalf("rep: %v", got)
	} else if fmt.Sprint(got[0][:2]) != fmt.Sprintf("[%d text]", len(wantRep)) {
		t.Errorf("replace: %v, want %d bytes of text", got[0][:2], len(wantRep))
	}
	if got := read(t, db, "SELECT substr(v, -3), substr(v, 999, 3) FROM t WHERE k = 'rep'"); fmt.Sprint(got) != fmt.Sprintf("[[%s %s]]", wantRep[len(wantRep)-3:], string([]rune(wantRep)[998:1001])) {
		t.Errorf("replace: ends %v", got)
	}
	if got := read(t, db, "SELECT x FROM log"); fmt.Sprint(got) != "[[aé33]]" {
		t.Errorf("trigger: %v", got)
	}
}
