// score_expected_tc.cu: ExpectedAttention's two large products on the bf16 tensor cores
// (head dim 128 only; backend/cuda/score_expected.go uses them with Options.TensorCores
// and the covariance on, on compute capability 8.0 or later): ea_cov_tc replaces
// ea_cov_partial and ea_logits_tc replaces ea_logits (score_expected.cu); the other
// expected-attention kernels are shared. Launch shapes and the fragment layouts are in
// the section comment below.
//
// What bounds it: the split-bf16 mma.sync work (three products per float32 product, at a
// third of the tensor cores' bf16 rate) and, for ea_cov_tc, the un-rotation and
// transposition of each 64-row chunk into shared memory. Measured: 0.53 ms per layer at
// 8k tokens, 32/8 heads of 128, on an H200, against 0.61 ms for the CUDA-core form
// (results/gpu/2026-11-28-h200-run3, BenchmarkEvictionOverhead/score/expected-attention-tc).

#include "score_common.cuh"
#include "score_expected.cuh"

// ---------------------------------------------------------------------------------
// Expected attention on the bf16 tensor cores (backend/cuda/score_expected.go uses these with
// Options.TensorCores at head dim 128): the same two products as ea_cov_partial and
// ea_logits, as mma.sync.m16n8k16 with float32 accumulation, each float32 operand split
// into two bfloat16s, x = hi + lo (hi = bf16(x), lo = bf16(x - hi): 16 significant bits),
// and every product formed as hi*hi + hi*lo + lo*hi (lo*lo, below 2^-16 relative, is
// dropped): ~1.5e-5 relative per product instead of float32's 6e-8, at a third of the
// tensor cores' bf16 rate, several times the float32 CUDA-core rate.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16; g = lane/4, t = lane%4):
//   A [16x16] row-major: a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B [16x8]:            b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C [16x8] float32:    c0, c1 = (g, 2t..2t+1), c2, c3 = (g+8, 2t..2t+1)
// ldmatrix.x4: lane l points at row l%8 of 8x8 matrix l/8 and receives row l/4, columns
// 2(l%4), 2(l%4)+1 of every matrix (with .trans, of its transpose).
//
// ea_cov_tc     grid (heads, splits), block 128 (4 warps), dynamic shared memory
//               2*128*TCX_LD*2 + 128*4 bytes. Per chunk of 64 statistics rows, the rows
//               are un-rotated and shifted as in ea_cov_partial and stored transposed,
//               Xt[dim][row], as hi and lo bf16. M = Xt Xt^T: warp w owns the 16-dim row
//               tiles w and 7-w (so every warp has 20 of the upper-block n-tiles), for
//               each k-step of 16 rows: A fragments from Xt (row-major [dim][row]), B
//               fragments from Xt as [n][k] rows. Writes mpart and spart as ea_cov_partial
//               does (spart from hi + lo).
// ea_logits_tc  grid (heads, splits), block 128 (4 warps: 16 keys each), dynamic shared
//               memory TCL_SMEM bytes: U^T as hi/lo bf16 [b][a] (B fragments by
//               ldmatrix.trans), a tile of 64 keys as hi/lo bf16 [key][b] (A fragments),
//               lin. P = K U^T skips the zero lower blocks of U (k-steps of block B touch
//               n-tiles of a-blocks <= B only); z = sum_a k_a (P_a + lin_a) / 256 with
//               k_a = hi + lo, reduced over the 4 lanes of a quad.

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define SCORE_TC_UNSUPPORTED 1  // bf16 mma.sync and ldmatrix need sm_80; the host never launches these there
#endif

#define TC_D 128                                                   // the head dim of the tensor-core kernels
#define TC_LD (TC_D + 8)                                           // bf16 row stride of [*][128] tiles
#define TCX_RC 64                                                  // statistics rows per chunk (ea_cov_tc)
#define TCX_LD (TCX_RC + 8)                                        // bf16 row stride of Xt
#define TCK_KT 64                                                  // keys per tile (ea_logits_tc)
#define TCL_SMEM ((2 * TC_D * TC_LD + 2 * TCK_KT * TC_LD) * 2 + TC_D * 4)  // ea_logits_tc's shared memory

