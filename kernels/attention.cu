// attention.cu: causal grouped-query attention over the per-head KV cache, flash style
// (online softmax over key tiles; no [n, T] score matrix is ever stored).
//
// Inputs:
//   q      [n, heads*hd] float32   the n new queries, already rotated
//   kc, vc [rows, hd]              one layer's key and value buffers, float32 or (the
//                                  *_bf16 / kv 1 variants) bfloat16 words; KV head h
//                                  owns rows off[h] .. off[h]+len[h]+n-1 (the n new
//                                  tokens were appended by kv_rope_append, len is still
//                                  the length before them)
//   off, len [kvHeads] int32
// Query head h reads KV head h / (heads/kvHeads). Query row i sees the first
// len[kvh] + i + 1 entries of its head (causal by index, runtime/backend.go), with
// weights softmax(scale * q.k) over them:
//   out[i, h*hd:(h+1)*hd] = sum_j softmax_j(scale * q_i . k_j) v_j
// All arithmetic is float32; a bf16 cache is widened as it is read.
//
// attention_decode_kv<KV>_g<G> (decode: few new rows; hd/DPT a power of two <= 32, where
//   DPT = 16 bytes / element size = 4 dims for float32, 8 for bf16): split-K "flash
//   decoding". A block of 4 warps takes one KV head, G <= 4 query vectors of it (the
//   group's heads x the n rows, vector v = row*group + head; grid.y = kvHeads * htiles,
//   htiles = ceil(group*n / G), a last partial tile repeats its last vector, unstored)
//   and one slice of the keys (grid.x = splits, chunk keys each). Each row of K and V is
//   read by LPR = hd/DPT lanes, 16 bytes each (RPW = 32/LPR rows per warp load: every
//   warp load is 512 contiguous bytes); a thread keeps its DPT dims of every vector's q
//   (pre-scaled by scale*log2 e), running max m, sum l and output o, so the softmax is
//   base 2 and needs no shared memory. Per step a warp takes RPW*UR rows (UR = 4 per
//   thread), loaded one step ahead (software pipelining: the next step's 2*UR 16-byte
//   loads are in flight while this step computes); scores are reduced over the row's
//   LPR lanes by xor shuffles, masked (past the block's keys or the vector's causal
//   limit) to -inf, and folded into (m, l, o) once per step. Then the row groups of a
//   warp merge by shuffles, the 4 warps through shared memory, and the block writes out
//   = o / l (splits == 1) or its unnormalised o and (m in natural-log units, l) to
//   part_o [splits, n, heads, hd], part_ml [splits, n, heads, 2]. With splits > 1 the
//   last block of each (KV head, vector tile) to finish (an atomic counter per tile,
//   counter[grid.y], zero before the launch and reset to zero by that block) merges all
//   the splits' partials into out: the combine needs no launch of its own.
//   Launch: block 128, grid (splits, kvHeads*htiles), dynamic shared memory 4*G*hd*4
//   bytes; splits <= 128.
// attention_v<VPW>_d<DPL>[_bf16] (prefill, and head dims the decode kernel does not
//   take): a block of 4 warps takes one KV head and a set of query vectors that share
//   it (up to 4*VPW: GT heads of the group x BR rows, GT*BR <= 4*VPW, chosen by the
//   host), and one slice of the keys (split-K over gridDim.z). Per key tile of BK rows
//   (32, or 16 when hd > 128), the block stages K (rows padded by one float: no bank
//   conflicts) and V in shared memory as float32; each warp then serves VPW query
//   vectors: lane j scores key j of the tile against them (q in shared memory,
//   pre-scaled), the warp updates the running max m, sum l and output o (lane holds dims
//   lane, lane+32, ... up to DPL of them), shuffling each key's weight to all lanes for
//   the P.V product.
//   Grid: x = ceil(n / BR), y = kvHeads * ceil(group / GT), z = splits.
//   Shared memory (dynamic): (4*VPW*hd + BK*hd + BK*(hd+1)) * 4 bytes, at most ~41 KiB
//   (hd 128: VPW <= 4, BK 32; hd 256: VPW <= 2, BK 16).
//   splits == 1: writes out = o / l. splits > 1: writes the unnormalised o and (m, l) of
//   its key slice to part_o and part_ml; attention_combine merges them.
// attention_combine: grid (n*heads), block hd threads: M = max_s m_s,
//   out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M). Split 0 always holds key 0,
//   which every query sees, so M is finite and the sum positive.
//
// Bound: decode (n = 1) is memory-bound, reading the live K and V once per query-head
// group (the whole group shares one block); prefill is float32 FMA-bound, about
// 4*hd FLOPs per (query, visible key) pair, on CUDA cores.

