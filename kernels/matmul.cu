// matmul.cu: out = x @ w^T with float32 activations and float32 / bfloat16 / float16
// weights, float32 accumulation.
//
//   x [n, K] float32, w [N, K] (Hugging Face [out, in] layout), out [n, N] float32:
//   out[i, o] = sum_k x[i, k] * float(w[o, k])
//
// Three kernels, picked by the host (backend/cuda/matmul.go):
//
// gemv_<dt>_n<NR> (decode, n <= NR <= 8, NR in 1, 2, 4, 8; rows of w and x 16-byte
//   aligned: K*elem % 16 == 0): a block of 256 threads computes GV_ROWS = 4 output
//   columns (rows of w) for all n rows of x. Thread t reads 16-byte chunks t, t+256,
//   t+512, ... of each of the block's 4 weight rows (so every warp load is 512
//   contiguous bytes), U chunks per row at once (U = 2 for NR <= 4, 1 for 8: 4*U
//   independent 16-byte loads in flight per thread; few registers, so that four blocks
//   fit a multiprocessor at NR = 1: ~128 KiB in flight), through the read-only path without
//   allocating in L1 (ld.global.nc.L1::no_allocate: the weights are read once, x stays
//   cached), and multiplies each weight into the NR rows of x (read through L1, reused
//   across the 4 weight rows in registers). Rows of x past n repeat row n-1 (their sums
//   are dropped), rows of w past N repeat row N-1 (not stored). The 4*NR partial sums
//   per thread are reduced across the warp by a reduce-scatter butterfly (4*NR - 1 +
//   5 - log2(4*NR) shuffles instead of 5 per value) and across the 8 warps through
//   shared memory, in a fixed order: results do not depend on timing.
//   Grouped launch: up to three matrices sharing x (q, k and v projections; gate and
//   up) in one grid: blocks [0, B0) take matrix 0, [B0, B0+B1) matrix 1, the rest
//   matrix 2, Bi = ceil(Ni / 4). Launch: block 256, grid B0 + B1 + B2.
//   Bound: memory, reading w once (N*K*elem bytes): the decode floor.
//
// matmul_gemv_<dt>: few rows, any alignment (the fallback of gemv_*). One warp per
//   output column o: lanes stride over w's row in 16-byte loads when every row starts
//   16-byte aligned, else one element at a time. Launch: block 256 (8 warps, 8
//   columns), grid ceil(N/8).
//
// matmul_tiled_<dt>: many rows (prefill). Classic shared-memory tiling: a block computes
//   a 64x64 tile of out, stepping over K 16 at a time; x's and w's tiles are staged in
//   shared memory k-major (w widened to float32 on the way), each of the 256 threads
//   accumulates a 4x4 patch. Edges are zero-padded on load and masked on store, so any
//   n, K, N work. Launch: block 256, grid (ceil(N/64), ceil(n/64)); 8.5 KiB shared.
//   Bound: float32 FMA throughput (CUDA cores; bf16 weights with Options.TensorCores
//   go to cuBLAS instead, backend/cuda/cublas.go).
#include <cuda_fp16.h>

#define DT_F32 0
#define DT_BF16 1
#define DT_F16 2

#define GEMV_MAX_ROWS 8
#define GEMV_WARPS 8

#define GV_THREADS 256
#define GV_WARPS (GV_THREADS / 32)
#define GV_ROWS 4

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16

template <int DT>
__device__ __forceinline__ float load_w(const void* w, long long i) {
	if (DT == DT_F32) return ((const float*)w)[i];
	const unsigned short u = ((const unsigned short*)w)[i];
	if (DT == DT_BF16) return __uint_as_float(((unsigned int)u) << 16);
	return __half2float(__ushort_as_half(u));
}

