package apply

import (
	"math"

	"modernc.org/libc"
)

// modernc's SQLite calls modernc's libc for its math functions: musl,
// translated to Go once per architecture. musl's log, log2 and pow take a
// different path where the target has a fast fused multiply-add
// (__FP_FAST_FMA: arm64, ppc64le, s390x, riscv64) than where it has not
// (amd64, 386, arm), so ln(), log(B, X), log2(), pow(), power(), acosh()
// and asinh() can differ in the last bit between an amd64 node and an
// arm64 node (measured: 3 of 620,000 inputs; everything else SQLite
// computes, text to REAL, printf, sum(), the date functions and the other
// math functions, is bit for bit the same, see DESIGN.md).
//
// The functions below are musl's fused path, transcribed from modernc's
// arm64 translation, with every fused operation an explicit math.FMA (exact
// on every architecture) and every other product rounded by an explicit
// float64 conversion, which the Go spec says prevents fusion. They read
// musl's coefficient tables from libc, whose common part has the same
// layout on every architecture (TestLibm_Tables). nqlite registers them as
// ln, log (two arguments), log2, pow, power, acosh and asinh on its
// connections, so every node computes the same bits; on arm64 they are
// exactly what SQLite computes there.

// top16 and top12 return the top 16 and 12 bits of x's representation.
func top16(x float64) uint32 { return uint32(math.Float64bits(x) >> 48) }
func top12(x float64) uint32 { return uint32(math.Float64bits(x) >> 52) }

const (
	logTableBits    = 7
	log2TableBits   = 6
	powLogTableBits = 7
	expTableBits    = 7
	logOff          = 0x3fe6000000000000 // musl log.c, log2.c OFF
	powLogOff       = 0x3fe6955500000000 // musl pow.c OFF
	signBias        = 0x800 << expTableBits
)

var (
	log1Lo   = math.Float64bits(1 - 0x1p-4)
	log1Hi   = math.Float64bits(1 + 0x1.09p-4)
	log2Lo   = math.Float64bits(1 - 0x1.5b51p-5)
	log2Hi   = math.Float64bits(1 + 0x1.6ab2p-5)
	one64    = math.Float64bits(1)
	inf64    = math.Float64bits(math.Inf(1))
	expSmall = top12(0x1p-54)
	expBig   = top12(512)
	expHuge  = top12(1024)
)

func mathDivZero(neg bool) float64 {
	if neg {
		return math.Inf(-1)
	}
	return math.Inf(1)
}

func mathInvalid(x float64) float64 { return (x - x) / (x - x) }

func mathXflow(neg bool, y float64) float64 {
	if neg {
		return float64(-y * y)
	}
	return float64(y * y)
}

func mathOflow(sign uint32) float64 { return mathXflow(sign != 0, 0x1p769) }
func mathUflow(sign uint32) float64 { return mathXflow(sign != 0, 0x1p-767) }

// muslLog is musl's log(x) (log.c) with fma.
func muslLog(x float64) float64 {
	d := &libc.X__log_data
	ix := math.Float64bits(x)
	top := top16(x)
	if ix-log1Lo < log1Hi-log1Lo {
		// Close to 1.0.
		if ix == one64 {
			return 0
		}
		B := &d.Fpoly1
		r := x - 1
		r2 := float64(r * r)
		r3 := float64(r * r2)
		y := float64(r3 * (B[1] + float64(r*B[2]) + float64(r2*B[3]) + float64(r3*(B[4]+float64(r*B[5])+float64(r2*B[6])+float64(r3*(B[7]+float64(r*B[8])+float64(r2*B[9])+float64(r3*B[10])))))))
		w := float64(r * 0x1p27)
		rhi := r + w - w
		rlo := r - rhi
		w = float64(float64(rhi*rhi) * B[0])
		hi := r + w
		lo := r - hi + w
		lo += float64(float64(B[0]*rlo) * (rhi + r))
		y += lo
		y += hi
		return y
	}
	if top-0x0010 >= 0x7ff0-0x0010 {
		// x < 0x1p-1022 or inf or nan.
		if ix*2 == 0 {
			return mathDivZero(true)
		}
		if ix == inf64 {
			return x
		}
		if top&0x8000 != 0 || top&0x7ff0 == 0x7ff0 {
			return mathInvalid(x)
		}
		// Subnormal: normalize.
		ix = math.Float64bits(float64(x * 0x1p52))
		ix -= 52 << 52
	}
	tmp := ix - logOff
	i := int((tmp >> (52 - logTableBits)) % (1 << logTableBits))
	k := int32(int64(tmp) >> 52)
	iz := ix - tmp&(0xfff<<52)
	invc := d.Ftab[i].Finvc
	logc := d.Ftab[i].Flogc
	z := math.Float64frombits(iz)
	r := math.FMA(z, invc, -1)
	kd := float64(k)
	w := float64(kd*d.Fln2hi) + logc
	hi := w + r
	lo := w - hi + r + float64(kd*d.Fln2lo)
	A := &d.Fpoly
	r2 := float64(r * r)
	return lo + float64(r2*A[0]) + float64(float64(r*r2)*(A[1]+float64(r*A[2])+float64(r2*(A[3]+float64(r*A[4]))))) + hi
}

