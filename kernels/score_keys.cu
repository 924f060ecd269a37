// score_keys.cu: the scorers that read only the keys, and the norms of rows (the host
// side is backend/cuda/score_keys.go, and score_expected.go for row_norms; the host
// twins eviction/scorer_keys.go). Input: keys k (or values) [T, kvHeads*D] float32.
// Output: scores [kvHeads][T] float32. Double throughout, so the scores equal the host's
// float64 ones after rounding.
//
// Kernels, launch shapes (set in score_keys.go, score_expected.go) and roles:
//
// row_norms          grid (T*kvHeads/8), block 256: one warp per (row, head). ||x_j||,
//                    double (ExpectedAttention's value norms).
// knorm_scores       same shape. -||k_j||.
// kd_anchor_partial  grid (kvHeads, splits), block 256. KeyDiff: partial sums of
//                    k_j / max(||k_j||, 1e-12) over row slices.
// kd_scores          grid (blocks, kvHeads), block 256.
//                    -(k_j . a) / (max(||k_j||, 1e-8) max(||a||, 1e-8)), a the mean.
//
// What bounds it: reading the keys (once for K-norm, twice for KeyDiff: 33.5 MB per
// pass at 8k tokens x 8 KV heads x 128 float32, about 8 us on an H200) and, at such
// sizes, the launches. Measured per layer at 8k tokens, 8 KV heads of 128, on an H200:
// K-norm 0.018 ms, KeyDiff 0.041 ms (results/gpu/2026-11-28-h200-run3,
// BenchmarkEvictionOverhead/score/knorm and keydiff).

#include "score_common.cuh"

// ---------------------------------------------------------------------------------
// Norms, K-norm, KeyDiff. One warp per (row, head): block 256 = 8 items.

extern "C" __global__ void row_norms(double* __restrict__ out, const float* __restrict__ x, int T, int heads, int D) {
	const long long item = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (item >= (long long)T * heads) return;  // the whole warp leaves together
	const int lane = threadIdx.x & 31;
	const long long j = item / heads;
	const int g = (int)(item % heads);
	const float* p = x + j * heads * D + (long long)g * D;
	double ss = 0.0;
	for (int c = lane; c < D; c += 32) {
		const double v = p[c];
		ss += v * v;
	}
	ss = warp_sum_d(ss);
	if (lane == 0) out[(long long)g * T + j] = sqrt(ss);
}

extern "C" __global__ void knorm_scores(float* __restrict__ out, const float* __restrict__ k, int T, int heads, int D) {
	const long long item = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (item >= (long long)T * heads) return;
	const int lane = threadIdx.x & 31;
	const long long j = item / heads;
	const int g = (int)(item % heads);
	const float* p = k + j * heads * D + (long long)g * D;
	double ss = 0.0;
	for (int c = lane; c < D; c += 32) {
		const double v = p[c];
		ss += v * v;
	}
	ss = warp_sum_d(ss);
	if (lane == 0) out[(long long)g * T + j] = (float)(-sqrt(ss));
}

#define KD_MAXD 256  // largest head dim of the KeyDiff kernels
#define KD_WARPS 8   // block 256

// Grid (kvHeads, splits), block 256. part [kvHeads][splits][D] (double).
extern "C" __global__ void kd_anchor_partial(double* __restrict__ part, const float* __restrict__ k, int T,
                                             int kvHeads, int D, int rowsPerBlock) {
	__shared__ double sh[KD_WARPS][KD_MAXD];
	const int g = blockIdx.x, split = blockIdx.y;
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	double acc[KD_MAXD / 32];
#pragma unroll
	for (int c = 0; c < KD_MAXD / 32; c++) acc[c] = 0.0;
	const int jb = split * rowsPerBlock, je = min(T, jb + rowsPerBlock);
	for (int j = jb + warp; j < je; j += KD_WARPS) {
		const float* p = k + (long long)j * kvHeads * D + (long long)g * D;
		float v[KD_MAXD / 32];
		double ss = 0.0;
#pragma unroll
		for (int c = 0; c < KD_MAXD / 32; c++) {
			const int d = lane + 32 * c;
			v[c] = d < D ? p[d] : 0.f;
			ss += (double)v[c] * (double)v[c];
		}
		ss = warp_sum_d(ss);
		const double inv = 1.0 / fmax(sqrt(ss), 1e-12);
#pragma unroll
		for (int c = 0; c < KD_MAXD / 32; c++) acc[c] += (double)v[c] * inv;
	}
#pragma unroll
	for (int c = 0; c < KD_MAXD / 32; c++) sh[warp][lane + 32 * c] = acc[c];
	__syncthreads();
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		double s = 0.0;
		for (int w = 0; w < KD_WARPS; w++) s += sh[w][d];
		part[((long long)g * gridDim.y + split) * D + d] = s;
	}
}

// Grid (x, kvHeads), block 256: block x scores rows x*8 + warp, stepping by gridDim.x*8.
extern "C" __global__ void kd_scores(float* __restrict__ out, const double* __restrict__ part,
                                     const float* __restrict__ k, int T, int kvHeads, int D, int splits) {
	__shared__ double anchor[KD_MAXD];
	__shared__ double scratch[32];
	const int g = blockIdx.y;
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		double s = 0.0;
		for (int sp = 0; sp < splits; sp++) s += part[((long long)g * splits + sp) * D + d];
		anchor[d] = s / (double)(T > 0 ? T : 1);
	}
	__syncthreads();
	double a2 = 0.0;
	for (int d = threadIdx.x; d < D; d += blockDim.x) a2 += anchor[d] * anchor[d];
	a2 = block_sum_d(a2, scratch);
	const double an = fmax(sqrt(a2), 1e-8);
	for (long long j = (long long)blockIdx.x * KD_WARPS + warp; j < T; j += (long long)gridDim.x * KD_WARPS) {
		const float* p = k + j * kvHeads * D + (long long)g * D;
		double dot = 0.0, ss = 0.0;
		for (int d = lane; d < D; d += 32) {
			const double v = p[d];
			dot += v * anchor[d];
			ss += v * v;
		}
		dot = warp_sum_d(dot);
		ss = warp_sum_d(ss);
		if (lane == 0) out[(long long)g * T + j] = (float)(-dot / (fmax(sqrt(ss), 1e-8) * an));
	}
}