// unpack widens one 16-byte chunk of weights: 4 float32 or 8 16-bit values, in order.
template <int DT>
__device__ __forceinline__ void unpack(uint4 raw, float* v) {
	const unsigned int r[4] = {raw.x, raw.y, raw.z, raw.w};
	if (DT == DT_F32) {
#pragma unroll
		for (int q = 0; q < 4; q++) v[q] = __uint_as_float(r[q]);
	} else if (DT == DT_BF16) {
#pragma unroll
		for (int q = 0; q < 4; q++) {
			v[2 * q] = __uint_as_float(r[q] << 16);
			v[2 * q + 1] = __uint_as_float(r[q] & 0xffff0000u);
		}
	} else {
#pragma unroll
		for (int q = 0; q < 4; q++) {
			v[2 * q] = __half2float(__ushort_as_half((unsigned short)(r[q] & 0xffffu)));
			v[2 * q + 1] = __half2float(__ushort_as_half((unsigned short)(r[q] >> 16)));
		}
	}
}

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

template <int DT>
__device__ __forceinline__ void gemv(float* __restrict__ out, const float* __restrict__ x,
                                     const void* __restrict__ w, int n, int K, int N) {
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const int o = blockIdx.x * GEMV_WARPS + warp;
	if (o >= N) return;  // whole warp
	constexpr int ESZ = DT == DT_F32 ? 4 : 2;
	constexpr int PER = 16 / ESZ;  // weights per 16-byte chunk
	float acc[GEMV_MAX_ROWS];
#pragma unroll
	for (int i = 0; i < GEMV_MAX_ROWS; i++) acc[i] = 0.f;

	if (((long long)K * ESZ) % 16 == 0) {
		// Rows of w and of x start 16-byte aligned (buffers are 256-byte aligned and
		// K*4 is then a multiple of 16 too).
		const uint4* wrow = (const uint4*)((const char*)w + (long long)o * K * ESZ);
		const int chunks = K / PER;
		for (int c = lane; c < chunks; c += 32) {
			float wv[PER];
			unpack<DT>(wrow[c], wv);
			const long long k0 = (long long)c * PER;
#pragma unroll
			for (int i = 0; i < GEMV_MAX_ROWS; i++) {
				if (i < n) {
					const float4* xp = (const float4*)(x + (long long)i * K + k0);
#pragma unroll
					for (int q = 0; q < PER / 4; q++) {
						const float4 a = xp[q];
						acc[i] += a.x * wv[4 * q] + a.y * wv[4 * q + 1] + a.z * wv[4 * q + 2] + a.w * wv[4 * q + 3];
					}
				}
			}
		}
	} else {
		for (int k = lane; k < K; k += 32) {
			const float wv = load_w<DT>(w, (long long)o * K + k);
#pragma unroll
			for (int i = 0; i < GEMV_MAX_ROWS; i++)
				if (i < n) acc[i] += wv * x[(long long)i * K + k];
		}
	}
#pragma unroll
	for (int i = 0; i < GEMV_MAX_ROWS; i++) {
		if (i < n) {
			const float s = warp_sum(acc[i]);
			if (lane == 0) out[(long long)i * N + o] = s;
		}
	}
}

template <int DT>
__device__ __forceinline__ void tiled(float* __restrict__ out, const float* __restrict__ x,
                                      const void* __restrict__ w, int n, int K, int N) {
	__shared__ __align__(16) float As[TILE_K][TILE_M + 4];
	__shared__ __align__(16) float Bs[TILE_K][TILE_N + 4];
	const int tid = threadIdx.x;
	const int ty = tid / 16, tx = tid % 16;  // this thread's 4x4 patch: rows ty*4.., cols tx*4..
	const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
	float acc[4][4];
#pragma unroll
	for (int i = 0; i < 4; i++)
#pragma unroll
		for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

	for (int k0 = 0; k0 < K; k0 += TILE_K) {
		// 64 rows x 16 k of x and of w: 1024 values each, 4 per thread. Consecutive
		// threads read consecutive k of one row.
#pragma unroll
		for (int r = 0; r < 4; r++) {
			const int e = tid + r * 256;
			const int row = e / TILE_K, kk = e % TILE_K;
			const int gk = k0 + kk;
			const int gm = m0 + row, gn = n0 + row;
			As[kk][row] = (gm < n && gk < K) ? x[(long long)gm * K + gk] : 0.f;
			Bs[kk][row] = (gn < N && gk < K) ? load_w<DT>(w, (long long)gn * K + gk) : 0.f;
		}
		__syncthreads();
#pragma unroll
		for (int kk = 0; kk < TILE_K; kk++) {
			const float4 a = *(const float4*)&As[kk][ty * 4];
			const float4 b = *(const float4*)&Bs[kk][tx * 4];
			const float av[4] = {a.x, a.y, a.z, a.w};
			const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
			for (int i = 0; i < 4; i++)
#pragma unroll
				for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
		}
		__syncthreads();
	}
#pragma unroll
	for (int i = 0; i < 4; i++) {
		const int gm = m0 + ty * 4 + i;
		if (gm >= n) continue;
#pragma unroll
		for (int j = 0; j < 4; j++) {
			const int gn = n0 + tx * 4 + j;
			if (gn < N) out[(long long)gm * N + gn] = acc[i][j];
		}
	}
}