#ifndef SCORE_TC_UNSUPPORTED
// bf16pair packs bf16(x0) (low half) and bf16(x1) (high half), rounding to nearest even.
__device__ __forceinline__ uint32_t bf16pair(float x0, float x1) {
	uint32_t r;
	asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(x1), "f"(x0));
	return r;
}
__device__ __forceinline__ float bf16_low(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_high(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }
__device__ __forceinline__ float bf16_at(const uint16_t* p) { return __uint_as_float((uint32_t)*p << 16); }

// split2 writes x0, x1 as hi + lo bf16 pairs.
__device__ __forceinline__ void split2(float x0, float x1, uint32_t& hi, uint32_t& lo) {
	hi = bf16pair(x0, x1);
	lo = bf16pair(x0 - bf16_low(hi), x1 - bf16_high(hi));
}

__device__ __forceinline__ uint32_t shared_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void ldm_x4(uint32_t (&r)[4], const uint16_t* p) {
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(shared_addr(p))
	             : "memory");
}
__device__ __forceinline__ void ldm_x4_trans(uint32_t (&r)[4], const uint16_t* p) {
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(shared_addr(p))
	             : "memory");
}

// mma16816: c [16x8] += a [16x16] b [16x8], bf16 in, float32 accumulate.
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
	asm volatile(
	    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
	    "{%0, %1, %2, %3};"
	    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// mma3: c += (ah + al)(bh + bl) without al*bl.
__device__ __forceinline__ void mma3(float (&c)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4], uint32_t bh0,
                                     uint32_t bh1, uint32_t bl0, uint32_t bl1) {
	mma16816(c, al, bh0, bh1);
	mma16816(c, ah, bl0, bl1);
	mma16816(c, ah, bh0, bh1);
}

