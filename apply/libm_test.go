package apply

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"unsafe"

	"modernc.org/libc"
)

// fmaArch reports whether modernc's libc takes musl's fused path here
// (__FP_FAST_FMA in its translation for this architecture).
func fmaArch() bool {
	switch runtime.GOARCH {
	case "arm64", "ppc64le", "s390x", "riscv64", "loong64":
		return true
	}
	return false
}

// TestLibm_Tables: the coefficient tables libm.go reads have the layout
// it assumes (on architectures without fma, libc's tables have one more
// table at the end, which libm.go does not use).
func TestLibm_Tables(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"log tab", unsafe.Offsetof(libc.X__log_data.Ftab), 144},
		{"log2 tab", unsafe.Offsetof(libc.X__log2_data.Ftab), 144},
		{"pow log tab", unsafe.Offsetof(libc.X__pow_log_data.Ftab), 72},
		{"exp tab", unsafe.Offsetof(libc.X__exp_data.Ftab), 112},
	} {
		if c.got != c.want {
			t.Errorf("%s at offset %d, want %d", c.name, c.got, c.want)
		}
	}
	if libc.X__log_data.Ftab[0].Finvc == 0 || libc.X__pow_log_data.Ftab[127].Flogctail == 0 && libc.X__pow_log_data.Ftab[127].Finvc == 0 {
		t.Fatal("tables look empty")
	}
}

// TestLibm_Native: libm.go's functions equal the platform's musl where
// musl takes the fused path (arm64...), and are within one ulp of it
// elsewhere (amd64: musl's path without fma, which differs in the last bit
// for about 1 input in 20,000).
func TestLibm_Native(t *testing.T) {
	tls := libc.NewTLS()
	defer tls.Close()
	r := rand.New(rand.NewPCG(7, 11))
	type fn struct {
		name   string
		ours   func(x, y float64) float64
		native func(x, y float64) float64
	}
	fns := []fn{
		{"log", func(x, _ float64) float64 { return muslLog(x) }, func(x, _ float64) float64 { return libc.Xlog(tls, x) }},
		{"log2", func(x, _ float64) float64 { return muslLog2(x) }, func(x, _ float64) float64 { return libc.Xlog2(tls, x) }},
		{"pow", muslPow, func(x, y float64) float64 { return libc.Xpow(tls, x, y) }},
		{"acosh", func(x, _ float64) float64 { return muslAcosh(tls, x+1) }, func(x, _ float64) float64 { return libc.Xacosh(tls, x+1) }},
		{"asinh", func(x, _ float64) float64 { return muslAsinh(tls, x) }, func(x, _ float64) float64 { return libc.Xasinh(tls, x) }},
	}
	specials := []float64{0, math.Copysign(0, -1), 1, -1, 2, 0.5, math.Inf(1), math.Inf(-1), math.NaN(), 5e-324, 2.2250738585072014e-308, math.MaxFloat64, 1 + 0x1p-52, 1 - 0x1p-53, 0.9375, 1.0646972656, 3, -3, 1e300, 1e-300, 0x1p-1074, 700, -745}
	for _, f := range fns {
		diff := 0
		n := 0
		check := func(x, y float64) {
			n++
			a, b := f.ours(x, y), f.native(x, y)
			if a == b || a != a && b != b {
				return
			}
			diff++
			ua, ub := math.Float64bits(a), math.Float64bits(b)
			if fmaArch() || (ua-ub != 1 && ub-ua != 1) {
				t.Errorf("%s(%v, %v) = %v (%#x), native %v (%#x)", f.name, x, y, a, ua, b, ub)
			}
		}
		for _, x := range specials {
			for _, y := range specials {
				check(x, y)
			}
		}
		for i := 0; i < 200000; i++ {
			x := math.Ldexp(r.Float64()+0.5, r.IntN(200)-100)
			y := (r.Float64() - 0.5) * 60
			if i%3 == 0 {
				x = -x
				y = math.Round(y)
			}
			check(x, y)
		}
		t.Logf("%s: %d of %d differ from %s's libc in the last bit", f.name, diff, n, runtime.GOARCH)
	}
}
