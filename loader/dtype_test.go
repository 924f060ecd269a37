package loader

import (
	"math"
	"math/rand/v2"
	"testing"
)

// f16Value is the exact value of a non-negative, non-NaN binary16 encoding computed
// from the definition; 0x7C00 (Inf) counts as 2^16, the next step after the largest
// finite value, which is how round-to-nearest treats overflow.
func f16Value(h uint16) float64 {
	e, m := int(h>>10), float64(h&0x3FF)
	if e == 0 {
		return math.Ldexp(m, -24)
	}
	return math.Ldexp(1+m/1024, e-15)
}

// refFloat32ToF16 rounds a finite x to binary16 by searching the ordered encodings:
// the nearest wins, ties go to the even encoding.
func refFloat32ToF16(x float32) uint16 {
	sign := uint16(0)
	v := float64(x)
	if math.Signbit(v) {
		sign, v = 0x8000, -v
	}
	lo, hi := uint16(0), uint16(0x7C00) // f16Value(lo) <= v < f16Value(hi) unless v >= 2^16
	if v >= f16Value(hi) {
		return sign | 0x7C00
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if f16Value(mid) <= v {
			lo = mid
		} else {
			hi = mid
		}
	}
	dlo, dhi := v-f16Value(lo), f16Value(hi)-v
	if dlo < dhi || dlo == dhi && lo%2 == 0 {
		return sign | lo
	}
	return sign | hi
}

func TestF16ToFloat32AllValues(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		got := F16ToFloat32(h)
		exp, man := h>>10&0x1F, h&0x3FF
		switch {
		case exp == 0x1F && man != 0:
			if got == got {
				t.Fatalf("F16ToFloat32(%#04x) = %v, want NaN", h, got)
			}
			continue
		case exp == 0x1F:
			if !math.IsInf(float64(got), 0) {
				t.Fatalf("F16ToFloat32(%#04x) = %v, want Inf", h, got)
			}
		default:
			want := f16Value(h & 0x7FFF)
			if h&0x8000 != 0 {
				want = -want
			}
			if float64(got) != want || math.Signbit(float64(got)) != (h&0x8000 != 0) {
				t.Fatalf("F16ToFloat32(%#04x) = %v, want %v", h, got, want)
			}
		}
		// Every non-NaN value survives the round trip bit for bit.
		if back := Float32ToF16(got); back != h {
			t.Fatalf("Float32ToF16(F16ToFloat32(%#04x)) = %#04x", h, back)
		}
	}
}

func TestFloat32ToF16(t *testing.T) {
	cases := []struct {
		in   float32
		want uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3C00},
		{-2, 0xC000},
		{65504, 0x7BFF},                       // largest finite
		{65519, 0x7BFF},                       // just below the halfway point to 2^16
		{65520, 0x7C00},                       // halfway, ties to even: Inf
		{1e10, 0x7C00},                        // overflow
		{float32(math.Ldexp(1, -24)), 0x0001}, // smallest subnormal
		{float32(math.Ldexp(1, -25)), 0x0000}, // half of it: ties to even (0)
		{float32(math.Ldexp(3, -26)), 0x0001}, // 0.75 of it rounds up
		{float32(math.Ldexp(3, -25)), 0x0002}, // 1.5 units: ties to even (2)
		{float32(math.Ldexp(1, -14)), 0x0400}, // smallest normal
		{1 + 1.0/2048, 0x3C00},                // halfway between 1 and next: even (1)
		{1 + 3.0/2048, 0x3C02},                // halfway between odd and even: up
		{float32(math.Inf(1)), 0x7C00},
		{float32(math.Inf(-1)), 0xFC00},
		{1e-30, 0x0000}, // far below the subnormals
	}
	for _, c := range cases {
		if got := Float32ToF16(c.in); got != c.want {
			t.Errorf("Float32ToF16(%g) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if h := Float32ToF16(float32(math.NaN())); h&0x7C00 != 0x7C00 || h&0x3FF == 0 {
		t.Errorf("Float32ToF16(NaN) = %#04x, not a NaN", h)
	}
	// A float32 NaN whose payload sits only in the low bits must stay NaN.
	if h := Float32ToF16(math.Float32frombits(0x7F800001)); h&0x3FF == 0 {
		t.Errorf("Float32ToF16(low-payload NaN) = %#04x, not a NaN", h)
	}
	// Random bit patterns across the whole range, against the search reference.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		x := math.Float32frombits(rng.Uint32())
		if x != x {
			continue
		}
		if got, want := Float32ToF16(x), refFloat32ToF16(x); got != want {
			t.Fatalf("Float32ToF16(%g [%#08x]) = %#04x, want %#04x", x, math.Float32bits(x), got, want)
		}
	}
	// And values concentrated in the binary16 range, where rounding matters most.
	for i := 0; i < 200000; i++ {
		x := float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(48)-30))
		if got, want := Float32ToF16(x), refFloat32ToF16(x); got != want {
			t.Fatalf("Float32ToF16(%g) = %#04x, want %#04x", x, got, want)
		}
	}
}

