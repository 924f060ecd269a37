package loader

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// Hand-made blocks decode to the values the layout (gguf_kquants.go) says.
func TestKQuantBlockLayout(t *testing.T) {
	q4 := make([]byte, q4KBytes)
	binary.LittleEndian.PutUint16(q4, Float32ToF16(1))       // d
	binary.LittleEndian.PutUint16(q4[2:], Float32ToF16(0.5)) // dmin
	sc := q4[4:16]
	sc[1] = 0x40 | 7   // sub-block 1: scale 7; top bits 01 are sub-block 5's scale bits 4-5
	sc[5] = 0x80 | 5   // sub-block 1: min 5; top bits 10 are sub-block 5's min bits 4-5
	sc[9] = 3 | 2<<4   // sub-block 5: scale low bits 3, min low bits 2: scale 19, min 34
	q4[16+1] = 0x50    // value 33 (sub-block 1, high nibble of qs[1]): q = 5
	q4[16+64+3] = 0xA0 // value 163 (sub-block 5, high nibble of qs[67]): q = 10
	v := dequantizeQ4K(q4, nil)
	if len(v) != kBlock || v[33] != 7*5-0.5*5 || v[163] != 19*10-0.5*34 || v[131] != 0 {
		t.Errorf("Q4_K: values 33, 163, 131 = %v, %v, %v; want 32.5, 173, 0", v[33], v[163], v[131])
	}

	q6 := make([]byte, q6KBytes)
	binary.LittleEndian.PutUint16(q6[208:], Float32ToF16(0.5))
	q6[192+6] = byte(0xFD) // sub-block 6 (values 96..111): scale -3
	q6[192+10] = 2         // sub-block 10 (values 160..175): scale 2
	q6[36] = 0x70          // value 100 = 96+4: high nibble of ql[4+32] = 7
	q6[128+4] = 0x80       // and bits 6-7 of qh[4] = 2: q = 39
	q6[64+36] = 0x0F       // value 164 = 128+32+4: low nibble of ql[64+4+32] = 15
	q6[128+32+4] = 0x0C    // and bits 2-3 of qh[32+4] = 3: q = 63
	v = dequantizeQ6K(q6, nil)
	if len(v) != kBlock || v[100] != 0.5*-3*7 || v[164] != 0.5*2*31 {
		t.Errorf("Q6_K: values 100, 164 = %v, %v; want -10.5, 31", v[100], v[164])
	}
}

// Quantizing then dequantizing stays within a step of each sub-block's quantizer, and
// the relative RMS error is what 4 and 6 bits give.
func TestKQuantRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, 8*kBlock)
	for i := range x {
		x[i] = float32(rng.NormFloat64()) * 0.02 * float32(1+i/kBlock) // blocks of different ranges
		if i%97 == 0 {
			x[i] *= 6 // outliers
		}
	}
	for _, c := range []struct {
		typ     GGMLType
		sub     int
		step    func(sub []float32) float64 // the ideal step of a sub-block
		slack   func(block []byte) float64  // what the stored scales add to the error
		maxRMS  float64
		decode  func([]byte, []float32) []float32
		encoded int
	}{
		{GGMLQ4_K, q4KSubSize, func(s []float32) float64 {
			lo, hi := 0.0, 0.0
			for _, v := range s {
				lo, hi = math.Min(lo, float64(v)), math.Max(hi, float64(v))
			}
			return (hi - lo) / 15
		}, func([]byte) float64 { return 0 }, 0.12, dequantizeQ4K, q4KBytes},
		{GGMLQ6_K, q6KSubSize, func(s []float32) float64 {
			m := 0.0
			for _, v := range s {
				m = math.Max(m, math.Abs(float64(v)))
			}
			return m / 32
		}, func(b []byte) float64 { return float64(F16ToFloat32(binary.LittleEndian.Uint16(b[208:]))) / 2 },
			0.03, dequantizeQ6K, q6KBytes},
	} {
		enc, err := encodeGGML(x, c.typ, kBlock)
		if err != nil {
			t.Fatal(err)
		}
		if len(enc) != len(x)/kBlock*c.encoded {
			t.Fatalf("%v: %d bytes", c.typ, len(enc))
		}
		y := c.decode(enc, nil)
		var se, sx, worst float64
		for s := 0; s < len(x); s += c.sub {
			step := c.step(x[s : s+c.sub])
			slack := c.slack(enc[s/kBlock*c.encoded:])
			for i := s; i < s+c.sub; i++ {
				e := math.Abs(float64(y[i] - x[i]))
				se, sx = se+e*e, sx+float64(x[i])*float64(x[i])
				// Within one ideal step: Q4_K's 6-bit scales and the float16 super-block
				// scales move the grid by less than a step; Q6_K's 8-bit scales, rounded up
				// to a multiple of d, widen its step by less than d (half of it in error).
				worst = math.Max(worst, (e-slack)/step)
			}
		}
		rms := math.Sqrt(se / sx)
		t.Logf("%v: relative RMS error %.4f, worst error %.2f steps", c.typ, rms, worst)
		if worst > 1 || rms > c.maxRMS {
			t.Errorf("%v: worst error %.2f steps (want <= 1), relative RMS %.4f (want <= %v)", c.typ, worst, rms, c.maxRMS)
		}
	}
	if _, err := encodeGGML(x[:100], GGMLQ4_K, 100); err == nil {
		t.Error("Q4_K rows of 100 values: no error")
	}
}
