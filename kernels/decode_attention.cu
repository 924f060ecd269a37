// decode_attention.cu: split-K ("flash decoding") attention of one new row per sequence
// over the contiguous per-head KV cache, every KV head with its own length.
//
// decode_attn_kv<KV>_g<G> (KV: 0 float32 cache, 1 bf16; G: query vectors per KV head, the
//   group heads/kvHeads rounded up to 1, 2, 4 or 8; vectors past the group repeat the
//   last one and are not stored). Grid (splits, kvHeads), block 128 threads. Block
//   (s, kvh) takes keys [s*chunk, min((s+1)*chunk, len[kvh]+1)) of KV head kvh (len is
//   the length before this row's append; the appended key is visible to it) in tiles of
//   T keys (64 bf16, 32 float32), double-buffered in shared memory by cp.async (the
//   whole tile's K and V rows in flight at once, 16-byte copies, rows padded by 16 bytes
//   so that the per-key reads below hit distinct banks; rows past the keys are
//   zero-filled). Per tile:
//     scores: thread t scores key t % T against VPT of the G vectors (q pre-scaled by
//       scale * log2 e, in shared memory, read as broadcasts), writing them to shared
//       memory (masked keys: -inf);
//     softmax: warp w keeps the running max m and sum l of vectors w, w+4 (base 2),
//       turns the scores into weights p and the rescale factor of the earlier tiles;
//     P.V: thread t owns 4 consecutive dims of vector(s) t / (hd/4) (+ 128 / (hd/4)),
//       o = o * alpha + sum_j p_j v_j.
//   splits == 1: out = o / l. Otherwise the block writes its unnormalised o and (m, l)
//   to part_o [splits, heads, hd] and part_ml [splits, heads, 2]; the last block of each
//   KV head to finish (counter[kvh], zero before the launch, reset by that block) merges
//   the splits: M = max_s m_s, out = sum_s o_s 2^(m_s - M) / sum_s l_s 2^(m_s - M). A
//   block whose range is empty (a short head) writes an empty partial (m = -inf, l = 0).
//   Split 0 always holds key 0, so M is finite.
//   Shared memory (dynamic): 2 stages x (K, V) x T x (hd*esz + 16) + G*hd*4 (q) + G*T*4
//   (scores) bytes: 72.7 KB for bf16, hd 128, G 4.
// Bound: memory, reading the live K and V once per KV head (the group's query heads share
// the block): 2 * len * hd * esz bytes per KV head.

#define DA_THREADS 128
#define DA_WARPS (DA_THREADS / 32)
#define DA_MAX_SPLITS 256
#define DA_NEG_INF (-__int_as_float(0x7f800000))

template <int KV>
struct DA {
	static constexpr int ESZ = KV ? 2 : 4;
	static constexpr int T = KV ? 64 : 32;  // keys per tile
	static constexpr int DPC = 16 / ESZ;    // dims per 16-byte chunk
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
	const unsigned int s = (unsigned int)__cvta_generic_to_shared(smem);
	const int n = valid ? 16 : 0;  // 0: zero-fill
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ float da_warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
__device__ __forceinline__ float da_warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

// widen_chunk: one 16-byte chunk of the cache as DPC floats.
template <int KV>
__device__ __forceinline__ void widen_chunk(uint4 r, float* f) {
	if (KV == 0) {
		f[0] = __uint_as_float(r.x), f[1] = __uint_as_float(r.y), f[2] = __uint_as_float(r.z), f[3] = __uint_as_float(r.w);
	} else {
		const unsigned int w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
		for (int i = 0; i < 4; i++) f[2 * i] = __uint_as_float(w[i] << 16), f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
	}
}

// load4: dims d..d+3 of a cache row in shared memory as floats.
template <int KV>
__device__ __forceinline__ float4 load4(const char* row, int d) {
	if (KV == 0) return *(const float4*)(row + d * 4);
	const uint2 u = *(const uint2*)(row + d * 2);
	return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
	                   __uint_as_float(u.y & 0xffff0000u));
}

