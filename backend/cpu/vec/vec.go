// Package vec holds the CPU backend's vector kernels: dot products, matrix-vector and
// blocked matrix-matrix products of float32 activations with float32, bfloat16 or int8
// (package quant's layout) weights, multi-threaded. On amd64 with AVX2 and FMA (and
// AVX-512 for the matrix-matrix tile) the inner loops are Go assembly; elsewhere they are
// the pure-Go loops in this file, which are also the reference the assembly is tested
// against.
package vec

import (
	"math"

	"github.com/lukv/lukv/quant"
)

// kernelSet is one implementation of the inner loops.
type kernelSet struct {
	name string
	// dotF32, dotBF16: the sum over len(a), a multiple of 8 (the wrappers add the rest).
	dotF32  func(a, b []float32) float32
	dotBF16 func(x []float32, w []uint16) float32
	// dotInt8: the sum over whole groups of quant.GroupSize weights.
	dotInt8 func(x []float32, q []int8, scales []float32) float32
	axpy    func(alpha float32, x, y []float32)
	// dotRows, addWeightedRows: see DotRows and AddWeightedRows.
	dotRows         func(out, q, m []float32)
	addWeightedRows func(out, w, m []float32)
	// expSub: see ExpSub; over len(x), a multiple of 8.
	expSub func(x []float32, m float32) float32
	// tile computes one mr x nr block of a product from packed panels (gemm.go).
	tile   func(kn int, px, pw, c []float32, ldc, acc int)
	mr, nr int
}

// sets lists the implementations this CPU can run, the pure-Go one first and the
// fastest last (vec_amd64.go appends); ks is the one in use.
var (
	sets = []*kernelSet{{name: "go", dotF32: dotF32Go, dotBF16: dotBF16Go, dotInt8: dotInt8Go, axpy: axpyGo, dotRows: dotRowsGo, addWeightedRows: addWeightedRowsGo, expSub: expSubGo, tile: tileGo, mr: 6, nr: 16}}
	ks   = sets[0]
)

// Kernel names the kernels in use ("avx512", "avx2" or "go"), for benchmark reports.
func Kernel() string { return ks.name }

// DotF32 returns sum(a[i] * b[i]) over len(a) elements (b at least as long).
func DotF32(a, b []float32) float32 {
	n := len(a)
	b = b[:n]
	m := n &^ 7
	s := ks.dotF32(a[:m], b[:m])
	for i := m; i < n; i++ {
		s += a[i] * b[i]
	}
	return s
}

// DotBF16 returns sum(x[i] * w[i]) with w holding bfloat16 bit patterns. It sums in the
// same order as DotF32, so a bf16 matrix and its float32 widening give the same bits.
func DotBF16(x []float32, w []uint16) float32 {
	n := len(x)
	w = w[:n]
	m := n &^ 7
	s := ks.dotBF16(x[:m], w[:m])
	for i := m; i < n; i++ {
		s += x[i] * bf16(w[i])
	}
	return s
}

// DotInt8 returns sum(x[i] * q[i] * scales[i/quant.GroupSize]); len(x) must be a multiple
// of quant.GroupSize (quant.Quantize guarantees it for every row).
func DotInt8(x []float32, q []int8, scales []float32) float32 {
	g := len(x) / quant.GroupSize
	return ks.dotInt8(x[:g*quant.GroupSize], q[:g*quant.GroupSize], scales[:g])
}

// Axpy adds alpha * x to y (len(x) elements).
func Axpy(alpha float32, x, y []float32) {
	n := len(x)
	y = y[:n]
	m := n &^ 7
	ks.axpy(alpha, x[:m], y[:m])
	for i := m; i < n; i++ {
		y[i] += alpha * x[i]
	}
}

// DotRows sets out[j] = q . m[j*d:(j+1)*d] for j < len(out), d = len(q) (attention's
// scores of one query against a run of keys).
func DotRows(out, q, m []float32) {
	_ = m[:len(out)*len(q)]
	ks.dotRows(out, q, m)
}

// AddWeightedRows adds sum over j < len(w) of w[j] * m[j*d:(j+1)*d] to out, d = len(out)
// (attention's probability-weighted sum of a run of values). Each element of out gets the
// rows in order, so splitting the rows into runs does not change the result.
func AddWeightedRows(out, w, m []float32) {
	_ = m[:len(w)*len(out)]
	ks.addWeightedRows(out, w, m)
}

// ExpSub sets x[i] = exp(x[i] - m) and returns their sum; every x[i] must be at most m
// (softmax after subtracting the maximum). The assembly's exp is within a few float32 ulps
// of math.Exp; results below 1e-37 may be flushed towards 0.
func ExpSub(x []float32, m float32) float32 {
	n := len(x) &^ 7
	s := ks.expSub(x[:n], m)
	return s + expSubGo(x[n:], m)
}

func bf16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// The pure-Go kernels. The dot products keep four partial sums of eight lanes like the
// assembly, so both round alike (not bit for bit: the assembly fuses multiply and add).

func dotF32Go(a, b []float32) float32 {
	var acc [32]float32
	i := 0
	for ; i+32 <= len(a); i += 32 {
		for l := range 32 {
			acc[l] += a[i+l] * b[i+l]
		}
	}
	for ; i+8 <= len(a); i += 8 {
		for l := range 8 {
			acc[l] += a[i+l] * b[i+l]
		}
	}
	return reduce32(&acc)
}

func dotBF16Go(x []float32, w []uint16) float32 {
	var acc [32]float32
	i := 0
	for ; i+32 <= len(x); i += 32 {
		for l := range 32 {
			acc[l] += x[i+l] * bf16(w[i+l])
		}
	}
	for ; i+8 <= len(x); i += 8 {
		for l := range 8 {
			acc[l] += x[i+l] * bf16(w[i+l])
		}
	}
	return reduce32(&acc)
}

func reduce32(acc *[32]float32) float32 {
	var s float32
	for _, v := range acc {
		s += v
	}
	return s
}

func dotInt8Go(x []float32, q []int8, scales []float32) float32 {
	var s float32
	for g, sc := range scales {
		var gs float32
		for i := g * quant.GroupSize; i < (g+1)*quant.GroupSize; i++ {
			gs += x[i] * float32(q[i])
		}
		s += gs * sc
	}
	return s
}

func axpyGo(alpha float32, x, y []float32) {
	for i, v := range x {
		y[i] += alpha * v
	}
}

func dotRowsGo(out, q, m []float32) {
	d := len(q)
	for j := range out {
		var s float32
		for i, v := range m[j*d : (j+1)*d] {
			s += q[i] * v
		}
		out[j] = s
	}
}

func addWeightedRowsGo(out, w, m []float32) {
	d := len(out)
	for j, p := range w {
		for i, v := range m[j*d : (j+1)*d] {
			out[i] += p * v
		}
	}
}

func expSubGo(x []float32, m float32) float32 {
	var s float32
	for i, v := range x {
		e := float32(math.Exp(float64(v - m)))
		x[i] = e
		s += e
	}
	return s
}
