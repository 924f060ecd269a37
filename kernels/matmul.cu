// matmul.cu: out = x @ w^T with float32 activations and float32 / bfloat16 / float16
// weights, float32 accumulation.
//
//   x [n, K] float32, w [N, K] (Hugging Face [out, in] layout), out [n, N] float32:
//   out[i, o] = sum_k x[i, k] * float(w[o, k])
//
// Two kernels, picked by the host (runtime/cuda/ops.go, n <= gemvMaxRows):
//
// matmul_gemv_<dt>: few rows (decode). One warp per output column o (a row of w): lanes
//   stride over w's row in 16-byte loads (4 float32 or 8 16-bit weights) when every row
//   starts 16-byte aligned (K*elem % 16 == 0), else one element at a time, and multiply
//   each weight into all n <= 8 rows of x (read through L1: every warp of the block reads
//   the same x). Launch: block 256 threads (8 warps, 8 columns), grid ceil(N/8).
//   Bound: memory, reading w once (N*K*elem bytes): the decode floor.
//
// matmul_tiled_<dt>: many rows (prefill). Classic shared-memory tiling: a block computes
//   a 64x64 tile of out, stepping over K 16 at a time; x's and w's tiles are staged in
//   shared memory k-major (w widened to float32 on the way), each of the 256 threads
//   accumulates a 4x4 patch. Edges are zero-padded on load and masked on store, so any
//   n, K, N work. Launch: block 256, grid (ceil(N/64), ceil(n/64)); 8.5 KiB shared.
//   Bound: float32 FMA throughput (CUDA cores, no tensor cores yet: the activations are
//   float32 and rounding them to bfloat16 would change results).
#include <cuda_fp16.h>

#define DT_F32 0
#define DT_BF16 1
#define DT_F16 2

#define GEMV_MAX_ROWS 8
#define GEMV_WARPS 8

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