// refFloat32ToBF16 rounds a finite x to bfloat16 by comparing the two neighbouring
// bf16 values in float64 arithmetic.
func refFloat32ToBF16(x float32) uint16 {
	b := math.Float32bits(x)
	lo := uint16(b >> 16) // truncation: toward zero
	hi := lo + 1          // next magnitude away from zero (may be Inf)
	vlo := math.Abs(float64(BF16ToFloat32(lo)))
	vhi := math.Abs(float64(math.Float32frombits(uint32(hi) << 16)))
	if hi&0x7FFF == 0x7F80 {
		vhi = math.Ldexp(1, 128) // Inf as the next step after the largest finite value
	}
	v := math.Abs(float64(x))
	if dlo, dhi := v-vlo, vhi-v; dlo < dhi || dlo == dhi && lo%2 == 0 {
		return lo
	}
	return hi
}

func TestBF16(t *testing.T) {
	cases := []struct {
		in   uint32 // float32 bits
		want uint16
	}{
		{0x3F800000, 0x3F80}, // 1
		{0x3F808000, 0x3F80}, // halfway, even stays
		{0x3F818000, 0x3F82}, // halfway, odd rounds up
		{0x3F808001, 0x3F81}, // just above halfway
		{0x3F807FFF, 0x3F80}, // just below halfway
		{0x7F7FFFFF, 0x7F80}, // max float32 rounds to Inf
		{0xFF800000, 0xFF80}, // -Inf
		{0x80000000, 0x8000}, // -0
		{0x00000001, 0x0000}, // tiny subnormal
	}
	for _, c := range cases {
		if got := Float32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("Float32ToBF16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	for _, nan := range []uint32{0x7FC00000, 0x7F800001, 0xFF800001} {
		if h := Float32ToBF16(math.Float32frombits(nan)); h&0x7F80 != 0x7F80 || h&0x7F == 0 {
			t.Errorf("Float32ToBF16(NaN %#08x) = %#04x, not a NaN", nan, h)
		}
	}
	// Exact widening, and every non-NaN bf16 round-trips.
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := BF16ToFloat32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("BF16ToFloat32(%#04x) = %#08x", h, math.Float32bits(f))
		}
		if f == f && Float32ToBF16(f) != h {
			t.Fatalf("Float32ToBF16(BF16ToFloat32(%#04x)) = %#04x", h, Float32ToBF16(f))
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200000; i++ {
		x := math.Float32frombits(rng.Uint32())
		if x != x {
			continue
		}
		if got, want := Float32ToBF16(x), refFloat32ToBF16(x); got != want {
			t.Fatalf("Float32ToBF16(%g [%#08x]) = %#04x, want %#04x", x, math.Float32bits(x), got, want)
		}
	}
}