#define KV_F32 0
#define KV_BF16 1

#define WARPS 4
#define THREADS (WARPS * 32)
#define NEG_INF (-__int_as_float(0x7f800000))

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}
__device__ __forceinline__ float warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

// widen4 widens 4 bfloat16 words (element 0 in the low half of x) to float32.
__device__ __forceinline__ float4 widen4(uint2 r) {
	return make_float4(__uint_as_float(r.x << 16), __uint_as_float(r.x & 0xffff0000u), __uint_as_float(r.y << 16),
	                   __uint_as_float(r.y & 0xffff0000u));
}

template <int VPW, int DPL, int KV>
__device__ __forceinline__ void attention_impl(
    float* __restrict__ out, float* __restrict__ part_o, float* __restrict__ part_ml,
    const float* __restrict__ q, const void* __restrict__ kc, const void* __restrict__ vc,
    const int* __restrict__ off, const int* __restrict__ len,
    int n, int heads, int kvHeads, int hd, float scale,
    int gt, int br, int bk, int chunk, int splits) {
	extern __shared__ __align__(16) float smem[];
	constexpr int NV = WARPS * VPW;
	float* qs = smem;              // [NV][hd]   pre-scaled queries
	float* vs = qs + NV * hd;      // [bk][hd]   value tile
	float* ks = vs + bk * hd;      // [bk][hd+1] key tile, padded rows

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int group = heads / kvHeads;
	const int htiles = (group + gt - 1) / gt;
	const int kvh = blockIdx.y / htiles, gtile = blockIdx.y % htiles;
	const int split = blockIdx.z;
	const int row0 = blockIdx.x * br;
	const int qstride = heads * hd;

	// Query vector v of this block: head kvh*group + gtile*gt + v%gt, row row0 + v/gt.
	for (int e = tid; e < NV * hd; e += THREADS) {
		const int v = e / hd, d = e % hd;
		const int g = gtile * gt + v % gt, r = row0 + v / gt;
		float val = 0.f;
		if (v / gt < br && g < group && r < n)
			val = q[(long long)r * qstride + (long long)(kvh * group + g) * hd + d] * scale;
		qs[e] = val;
	}

	const int lenh = len[kvh];
	const long long offh = off[kvh];
	const int rlast = min(n - 1, row0 + br - 1);
	const int kbeg = split * chunk;
	const int kend = min(kbeg + chunk, lenh + rlast + 1);  // keys this block may need

	int vis[VPW];  // keys visible to each of this warp's vectors (0: no vector)
	float m[VPW], l[VPW], o[VPW][DPL];
#pragma unroll
	for (int u = 0; u < VPW; u++) {
		const int v = warp * VPW + u;
		const int g = gtile * gt + v % gt, r = row0 + v / gt;
		vis[u] = (v / gt < br && g < group && r < n) ? lenh + r + 1 : 0;
		m[u] = NEG_INF;
		l[u] = 0.f;
#pragma unroll
		for (int c = 0; c < DPL; c++) o[u][c] = 0.f;
	}
	__syncthreads();

	for (int t = kbeg; t < kend; t += bk) {
		const int nvalid = min(bk, kend - t);
		// Stage rows t .. t+nvalid-1 of this head: one contiguous run of nvalid*hd
		// elements, read 4 at a time (16-byte aligned for float32, 8 for bf16: hd % 4 == 0),
		// widened to float32.
		const int n4 = nvalid * hd / 4;
		for (int f = tid; f < n4; f += THREADS) {
			const int e = f * 4, row = e / hd, col = e % hd;
			float4 kk, vv;
			if (KV == KV_F32) {
				kk = ((const float4*)((const float*)kc + (offh + t) * hd))[f];
				vv = ((const float4*)((const float*)vc + (offh + t) * hd))[f];
			} else {
				kk = widen4(((const uint2*)((const unsigned short*)kc + (offh + t) * hd))[f]);
				vv = widen4(((const uint2*)((const unsigned short*)vc + (offh + t) * hd))[f]);
			}
			float* kd = ks + row * (hd + 1) + col;
			kd[0] = kk.x;
			kd[1] = kk.y;
			kd[2] = kk.z;
			kd[3] = kk.w;
			((float4*)vs)[f] = vv;
		}
		__syncthreads();

		// Scores: lane j against key t+j.
		float s[VPW];
#pragma unroll
		for (int u = 0; u < VPW; u++) s[u] = 0.f;
		if (lane < nvalid) {
			const float* krow = ks + lane * (hd + 1);
			const float* qw = qs + warp * VPW * hd;
			for (int d = 0; d < hd; d++) {
				const float kd = krow[d];
#pragma unroll
				for (int u = 0; u < VPW; u++) s[u] += qw[u * hd + d] * kd;
			}
		}
		float p[VPW];
#pragma unroll
		for (int u = 0; u < VPW; u++) {
			if (lane >= nvalid || t + lane >= vis[u]) s[u] = NEG_INF;
			const float mnew = fmaxf(m[u], warp_max(s[u]));  // the same in every lane
			if (mnew == NEG_INF) {  // nothing visible yet (only in later splits' empty rows)
				p[u] = 0.f;
				continue;
			}
			const float alpha = expf(m[u] - mnew);  // 0 when m was -inf
			p[u] = expf(s[u] - mnew);              // 0 for masked keys
			l[u] = l[u] * alpha + warp_sum(p[u]);
			m[u] = mnew;
#pragma unroll
			for (int c = 0; c < DPL; c++) o[u][c] *= alpha;
		}
		// P.V: every lane needs every key's weight; lane owns dims lane + 32c.
		for (int j = 0; j < nvalid; j++) {
			float pj[VPW];
#pragma unroll
			for (int u = 0; u < VPW; u++) pj[u] = __shfl_sync(0xffffffffu, p[u], j);
			const float* vrow = vs + j * hd;
#pragma unroll
			for (int c = 0; c < DPL; c++) {
				const int d = lane + 32 * c;
				if (d < hd) {
					const float vv = vrow[d];
#pragma unroll
					for (int u = 0; u < VPW; u++) o[u][c] += pj[u] * vv;
				}
			}
		}
		__syncthreads();  // the next tile overwrites ks / vs
	}

#pragma unroll
	for (int u = 0; u < VPW; u++) {
		const int v = warp * VPW + u;
		const int g = gtile * gt + v % gt, r = row0 + v / gt;
		if (!(v / gt < br && g < group && r < n)) continue;
		const int h = kvh * group + g;
		if (splits == 1) {
			const float inv = 1.0f / l[u];
			float* dst = out + (long long)r * qstride + (long long)h * hd;
#pragma unroll
			for (int c = 0; c < DPL; c++) {
				const int d = lane + 32 * c;
				if (d < hd) dst[d] = o[u][c] * inv;
			}
		} else {
			const long long slot = ((long long)split * n + r) * heads + h;
			float* dst = part_o + slot * hd;
#pragma unroll
			for (int c = 0; c < DPL; c++) {
				const int d = lane + 32 * c;
				if (d < hd) dst[d] = o[u][c];
			}
			if (lane == 0) {
				part_ml[slot * 2] = m[u];
				part_ml[slot * 2 + 1] = l[u];
			}
		}
	}
}