#define MATMUL_KERNELS(SUFFIX, DT)                                                                 \
	extern "C" __global__ void __launch_bounds__(256) matmul_gemv_##SUFFIX(                        \
	    float* out, const float* x, const void* w, int n, int K, int N) {                          \
		gemv<DT>(out, x, w, n, K, N);                                                              \
	}                                                                                              \
	extern "C" __global__ void __launch_bounds__(256) matmul_tiled_##SUFFIX(                       \
	    float* out, const float* x, const void* w, int n, int K, int N) {                          \
		tiled<DT>(out, x, w, n, K, N);                                                             \
	}

MATMUL_KERNELS(f32, DT_F32)
MATMUL_KERNELS(bf16, DT_BF16)
MATMUL_KERNELS(f16, DT_F16)

// ---------------------------------------------------------------------------------
// gemv_<dt>_n<NR>: the decode GEMV (see the top of the file).

// ld_stream loads 16 bytes of weights through the non-coherent path without allocating
// them in L1, asking L2 to fetch the whole 256-byte block (a warp reads 512 contiguous
// bytes per load).
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
	uint4 r;
	asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
	    : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
	    : "l"(p));
	return r;
}

__host__ __device__ constexpr int ilog2(int v) { return v <= 1 ? 0 : 1 + ilog2(v / 2); }

// reduce_scatter sums a[v] (V a power of two <= 32) over the 32 lanes of a warp. On
// return a[0] of lane l holds the total of value v = l >> (5 - log2 V) (every lane of
// that group of 32/V lanes holds it). Step s (offset 16 >> s) halves the values a lane
// keeps: the lanes with that offset's bit set keep the upper half and send the lower.
template <int V, int S>
__device__ __forceinline__ void reduce_scatter_step(float (&a)[V], int lane) {
	if constexpr (S < ilog2(V)) {
		constexpr int h = V >> (S + 1), off = 16 >> S;
		const bool upper = (lane & off) != 0;
#pragma unroll
		for (int j = 0; j < h; j++) {
			const float send = upper ? a[j] : a[j + h];
			const float keep = upper ? a[j + h] : a[j];
			a[j] = keep + __shfl_xor_sync(0xffffffffu, send, off);
		}
		reduce_scatter_step<V, S + 1>(a, lane);  // a compile-time recursion: every step unrolled
	}
}

template <int V>
__device__ __forceinline__ void reduce_scatter(float (&a)[V], int lane) {
	constexpr int LV = ilog2(V);
	static_assert((1 << LV) == V && V <= 32, "V must be a power of two <= 32");
	reduce_scatter_step<V, 0>(a, lane);
#pragma unroll
	for (int off = 16 >> LV; off >= 1; off >>= 1) a[0] += __shfl_xor_sync(0xffffffffu, a[0], off);
}

// GemvOut is where a decode GEMV block writes. Plain: rows row0 + r (r < GV_ROWS) of one
// matrix into o0 [n, N], and with res set also res += the result (the residual add that
// follows the o and down projections). Paired (the gate and up projections followed by
// SwiGLU): rows row0 and row0 + 1 of the gate matrix (r = 0, 1) and of the up matrix
// (r = 2, 3); o0 gets the gate rows, o1 the up rows, and swo silu(gate) * up, written
// last by the same thread (swo may alias o0 or o1, as SwiGLU's out may alias its input).
struct GemvOut {
	float* o0;
	float* o1;
	float* res;
	float* swo;
	int N, row0;
	bool pair;
};

