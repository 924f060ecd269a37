package loader

import (
	"encoding/binary"
	"fmt"
	"math"
)

// GGML's "k-quants" Q4_K and Q6_K, as llama.cpp lays them out (ggml-common.h's block_q4_K
// and block_q6_K; dequantize_row_q4_K and _q6_K in ggml-quants.c define the values).
// Both group a row into super-blocks of 256 values (kBlock); a row's length must be a
// multiple of 256.
//
// Q4_K, 144 bytes per super-block, 4.5 bits per weight:
//
//	d    float16   scale of the sub-block scales
//	dmin float16   scale of the sub-block minimums
//	scales [12]    8 sub-blocks of 32 values, each a 6-bit scale sc and a 6-bit minimum m:
//	               for j < 4, sc = b[j] & 63 and m = b[j+4] & 63; for j >= 4,
//	               sc = b[j+4]&15 | (b[j-4]>>6)<<4 and m = b[j+4]>>4 | (b[j]>>6)<<4
//	qs [128]       4-bit quants q: the 64 values 64c..64c+63 share bytes qs[32c..32c+31],
//	               value 64c+l in the low nibble of qs[32c+l], value 64c+32+l in its high
//	value = d*sc*q - dmin*m, with sc, m those of the value's sub-block (32 values).
//
// Q6_K, 210 bytes per super-block, 6.5625 bits per weight:
//
//	ql [128]       low 4 bits of the quants
//	qh [64]        high 2 bits of the quants
//	scales [16]    int8 scale of each sub-block of 16 values
//	d float16      scale of the scales
//	value = d*scales[i/16]*(q-32) for q in 0..63; in each half h (128 values) of the
//	super-block, for l < 32, with L = ql[64h:], H = qh[32h:]:
//	value 128h+l    has q = L[l]&15    | (H[l]>>0&3)<<4
//	value 128h+l+32 has q = L[l+32]&15 | (H[l]>>2&3)<<4
//	value 128h+l+64 has q = L[l]>>4    | (H[l]>>4&3)<<4
//	value 128h+l+96 has q = L[l+32]>>4 | (H[l]>>6&3)<<4
const (
	kBlock     = 256
	q4KBytes   = 2 + 2 + 12 + kBlock/2
	q6KBytes   = kBlock/2 + kBlock/4 + kBlock/16 + 2
	q4KSubSize = 32
	q6KSubSize = 16
)

// q4KScaleMin is sub-block j's 6-bit scale and minimum from a Q4_K block's 12 scale bytes.
func q4KScaleMin(j int, b []byte) (sc, m uint8) {
	if j < 4 {
		return b[j] & 63, b[j+4] & 63
	}
	return b[j+4]&15 | (b[j-4]>>6)<<4, b[j+4]>>4 | (b[j]>>6)<<4
}

// dequantizeQ4K appends the values of Q4_K blocks to out.
func dequantizeQ4K(raw []byte, out []float32) []float32 {
	for b := 0; b+q4KBytes <= len(raw); b += q4KBytes {
		blk := raw[b : b+q4KBytes]
		d := F16ToFloat32(binary.LittleEndian.Uint16(blk))
		dmin := F16ToFloat32(binary.LittleEndian.Uint16(blk[2:]))
		scales, qs := blk[4:16], blk[16:]
		for c := range 4 { // 64 values: sub-blocks 2c (low nibbles) and 2c+1 (high)
			sc0, m0 := q4KScaleMin(2*c, scales)
			sc1, m1 := q4KScaleMin(2*c+1, scales)
			d0, o0 := d*float32(sc0), dmin*float32(m0)
			d1, o1 := d*float32(sc1), dmin*float32(m1)
			q := qs[32*c : 32*c+32]
			for _, v := range q {
				out = append(out, d0*float32(v&15)-o0)
			}
			for _, v := range q {
				out = append(out, d1*float32(v>>4)-o1)
			}
		}
	}
	return out
}

// dequantizeQ6K appends the values of Q6_K blocks to out.
func dequantizeQ6K(raw []byte, out []float32) []float32 {
	var vals [kBlock]float32
	for b := 0; b+q6KBytes <= len(raw); b += q6KBytes {
		blk := raw[b : b+q6KBytes]
		ql, qh, sc := blk[:128], blk[128:192], blk[192:208]
		d := F16ToFloat32(binary.LittleEndian.Uint16(blk[208:]))
		for h := range 2 {
			L, H := ql[64*h:], qh[32*h:]
			for l := range 32 {
				qs := [4]int{
					int(L[l]&15|(H[l]>>0&3)<<4) - 32,
					int(L[l+32]&15|(H[l]>>2&3)<<4) - 32,
					int(L[l]>>4|(H[l]>>4&3)<<4) - 32,
					int(L[l+32]>>4|(H[l]>>6&3)<<4) - 32,
				}
				for k, q := range qs {
					i := 128*h + l + 32*k
					vals[i] = d * float32(int8(sc[i/q6KSubSize])) * float32(q)
				}
			}
		}
		out = append(out, vals[:]...)
	}
	return out
}

