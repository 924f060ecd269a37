package vec

import "golang.org/x/sys/cpu"

// Assembly kernels (vec_amd64.s). n counts float32 elements (a multiple of 8), groups
// counts int8 groups of quant.GroupSize; ldc is the row stride of c in elements.

//go:noescape
func dotF32AVX2(a, b *float32, n int) float32

//go:noescape
func dotBF16AVX2(x *float32, w *uint16, n int) float32

//go:noescape
func dotF32AVX512(x, w *float32, n int) float32

//go:noescape
func dotBF16AVX512(x *float32, w *uint16, n int) float32

//go:noescape
func dotInt8AVX512(x *float32, q *int8, scales *float32, groups int) float32

//go:noescape
func dotInt8AVX2(x *float32, q *int8, scales *float32, groups int) float32

//go:noescape
func axpyAVX2(alpha float32, x, y *float32, n int)

//go:noescape
func dotRowsAVX2(q, m *float32, d, n int, out *float32)

//go:noescape
func dotRows8AVX2(q, m *float32, d, n int, out *float32)

//go:noescape
func addWeightedRowsAVX2(w, m *float32, d, n int, out *float32)

//go:noescape
func expSubAVX2(x *float32, n int, m float32) float32

//go:noescape
func tile6x16AVX2(kn int, px, pw, c *float32, ldc, acc int)

//go:noescape
func tile12x32BF16(kn int, px, pw *uint32, c *float32, ldc, acc int)

//go:noescape
func tile12x32AVX512(kn int, px, pw, c *float32, ldc, acc int)

func init() {
	if !cpu.X86.HasAVX2 || !cpu.X86.HasFMA {
		return
	}
	avx2 := &kernelSet{
		name: "avx2",
		dotF32: func(a, b []float32) float32 {
			if len(a) == 0 {
				return 0
			}
			return dotF32AVX2(&a[0], &b[0], len(a))
		},
		dotBF16: func(x []float32, w []uint16) float32 {
			if len(x) == 0 {
				return 0
			}
			return dotBF16AVX2(&x[0], &w[0], len(x))
		},
		dotInt8: func(x []float32, q []int8, scales []float32) float32 {
			if len(scales) == 0 {
				return 0
			}
			return dotInt8AVX2(&x[0], &q[0], &scales[0], len(scales))
		},
		axpy: func(alpha float32, x, y []float32) {
			if len(x) > 0 {
				axpyAVX2(alpha, &x[0], &y[0], len(x))
			}
		},
		dotRows: func(out, q, m []float32) {
			d := len(q)
			if d%8 != 0 || len(out) == 0 {
				dotRowsGo(out, q, m)
				return
			}
			_ = m[len(out)*d-1]
			n8 := len(out) &^ 7
			if n8 > 0 {
				dotRows8AVX2(&q[0], &m[0], d, n8, &out[0])
			}
			if n8 < len(out) {
				dotRowsAVX2(&q[0], &m[n8*d], d, len(out)-n8, &out[n8])
			}
		},
		addWeightedRows: func(out, w, m []float32) {
			d := len(out)
			if d%8 != 0 || len(w) == 0 {
				addWeightedRowsGo(out, w, m)
				return
			}
			_ = m[len(w)*d-1]
			addWeightedRowsAVX2(&w[0], &m[0], d, len(w), &out[0])
		},
		expSub: func(x []float32, m float32) float32 {
			if len(x) == 0 {
				return 0
			}
			return expSubAVX2(&x[0], len(x), m)
		},
		mr: 6, nr: 16,
		tile: func(kn int, px, pw, c []float32, ldc, acc int) {
			_ = c[5*ldc+15] // the tile's last element: bounds checked here, not in assembly
			_ = px[kn*6-1]
			_ = pw[kn*16-1]
			tile6x16AVX2(kn, &px[0], &pw[0], &c[0], ldc, acc)
		},
	}
	sets = append(sets, avx2)
	if cpu.X86.HasAVX512F {
		avx512 := *avx2
		avx512.name, avx512.mr, avx512.nr = "avx512", 12, 32
		avx512.dotF32 = func(a, b []float32) float32 {
			if len(a) == 0 {
				return 0
			}
			return dotF32AVX512(&a[0], &b[0], len(a))
		}
		avx512.dotInt8 = func(x []float32, q []int8, scales []float32) float32 {
			if len(scales) == 0 {
				return 0
			}
			return dotInt8AVX512(&x[0], &q[0], &scales[0], len(scales))
		}
		avx512.dotBF16 = func(x []float32, w []uint16) float32 {
			if len(x) == 0 {
				return 0
			}
			return dotBF16AVX512(&x[0], &w[0], len(x))
		}
		avx512.tile = func(kn int, px, pw, c []float32, ldc, acc int) {
			_ = c[11*ldc+31]
			_ = px[kn*12-1]
			_ = pw[kn*32-1]
			tile12x32AVX512(kn, &px[0], &pw[0], &c[0], ldc, acc)
		}
		sets = append(sets, &avx512)
	}
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512BF16 {
		bf16Tiler = &tiler[uint32]{mr: 12, nr: 32, units: pairUnits, packX: packXPairs, packW: packWPairs,
			tile: func(kn int, px, pw []uint32, c []float32, ldc, acc int) {
				_ = c[11*ldc+31]
				_ = px[kn*12-1]
				_ = pw[kn*32-1]
				tile12x32BF16(kn, &px[0], &pw[0], &c[0], ldc, acc)
			}}
	}
	ks = sets[len(sets)-1]
}