// gemv_plan maps block b of a grouped launch to its rows: mr[r] is the matrix (0, 1, 2)
// of the block's row r and rr[r] its row, clamped to the matrix (rows past N repeat the
// last one; their sums are not stored).
__device__ __forceinline__ GemvOut gemv_plan(int b, int B0, int B1, int N0, int N1, int N2, float* o0, float* o1,
                                             float* o2, float* res, float* swo, int pair, int (&mr)[GV_ROWS],
                                             int (&rr)[GV_ROWS]) {
	GemvOut g;
	g.o1 = o1, g.res = res, g.swo = swo, g.pair = pair != 0;
	if (g.pair) {
		g.o0 = o0, g.N = N0, g.row0 = b * 2;
#pragma unroll
		for (int r = 0; r < GV_ROWS; r++) mr[r] = r >> 1, rr[r] = min(g.row0 + (r & 1), N0 - 1);
		return g;
	}
	int m = 0, N = N0;
	float* o = o0;
	if (b >= B0) {
		b -= B0, m = 1, N = N1, o = o1;
		if (b >= B1) b -= B1, m = 2, N = N2, o = o2;
	}
	g.o0 = o, g.N = N, g.row0 = b * GV_ROWS;
#pragma unroll
	for (int r = 0; r < GV_ROWS; r++) mr[r] = m, rr[r] = min(g.row0 + r, N - 1);
	return g;
}

// gemv_store sums the warps' partial results (red[warp][r * NR + i]) in a fixed order and
// writes them as g says.
template <int NR>
__device__ __forceinline__ void gemv_store(const float (&red)[GV_WARPS][GV_ROWS * NR], const GemvOut& g, int n) {
	constexpr int V = GV_ROWS * NR;
	const int tid = threadIdx.x;
	if (!g.pair) {
		if (tid < V) {
			float s = 0.f;
#pragma unroll
			for (int wi = 0; wi < GV_WARPS; wi++) s += red[wi][tid];
			const int r = tid / NR, i = tid % NR;
			if (g.row0 + r < g.N && i < n) {
				const long long e = (long long)i * g.N + g.row0 + r;
				g.o0[e] = s;
				if (g.res) g.res[e] += s;
			}
		}
		return;
	}
	if (tid < 2 * NR) {
		float gs = 0.f, us = 0.f;
#pragma unroll
		for (int wi = 0; wi < GV_WARPS; wi++) gs += red[wi][tid], us += red[wi][tid + 2 * NR];
		const int r = tid / NR, i = tid % NR;
		if (g.row0 + r < g.N && i < n) {
			const long long e = (long long)i * g.N + g.row0 + r;
			g.o0[e] = gs;
			g.o1[e] = us;
			g.swo[e] = gs / (1.0f + expf(-gs)) * us;  // kernels/elementwise.cu swiglu
		}
	}
}

// gemv_block computes the GV_ROWS rows wr[r] (each K weights) against the n rows of x and
// stores them as g says, with one block.
template <int DT, int NR>
__device__ __forceinline__ void gemv_block(const float* __restrict__ x, const uint4* const (&wr)[GV_ROWS], int n, int K,
                                           const GemvOut& g) {
	constexpr int ESZ = DT == DT_F32 ? 4 : 2;
	constexpr int PER = 16 / ESZ;  // weights per 16-byte chunk
	constexpr int R = GV_ROWS;
	constexpr int U = NR <= 4 ? 2 : 1;  // chunks per row in flight per thread
	constexpr int V = R * NR;           // partial sums per thread: a[r * NR + i]
	__shared__ float red[GV_WARPS][V];
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int chunks = K / PER;

	int xoff[NR];  // element offset of x's row i (n*K < 2^31: checked by the host)
#pragma unroll
	for (int i = 0; i < NR; i++) xoff[i] = min(i, n - 1) * K;

	float a[V];
#pragma unroll
	for (int e = 0; e < V; e++) a[e] = 0.f;

	for (int base = 0; base < chunks; base += GV_THREADS * U) {
		uint4 raw[U][R];
#pragma unroll
		for (int u = 0; u < U; u++) {
			const int c = base + u * GV_THREADS + tid;
#pragma unroll
			for (int r = 0; r < R; r++) raw[u][r] = c < chunks ? ld_stream(wr[r] + c) : make_uint4(0u, 0u, 0u, 0u);
		}
#pragma unroll
		for (int u = 0; u < U; u++) {
			const int c = base + u * GV_THREADS + tid;
			if (c < chunks) {
				float wv[R][PER];
#pragma unroll
				for (int r = 0; r < R; r++) unpack<DT>(raw[u][r], wv[r]);
#pragma unroll
				for (int i = 0; i < NR; i++) {
					const float4* xp = (const float4*)(x + xoff[i] + c * PER);
					float xv[PER];
#pragma unroll
					for (int q = 0; q < PER / 4; q++) {
						const float4 t = __ldg(xp + q);
						xv[4 * q] = t.x;
						xv[4 * q + 1] = t.y;
						xv[4 * q + 2] = t.z;
						xv[4 * q + 3] = t.w;
					}
#pragma unroll
					for (int r = 0; r < R; r++)
#pragma unroll
						for (int e = 0; e < PER; e++) a[r * NR + i] = fmaf(xv[e], wv[r][e], a[r * NR + i]);
				}
			}
		}
	}

	reduce_scatter<V>(a, lane);
	constexpr int LV = ilog2(V);
	if ((lane & ((32 >> LV) - 1)) == 0) red[warp][lane >> (5 - LV)] = a[0];
	__syncthreads();
	gemv_store<NR>(red, g, n);
}