// quantizeQ4K encodes x (a multiple of 256 values) as Q4_K blocks. It is a plain
// min/max quantizer (each sub-block's range split into 15 steps), not llama.cpp's
// search for the best scales: the blocks are valid Q4_K, a little less accurate than
// llama.cpp's.
func quantizeQ4K(x []float32) ([]byte, error) {
	if len(x)%kBlock != 0 {
		return nil, fmt.Errorf("Q4_K needs rows of whole %d-value blocks, got %d values", kBlock, len(x))
	}
	out := make([]byte, len(x)/kBlock*q4KBytes)
	for b := 0; b < len(x)/kBlock; b++ {
		vals, blk := x[b*kBlock:(b+1)*kBlock], out[b*q4KBytes:(b+1)*q4KBytes]
		var scale, minus, top [8]float32 // per sub-block: step, -min (>= 0) and max
		var maxScale, maxMinus float32
		for j := range 8 {
			lo, hi := float32(0), float32(0)
			for _, v := range vals[j*q4KSubSize : (j+1)*q4KSubSize] {
				if isBad(v) {
					return nil, fmt.Errorf("Q4_K: value %v", v)
				}
				lo, hi = min(lo, v), max(hi, v)
			}
			scale[j], minus[j], top[j] = (hi-lo)/15, -lo, hi
			maxScale, maxMinus = max(maxScale, scale[j]), max(maxMinus, minus[j])
		}
		d, dmin := F16ToFloat32(Float32ToF16(maxScale/63)), F16ToFloat32(Float32ToF16(maxMinus/63))
		binary.LittleEndian.PutUint16(blk, Float32ToF16(d))
		binary.LittleEndian.PutUint16(blk[2:], Float32ToF16(dmin))
		var sc, m [8]uint8
		for j := range 8 {
			// The step spans the range from the rounded offset to the maximum.
			m[j] = round6(minus[j], dmin)
			sc[j] = round6((top[j]+dmin*float32(m[j]))/15, d)
		}
		scales := blk[4:16]
		for j := range 4 {
			scales[j] = sc[j] | (sc[j+4]>>4)<<6
			scales[j+4] = m[j] | (m[j+4]>>4)<<6
			scales[j+8] = sc[j+4]&15 | (m[j+4]&15)<<4
		}
		qs := blk[16:]
		for j := range 8 {
			step, off := d*float32(sc[j]), dmin*float32(m[j])
			for l, v := range vals[j*q4KSubSize : (j+1)*q4KSubSize] {
				q := uint8(0)
				if step > 0 {
					q = uint8(max(0, min(15, math.Round(float64((v+off)/step)))))
				}
				c, hi := j/2, j%2
				qs[32*c+l] |= q << (4 * hi)
			}
		}
	}
	return out, nil
}

// quantizeQ6K encodes x (a multiple of 256 values) as Q6_K blocks: each 16-value
// sub-block's scale is -v/32 for its value v of largest magnitude (so v is q = -32, the
// end of the range that has no positive twin), stored as an int8 multiple of d.
func quantizeQ6K(x []float32) ([]byte, error) {
	if len(x)%kBlock != 0 {
		return nil, fmt.Errorf("Q6_K needs rows of whole %d-value blocks, got %d values", kBlock, len(x))
	}
	out := make([]byte, len(x)/kBlock*q6KBytes)
	for b := 0; b < len(x)/kBlock; b++ {
		vals, blk := x[b*kBlock:(b+1)*kBlock], out[b*q6KBytes:(b+1)*q6KBytes]
		var scale [16]float32
		var maxScale float32
		for j := range 16 {
			for _, v := range vals[j*q6KSubSize : (j+1)*q6KSubSize] {
				if isBad(v) {
					return nil, fmt.Errorf("Q6_K: value %v", v)
				}
				if math.Abs(float64(v)) > math.Abs(float64(scale[j]*32)) {
					scale[j] = -v / 32
				}
			}
			maxScale = max(maxScale, float32(math.Abs(float64(scale[j]))))
		}
		d := F16ToFloat32(Float32ToF16(maxScale / 127))
		binary.LittleEndian.PutUint16(blk[208:], Float32ToF16(d))
		var q [kBlock]uint8
		for j := range 16 {
			s := int8(0)
			if d > 0 {
				// Rounded away from zero: the step is never below the sub-block's own, so
				// its largest value does not clip.
				r := float64(scale[j] / d)
				s = int8(max(-127, min(127, math.Copysign(math.Ceil(math.Abs(r)), r))))
			}
			blk[192+j] = byte(s)
			step := d * float32(s)
			for l, v := range vals[j*q6KSubSize : (j+1)*q6KSubSize] {
				qv := 0.0
				if step != 0 {
					qv = max(-32, min(31, math.Round(float64(v/step))))
				}
				q[j*q6KSubSize+l] = uint8(int(qv) + 32)
			}
		}
		ql, qh := blk[:128], blk[128:192]
		for h := range 2 {
			for l := range 32 {
				q1, q2, q3, q4 := q[128*h+l], q[128*h+l+32], q[128*h+l+64], q[128*h+l+96]
				ql[64*h+l] = q1&15 | (q3&15)<<4
				ql[64*h+l+32] = q2&15 | (q4&15)<<4
				qh[32*h+l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
			}
		}
	}
	return out, nil
}

// round6 is x/d rounded to 0..63 (0 when d is 0).
func round6(x, d float32) uint8 {
	if d == 0 {
		return 0
	}
	return uint8(max(0, min(63, math.Round(float64(x/d)))))
}

func isBad(v float32) bool { return math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) }
