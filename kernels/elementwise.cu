// elementwise.cu: residual add, bias add, SwiGLU, and widening of stored weights.
//
// add_inplace:  x[e] += y[e]                          e < count
// add_bias:     x[i, c] += b[c]                       x [rows, cols], b [cols]
// swiglu:       out[e] = g / (1 + exp(-g)) * u[e]    with g = gate[e]; out may alias gate
// widen_bf16:   out[e] = float(in[e])                 in bfloat16 (raw 16-bit words)
// widen_f16:    out[e] = float(in[e])                 in IEEE half
// All float32 arithmetic (expf, not the fast approximation).
//
// Launch: one thread per element, grid-stride (the host caps the grid); block 256.
// Bound: memory, 2-3 accesses of 4 bytes per element.
#include <cuda_fp16.h>

#define GRID_STRIDE(e, count)                                                      \
	for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < (count); \
	     e += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void add_inplace(float* x, const float* y, long long count) {
	GRID_STRIDE(e, count) x[e] += y[e];
}

extern "C" __global__ void add_bias(float* x, const float* __restrict__ b, long long count, int cols) {
	GRID_STRIDE(e, count) x[e] += b[e % cols];
}

extern "C" __global__ void swiglu(float* out, const float* gate, const float* up, long long count) {
	GRID_STRIDE(e, count) {
		const float g = gate[e];
		out[e] = g / (1.0f + expf(-g)) * up[e];
	}
}

extern "C" __global__ void widen_bf16(float* __restrict__ out, const unsigned short* __restrict__ in, long long count) {
	GRID_STRIDE(e, count) out[e] = __uint_as_float(((unsigned int)in[e]) << 16);
}

extern "C" __global__ void widen_f16(float* __restrict__ out, const unsigned short* __restrict__ in, long long count) {
	GRID_STRIDE(e, count) out[e] = __half2float(__ushort_as_half(in[e]));
}
