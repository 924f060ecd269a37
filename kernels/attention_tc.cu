// attention_tc.cu: causal grouped-query prefill attention on bf16 tensor cores with
// float32 accumulation, FlashAttention-2 style (online softmax over key tiles; no
// [n, T] score matrix is ever stored). backend/cuda/attention_tc.go launches it from
// Backend.Attention when Options.TensorCores is set and the call has many queries.
//
// Same function as attention.cu (see there): query row i of the n new rows, head h,
// sees the first len[kvh] + i + 1 entries of KV head kvh = h / (heads/kvHeads), with
//   out[i, h*hd:(h+1)*hd] = sum_j softmax_j(scale * q_i . k_j) v_j
// except that q, k, v and the softmax weights p are rounded to bfloat16 before the two
// matrix products (S = Q K^T, O = P V); S, O, the running max and sum stay float32.
//
// kv_to_bf16: copies the live rows of one layer's float32 cache into bfloat16
//   kb, vb [kvHeads][T][HDP]: kb[h][j][d] = bf16(kc[(off[h]+j)*hd + d]) for
//   j < len[h]+n, d < hd; zero for hd <= d < HDP and for len[h]+n <= j < (len[h]+n
//   rounded up to 64): every row an attention tile can load is written, so masked keys
//   are finite (0 * NaN in P.V would poison a row). Rows past that are never read.
//   Launch: grid-stride over 8-element groups (two float4 loads, one 16-byte store),
//   block 256. Bound: memory, 12 bytes per live element.
// kv_bf16_to_bf16: the same copy from a bfloat16 cache (Options.KVBF16): one 16-byte
//   load per group, no rounding (the cache already holds what the copy would round to),
//   4 bytes per live element. The copy stays (rather than the kernel reading the cache
//   in place) because the tiles need every head's rows at a uniform stride, padded to
//   HDP and zero past the live rows up to the next 64, which the cache does not have.
//   Why a separate pass instead of converting while staging tiles: a block re-reads its
//   head's K and V once per 64 queries, so converting once halves the bytes every block
//   pulls from L2 (bf16, not float32) and lets the tile loads be cp.async copies that
//   run while the tensor cores work on the previous tile (a float32 -> bf16 staging
//   would need the next tile in registers, 128 of them per thread at hd 128). The pass
//   costs ~12 bytes per cached element, a few percent of a long prefill.
//
// attention_tc_d<HD>_w<W>: HD = 64 or 128 (a padded head dim: hd is any multiple of 16
//   up to HD; the padding is zero in K, V and Q and never stored), W warps per block.
//   Block: W warps, BM = 16*W query rows of one query head; warp w owns rows
//   16w .. 16w+15. Grid: x = ceil(n / BM) (reversed: the last rows, which see the most
//   keys, start first), y = heads, z = splits (split-K over the keys, for calls with too
//   few row blocks to fill the GPU; attention_combine in attention.cu merges them).
//   Per block: Q [BM, HD] is converted to bf16 into shared memory and each warp loads
//   its 16 rows into registers as mma A fragments (ldmatrix), once. Then for each
//   64-key tile of the block's key range [split*chunk, min((split+1)*chunk, keys the
//   last row sees)), double-buffered with cp.async (tile t+1 is copied while tile t is
//   computed):
//     S [16, 64]  = Q K^T   mma.m16n8k16 bf16, K fragments by ldmatrix (non-transposed:
//                           K's rows are B's columns)
//     scale, causal mask    only in tiles that cross the warp's diagonal; a warp skips
//                           the math of tiles none of its rows sees
//     online softmax        base-2: s' = s * scale*log2(e), m = running max of s',
//                           p = 2^(s' - m), o and l rescaled by 2^(m_old - m)
//     O [16, HD] += P V     P from the S accumulators rounded to bf16 (A fragments in
//                           registers), V fragments by ldmatrix.trans
//   splits == 1 writes out = o / l; splits > 1 writes the unnormalised o and
//   (m * ln 2, l) per row to part_o [splits, n, heads, hd] and part_ml [splits, n,
//   heads, 2] (natural-log units, as attention_combine expects; a split that sees none
//   of a row's keys writes m = -inf, which the combine skips).
//   Shared memory (dynamic): 2 stages x (K + V) tiles of 64 rows x (HD + 8) bf16 (the
//   8-element pad shifts each row by 16 bytes, so ldmatrix's 8 row reads hit distinct
//   banks): 69632 bytes at HD 128 (needs cuFuncSetAttribute's opt-in above 48 KiB),
//   36864 at HD 64. Q's staging area aliases stage 1 (BM <= 128 rows fit it).
//
// Why mma.sync and not wmma or wgmma: the m16n8k16 accumulator layout is documented
// (row g = lane/4, columns 2*(lane%4) + {0, 1}), so the softmax works on the S
// accumulators in registers and turns them into P's A fragments without a trip through
// shared memory, which wmma's opaque fragments would need. wgmma (sm_90a only) is faster
// but needs the `a` target and its shared-memory descriptors; mma.sync runs on sm_80 and
// later, including the H200, at a good fraction of the tensor-core peak.
//
// Bound: tensor-core throughput (4*hd FLOPs per visible (query, key) pair) and shared
// memory bandwidth for the B fragments (each warp reads every K and V tile once per
// 16 query rows).