#define ATTENTION_KERNEL(VPW, DPL, KV, SUFFIX)                                                      \
	extern "C" __global__ void __launch_bounds__(THREADS) attention_v##VPW##_d##DPL##SUFFIX(       \
	    float* out, float* part_o, float* part_ml, const float* q, const void* kc, const void* vc,  \
	    const int* off, const int* len, int n, int heads, int kvHeads, int hd, float scale, int gt,  \
	    int br, int bk, int chunk, int splits) {                                                    \
		attention_impl<VPW, DPL, KV>(out, part_o, part_ml, q, kc, vc, off, len, n, heads, kvHeads,  \
		                             hd, scale, gt, br, bk, chunk, splits);                         \
	}

// DPL 4: hd <= 128; DPL 8: hd <= 256 (with VPW <= 2 to stay under 48 KiB of shared memory).
ATTENTION_KERNEL(1, 4, KV_F32, )
ATTENTION_KERNEL(2, 4, KV_F32, )
ATTENTION_KERNEL(4, 4, KV_F32, )
ATTENTION_KERNEL(1, 8, KV_F32, )
ATTENTION_KERNEL(2, 8, KV_F32, )
ATTENTION_KERNEL(1, 4, KV_BF16, _bf16)
ATTENTION_KERNEL(2, 4, KV_BF16, _bf16)
ATTENTION_KERNEL(4, 4, KV_BF16, _bf16)
ATTENTION_KERNEL(1, 8, KV_BF16, _bf16)
ATTENTION_KERNEL(2, 8, KV_BF16, _bf16)