// The decode GEMV kernels' parameters: x [n, K]; up to three matrices wj [Nj, K] with
// outputs oj [n, Nj], Bj blocks each (plain); res, swo and pair as GemvOut says (res only
// with one matrix; pair: w0 gate, w1 up, N1 == N0, ceil(N0 / 2) blocks).
#define GEMV_FAST_KERNEL(SUFFIX, DT, NR)                                                                      \
	extern "C" __global__ void __launch_bounds__(GV_THREADS) gemv_##SUFFIX##_n##NR(                           \
	    const float* x, int n, int K, float* o0, const void* w0, int N0, int B0, float* o1, const void* w1,   \
	    int N1, int B1, float* o2, const void* w2, int N2, float* res, float* swo, int pair) {               \
		constexpr long long ESZ = DT == DT_F32 ? 4 : 2;                                                       \
		int mr[GV_ROWS], rr[GV_ROWS];                                                                         \
		const GemvOut g = gemv_plan(blockIdx.x, B0, B1, N0, N1, N2, o0, o1, o2, res, swo, pair, mr, rr);      \
		const uint4* wr[GV_ROWS];                                                                             \
		_Pragma("unroll") for (int r = 0; r < GV_ROWS; r++) {                                                 \
			const void* w = mr[r] == 0 ? w0 : mr[r] == 1 ? w1 : w2;                                           \
			wr[r] = (const uint4*)((const char*)w + (long long)rr[r] * K * ESZ);                              \
		}                                                                                                     \
		gemv_block<DT, NR>(x, wr, n, K, g);                                                                   \
	}

#define GEMV_FAST_KERNELS(SUFFIX, DT) \
	GEMV_FAST_KERNEL(SUFFIX, DT, 1)   \
	GEMV_FAST_KERNEL(SUFFIX, DT, 2)   \
	GEMV_FAST_KERNEL(SUFFIX, DT, 4)   \
	GEMV_FAST_KERNEL(SUFFIX, DT, 8)

GEMV_FAST_KERNELS(f32, DT_F32)
GEMV_FAST_KERNELS(bf16, DT_BF16)
GEMV_FAST_KERNELS(f16, DT_F16)

