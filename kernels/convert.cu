// convert.cu: float32 -> bfloat16 conversion of activations for the tensor-core matmul
// (backend/cuda/cublas.go), which multiplies bf16 activations by bf16 weights with
// float32 accumulation in cuBLAS.
//
// f32_to_bf16: out[e] = bf16(in[e]), e < count; in float32 [count], out raw bfloat16
//   words [count]. Rounding is to nearest, ties to even, the same as the host's
//   toBF16Rounded (backend/cuda/tensor.go): finite values that round past the largest
//   bf16 become infinity, infinities stay, a NaN stays a NaN (quiet, sign kept).
//
// Launch: grid-stride over groups of 4 elements (16-byte loads, 8-byte stores) when
// in is 16-byte and out 8-byte aligned, else one element per step; block 256, the host
// caps the grid. Bound: memory, 6 bytes per element.

__device__ __forceinline__ unsigned int bf16_rne(float f) {
	unsigned int u = __float_as_uint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x40u) & 0xffffu;  // NaN
	u += 0x7fffu + ((u >> 16) & 1u);
	return u >> 16;
}

extern "C" __global__ void __launch_bounds__(256) f32_to_bf16(unsigned short* __restrict__ out,
                                                              const float* __restrict__ in, long long count) {
	const long long stride = (long long)gridDim.x * blockDim.x;
	const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	const bool vec = ((unsigned long long)in & 15ull) == 0 && ((unsigned long long)out & 7ull) == 0;
	long long done = 0;
	if (vec) {
		const long long quads = count / 4;
		const float4* in4 = (const float4*)in;
		uint2* out4 = (uint2*)out;
		for (long long q = first; q < quads; q += stride) {
			const float4 v = in4[q];
			uint2 r;
			r.x = bf16_rne(v.x) | (bf16_rne(v.y) << 16);  // little-endian: element 0 in the low half
			r.y = bf16_rne(v.z) | (bf16_rne(v.w) << 16);
			out4[q] = r;
		}
		done = quads * 4;
	}
	for (long long e = done + first; e < count; e += stride) out[e] = (unsigned short)bf16_rne(in[e]);
}