#include <stdint.h>

// bf16 mma.sync, cp.async and cvt.bf16x2 need sm_80; an older target still builds the
// module (every .cu is compiled for the same target), with kernels that trap. The host
// never launches them there (attention_tc.go checks the compute capability).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define TC_UNSUPPORTED 1
#endif

#define BN 64  // keys per tile
#define NEG_INF (-__int_as_float(0x7f800000))
#define LN2 0.6931471805599453f

// ---------------------------------------------------------------------------------
// Small PTX helpers.

// pack_bf16 rounds lo and hi to bfloat16 (nearest even) and packs them, lo in the low
// half (the element with the lower column index in an mma fragment).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
	uint32_t r;
	asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));  // d.hi = a, d.lo = b
	return r;
}

__device__ __forceinline__ float ex2(float x) {  // 2^x; 2^-inf = 0
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
	return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src) {
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
	asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// ldsm_x4 loads four 8x8 bf16 matrices; lane l gives the address of row l%8 of matrix
// l/8, and receives in r[i] row l/4, columns 2*(l%4) and 2*(l%4)+1 of matrix i
// (transposed with ldsm_x4_t).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(addr)
	             : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(addr)
	             : "memory");
}

// mma_bf16: c [16x8] += a [16x16] b [16x8], bf16 inputs, float32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
	asm volatile(
	    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
	    "{%0, %1, %2, %3};"
	    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---------------------------------------------------------------------------------

// kv_copy_bf16 is kv_to_bf16 (SRC_BF16 = 0: float32 cache) and kv_bf16_to_bf16
// (SRC_BF16 = 1: bfloat16 cache).
template <int SRC_BF16>
__device__ __forceinline__ void kv_copy_bf16(uint16_t* __restrict__ kb, uint16_t* __restrict__ vb,
                                             const void* __restrict__ kc, const void* __restrict__ vc,
                                             const int* __restrict__ off, const int* __restrict__ len, int n,
                                             int kvHeads, int hd, int hdp, int T) {
#ifdef TC_UNSUPPORTED
	__trap();
#else
	const int gpr = hdp / 8;  // 8-element groups per row
	const long long perHead = (long long)T * gpr;
	const long long total = perHead * kvHeads;
	for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
	     e += (long long)gridDim.x * blockDim.x) {
		const int h = (int)(e / perHead);
		const long long rem = e - (long long)h * perHead;
		const int j = (int)(rem / gpr), d = (int)(rem % gpr) * 8;
		const int live = len[h] + n;
		if (j >= (live + BN - 1) / BN * BN) continue;  // never loaded
		uint4 kw = make_uint4(0, 0, 0, 0), vw = make_uint4(0, 0, 0, 0);
		if (j < live && d < hd) {  // hd % 16 == 0: the 8 elements are all in or all out
			const long long src = ((long long)off[h] + j) * hd + d;
			if (SRC_BF16) {
				kw = *(const uint4*)((const uint16_t*)kc + src);
				vw = *(const uint4*)((const uint16_t*)vc + src);
			} else {
				const float* kf = (const float*)kc + src;
				const float* vf = (const float*)vc + src;
				const float4 k0 = *(const float4*)kf, k1 = *(const float4*)(kf + 4);
				const float4 v0 = *(const float4*)vf, v1 = *(const float4*)(vf + 4);
				kw = make_uint4(pack_bf16(k0.x, k0.y), pack_bf16(k0.z, k0.w), pack_bf16(k1.x, k1.y), pack_bf16(k1.z, k1.w));
				vw = make_uint4(pack_bf16(v0.x, v0.y), pack_bf16(v0.z, v0.w), pack_bf16(v1.x, v1.y), pack_bf16(v1.z, v1.w));
			}
		}
		const long long dst = ((long long)h * T + j) * hdp + d;
		*(uint4*)(kb + dst) = kw;
		*(uint4*)(vb + dst) = vw;
	}
#endif
}