// muslLog2 is musl's log2(x) (log2.c) with fma.
func muslLog2(x float64) float64 {
	d := &libc.X__log2_data
	ix := math.Float64bits(x)
	top := top16(x)
	if ix-log2Lo < log2Hi-log2Lo {
		if ix == one64 {
			return 0
		}
		B := &d.Fpoly1
		r := x - 1
		hi := float64(r * d.Finvln2hi)
		lo := float64(r*d.Finvln2lo) + math.FMA(r, d.Finvln2hi, -hi)
		r2 := float64(r * r)
		r4 := float64(r2 * r2)
		p := float64(r2 * (B[0] + float64(r*B[1])))
		y := hi + p
		lo += hi - y + p
		lo += float64(r4 * (B[2] + float64(r*B[3]) + float64(r2*(B[4]+float64(r*B[5]))) + float64(r4*(B[6]+float64(r*B[7])+float64(r2*(B[8]+float64(r*B[9])))))))
		y += lo
		return y
	}
	if top-0x0010 >= 0x7ff0-0x0010 {
		if ix*2 == 0 {
			return mathDivZero(true)
		}
		if ix == inf64 {
			return x
		}
		if top&0x8000 != 0 || top&0x7ff0 == 0x7ff0 {
			return mathInvalid(x)
		}
		ix = math.Float64bits(float64(x * 0x1p52))
		ix -= 52 << 52
	}
	tmp := ix - logOff
	i := int((tmp >> (52 - log2TableBits)) % (1 << log2TableBits))
	k := int32(int64(tmp) >> 52)
	iz := ix - tmp&(0xfff<<52)
	invc := d.Ftab[i].Finvc
	logc := d.Ftab[i].Flogc
	z := math.Float64frombits(iz)
	kd := float64(k)
	r := math.FMA(z, invc, -1)
	t1 := float64(r * d.Finvln2hi)
	t2 := float64(r*d.Finvln2lo) + math.FMA(r, d.Finvln2hi, -t1)
	t3 := kd + logc
	hi := t3 + t1
	lo := t3 - hi + t1 + t2
	A := &d.Fpoly
	r2 := float64(r * r)
	r4 := float64(r2 * r2)
	p := A[0] + float64(r*A[1]) + float64(r2*(A[2]+float64(r*A[3]))) + float64(r4*(A[4]+float64(r*A[5])))
	return lo + float64(r2*p) + hi
}

