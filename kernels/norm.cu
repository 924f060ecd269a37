// norm.cu: RMSNorm over rows and over head slices.
//
// rmsnorm:       out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w      x, out [rows, cols]
// head_rmsnorm:  the same, in place, on every head slice x[i, h*hd:(h+1)*hd] with w [hd]
//                (Qwen3's q/k norms), for h < cols/hd.
// All float32; the sum of squares is accumulated in float32 (a row of a few thousand
// values loses no more than ~1e-6 relative).
//
// Launch rmsnorm: grid (rows), block 256 threads (a multiple of 32, at most 1024); each
// block reduces one row through warp shuffles and a 32-slot shared array. Rows of up to
// 8192 aligned values are loaded once into registers, all loads issued before the first
// use (one memory latency per row, not one per 256 values as a plain loop has).
// Launch head_rmsnorm: block 128 threads = 4 warps, one warp per (row, head) slice;
// grid ceil(rows*heads / 4).
// out may alias x: every thread writes only the elements it read, after the reduction.
// Bound: memory, 1 pass over x (2 for long rows) plus one write; for one decode row,
// latency: ~2 us.

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

// RN_VEC is the most float4 a thread of rmsnorm keeps in registers: rows of up to
// 256 * 4 * RN_VEC = 8192 values (16-byte aligned, a multiple of 4) are read once, with
// every load of the row in flight at once; longer or unaligned rows take two passes.
#define RN_VEC 8

// block_sum returns the sum of v over the block (every thread gets it).
__device__ __forceinline__ float block_sum(float v, float* partial) {
	v = warp_sum(v);
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
	if (lane == 0) partial[warp] = v;
	__syncthreads();
	if (warp == 0) {
		float t = lane < nwarps ? partial[lane] : 0.f;
		t = warp_sum(t);
		if (lane == 0) partial[0] = t;
	}
	__syncthreads();
	return partial[0];
}

extern "C" __global__ void rmsnorm(float* out, const float* x, const float* __restrict__ w,
                                   int cols, float eps) {
	__shared__ float partial[32];
	const float* xr = x + (long long)blockIdx.x * cols;
	float* orow = out + (long long)blockIdx.x * cols;
	const int quads = cols / 4;
	const bool vec = cols % 4 == 0 && quads <= (int)blockDim.x * RN_VEC &&
	                 (((unsigned long long)xr | (unsigned long long)orow | (unsigned long long)w) & 15ull) == 0;
	if (vec) {
		float4 v[RN_VEC];
		float ss = 0.f;
#pragma unroll
		for (int j = 0; j < RN_VEC; j++) {
			const int q = threadIdx.x + j * blockDim.x;
			v[j] = q < quads ? ((const float4*)xr)[q] : make_float4(0.f, 0.f, 0.f, 0.f);
		}
#pragma unroll
		for (int j = 0; j < RN_VEC; j++) ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
		const float inv = 1.0f / sqrtf(block_sum(ss, partial) / (float)cols + eps);
#pragma unroll
		for (int j = 0; j < RN_VEC; j++) {
			const int q = threadIdx.x + j * blockDim.x;
			if (q < quads) {
				const float4 g = __ldg((const float4*)w + q);
				((float4*)orow)[q] = make_float4(v[j].x * inv * g.x, v[j].y * inv * g.y, v[j].z * inv * g.z, v[j].w * inv * g.w);
			}
		}
		return;
	}
	float ss = 0.f;
#pragma unroll 4
	for (int c = threadIdx.x; c < cols; c += blockDim.x) {
		float v = xr[c];
		ss += v * v;
	}
	const float inv = 1.0f / sqrtf(block_sum(ss, partial) / (float)cols + eps);
#pragma unroll 4
	for (int c = threadIdx.x; c < cols; c += blockDim.x) orow[c] = xr[c] * inv * w[c];
}

extern "C" __global__ void head_rmsnorm(float* x, const float* __restrict__ w, int rows, int cols,
                                        int hd, float eps) {
	const int heads = cols / hd;
	const long long slice = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (slice >= (long long)rows * heads) return;  // whole warp leaves together
	const int lane = threadIdx.x & 31;
	const long long row = slice / heads, h = slice % heads;
	float* p = x + row * cols + h * hd;
	float ss = 0.f;
	for (int c = lane; c < hd; c += 32) ss += p[c] * p[c];
	ss = warp_sum(ss);
	const float inv = 1.0f / sqrtf(ss / (float)hd + eps);
	for (int c = lane; c < hd; c += 32) p[c] = p[c] * inv * w[c];
}