extern "C" __global__ void __launch_bounds__(256) kv_to_bf16(uint16_t* kb, uint16_t* vb, const float* kc, const float* vc,
                                                             const int* off, const int* len, int n, int kvHeads, int hd,
                                                             int hdp, int T) {
	kv_copy_bf16<0>(kb, vb, kc, vc, off, len, n, kvHeads, hd, hdp, T);
}

extern "C" __global__ void __launch_bounds__(256) kv_bf16_to_bf16(uint16_t* kb, uint16_t* vb, const uint16_t* kc,
                                                                  const uint16_t* vc, const int* off, const int* len,
                                                                  int n, int kvHeads, int hd, int hdp, int T) {
	kv_copy_bf16<1>(kb, vb, kc, vc, off, len, n, kvHeads, hd, hdp, T);
}

template <int HD, int WARPS>
__device__ __forceinline__ void attention_tc_impl(float* __restrict__ out, float* __restrict__ part_o,
                                                  float* __restrict__ part_ml, const float* __restrict__ q,
                                                  const uint16_t* __restrict__ kb, const uint16_t* __restrict__ vb,
                                                  const int* __restrict__ len, int n, int heads, int kvHeads,
                                                  int hd, int T, float scaleLog2, int chunk, int splits) {
#ifdef TC_UNSUPPORTED
	__trap();
#else
	constexpr int THREADS = WARPS * 32;
	constexpr int BM = WARPS * 16;   // query rows per block
	constexpr int LD = HD + 8;       // shared-memory row stride, bf16 elements
	constexpr int TILE = BN * LD;    // one K or V tile
	constexpr int KSTEPS = HD / 16;  // mma k-steps of S = Q K^T
	constexpr int DT = HD / 8;       // 8-column tiles of O
	static_assert(HD % 32 == 0 && BM <= 2 * BN, "Q must fit one stage");

	extern __shared__ __align__(16) uint16_t smem[];
	uint16_t* qs = smem + 2 * TILE;  // Q staging, aliases stage 1 (K and V)

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int g = lane >> 2, tig = lane & 3;  // mma fragment row and column pair
	const int qblk = gridDim.x - 1 - blockIdx.x;
	const int h = blockIdx.y, split = blockIdx.z;
	const int kvh = h / (heads / kvHeads);
	const int row0 = qblk * BM;
	const int lenh = len[kvh];
	const long long qstride = (long long)heads * hd;

	// Keys [kbeg, kend) of this split that some row of the block sees.
	const int kbeg = split * chunk;
	const int kend = min(kbeg + chunk, lenh + min(row0 + BM, n));
	const int ntiles = kend > kbeg ? (kend - kbeg + BN - 1) / BN : 0;

	// This warp's rows and the thread's two rows (g and g+8 of the warp's 16).
	const int wr0 = row0 + warp * 16;
	const int wlast = min(wr0 + 15, n - 1);  // < wr0 when the warp has no rows
	const int lim0 = lenh + wr0 + g, lim1 = lim0 + 8;  // last key each row sees

	float o[DT][4];
#pragma unroll
	for (int dt = 0; dt < DT; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
	float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};

	if (ntiles > 0) {
		// Tile copies: thread tid moves 16-byte chunk tid % CPR of rows tid / CPR + i*RP.
		constexpr int CPR = HD / 8;          // 16-byte chunks per row
		constexpr int RP = THREADS / CPR;    // rows per pass
		constexpr int STAGE = 2 * TILE * 2;  // bytes of one stage (K and V)
		static_assert(THREADS % CPR == 0 && BN % RP == 0, "whole rows per pass");
		const int r0 = tid / CPR, c0 = (tid % CPR) * 8;
		const long long first = ((long long)kvh * T + kbeg + r0) * HD + c0;
		const uint16_t* ksrc = kb + first;
		const uint16_t* vsrc = vb + first;
		const uint32_t sdst = smem_addr(smem + r0 * LD + c0);
		auto load_tile = [&](int t, int stage) {
			const long long at = (long long)t * BN * HD;
			const uint32_t dst = sdst + stage * STAGE;
#pragma unroll
			for (int i = 0; i < BN / RP; i++) {
				cp_async16(dst + i * RP * LD * 2, ksrc + at + i * RP * HD);
				cp_async16(dst + TILE * 2 + i * RP * LD * 2, vsrc + at + i * RP * HD);
			}
			cp_async_commit();
		};
		load_tile(0, 0);

		// Q rows row0 .. row0+BM-1 of head h to bf16 (zero past n and past hd).
		for (int e = tid; e < BM * (HD / 4); e += THREADS) {
			const int r = e / (HD / 4), c = (e % (HD / 4)) * 4;
			float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
			if (row0 + r < n && c < hd) v = *(const float4*)(q + (row0 + r) * qstride + (long long)h * hd + c);
			*(uint2*)(qs + r * LD + c) = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
		}
		__syncthreads();
		uint32_t qf[KSTEPS][4];  // A fragments of the warp's 16 rows
#pragma unroll
		for (int ks = 0; ks < KSTEPS; ks++)
			ldsm_x4(qf[ks], smem_addr(qs + (warp * 16 + (lane & 15)) * LD + ks * 16 + (lane >> 4) * 8));
		__syncthreads();  // stage 1 is free for tile 1

		for (int t = 0; t < ntiles; t++) {
			const int stage = t & 1;
			if (t + 1 < ntiles) {
				load_tile(t + 1, stage ^ 1);
				cp_async_wait<1>();  // tile t has landed (this thread's copies)
			} else {
				cp_async_wait<0>();
			}
			__syncthreads();  // ... and every thread's
			const int key0 = kbeg + t * BN;
			if (wr0 <= wlast && key0 <= lenh + wlast) {  // some row of the warp sees a key here
				const uint16_t* ks = smem + stage * 2 * TILE;
				const uint16_t* vs = ks + TILE;

				// S = Q K^T: 8 column tiles of 8 keys.
				float s[BN / 8][4];
#pragma unroll
				for (int nt = 0; nt < BN / 8; nt++) {
					s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
					for (int kk = 0; kk < KSTEPS; kk += 2) {
						uint32_t b[4];  // b0, b1 of k-step kk, then of kk+1
						ldsm_x4(b, smem_addr(ks + (nt * 8 + (lane & 7)) * LD + kk * 16 + (lane >> 3) * 8));
						mma_bf16(s[nt], qf[kk], b[0], b[1]);
						mma_bf16(s[nt], qf[kk + 1], b[2], b[3]);
					}
				}

				// Scale to base 2; mask keys past each row's limit where the tile crosses
				// the warp's diagonal (key0 + BN - 1 > the first row's limit).
				const bool mask = key0 + BN - 1 > lenh + wr0;
#pragma unroll
				for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
					for (int e = 0; e < 4; e++) {
						s[nt][e] *= scaleLog2;
						if (mask) {
							const int j = key0 + nt * 8 + 2 * tig + (e & 1);
							if (j > ((e & 2) ? lim1 : lim0)) s[nt][e] = NEG_INF;
						}
					}
				}

				// Online softmax, per row half (0: row g, 1: row g+8). The row max is
				// reduced over the 4 threads of the quad; l stays a per-thread partial sum
				// (the quad shares m and alpha), reduced at the end.
#pragma unroll
				for (int rh = 0; rh < 2; rh++) {
					float mx = NEG_INF;
#pragma unroll
					for (int nt = 0; nt < BN / 8; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * rh], s[nt][2 * rh + 1]));
					mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
					mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
					const float mnew = fmaxf(m[rh], mx);
					const float base = mnew == NEG_INF ? 0.f : mnew;  // no key seen yet: keep zeros
					const float alpha = ex2(m[rh] - base);           // 0 when m was -inf
					m[rh] = mnew;
					float sum = 0.f;
#pragma unroll
					for (int nt = 0; nt < BN / 8; nt++) {
						s[nt][2 * rh] = ex2(s[nt][2 * rh] - base);
						s[nt][2 * rh + 1] = ex2(s[nt][2 * rh + 1] - base);
						sum += s[nt][2 * rh] + s[nt][2 * rh + 1];
					}
					l[rh] = l[rh] * alpha + sum;
#pragma unroll
					for (int dt = 0; dt < DT; dt++) {
						o[dt][2 * rh] *= alpha;
						o[dt][2 * rh + 1] *= alpha;
					}
				}

				// O += P V: 4 k-steps of 16 keys; P's A fragment from S tiles 2kk, 2kk+1.
#pragma unroll
				for (int kk = 0; kk < BN / 16; kk++) {
					const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
					                       pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
					                       pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
					for (int dt = 0; dt < DT; dt += 2) {
						uint32_t b[4];  // b0, b1 of column tile dt, then of dt+1
						ldsm_x4_t(b, smem_addr(vs + (kk * 16 + (lane & 15)) * LD + dt * 8 + (lane >> 4) * 8));
						mma_bf16(o[dt], a, b[0], b[1]);
						mma_bf16(o[dt + 1], a, b[2], b[3]);
					}
				}
			}
			__syncthreads();  // every warp is done with this stage before tile t+2 refills it
		}
	}

	if (wr0 > wlast) return;  // no rows (past n)
