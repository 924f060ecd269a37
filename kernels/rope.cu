// rope.cu: rotary position embedding, "rotate half" (Hugging Face Llama).
//
// For row i of x [rows, cols], every head slice h (h*hd + hd <= cols) and pair
// j < hd/2, with a = x[i, h*hd + j], b = x[i, h*hd + j + hd/2]:
//     angle = float32(positions[i]) * invfreq[j]      (rounded to float32, as transformers
//                                                      and runtime/rope.go form it)
//     c, s  = cos, sin of that float32 angle, computed in double and rounded to float32
//     x[i, h*hd + j]        = a*c - b*s
//     x[i, h*hd + j + hd/2] = b*c + a*s
// invfreq [hd/2] is float32 (the backend uploads float32(RoPE.InvFreq[j])).
//
// Launch: one thread per (row, head, pair), grid-stride; block 256.
// Bound: memory (one read and one write of x); the double sincos is cheap next to it on
// Hopper and keeps large positions exact to float32 rounding.

extern "C" __global__ void rope(float* x, const int* __restrict__ positions,
                                const float* __restrict__ invfreq, int rows, int cols, int hd) {
	const int half = hd / 2;
	const int heads = cols / hd;
	const long long total = (long long)rows * heads * half;
	for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
	     t += (long long)gridDim.x * blockDim.x) {
		const int j = (int)(t % half);
		const long long rh = t / half;
		const int h = (int)(rh % heads);
		const long long i = rh / heads;
		const float angle = __fmul_rn((float)positions[i], invfreq[j]);
		double sd, cd;
		sincos((double)angle, &sd, &cd);
		const float c = (float)cd, s = (float)sd;
		float* p = x + i * cols + (long long)h * hd;
		const float a = p[j], b = p[j + half];
		p[j] = a * c - b * s;
		p[j + half] = b * c + a * s;
	}
}