// ea_cov_tc_body: the chunk loop and the output of ea_cov_tc for a warp whose row tiles
// start their n-tiles at S1 (tile w) and S2 (tile 7-w).
template <int S1, int S2>
__device__ __forceinline__ void ea_cov_tc_body(float* __restrict__ mpart, float* __restrict__ spart,
                                               const float* __restrict__ qh, const float* __restrict__ cosT,
                                               const float* __restrict__ sinT, const int* __restrict__ rows,
                                               int nrows, long long qstride, int rowsPerSplit, uint16_t* xh,
                                               uint16_t* xl, const float* shift) {
	constexpr int N1 = 16 - S1, N2 = 16 - S2;
	const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
	const int rt1 = w, rt2 = 7 - w;
	const int h = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
	float acc1[N1][4], acc2[N2][4];
#pragma unroll
	for (int i = 0; i < N1; i++) acc1[i][0] = acc1[i][1] = acc1[i][2] = acc1[i][3] = 0.f;
#pragma unroll
	for (int i = 0; i < N2; i++) acc2[i][0] = acc2[i][1] = acc2[i][2] = acc2[i][3] = 0.f;
	float colsum = 0.f;
	const int half = TC_D / 2;
	const int rbeg = split * rowsPerSplit, rend = min(nrows, rbeg + rowsPerSplit);
	for (int base = rbeg; base < rend; base += TCX_RC) {
		__syncthreads();  // the previous chunk is consumed
		for (int task = tid; task < TCX_RC * (half / 4); task += blockDim.x) {
			const int rr = task % TCX_RC, j = (task / TCX_RC) * 4;
			float lo[4] = {0.f, 0.f, 0.f, 0.f}, hi[4] = {0.f, 0.f, 0.f, 0.f};
			if (base + rr < rend) {
				const long long r = rows[base + rr];
				const float4 a = *(const float4*)(qh + r * qstride + j);
				const float4 b = *(const float4*)(qh + r * qstride + half + j);
				const float4 c = *(const float4*)(cosT + r * half + j);
				const float4 s = *(const float4*)(sinT + r * half + j);
				lo[0] = a.x * c.x + b.x * s.x - shift[j];
				lo[1] = a.y * c.y + b.y * s.y - shift[j + 1];
				lo[2] = a.z * c.z + b.z * s.z - shift[j + 2];
				lo[3] = a.w * c.w + b.w * s.w - shift[j + 3];
				hi[0] = b.x * c.x - a.x * s.x - shift[half + j];
				hi[1] = b.y * c.y - a.y * s.y - shift[half + j + 1];
				hi[2] = b.z * c.z - a.z * s.z - shift[half + j + 2];
				hi[3] = b.w * c.w - a.w * s.w - shift[half + j + 3];
			}
#pragma unroll
			for (int e = 0; e < 4; e += 2) {
				uint32_t ph, pl;
				split2(lo[e], lo[e + 1], ph, pl);
				xh[(j + e) * TCX_LD + rr] = (uint16_t)(ph & 0xffffu);
				xh[(j + e + 1) * TCX_LD + rr] = (uint16_t)(ph >> 16);
				xl[(j + e) * TCX_LD + rr] = (uint16_t)(pl & 0xffffu);
				xl[(j + e + 1) * TCX_LD + rr] = (uint16_t)(pl >> 16);
				split2(hi[e], hi[e + 1], ph, pl);
				xh[(half + j + e) * TCX_LD + rr] = (uint16_t)(ph & 0xffffu);
				xh[(half + j + e + 1) * TCX_LD + rr] = (uint16_t)(ph >> 16);
				xl[(half + j + e) * TCX_LD + rr] = (uint16_t)(pl & 0xffffu);
				xl[(half + j + e + 1) * TCX_LD + rr] = (uint16_t)(pl >> 16);
			}
		}
		__syncthreads();
		{  // column sums (thread tid: dim tid)
			const uint16_t* ph = xh + tid * TCX_LD;
			const uint16_t* pl = xl + tid * TCX_LD;
			for (int rr = 0; rr < TCX_RC; rr++) colsum += bf16_at(ph + rr) + bf16_at(pl + rr);
		}
#pragma unroll
		for (int kk = 0; kk < TCX_RC / 16; kk += 2) {
			uint32_t a1h[2][4], a1l[2][4], a2h[2][4], a2l[2][4];
#pragma unroll
			for (int s = 0; s < 2; s++) {
				const int col = (kk + s) * 16 + (lane >> 4) * 8;
				ldm_x4(a1h[s], xh + (rt1 * 16 + (lane & 15)) * TCX_LD + col);
				ldm_x4(a1l[s], xl + (rt1 * 16 + (lane & 15)) * TCX_LD + col);
				ldm_x4(a2h[s], xh + (rt2 * 16 + (lane & 15)) * TCX_LD + col);
				ldm_x4(a2l[s], xl + (rt2 * 16 + (lane & 15)) * TCX_LD + col);
			}
#pragma unroll
			for (int nt = S1; nt < 16; nt++) {
				uint32_t bh[4], bl[4];  // b0, b1 of k-step kk, then of kk+1
				ldm_x4(bh, xh + (nt * 8 + (lane & 7)) * TCX_LD + kk * 16 + (lane >> 3) * 8);
				ldm_x4(bl, xl + (nt * 8 + (lane & 7)) * TCX_LD + kk * 16 + (lane >> 3) * 8);
#pragma unroll
				for (int s = 0; s < 2; s++) {
					mma3(acc1[nt - S1], a1h[s], a1l[s], bh[2 * s], bh[2 * s + 1], bl[2 * s], bl[2 * s + 1]);
					if (nt >= S2) mma3(acc2[nt - S2], a2h[s], a2l[s], bh[2 * s], bh[2 * s + 1], bl[2 * s], bl[2 * s + 1]);
				}
			}
		}
	}
	const int BD = TC_D / 4;
	float* out = mpart + (long long)(h * splits + split) * 10 * BD * BD;
#pragma unroll
	for (int i = 0; i < N1 + N2; i++) {
		const bool first = i < N1;
		const int nt = first ? S1 + i : S2 + (i - N1);
		const int rt = first ? rt1 : rt2;
		const float* c = first ? acc1[i] : acc2[i - N1];
#pragma unroll
		for (int e = 0; e < 4; e++) {
			const int a = rt * 16 + g + (e >> 1) * 8, b = nt * 8 + 2 * t4 + (e & 1);
			const int A = a / BD, B = b / BD;
			out[ea_pair_index(A, B) * BD * BD + (a - A * BD) * BD + (b - B * BD)] = c[e];
		}
	}
	spart[(long long)(h * splits + split) * TC_D + tid] = colsum;
}
#endif

