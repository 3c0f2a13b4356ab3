package apply

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/nqlite/nqlite/service/api"
)

// archEntries is an apply-only workload of floating point: every math
// function on inputs with their exact bits (as parameters), text to REAL
// conversions, REAL to text (printf, CAST), sum(), avg(), total() and
// date arithmetic, including inputs for which musl's ln(), log2() and
// log(B, X) give another last bit on arm64 than on amd64.
func archEntries() []Msg {
	r := rand.New(rand.NewPCG(3, 5))
	var msgs []Msg
	add := func(sts ...api.Statement) {
		e := &Entry{Node: "n1", Token: "t", Time: 1700000000000 + int64(len(msgs)), Seed: int64(len(msgs)) + 1, Statements: sts}
		msgs = append(msgs, Msg{Seq: uint64(len(msgs) + 1), Data: e.Encode()})
	}
	add(api.Statement{SQL: "CREATE TABLE f(id INTEGER PRIMARY KEY, fn TEXT, x REAL, y)"},
		api.Statement{SQL: "CREATE TABLE s(id INTEGER PRIMARY KEY, t TEXT, v REAL, back TEXT, p TEXT)"})
	fns := []string{"ln(?)", "log(?)", "log10(?)", "log2(?)", "log(3.7, ?)", "pow(?, 1.37)", "pow(1.0001, ?)", "power(?, -0.5)",
		"exp(? / 1000)", "sqrt(?)", "sin(?)", "cos(?)", "tan(?)", "asin(1 / (? + 1))", "acos(1 / (? + 1))", "atan(?)",
		"atan2(?, 3.1)", "sinh(? / 1000)", "cosh(? / 1000)", "tanh(?)", "acosh(? + 1)", "asinh(?)", "atanh(1 / (? + 1.5))",
		"mod(?, 7.3)", "degrees(?)", "radians(?)", "round(?, 3)", "ceil(?)", "floor(?)", "trunc(?)", "? * 1.1 + 0.3",
		"? / 3.0 - 1e-7", "julianday(2451545.0 + ?)", "printf('%.17g %!.20e %f', ?, ?, ?)", "CAST(? AS TEXT)"}
	known := map[string][]uint64{
		"ln(?)":       {0x401c9c747aa5ffb7},
		"log2(?)":     {0x3fe4add58fb5b00e},
		"log(3.7, ?)": {0x3feb245bbe6b8de2},
	}
	for _, fn := range fns {
		var sts []api.Statement
		for _, bits := range known[fn] {
			x := math.Float64frombits(bits)
			sts = append(sts, api.Statement{SQL: "INSERT INTO f(fn, x, y) VALUES(?, ?, " + fn + ")", Params: []any{fn, x, x, x, x}[:2+countQ(fn)]})
		}
		for i := 0; i < 800; i++ {
			x := r.Float64() * math.Pow(10, float64(r.IntN(8)))
			params := []any{fn, x}
			for k := 0; k < countQ(fn); k++ {
				params = append(params, x)
			}
			sts = append(sts, api.Statement{SQL: "INSERT INTO f(fn, x, y) VALUES(?, ?, " + fn + ")", Params: params})
		}
		add(sts...)
	}
	var sts []api.Statement
	for i := 0; i < 6000; i++ {
		t := fmt.Sprintf("%d.%de%d", r.Int64N(1e18), r.Int64N(1e18), r.IntN(600)-300)
		if i%3 == 0 {
			t = strconv.FormatFloat(r.NormFloat64()*math.Pow(10, float64(r.IntN(40)-20)), 'g', -1, 64)
		}
		sts = append(sts, api.Statement{SQL: "INSERT INTO s(t, v, back, p) VALUES(?1, ?1, CAST(CAST(?1 AS REAL) AS TEXT), printf('%.15g|%!.17g', CAST(?1 AS REAL), CAST(?1 AS REAL)))", Params: []any{t}})
	}
	add(sts...)
	add(api.Statement{SQL: "INSERT INTO f(fn, y) SELECT 'sum', sum(y) FROM f WHERE typeof(y) = 'real'"},
		api.Statement{SQL: "INSERT INTO f(fn, y) SELECT 'avg', avg(v) FROM s"},
		api.Statement{SQL: "INSERT INTO f(fn, y) SELECT 'total', total(x * 1.000001) FROM f"},
		api.Statement{SQL: "INSERT INTO f(fn, y) SELECT 'date', strftime('%Y-%m-%d %H:%M:%f', julianday('2024-02-29 12:34:56.789', '+' || id || ' seconds') + x / 1e6) FROM f WHERE id % 97 = 0"})
	return msgs
}

func countQ(s string) int {
	n := 0
	for _, c := range s {
		if c == '?' {
			n++
		}
	}
	return n
}

// TestArchWorkload applies archEntries to the file $NQLITE_ARCH_OUT: the
// part of TestArch_Arm64 that runs under qemu.
func TestArchWorkload(t *testing.T) {
	out := os.Getenv("NQLITE_ARCH_OUT")
	if out == "" {
		t.Skip("helper of TestArch_Arm64: runs when NQLITE_ARCH_OUT names the file to write")
	}
	db := openDB(t, out)
	if err := db.ApplyBatch(context.Background(), archEntries()); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestArch_Arm64 builds this package for arm64, applies archEntries under
// qemu-user and here, and requires the same database bytes: floating point
// gives the same bits on both architectures (libm.go, DESIGN.md).
func TestArch_Arm64(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips building for arm64")
	}
	if runtime.GOARCH == "arm64" {
		t.Skip("already on arm64: this test compares another architecture with arm64")
	}
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		if qemu, err = exec.LookPath("qemu-aarch64"); err != nil {
			t.Skip("qemu-user is not installed (Debian: apt-get install qemu-user-static)")
		}
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	dir := t.TempDir()
	bin := filepath.Join(dir, "apply.arm64.test")
	build := exec.Command(goTool, "test", "-c", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOARCH=arm64", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build for arm64: %v\n%s", err, out)
	}
	armFile := filepath.Join(dir, "arm64.sqlite")
	run := exec.Command(qemu, bin, "-test.run", "^TestArchWorkload$", "-test.count=1")
	run.Env = append(os.Environ(), "NQLITE_ARCH_OUT="+armFile)
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("run under %s: %v\n%s", qemu, err, out)
	}
	here := filepath.Join(dir, runtime.GOARCH+".sqlite")
	db := openDB(t, here)
	if err := db.ApplyBatch(context.Background(), archEntries()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	a, b := readFileMasked(t, here), readFileMasked(t, armFile)
	if string(a) == string(b) {
		return
	}
	// Say which values differ.
	arm := openDB(t, armFile)
	mine := openDB(t, here)
	for _, q := range []string{"SELECT id, fn, x, y FROM f ORDER BY id", "SELECT id, t, v, back, p FROM s ORDER BY id"} {
		ra, rb := read(t, mine, q), read(t, arm, q)
		n := 0
		for i := range ra {
			if i < len(rb) && fmt.Sprint(ra[i]) != fmt.Sprint(rb[i]) || fmt.Sprintf("%#v", ra[i]) != fmt.Sprintf("%#v", rb[i]) {
				if n < 10 {
					t.Errorf("%s: %v here, %v on arm64", runtime.GOARCH, ra[i], rb[i])
				}
				n++
			}
		}
		if n > 0 {
			t.Errorf("%s: %d rows differ", q, n)
		}
	}
	t.Fatalf("the database files differ between %s and arm64", runtime.GOARCH)
}
