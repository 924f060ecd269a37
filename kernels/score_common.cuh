// score_common.cuh: what the eviction scoring kernels (kernels/score_*.cu) share: the
// float infinities and the warp and block reductions. Each score_*.cu includes it
// (#include "score_common.cuh", found next to the including file) and is compiled into
// its own module by scripts/build-kernels.sh, so each module has its own copy.
#pragma once

#include <stdint.h>

#define NEG_INF (-__int_as_float(0x7f800000))
#define POS_INF (__int_as_float(0x7f800000))

// ---------------------------------------------------------------------------------
// Reductions.

__device__ __forceinline__ double warp_sum_d(double v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ float warp_max_f(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

// block_sum_d returns the sum of v over the block to every thread (blockDim.x a multiple
// of 32). scratch: 32 doubles of shared memory; every thread must call it.
__device__ double block_sum_d(double v, double* scratch) {
	v = warp_sum_d(v);
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	__syncthreads();  // an earlier call may still be reading scratch
	if (lane == 0) scratch[warp] = v;
	__syncthreads();
	return warp_sum_d(lane < nw ? scratch[lane] : 0.0);
}

__device__ float block_max_f(float v, float* scratch) {
	v = warp_max_f(v);
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	__syncthreads();
	if (lane == 0) scratch[warp] = v;
	__syncthreads();
	return warp_max_f(lane < nw ? scratch[lane] : NEG_INF);
}