// ---------------------------------------------------------------------------------
// int8 weights (package quant's layout: w [N, K] int8 row-major, K % 32 == 0, one
// float32 scale per 32 consecutive weights of a row, scales [N, K/32]):
//
// gemv_i8_n<NR> (decode, n <= NR <= 8): gemv_<dt>_n<NR>'s blocking (GV_ROWS = 4 rows of
//   w per block of 256 threads, 16-byte chunks t, t+256, ... of each row per thread, U
//   chunks per row in flight, the same grouped launch of up to three matrices sharing x
//   and the same fixed-order reduction), reading 16 int8 weights per 16-byte load plus
//   the chunk's scale (one float per two chunks: 12.5% more bytes than the int8
//   values). Each weight is widened without a conversion instruction (the byte, offset
//   to unsigned, is placed under the exponent of 2^23 by a byte permute and 2^23 + 128
//   subtracted: exact) and multiplied by its scale in float32, so the weight used is
//   exactly quant.Dequantize's; 3 instructions per weight, then one FMA per row of x.
//   Bound: memory (N*K*1.125 bytes) for NR <= 2; at NR = 8 the ~11 instructions per
//   weight bound it near 60% of bandwidth.
// dequant_i8_bf16 / dequant_i8_f32: out[e] = q[e] * scale[e / 32] (bf16: rounded to
//   nearest even), the prefill path: the dequantized matrix goes to the tensor-core GEMM
//   (bf16) or the tiled kernel (f32). Launch: grid-stride over 16-weight chunks, block
//   256. Bound: memory, 1.125 + 2 (or 4) bytes per weight.

#define I8_GROUP 32

// widen4 writes the 4 int8 weights of word v (little-endian order) times s to f.
__device__ __forceinline__ void widen4_i8(unsigned int v, float s, float* f) {
	const unsigned int u = v ^ 0x80808080u;  // q + 128 in each byte: 1..255
#pragma unroll
	for (int k = 0; k < 4; k++) {
		const float e = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7540u + k)) - 8388736.0f;  // exactly q
		f[k] = __fmul_rn(e, s);
	}
}

__device__ __forceinline__ float ld_stream_f32(const float* p) {
	float r;
	asm("ld.global.nc.L1::no_allocate.f32 %0, [%1];" : "=f"(r) : "l"(p));
	return r;
}

template <int NR>
__device__ __forceinline__ void gemv_i8_block(const float* __restrict__ x, const uint4* const (&wr)[GV_ROWS],
                                              const float* const (&sr)[GV_ROWS], int n, int K, const GemvOut& g) {
	constexpr int R = GV_ROWS;
	constexpr int U = NR <= 4 ? 2 : 1;
	constexpr int V = R * NR;
	__shared__ float red[GV_WARPS][V];
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int chunks = K / 16;

	int xoff[NR];
#pragma unroll
	for (int i = 0; i < NR; i++) xoff[i] = min(i, n - 1) * K;

	float a[V];
#pragma unroll
	for (int e = 0; e < V; e++) a[e] = 0.f;

	for (int base = 0; base < chunks; base += GV_THREADS * U) {
		uint4 raw[U][R];
		float s[U][R];
#pragma unroll
		for (int u = 0; u < U; u++) {
			const int c = base + u * GV_THREADS + tid;
#pragma unroll
			for (int r = 0; r < R; r++) {
				raw[u][r] = c < chunks ? ld_stream(wr[r] + c) : make_uint4(0u, 0u, 0u, 0u);
				s[u][r] = c < chunks ? ld_stream_f32(sr[r] + (c >> 1)) : 0.f;
			}
		}
#pragma unroll
		for (int u = 0; u < U; u++) {
			const int c = base + u * GV_THREADS + tid;
			if (c < chunks) {
				const unsigned int* rw[R];
#pragma unroll
				for (int r = 0; r < R; r++) rw[r] = &raw[u][r].x;
				// Four words of 4 weights: widen one word of every row, then use it
				// against the matching 4 values of every row of x.
#pragma unroll
				for (int q = 0; q < 4; q++) {
					float wv[R][4];
#pragma unroll
					for (int r = 0; r < R; r++) widen4_i8(rw[r][q], s[u][r], wv[r]);
#pragma unroll
					for (int i = 0; i < NR; i++) {
						const float4 t = __ldg((const float4*)(x + xoff[i] + c * 16) + q);
#pragma unroll
						for (int r = 0; r < R; r++) {
							float acc = a[r * NR + i];
							acc = fmaf(t.x, wv[r][0], acc);
							acc = fmaf(t.y, wv[r][1], acc);
							acc = fmaf(t.z, wv[r][2], acc);
							acc = fmaf(t.w, wv[r][3], acc);
							a[r * NR + i] = acc;
						}
					}
				}
			}
		}
	}

	reduce_scatter<V>(a, lane);
	constexpr int LV = ilog2(V);
	if ((lane & ((32 >> LV) - 1)) == 0) red[warp][lane >> (5 - LV)] = a[0];
	__syncthreads();
	gemv_store<NR>(red, g, n);
}

