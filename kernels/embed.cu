// embed.cu: embedding gather.
//
// Computes  out[i, c] = float(table[ids[i], c])  for i < n, c < cols: row ids[i] of the
// table (float32, bfloat16 or float16, as the backend stored the weight) widened to
// float32.
//
// Launch: grid (n), block 256 threads; each block copies one row, threads striding over
// the columns. Ids are checked on the host (0 <= id < table rows).
// Bound: memory, n*cols*(elem + 4) bytes; negligible next to a layer.
#include <cuda_fp16.h>

__device__ __forceinline__ float load_f32(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_bf16(const unsigned short* p, long long i) {
	return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ float load_f16(const unsigned short* p, long long i) {
	return __half2float(__ushort_as_half(p[i]));
}

#define EMBED_KERNEL(NAME, T, LOAD)                                                      \
	extern "C" __global__ void NAME(float* __restrict__ out, const T* __restrict__ table, \
	                                const int* __restrict__ ids, int cols) {             \
		const long long src = (long long)ids[blockIdx.x] * cols;                         \
		float* dst = out + (long long)blockIdx.x * cols;                                 \
		for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = LOAD(table, src + c); \
	}

EMBED_KERNEL(embed_f32, float, load_f32)
EMBED_KERNEL(embed_bf16, unsigned short, load_bf16)
EMBED_KERNEL(embed_f16, unsigned short, load_f16)