extern "C" __global__ void attention_combine(float* __restrict__ out, const float* __restrict__ part_o,
                                             const float* __restrict__ part_ml, int n, int heads,
                                             int hd, int splits) {
	const long long rh = blockIdx.x;  // r * heads + h
	const int d = threadIdx.x;
	if (d >= hd) return;
	const long long plane = (long long)n * heads;  // slots per split
	float M = NEG_INF;
	for (int s = 0; s < splits; s++) M = fmaxf(M, part_ml[(s * plane + rh) * 2]);
	float L = 0.f, acc = 0.f;
	for (int s = 0; s < splits; s++) {
		const long long slot = s * plane + rh;
		const float ms = part_ml[slot * 2];
		if (ms == NEG_INF) continue;  // this split saw none of the row's keys
		const float w = expf(ms - M);
		L += part_ml[slot * 2 + 1] * w;
		acc += part_o[slot * hd + d] * w;
	}
	out[rh * hd + d] = acc / L;
}

// ---------------------------------------------------------------------------------
// attention_decode_kv<KV>_g<G>: the decode kernel (see the top of the file).

#define DEC_WARPS 4
#define DEC_THREADS (DEC_WARPS * 32)
#define DEC_UR 4           // rows per thread per step
#define DEC_MAX_SPLITS 128  // the combine's weight table
#define LN2F 0.6931471805599453f

// ld_kv loads 16 bytes of the cache, not allocating them in L1 (each block reads its
// keys and values once).
__device__ __forceinline__ uint4 ld_kv(const void* p) {
	uint4 r;
	asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
	    : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
	    : "l"(p));
	return r;
}

// widen16 widens one 16-byte chunk of the cache: 4 float32 or 8 bf16 values, in order.
template <int KV>
__device__ __forceinline__ void widen16(uint4 r, float* f) {
	if (KV == KV_F32) {
		f[0] = __uint_as_float(r.x), f[1] = __uint_as_float(r.y), f[2] = __uint_as_float(r.z), f[3] = __uint_as_float(r.w);
	} else {
		const unsigned int w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
		for (int i = 0; i < 4; i++) {
			f[2 * i] = __uint_as_float(w[i] << 16);
			f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
		}
	}
}

// dec_load loads this thread's 16-byte chunk of rows t + u*rpw (u < DEC_UR) of K and V
// (zero past kend). kb, vb point at the thread's chunk of the head's row 0.
template <int KV>
__device__ __forceinline__ void dec_load(uint4 (&kr)[DEC_UR], uint4 (&vr)[DEC_UR], const char* kb, const char* vb,
                                         long long rowBytes, int t, int rpw, int kend) {
#pragma unroll
	for (int u = 0; u < DEC_UR; u++) {
		const int j = t + u * rpw;
		if (j < kend) {
			kr[u] = ld_kv(kb + (long long)j * rowBytes);
			vr[u] = ld_kv(vb + (long long)j * rowBytes);
		} else {
			kr[u] = make_uint4(0u, 0u, 0u, 0u);
			vr[u] = make_uint4(0u, 0u, 0u, 0u);
		}
	}
}