template <int KV, int G>
__device__ __forceinline__ void decode_attn(float* __restrict__ out, float* __restrict__ part_o,
                                            float* __restrict__ part_ml, int* __restrict__ counter,
                                            const float* __restrict__ q, const char* __restrict__ kc,
                                            const char* __restrict__ vc, const int* __restrict__ off,
                                            const int* __restrict__ len, int heads, int kvHeads, int hd,
                                            float scaleLog2, int chunk, int splits) {
	using P = DA<KV>;
	constexpr int T = P::T;
	constexpr int VPT = (G * T) / DA_THREADS > 0 ? (G * T) / DA_THREADS : 1;  // vectors scored per thread
	constexpr int GPW = (G + DA_WARPS - 1) / DA_WARPS;                         // vectors per warp (softmax)
	extern __shared__ __align__(16) char da_smem[];
	__shared__ float sm_m[G], sm_l[G], sm_alpha[G];
	__shared__ float sm_w[DA_MAX_SPLITS][G];
	__shared__ int sm_last;

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int split = blockIdx.x, kvh = blockIdx.y;
	const int group = heads / kvHeads;
	const int rowBytes = hd * P::ESZ, rs = rowBytes + 16;  // padded row stride in shared memory
	const int chunksPerRow = rowBytes / 16;
	// Stage st's K rows start at da_smem + st * 2 * T * rs, its V rows T * rs later.
	const int stageBytes = 2 * T * rs;
	float* sq = (float*)(da_smem + 2 * stageBytes);  // [G][hd] pre-scaled q
	float* ss = sq + G * hd;                     // [G][T] scores, then weights

	const int visible = len[kvh] + 1;
	const long long offh = off[kvh];
	const int kbeg = split * chunk, kend = min(kbeg + chunk, visible);
	const char* kh = kc + offh * rowBytes;
	const char* vh = vc + offh * rowBytes;

	for (int e = tid; e < G * hd; e += DA_THREADS) {
		const int v = e / hd, d = e - v * hd;
		const int h = kvh * group + min(v, group - 1);
		sq[e] = q[(long long)h * hd + d] * scaleLog2;
	}
	if (tid < G) sm_m[tid] = DA_NEG_INF, sm_l[tid] = 0.f, sm_alpha[tid] = 0.f;

	// PV ownership: dims d4..d4+3 of vectors pv0 + k*vstep, k < npass.
	const int tpv = hd / 4;  // threads per vector
	const int vstep = DA_THREADS / tpv;
	const int pv0 = tid / tpv, d4 = (tid - pv0 * tpv) * 4;
	const bool pvActive = pv0 < vstep;  // tpv may not divide 128
	float o[G][4];
#pragma unroll
	for (int k = 0; k < G; k++) o[k][0] = o[k][1] = o[k][2] = o[k][3] = 0.f;

	auto issue = [&](int st, int t0) {
		const int n = T * chunksPerRow;
		for (int c = tid; c < n; c += DA_THREADS) {
			const int j = c / chunksPerRow, b = (c - j * chunksPerRow) * 16;
			const int key = t0 + j;
			const bool valid = key < kend;
			const long long src = (long long)(valid ? key : kbeg) * rowBytes + b;
			char* dst = da_smem + st * stageBytes + j * rs + b;
			cp_async16(dst, kh + src, valid);
			cp_async16(dst + T * rs, vh + src, valid);
		}
		cp_async_commit();
	};

	const int ntiles = kend > kbeg ? (kend - kbeg + T - 1) / T : 0;
	if (ntiles > 0) issue(0, kbeg);
	__syncthreads();  // sq, sm_m
	for (int it = 0; it < ntiles; it++) {
		const int st = it & 1, t0 = kbeg + it * T;
		if (it + 1 < ntiles) {
			issue(st ^ 1, t0 + T);
			cp_async_wait<1>();
		} else {
			cp_async_wait<0>();
		}
		__syncthreads();  // this tile's rows landed for every thread

		// Scores.
		{
			const int j = tid % T, vg = (tid / T) * VPT;
			if (vg < G) {
				const char* krow = da_smem + st * stageBytes + j * rs;
				float acc[VPT];
#pragma unroll
				for (int k = 0; k < VPT; k++) acc[k] = 0.f;
				for (int c = 0; c < chunksPerRow; c++) {
					float kf[P::DPC];
					widen_chunk<KV>(*(const uint4*)(krow + c * 16), kf);
#pragma unroll
					for (int k = 0; k < VPT; k++) {
						const float* qp = sq + (vg + k) * hd + c * P::DPC;
#pragma unroll
						for (int e = 0; e < P::DPC; e += 4) {
							const float4 qq = *(const float4*)(qp + e);
							acc[k] = fmaf(qq.x, kf[e], acc[k]);
							acc[k] = fmaf(qq.y, kf[e + 1], acc[k]);
							acc[k] = fmaf(qq.z, kf[e + 2], acc[k]);
							acc[k] = fmaf(qq.w, kf[e + 3], acc[k]);
						}
					}
				}
				const bool live = t0 + j < kend;
#pragma unroll
				for (int k = 0; k < VPT; k++) ss[(vg + k) * T + j] = live ? acc[k] : DA_NEG_INF;
			}
		}
		__syncthreads();

		// Online softmax, base 2: warp w updates vectors w, w + 4.
#pragma unroll
		for (int k = 0; k < GPW; k++) {
			const int v = warp + k * DA_WARPS;
			if (v < G) {
				float s0 = ss[v * T + lane], s1 = T > 32 ? ss[v * T + lane + 32] : DA_NEG_INF;
				const float mold = sm_m[v];
				const float mnew = fmaxf(mold, da_warp_max(fmaxf(s0, s1)));
				const float base = mnew == DA_NEG_INF ? 0.f : mnew;
				const float p0 = exp2f(s0 - base), p1 = exp2f(s1 - base);  // 0 for -inf
				ss[v * T + lane] = p0;
				if (T > 32) ss[v * T + lane + 32] = p1;
				const float psum = da_warp_sum(p0 + p1);
				if (lane == 0) {
					const float alpha = exp2f(mold - base);  // 0 when nothing was seen
					sm_alpha[v] = alpha;
					sm_l[v] = sm_l[v] * alpha + psum;
					sm_m[v] = mnew;
				}
			}
		}
		__syncthreads();

		// P.V.
		if (pvActive) {
#pragma unroll
			for (int k = 0; k < G; k++) {
				const int v = pv0 + k * vstep;
				if (k * vstep < G && v < G) {
					const float a = sm_alpha[v];
					float4 acc = make_float4(o[k][0] * a, o[k][1] * a, o[k][2] * a, o[k][3] * a);
					const float* pw = ss + v * T;
					const char* vrow = da_smem + st * stageBytes + T * rs;
#pragma unroll 8
					for (int j = 0; j < T; j++) {
						const float p = pw[j];
						const float4 vv = load4<KV>(vrow + j * rs, d4);
						acc.x = fmaf(p, vv.x, acc.x);
						acc.y = fmaf(p, vv.y, acc.y);
						acc.z = fmaf(p, vv.z, acc.z);
						acc.w = fmaf(p, vv.w, acc.w);
					}
					o[k][0] = acc.x, o[k][1] = acc.y, o[k][2] = acc.z, o[k][3] = acc.w;
				}
			}
		}
		__syncthreads();  // the stage and the scores are free for the next tile
	}

	// Results of this block.
	if (pvActive) {
#pragma unroll
		for (int k = 0; k < G; k++) {
			const int v = pv0 + k * vstep;
			if (k * vstep < G && v < min(G, group)) {
				const int h = kvh * group + v;
				if (splits == 1) {
					const float inv = 1.f / sm_l[v];  // > 0: key 0 is in the only split
					*(float4*)(out + (long long)h * hd + d4) = make_float4(o[k][0] * inv, o[k][1] * inv, o[k][2] * inv, o[k][3] * inv);
				} else {
					const long long slot = (long long)split * heads + h;
					*(float4*)(part_o + slot * hd + d4) = make_float4(o[k][0], o[k][1], o[k][2], o[k][3]);
					if (d4 == 0) part_ml[slot * 2] = sm_m[v], part_ml[slot * 2 + 1] = sm_l[v];
				}
			}
		}
	}
	if (splits == 1) return;

	// The last block of this KV head to finish merges every split.
	__threadfence();
	__syncthreads();
	if (tid == 0) sm_last = atomicAdd(counter + kvh, 1) == splits - 1;
	__syncthreads();
	if (!sm_last) return;
	__threadfence();
#pragma unroll
	for (int k = 0; k < GPW; k++) {
		const int v = warp + k * DA_WARPS;
		if (v < min(G, group)) {
			const long long h = kvh * group + v;
			float M = DA_NEG_INF;
			for (int sp = lane; sp < splits; sp += 32) M = fmaxf(M, __ldcg(part_ml + (sp * heads + h) * 2));
			M = da_warp_max(M);  // finite: split 0 holds key 0
			float L = 0.f;
			for (int sp = lane; sp < splits; sp += 32) {
				const float ms = __ldcg(part_ml + (sp * heads + h) * 2);
				const float wgt = exp2f(ms - M);  // 0 for an empty split
				sm_w[sp][v] = wgt;
				L += wgt * __ldcg(part_ml + (sp * heads + h) * 2 + 1);
			}
			L = da_warp_sum(L);
			const float inv = 1.f / L;
			for (int sp = lane; sp < splits; sp += 32) sm_w[sp][v] *= inv;
		}
	}
	__syncthreads();
	if (pvActive) {
#pragma unroll
		for (int k = 0; k < G; k++) {
			const int v = pv0 + k * vstep;
			if (k * vstep < G && v < min(G, group)) {
				const long long h = kvh * group + v;
				float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 16
				for (int sp = 0; sp < splits; sp++) {
					const float wgt = sm_w[sp][v];
					const float4 po = __ldcg((const float4*)(part_o + ((long long)sp * heads + h) * hd + d4));
					acc.x = fmaf(wgt, po.x, acc.x);
					acc.y = fmaf(wgt, po.y, acc.y);
					acc.z = fmaf(wgt, po.z, acc.z);
					acc.w = fmaf(wgt, po.w, acc.w);
				}
				*(float4*)(out + h * hd + d4) = acc;
			}
		}
	}
	if (tid == 0) counter[kvh] = 0;  // ready for the next launch
}

#define DECODE_ATTN_KERNEL(KV, G)                                                                        \
	extern "C" __global__ void __launch_bounds__(DA_THREADS, 4) decode_attn_kv##KV##_g##G(                  \
	    float* out, float* part_o, float* part_ml, int* counter, const float* q, const char* kc,        \
	    const char* vc, const int* off, const int* len, int heads, int kvHeads, int hd, float scaleLog2, \
	    int chunk, int splits) {                                                                         \
		decode_attn<KV, G>(out, part_o, part_ml, counter, q, kc, vc, off, len, heads, kvHeads, hd,       \
		                   scaleLog2, chunk, splits);                                                    \
	}

DECODE_ATTN_KERNEL(0, 1)
DECODE_ATTN_KERNEL(0, 2)
DECODE_ATTN_KERNEL(0, 4)
DECODE_ATTN_KERNEL(0, 8)
DECODE_ATTN_KERNEL(1, 1)
DECODE_ATTN_KERNEL(1, 2)
DECODE_ATTN_KERNEL(1, 4)
DECODE_ATTN_KERNEL(1, 8)
