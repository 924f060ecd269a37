package vec

import "math"

// Products with bf16 weights can also run on bf16 dot-product instructions (AVX512-BF16's
// VDPBF16PS: two bf16 products added to a float32 per lane, twice the arithmetic of a
// float32 multiply-add), rounding the activations to bf16 first, as llama.cpp does for
// BF16 models. That rounding (relative 2^-9 per value) is the price, so it is an option.

// bf16Tiler is the bf16 pair tiler where the CPU has one (vec_amd64.go), else nil.
var bf16Tiler *tiler[uint32]

// HasBF16Dot reports whether MatMulRoundX has bf16 dot-product instructions to use.
func HasBF16Dot() bool { return bf16Tiler != nil }

// MatMulRoundX is MatMul, except that a product of at least gemvMinRows rows with bf16
// weights rounds x to bf16 and runs on bf16 dot products where the CPU has them.
func MatMulRoundX(out, x []float32, n int, w *Matrix, threads int) {
	if bf16Tiler == nil || w.BF16 == nil || n < gemvMinRows {
		MatMul(out, x, n, w, threads)
		return
	}
	if err := w.check(); err != nil {
		panic(err)
	}
	gemmWith(bf16Tiler, out, x, n, w, threads)
}

func pairUnits(K int) int { return (K + 1) / 2 }

// toBF16 rounds f to the nearest bf16, ties to even (NaN stays NaN).
func toBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// packXPairs writes rows of x, rounded to bf16, as pairs: dst[u*mr+i] holds x[i][2u] in
// its low half and x[i][2u+1] (0 past K) in its high half.
func packXPairs(dst []uint32, x []float32, rows, K int) {
	mr := len(dst) / pairUnits(K)
	for i := range rows {
		xr := x[i*K : (i+1)*K]
		for u := range K / 2 {
			dst[u*mr+i] = uint32(toBF16(xr[2*u])) | uint32(toBF16(xr[2*u+1]))<<16
		}
		if K%2 == 1 {
			dst[(K/2)*mr+i] = uint32(toBF16(xr[K-1]))
		}
	}
}

// packWPairs writes pairs [u0, u0+un) of bf16 row j of w into dst[u*nr].
func packWPairs(w *Matrix, dst []uint32, j, u0, un, nr int) {
	K := w.Cols
	row := w.BF16[j*K : (j+1)*K]
	for u := range un {
		k := 2 * (u0 + u)
		hi := uint32(0)
		if k+1 < K {
			hi = uint32(row[k+1])
		}
		dst[u*nr] = uint32(row[k]) | hi<<16
	}
}