template <int KV, int G>
__device__ __forceinline__ void attention_decode(float* __restrict__ out, float* __restrict__ part_o,
                                                 float* __restrict__ part_ml, int* __restrict__ counter,
                                                 const float* __restrict__ q, const void* __restrict__ kc,
                                                 const void* __restrict__ vc, const int* __restrict__ off,
                                                 const int* __restrict__ len, int n, int heads, int kvHeads, int hd,
                                                 float scaleLog2, int htiles, int chunk, int splits, int lgLPR) {
	constexpr int ESZ = KV == KV_BF16 ? 2 : 4;
	constexpr int DPT = 16 / ESZ;  // dims per thread
	extern __shared__ __align__(16) float sm_o[];  // [DEC_WARPS][G][hd]
	__shared__ float sm_ml[DEC_WARPS][G][2];
	__shared__ float sm_w[DEC_MAX_SPLITS][G];
	__shared__ int sm_last;

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int LPR = 1 << lgLPR, RPW = 32 >> lgLPR;  // lanes per row, rows per warp load
	const int rsub = lane >> lgLPR, d0 = (lane & (LPR - 1)) * DPT;
	const int group = heads / kvHeads, total = group * n;
	const int kvh = blockIdx.y / htiles, htile = blockIdx.y - kvh * htiles;
	const int split = blockIdx.x;
	const long long qstride = (long long)heads * hd;
	const int lenh = len[kvh];
	const long long offh = off[kvh];

	// This block's vectors: q slices (pre-scaled), causal limits.
	float qv[G][DPT];
	int vis[G];
	int rmax = 0;
#pragma unroll
	for (int v = 0; v < G; v++) {
		const int gv = min(htile * G + v, total - 1);
		const int r = gv / group, h = kvh * group + gv % group;
		vis[v] = lenh + r + 1;
		rmax = max(rmax, r);
		const float4* qp = (const float4*)(q + r * qstride + (long long)h * hd + d0);
#pragma unroll
		for (int c = 0; c < DPT / 4; c++) {
			const float4 t = qp[c];
			qv[v][4 * c] = t.x * scaleLog2;
			qv[v][4 * c + 1] = t.y * scaleLog2;
			qv[v][4 * c + 2] = t.z * scaleLog2;
			qv[v][4 * c + 3] = t.w * scaleLog2;
		}
	}
	const int kbeg = split * chunk;
	const int kend = min(kbeg + chunk, lenh + rmax + 1);

	float m[G], l[G], o[G][DPT];
#pragma unroll
	for (int v = 0; v < G; v++) {
		m[v] = NEG_INF;
		l[v] = 0.f;
#pragma unroll
		for (int e = 0; e < DPT; e++) o[v][e] = 0.f;
	}

	const long long rowBytes = (long long)hd * ESZ;
	const char* kb = (const char*)kc + ((offh + rsub) * hd + d0) * ESZ;
	const char* vb = (const char*)vc + ((offh + rsub) * hd + d0) * ESZ;
	const int stepRows = RPW * DEC_UR;              // rows per warp step
	const int stride = DEC_WARPS * stepRows;        // rows per block step
	const int kendThread = kend - rsub;             // row t + u*RPW + rsub < kend
	uint4 kr[DEC_UR], vr[DEC_UR];
	int t = kbeg + warp * stepRows;                 // first row of this warp's step, before rsub
	dec_load<KV>(kr, vr, kb, vb, rowBytes, t, RPW, kendThread);
	for (; t < kend; t += stride) {
		uint4 nk[DEC_UR], nv[DEC_UR];
		dec_load<KV>(nk, nv, kb, vb, rowBytes, t + stride, RPW, kendThread);

		// Scores of rows t + u*RPW + rsub against every vector, over the row's lanes.
		float s[DEC_UR][G];
#pragma unroll
		for (int u = 0; u < DEC_UR; u++) {
			float kf[DPT];
			widen16<KV>(kr[u], kf);
#pragma unroll
			for (int v = 0; v < G; v++) {
				float acc = 0.f;
#pragma unroll
				for (int e = 0; e < DPT; e++) acc = fmaf(qv[v][e], kf[e], acc);
				s[u][v] = acc;
			}
		}
		for (int of = LPR >> 1; of > 0; of >>= 1) {
#pragma unroll
			for (int u = 0; u < DEC_UR; u++)
#pragma unroll
				for (int v = 0; v < G; v++) s[u][v] += __shfl_xor_sync(0xffffffffu, s[u][v], of);
		}
#pragma unroll
		for (int u = 0; u < DEC_UR; u++) {
			const int j = t + u * RPW + rsub;
#pragma unroll
			for (int v = 0; v < G; v++)
				if (j >= kend || j >= vis[v]) s[u][v] = NEG_INF;
		}

		// Online softmax, base 2, once per step; s becomes the weights p.
#pragma unroll
		for (int v = 0; v < G; v++) {
			float mx = s[0][v];
#pragma unroll
			for (int u = 1; u < DEC_UR; u++) mx = fmaxf(mx, s[u][v]);
			const float mnew = fmaxf(m[v], mx);
			const float base = mnew == NEG_INF ? 0.f : mnew;  // nothing visible yet: keep zeros
			const float alpha = exp2f(m[v] - base);          // 0 when m was -inf
			m[v] = mnew;
			float ps = 0.f;
#pragma unroll
			for (int u = 0; u < DEC_UR; u++) {
				s[u][v] = exp2f(s[u][v] - base);
				ps += s[u][v];
			}
			l[v] = l[v] * alpha + ps;
#pragma unroll
			for (int e = 0; e < DPT; e++) o[v][e] *= alpha;
		}
#pragma unroll
		for (int u = 0; u < DEC_UR; u++) {
			float vf[DPT];
			widen16<KV>(vr[u], vf);
#pragma unroll
			for (int v = 0; v < G; v++)
#pragma unroll
				for (int e = 0; e < DPT; e++) o[v][e] = fmaf(s[u][v], vf[e], o[v][e]);
		}
#pragma unroll
		for (int u = 0; u < DEC_UR; u++) {
			kr[u] = nk[u];
			vr[u] = nv[u];
		}
	}

	// Merge the warp's row groups (lanes that differ in the bits above the row's lanes
	// hold the same dims of other rows).
	for (int of = LPR; of < 32; of <<= 1) {
#pragma unroll
		for (int v = 0; v < G; v++) {
			const float mo = __shfl_xor_sync(0xffffffffu, m[v], of);
			const float lo = __shfl_xor_sync(0xffffffffu, l[v], of);
			const float M = fmaxf(m[v], mo);
			const float base = M == NEG_INF ? 0.f : M;
			const float a = exp2f(m[v] - base), b = exp2f(mo - base);
			l[v] = l[v] * a + lo * b;
#pragma unroll
			for (int e = 0; e < DPT; e++) o[v][e] = o[v][e] * a + __shfl_xor_sync(0xffffffffu, o[v][e], of) * b;
			m[v] = M;
		}
	}
	// ... and the 4 warps, through shared memory.
	if (rsub == 0) {
#pragma unroll
		for (int v = 0; v < G; v++) {
#pragma unroll
			for (int e = 0; e < DPT; e++) sm_o[(warp * G + v) * hd + d0 + e] = o[v][e];
			if (lane == 0) {
				sm_ml[warp][v][0] = m[v];
				sm_ml[warp][v][1] = l[v];
			}
		}
	}
	__syncthreads();
	for (int e = tid; e < G * hd; e += DEC_THREADS) {
		const int v = e / hd, d = e - v * hd;
		const int gv = htile * G + v;
		float M = NEG_INF;
#pragma unroll
		for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, sm_ml[w][v][0]);
		const float base = M == NEG_INF ? 0.f : M;
		float L = 0.f, O = 0.f;
#pragma unroll
		for (int w = 0; w < DEC_WARPS; w++) {
			const float f = exp2f(sm_ml[w][v][0] - base);
			L += sm_ml[w][v][1] * f;
			O += sm_o[(w * G + v) * hd + d] * f;
		}
		if (gv >= total) continue;  // a repeated vector
		const int r = gv / group, h = kvh * group + gv % group;
		if (splits == 1) {
			out[r * qstride + (long long)h * hd + d] = O / L;  // L > 0: key 0 is visible
		} else {
			const long long slot = ((long long)split * n + r) * heads + h;
			part_o[slot * hd + d] = O;
			if (d == 0) {
				part_ml[slot * 2] = M == NEG_INF ? NEG_INF : M * LN2F;
				part_ml[slot * 2 + 1] = L;
			}
		}
	}
	if (splits == 1) return;

	// The last block of this (KV head, vector tile) to finish merges every split.
	__threadfence();  // this thread's partials are visible device-wide ...
	__syncthreads();  // ... for every thread of the block, before the count
	if (tid == 0) sm_last = atomicAdd(counter + blockIdx.y, 1) == splits - 1;
	__syncthreads();
	if (!sm_last) return;
	__threadfence();
	// Weights per (split, vector): e^(m_s - M) / sum_s l_s e^(m_s - M); warp v takes vector v.
	if (warp < G) {
		const int v = warp, gv = htile * G + v;
		if (gv < total) {
			const int r = gv / group, h = kvh * group + gv % group;
			const long long slot0 = (long long)r * heads + h, plane = (long long)n * heads;
			float M = NEG_INF;
			for (int sp = lane; sp < splits; sp += 32) M = fmaxf(M, __ldcg(part_ml + (sp * plane + slot0) * 2));
			M = warp_max(M);  // finite: split 0 holds key 0
			float L = 0.f;
			for (int sp = lane; sp < splits; sp += 32) {
				const float ms = __ldcg(part_ml + (sp * plane + slot0) * 2);
				const float w = ms == NEG_INF ? 0.f : expf(ms - M);
				sm_w[sp][v] = w;
				L += w * __ldcg(part_ml + (sp * plane + slot0) * 2 + 1);
			}
			L = warp_sum(L);
			const float inv = 1.f / L;
			for (int sp = lane; sp < splits; sp += 32) sm_w[sp][v] *= inv;
		}
	}
	__syncthreads();
	for (int e = tid; e < G * (hd / 4); e += DEC_THREADS) {
		const int v = e / (hd / 4), d = (e - v * (hd / 4)) * 4;
		const int gv = htile * G + v;
		if (gv >= total) continue;
		const int r = gv / group, h = kvh * group + gv % group;
		const long long slot0 = (long long)r * heads + h, plane = (long long)n * heads;
		float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
		for (int sp = 0; sp < splits; sp++) {
			const float w = sm_w[sp][v];
			const float4 po = __ldcg((const float4*)(part_o + (sp * plane + slot0) * hd + d));
			acc.x += w * po.x;
			acc.y += w * po.y;
			acc.z += w * po.z;
			acc.w += w * po.w;
		}
		float* dst = out + r * qstride + (long long)h * hd + d;
		dst[0] = acc.x;
		dst[1] = acc.y;
		dst[2] = acc.z;
		dst[3] = acc.w;
	}
	if (tid == 0) counter[blockIdx.y] = 0;  // ready for the next launch
}

#define ATTENTION_DECODE_KERNEL(KV, G)                                                                   \
	extern "C" __global__ void __launch_bounds__(DEC_THREADS) attention_decode_kv##KV##_g##G(           \
	    float* out, float* part_o, float* part_ml, int* counter, const float* q, const void* kc,        \
	    const void* vc, const int* off, const int* len, int n, int heads, int kvHeads, int hd,          \
	    float scaleLog2, int htiles, int chunk, int splits, int lgLPR) {                                \
		attention_decode<KV, G>(out, part_o, part_ml, counter, q, kc, vc, off, len, n, heads, kvHeads, \
		                        hd, scaleLog2, htiles, chunk, splits, lgLPR);                           \
	}

ATTENTION_DECODE_KERNEL(0, 1)
ATTENTION_DECODE_KERNEL(0, 2)
ATTENTION_DECODE_KERNEL(0, 4)
ATTENTION_DECODE_KERNEL(1, 1)
ATTENTION_DECODE_KERNEL(1, 2)
ATTENTION_DECODE_KERNEL(1, 4)