// powLog is musl pow.c's log_inline: log(x) as hi + *tail.
func powLog(ix uint64, tail *float64) float64 {
	d := &libc.X__pow_log_data
	tmp := ix - powLogOff
	i := int((tmp >> (52 - powLogTableBits)) % (1 << powLogTableBits))
	k := int32(int64(tmp) >> 52)
	iz := ix - tmp&(0xfff<<52)
	z := math.Float64frombits(iz)
	kd := float64(k)
	invc := d.Ftab[i].Finvc
	logc := d.Ftab[i].Flogc
	logctail := d.Ftab[i].Flogctail
	r := math.FMA(z, invc, -1)
	t1 := float64(kd*d.Fln2hi) + logc
	t2 := t1 + r
	lo1 := float64(kd*d.Fln2lo) + logctail
	lo2 := t1 - t2 + r
	A := &d.Fpoly
	ar := float64(A[0] * r)
	ar2 := float64(r * ar)
	ar3 := float64(r * ar2)
	hi := t2 + ar2
	lo3 := math.FMA(ar, r, -ar2)
	lo4 := t2 - hi + ar2
	p := float64(ar3 * (A[1] + float64(r*A[2]) + float64(ar2*(A[3]+float64(r*A[4])+float64(ar2*(A[5]+float64(r*A[6])))))))
	lo := lo1 + lo2 + lo3 + lo4 + p
	y := hi + lo
	*tail = hi - y + lo
	return y
}

// powSpecial is musl pow.c's specialcase for exp_inline.
func powSpecial(tmp float64, sbits, ki uint64) float64 {
	if ki&0x80000000 == 0 {
		// k > 0: the exponent of scale might have overflowed by <= 460.
		sbits -= 1009 << 52
		scale := math.Float64frombits(sbits)
		return float64(0x1p1009 * (scale + float64(scale*tmp)))
	}
	// k < 0: care is needed in the subnormal range.
	sbits += 1022 << 52
	scale := math.Float64frombits(sbits)
	y := scale + float64(scale*tmp)
	if math.Abs(y) < 1 {
		one := 1.0
		if y < 0 {
			one = -1
		}
		lo := scale - y + float64(scale*tmp)
		hi := one + y
		lo = one - hi + y + lo
		y = hi + lo - one
		if y == 0 {
			y = math.Float64frombits(sbits & 0x8000000000000000)
		}
	}
	return float64(0x1p-1022 * y)
}

// powExp is musl pow.c's exp_inline: exp(x + xtail) with the sign in
// signBias.
func powExp(x, xtail float64, sbias uint32) float64 {
	d := &libc.X__exp_data
	abstop := top12(x) & 0x7ff
	if abstop-expSmall >= expBig-expSmall {
		if abstop-expSmall >= 0x80000000 {
			// Tiny x: avoid spurious underflow.
			one := 1 + x
			if sbias != 0 {
				return -one
			}
			return one
		}
		if abstop >= expHuge {
			if math.Float64bits(x)>>63 != 0 {
				return mathUflow(sbias)
			}
			return mathOflow(sbias)
		}
		abstop = 0 // large x: special-cased below
	}
	z := float64(d.Finvln2N * x)
	kd := z + d.Fshift
	ki := math.Float64bits(kd)
	kd -= d.Fshift
	r := x + float64(kd*d.Fnegln2hiN) + float64(kd*d.Fnegln2loN)
	r += xtail
	idx := 2 * (ki % (1 << expTableBits))
	top := (ki + uint64(sbias)) << (52 - expTableBits)
	tail := math.Float64frombits(d.Ftab[idx])
	sbits := d.Ftab[idx+1] + top
	C := &d.Fpoly
	r2 := float64(r * r)
	tmp := tail + r + float64(r2*(C[0]+float64(r*C[1]))) + float64(float64(r2*r2)*(C[2]+float64(r*C[3])))
	if abstop == 0 {
		return powSpecial(tmp, sbits, ki)
	}
	scale := math.Float64frombits(sbits)
	return scale + float64(scale*tmp)
}

// checkInt returns 0 if iy is not an integer, 1 if odd, 2 if even.
func checkInt(iy uint64) int {
	e := int(iy >> 52 & 0x7ff)
	if e < 0x3ff {
		return 0
	}
	if e > 0x3ff+52 {
		return 2
	}
	if iy&(1<<(0x3ff+52-e)-1) != 0 {
		return 0
	}
	if iy&(1<<(0x3ff+52-e)) != 0 {
		return 1
	}
	return 2
}

func zeroInfNaN(i uint64) bool { return 2*i-1 >= 2*inf64-1 }

