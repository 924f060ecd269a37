// attention.cu: causal grouped-query attention over the per-head KV cache, flash style
// (online softmax over key tiles; no [n, T] score matrix is ever stored).
//
// Inputs (float32):
//   q      [n, heads*hd]     the n new queries, already rotated
//   kc, vc [rows, hd]        one layer's key and value buffers; KV head h owns rows
//                            off[h] .. off[h]+len[h]+n-1 (the n new tokens were appended
//                            by kv_append, len is still the length before them)
//   off, len [kvHeads] int32
// Query head h reads KV head h / (heads/kvHeads). Query row i sees the first
// len[kvh] + i + 1 entries of its head (causal by index, runtime/backend.go), with
// weights softmax(scale * q.k) over them:
//   out[i, h*hd:(h+1)*hd] = sum_j softmax_j(scale * q_i . k_j) v_j
//
// attention_v<VPW>_d<DPL>: a block of 4 warps takes one KV head and a set of query
//   vectors that share it (up to 4*VPW: GT heads of the group x BR rows, GT*BR <= 4*VPW,
//   chosen by the host), and one slice of the keys (split-K over gridDim.z). Per key tile
//   of BK rows (32, or 16 when hd > 128), the block stages K (rows padded by one float:
//   no bank conflicts) and V in shared memory; each warp then serves VPW query vectors:
//   lane j scores key j of the tile against them (q in shared memory, pre-scaled),
//   the warp updates the running max m, sum l and output o (lane holds dims lane,
//   lane+32, ... up to DPL of them), shuffling each key's weight to all lanes for the
//   P.V product.
//   Grid: x = ceil(n / BR), y = kvHeads * ceil(group / GT), z = splits.
//   Shared memory (dynamic): (4*VPW*hd + BK*hd + BK*(hd+1)) * 4 bytes, at most ~41 KiB
//   (hd 128: VPW <= 4, BK 32; hd 256: VPW <= 2, BK 16).
//   splits == 1: writes out = o / l. splits > 1: writes the unnormalised o and (m, l) of
//   its key slice to part_o [splits, n, heads, hd] and part_ml [splits, n, heads, 2];
//   attention_combine merges them.
// attention_combine: grid (n*heads), block hd threads: M = max_s m_s,
//   out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M). Split 0 always holds key 0,
//   which every query sees, so M is finite and the sum positive.
//
// Bound: decode (n = 1) is memory-bound, reading the live K and V once per query-head
// group (the whole group shares one block); prefill is float32 FMA-bound, about
// 4*hd FLOPs per (query, visible key) pair, on CUDA cores.

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

template <int VPW, int DPL>
__device__ __forceinline__ void attention_impl(
    float* __restrict__ out, float* __restrict__ part_o, float* __restrict__ part_ml,
    const float* __restrict__ q, const float* __restrict__ kc, const float* __restrict__ vc,
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
		// Stage rows t .. t+nvalid-1 of this head: one contiguous run of nvalid*hd floats,
		// 16-byte aligned (hd % 4 == 0).
		const float4* ksrc = (const float4*)(kc + (offh + t) * hd);
		const float4* vsrc = (const float4*)(vc + (offh + t) * hd);
		const int n4 = nvalid * hd / 4;
		for (int f = tid; f < n4; f += THREADS) {
			const int e = f * 4, row = e / hd, col = e % hd;
			const float4 kk = ksrc[f];
			float* kd = ks + row * (hd + 1) + col;
			kd[0] = kk.x;
			kd[1] = kk.y;
			kd[2] = kk.z;
			kd[3] = kk.w;
			((float4*)vs)[f] = vsrc[f];
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

#define ATTENTION_KERNEL(VPW, DPL)                                                                  \
	extern "C" __global__ void __launch_bounds__(THREADS) attention_v##VPW##_d##DPL(               \
	    float* out, float* part_o, float* part_ml, const float* q, const float* kc, const float* vc, \
	    const int* off, const int* len, int n, int heads, int kvHeads, int hd, float scale, int gt,  \
	    int br, int bk, int chunk, int splits) {                                                    \
		attention_impl<VPW, DPL>(out, part_o, part_ml, q, kc, vc, off, len, n, heads, kvHeads, hd,  \
		                         scale, gt, br, bk, chunk, splits);                                 \
	}

// DPL 4: hd <= 128; DPL 8: hd <= 256 (with VPW <= 2 to stay under 48 KiB of shared memory).
ATTENTION_KERNEL(1, 4)
ATTENTION_KERNEL(2, 4)
ATTENTION_KERNEL(4, 4)
ATTENTION_KERNEL(1, 8)
ATTENTION_KERNEL(2, 8)

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
