// CUDA built-ins for running kernels/paged_attention.cu on the CPU (run.sh).
#pragma once
#include <cmath>
#include <cstring>
#include <barrier>
#include <cstdint>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __restrict__
struct dim3e { int x, y, z; };
extern thread_local dim3e threadIdx, blockIdx;
extern dim3e blockDim, gridDim;
extern thread_local float* tl_smem;
extern thread_local std::barrier<>* tl_block;
extern thread_local std::barrier<>* tl_warp;
extern thread_local float* tl_xchg; // per warp [32]
inline void __syncthreads() { tl_block->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int o) {
	int lane = threadIdx.x & 31;
	tl_warp->arrive_and_wait();
	tl_xchg[lane] = v;
	tl_warp->arrive_and_wait();
	float r = tl_xchg[lane ^ o];
	return r;
}
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline float __expf(float x) { return expf(x); }
struct float4 { float x, y, z, w; };
struct uint2 { unsigned x, y; };
using std::min; using std::max;