#pragma unroll
	for (int rh = 0; rh < 2; rh++) {
		l[rh] += __shfl_xor_sync(0xffffffffu, l[rh], 1);
		l[rh] += __shfl_xor_sync(0xffffffffu, l[rh], 2);
	}
#pragma unroll
	for (int rh = 0; rh < 2; rh++) {
		const int r = wr0 + g + 8 * rh;
		if (r >= n) continue;
		if (splits == 1) {
			const float inv = 1.f / l[rh];  // l > 0: key 0 is visible to every row
			float* dst = out + r * qstride + (long long)h * hd;
#pragma unroll
			for (int dt = 0; dt < DT; dt++) {
				const int d = dt * 8 + 2 * tig;
				if (d < hd) *(float2*)(dst + d) = make_float2(o[dt][2 * rh] * inv, o[dt][2 * rh + 1] * inv);
			}
		} else {
			const long long slot = ((long long)split * n + r) * heads + h;
			float* dst = part_o + slot * hd;
#pragma unroll
			for (int dt = 0; dt < DT; dt++) {
				const int d = dt * 8 + 2 * tig;
				if (d < hd) *(float2*)(dst + d) = make_float2(o[dt][2 * rh], o[dt][2 * rh + 1]);
			}
			if (tig == 0) {
				part_ml[slot * 2] = m[rh] * LN2;  // -inf stays -inf
				part_ml[slot * 2 + 1] = l[rh];
			}
		}
	}
#endif
}

// Minimum blocks per multiprocessor: 3 four-warp blocks (12 warps) fit the 227 KiB of
// shared memory at HD 128 and keep registers at <= 168 per thread; eight-warp blocks
// get the whole register file.
#define ATTENTION_TC_KERNEL(HD, WARPS)                                                                   \
	extern "C" __global__ void __launch_bounds__(WARPS * 32, WARPS == 4 ? 3 : 1)                        \
	    attention_tc_d##HD##_w##WARPS(float* out, float* part_o, float* part_ml, const float* q,         \
	                                  const uint16_t* kb, const uint16_t* vb, const int* len, int n,     \
	                                  int heads, int kvHeads, int hd, int T, float scaleLog2, int chunk, \
	                                  int splits) {                                                      \
		attention_tc_impl<HD, WARPS>(out, part_o, part_ml, q, kb, vb, len, n, heads, kvHeads, hd, T,    \
		                             scaleLog2, chunk, splits);                                         \
	}

ATTENTION_TC_KERNEL(64, 4)
ATTENTION_TC_KERNEL(128, 4)
ATTENTION_TC_KERNEL(64, 8)
ATTENTION_TC_KERNEL(128, 8)