extern "C" __global__ void __launch_bounds__(128) ea_cov_tc(float* __restrict__ mpart, float* __restrict__ spart,
                                                            float* __restrict__ shiftOut, const float* __restrict__ q,
                                                            const float* __restrict__ cosT,
                                                            const float* __restrict__ sinT,
                                                            const int* __restrict__ rows, int nrows, int heads,
                                                            int rowsPerSplit) {
#ifdef SCORE_TC_UNSUPPORTED
	__trap();
#else
	extern __shared__ __align__(16) unsigned char tcsmem[];
	uint16_t* xh = (uint16_t*)tcsmem;                  // [128][TCX_LD]
	uint16_t* xl = xh + TC_D * TCX_LD;                 // [128][TCX_LD]
	float* shift = (float*)(xl + TC_D * TCX_LD);       // [128]
	const int h = blockIdx.x, tid = threadIdx.x, half = TC_D / 2;
	const long long qstride = (long long)heads * TC_D;
	const float* qh = q + (long long)h * TC_D;
	{
		const long long r0 = rows[0];
		for (int j = tid; j < half; j += blockDim.x) {
			const float a = qh[r0 * qstride + j], b = qh[r0 * qstride + half + j];
			const float c = cosT[r0 * half + j], s = sinT[r0 * half + j];
			shift[j] = a * c + b * s;
			shift[half + j] = b * c - a * s;
		}
	}
	__syncthreads();
	if (blockIdx.y == 0) shiftOut[(long long)h * TC_D + tid] = shift[tid];
	if ((tid >> 5) < 2)
		ea_cov_tc_body<0, 12>(mpart, spart, qh, cosT, sinT, rows, nrows, qstride, rowsPerSplit, xh, xl, shift);
	else
		ea_cov_tc_body<4, 8>(mpart, spart, qh, cosT, sinT, rows, nrows, qstride, rowsPerSplit, xh, xl, shift);
#endif
}