// muslPow is musl's pow(x, y) (pow.c) with fma.
func muslPow(x, y float64) float64 {
	var sbias uint32
	ix := math.Float64bits(x)
	iy := math.Float64bits(y)
	topx := top12(x)
	topy := top12(y)
	if topx-0x001 >= 0x7ff-0x001 || (topy&0x7ff)-0x3be >= 0x43e-0x3be {
		if zeroInfNaN(iy) {
			if 2*iy == 0 {
				return 1
			}
			if ix == one64 {
				return 1
			}
			if 2*ix > 2*inf64 || 2*iy > 2*inf64 {
				return x + y
			}
			if 2*ix == 2*one64 {
				return 1
			}
			if (2*ix < 2*one64) == (iy>>63 == 0) {
				return 0 // |x|<1 && y==inf or |x|>1 && y==-inf
			}
			return float64(y * y)
		}
		if zeroInfNaN(ix) {
			x2 := float64(x * x)
			if ix>>63 != 0 && checkInt(iy) == 1 {
				x2 = -x2
			}
			if iy>>63 != 0 {
				return 1 / x2
			}
			return x2
		}
		// x and y are non-zero finite.
		if ix>>63 != 0 {
			yint := checkInt(iy)
			if yint == 0 {
				return mathInvalid(x)
			}
			if yint == 1 {
				sbias = signBias
			}
			ix &= 0x7fffffffffffffff
			topx &= 0x7ff
		}
		if (topy&0x7ff)-0x3be >= 0x43e-0x3be {
			if ix == one64 {
				return 1
			}
			if topy&0x7ff < 0x3be {
				// |y| < 2^-65: x^y ~= 1 + y*log(x).
				if ix > one64 {
					return 1 + y
				}
				return 1 - y
			}
			if (ix > one64) == (topy < 0x800) {
				return mathOflow(0)
			}
			return mathUflow(0)
		}
		if topx == 0 {
			// Subnormal x: normalize so the exponent becomes negative.
			ix = math.Float64bits(float64(x * 0x1p52))
			ix &= 0x7fffffffffffffff
			ix -= 52 << 52
		}
	}
	var lo float64
	hi := powLog(ix, &lo)
	ehi := float64(y * hi)
	elo := float64(y*lo) + math.FMA(y, hi, -ehi)
	return powExp(ehi, elo, sbias)
}

// muslAcosh is musl's acosh (acosh.c) over muslLog; tls serves musl's
// log1p and sqrt, which take the same path on every architecture.
func muslAcosh(tls *libc.TLS, x float64) float64 {
	e := uint32(math.Float64bits(x) >> 52 & 0x7ff)
	if e < 0x3ff+1 {
		// |x| < 2, up to 2ulp error in [1,1.125].
		return libc.Xlog1p(tls, x-1+libc.Xsqrt(tls, float64((x-1)*(x-1))+float64(2*(x-1))))
	}
	if e < 0x3ff+26 {
		return muslLog(float64(2*x) - 1/(x+libc.Xsqrt(tls, float64(x*x)-1)))
	}
	// |x| >= 0x1p26 or nan.
	return muslLog(x) + 0.693147180559945309417232121458176568
}

// muslAsinh is musl's asinh (asinh.c) over muslLog.
func muslAsinh(tls *libc.TLS, x float64) float64 {
	u := math.Float64bits(x)
	e := uint32(u >> 52 & 0x7ff)
	neg := u>>63 != 0
	x = math.Float64frombits(u &^ (1 << 63))
	switch {
	case e >= 0x3ff+26:
		// |x| >= 0x1p26 or inf or nan.
		x = muslLog(x) + 0.693147180559945309417232121458176568
	case e >= 0x3ff+1:
		// |x| >= 2.
		x = muslLog(float64(2*x) + 1/(libc.Xsqrt(tls, float64(x*x)+1)+x))
	case e >= 0x3ff-26:
		// |x| >= 0x1p-26, up to 1.6ulp error in [0.125,0.5].
		x = libc.Xlog1p(tls, x+float64(x*x)/(libc.Xsqrt(tls, float64(x*x)+1)+1))
	}
	if neg {
		return -x
	}
	return x
}
