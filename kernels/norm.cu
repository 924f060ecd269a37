// norm.cu: RMSNorm over rows and over head slices.
//
// rmsnorm:       out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w      x, out [rows, cols]
// head_rmsnorm:  the same, in place, on every head slice x[i, h*hd:(h+1)*hd] with w [hd]
//                (Qwen3's q/k norms), for h < cols/hd.
// All float32; the sum of squares is accumulated in float32 (a row of a few thousand
// values loses no more than ~1e-6 relative).
//
// Launch rmsnorm: grid (rows), block 256 threads (a multiple of 32, at most 1024); each
// block reduces one row through warp shuffles and a 32-slot shared array.
// Launch head_rmsnorm: block 128 threads = 4 warps, one warp per (row, head) slice;
// grid ceil(rows*heads / 4).
// out may alias x: every thread writes only the elements it read, after the reduction.
// Bound: memory, 2 passes over x plus one write.

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

extern "C" __global__ void rmsnorm(float* out, const float* x, const float* __restrict__ w,
                                   int cols, float eps) {
	__shared__ float partial[32];
	const float* xr = x + (long long)blockIdx.x * cols;
	float* orow = out + (long long)blockIdx.x * cols;
	float ss = 0.f;
	for (int c = threadIdx.x; c < cols; c += blockDim.x) {
		float v = xr[c];
		ss += v * v;
	}
	ss = warp_sum(ss);
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
	if (lane == 0) partial[warp] = ss;
	__syncthreads();
	if (warp == 0) {
		float v = lane < nwarps ? partial[lane] : 0.f;
		v = warp_sum(v);
		if (lane == 0) partial[0] = v;
	}
	__syncthreads();
	const float inv = 1.0f / sqrtf(partial[0] / (float)cols + eps);
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