extern "C" __global__ void __launch_bounds__(128) ea_logits_tc(float* __restrict__ z, const float* __restrict__ k,
                                                               const float* __restrict__ ut,
                                                               const float* __restrict__ lin, int T, int heads,
                                                               int kvHeads, int j0, int keysPerBlock) {
#ifdef SCORE_TC_UNSUPPORTED
	__trap();
#else
	extern __shared__ __align__(16) unsigned char tcsmem[];
	uint16_t* uh = (uint16_t*)tcsmem;          // [b][a]: U[a][b], hi
	uint16_t* ulo = uh + TC_D * TC_LD;         // lo
	uint16_t* kh = ulo + TC_D * TC_LD;         // [key][b], hi
	uint16_t* kl = kh + TCK_KT * TC_LD;        // lo
	float* linS = (float*)(kl + TCK_KT * TC_LD);  // [128]
	const int h = blockIdx.x, g = h / (heads / kvHeads);
	const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, gr = lane >> 2, t4 = lane & 3;

	const float* uhp = ut + (long long)h * TC_D * TC_D;
	for (int e = tid * 2; e < TC_D * TC_D; e += blockDim.x * 2) {
		const int b = e / TC_D, a = e % TC_D;
		const float2 v = *(const float2*)(uhp + e);
		uint32_t ph, pl;
		split2(v.x, v.y, ph, pl);
		*(uint32_t*)(uh + b * TC_LD + a) = ph;
		*(uint32_t*)(ulo + b * TC_LD + a) = pl;
	}
	linS[tid] = lin[(long long)h * TC_D + tid];

	const long long kstride = (long long)kvHeads * TC_D;
	const float* kg = k + (long long)g * TC_D;
	const int kbeg = j0 + blockIdx.y * keysPerBlock;
	const int kend = min(T, kbeg + keysPerBlock);
	for (int base = kbeg; base < kend; base += TCK_KT) {
		__syncthreads();  // U ready; the previous tile is consumed
		for (int e = tid; e < TCK_KT * (TC_D / 2); e += blockDim.x) {
			const int key = e / (TC_D / 2), c = (e % (TC_D / 2)) * 2;
			float2 v = make_float2(0.f, 0.f);
			if (base + key < kend) v = *(const float2*)(kg + (long long)(base + key) * kstride + c);
			uint32_t ph, pl;
			split2(v.x, v.y, ph, pl);
			*(uint32_t*)(kh + key * TC_LD + c) = ph;
			*(uint32_t*)(kl + key * TC_LD + c) = pl;
		}
		__syncthreads();
		float acc[16][4];
#pragma unroll
		for (int nt = 0; nt < 16; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
		for (int B = 0; B < 4; B++) {  // dims b of block B: k-steps 2B, 2B+1
			uint32_t ah[2][4], al[2][4];
#pragma unroll
			for (int s = 0; s < 2; s++) {
				const int col = (2 * B + s) * 16 + (lane >> 4) * 8;
				ldm_x4(ah[s], kh + (w * 16 + (lane & 15)) * TC_LD + col);
				ldm_x4(al[s], kl + (w * 16 + (lane & 15)) * TC_LD + col);
			}
#pragma unroll
			for (int nt = 0; nt < 4 * (B + 1); nt += 2) {  // a-blocks <= B: U is zero below
#pragma unroll
				for (int s = 0; s < 2; s++) {
					uint32_t bh[4], bl[4];  // b0, b1 of n-tile nt, then of nt+1
					const int row = (2 * B + s) * 16 + (lane & 15);
					ldm_x4_trans(bh, uh + row * TC_LD + nt * 8 + (lane >> 4) * 8);
					ldm_x4_trans(bl, ulo + row * TC_LD + nt * 8 + (lane >> 4) * 8);
					mma3(acc[nt], ah[s], al[s], bh[0], bh[1], bl[0], bl[1]);
					mma3(acc[nt + 1], ah[s], al[s], bh[2], bh[3], bl[2], bl[3]);
				}
			}
		}
		// z for this thread's keys (rows gr and gr+8 of the warp's 16).
		float z0 = 0.f, z1 = 0.f;
		const uint16_t* r0h = kh + (w * 16 + gr) * TC_LD;
		const uint16_t* r0l = kl + (w * 16 + gr) * TC_LD;
#pragma unroll
		for (int nt = 0; nt < 16; nt++) {
			const int a = nt * 8 + 2 * t4;
			const float k00 = bf16_at(r0h + a) + bf16_at(r0l + a);
			const float k01 = bf16_at(r0h + a + 1) + bf16_at(r0l + a + 1);
			const float k10 = bf16_at(r0h + 8 * TC_LD + a) + bf16_at(r0l + 8 * TC_LD + a);
			const float k11 = bf16_at(r0h + 8 * TC_LD + a + 1) + bf16_at(r0l + 8 * TC_LD + a + 1);
			z0 = fmaf(k00, acc[nt][0] + linS[a], z0);
			z0 = fmaf(k01, acc[nt][1] + linS[a + 1], z0);
			z1 = fmaf(k10, acc[nt][2] + linS[a], z1);
			z1 = fmaf(k11, acc[nt][3] + linS[a + 1], z1);
		}
		z0 += __shfl_xor_sync(0xffffffffu, z0, 1);
		z0 += __shfl_xor_sync(0xffffffffu, z0, 2);
		z1 += __shfl_xor_sync(0xffffffffu, z1, 1);
		z1 += __shfl_xor_sync(0xffffffffu, z1, 2);
		const int key0 = base + w * 16 + gr;
		if (t4 == 0) {
			if (key0 < kend) z[(long long)h * T + key0] = z0 / (float)(2 * TC_D);
			if (key0 + 8 < kend) z[(long long)h * T + key0 + 8] = z1 / (float)(2 * TC_D);
		}
	}
#endif
}