// gemv_i8_n<NR>: the parameters of gemv_<dt>_n<NR>, with each matrix's scales sj.
#define GEMV_I8_KERNEL(NR)                                                                                  \
	extern "C" __global__ void __launch_bounds__(GV_THREADS) gemv_i8_n##NR(                                 \
	    const float* x, int n, int K, float* o0, const signed char* w0, const float* s0, int N0, int B0,    \
	    float* o1, const signed char* w1, const float* s1, int N1, int B1, float* o2,                       \
	    const signed char* w2, const float* s2, int N2, float* res, float* swo, int pair) {                 \
		int mr[GV_ROWS], rr[GV_ROWS];                                                                       \
		const GemvOut g = gemv_plan(blockIdx.x, B0, B1, N0, N1, N2, o0, o1, o2, res, swo, pair, mr, rr);    \
		const uint4* wr[GV_ROWS];                                                                           \
		const float* sr[GV_ROWS];                                                                           \
		_Pragma("unroll") for (int r = 0; r < GV_ROWS; r++) {                                               \
			const signed char* w = mr[r] == 0 ? w0 : mr[r] == 1 ? w1 : w2;                                  \
			const float* sc = mr[r] == 0 ? s0 : mr[r] == 1 ? s1 : s2;                                       \
			wr[r] = (const uint4*)(w + (long long)rr[r] * K);                                               \
			sr[r] = sc + (long long)rr[r] * (K / I8_GROUP);                                                 \
		}                                                                                                   \
		gemv_i8_block<NR>(x, wr, sr, n, K, g);                                                              \
	}

GEMV_I8_KERNEL(1)
GEMV_I8_KERNEL(2)
GEMV_I8_KERNEL(4)
GEMV_I8_KERNEL(8)

__device__ __forceinline__ unsigned int bf16_rne_bits(float f) {
	unsigned int u = __float_as_uint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x40u) & 0xffffu;  // NaN
	u += 0x7fffu + ((u >> 16) & 1u);
	return u >> 16;
}

// dequant_i8_chunks widens 16-weight chunks [first, count/16) with a grid stride; store
// writes chunk c's 16 values.
template <typename Store>
__device__ __forceinline__ void dequant_i8_chunks(const signed char* __restrict__ q, const float* __restrict__ sc,
                                                  long long count, Store store) {
	const long long chunks = count / 16;
	const long long stride = (long long)gridDim.x * blockDim.x;
	for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < chunks; c += stride) {
		const uint4 raw = ld_stream((const uint4*)q + c);
		const float s = sc[c >> 1];
		float v[16];
		widen4_i8(raw.x, s, v);
		widen4_i8(raw.y, s, v + 4);
		widen4_i8(raw.z, s, v + 8);
		widen4_i8(raw.w, s, v + 12);
		store(c, v);
	}
}

extern "C" __global__ void __launch_bounds__(256) dequant_i8_f32(float* __restrict__ out, const signed char* __restrict__ q,
                                                                 const float* __restrict__ sc, long long count) {
	dequant_i8_chunks(q, sc, count, [&](long long c, const float* v) {
		float4* o = (float4*)(out + c * 16);
#pragma unroll
		for (int k = 0; k < 4; k++) o[k] = make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]);
	});
}

extern "C" __global__ void __launch_bounds__(256) dequant_i8_bf16(unsigned short* __restrict__ out, const signed char* __restrict__ q,
                                                                  const float* __restrict__ sc, long long count) {
	dequant_i8_chunks(q, sc, count, [&](long long c, const float* v) {
		uint4* o = (uint4*)(out + c * 16);
		unsigned int p[8];
#pragma unroll
		for (int k = 0; k < 8; k++) p[k] = bf16_rne_bits(v[2 * k]) | (bf16_rne_bits(v[2 * k + 1]) << 16);
		o[0] = make_uint4(p[0], p[1], p[2], p[3]);
		o[1] = make_uint4(p[4], p[5], p[6], p[7]);
	});
}
