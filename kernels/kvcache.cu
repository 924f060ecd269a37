// kvcache.cu: per-head KV cache maintenance.
//
// A layer's keys and values are two flat buffers [rows, hd] of float32 or, with
// Options.KVBF16, bfloat16 (raw 16-bit words); KV head h owns rows
// [off[h], off[h] + cap[h]) and uses the first len[h]. off and len live on the device as
// int32 [kvHeads] (the host keeps the authoritative copy and the capacities). The
// device keeps two length arrays per layer and the host says which is current
// (runtime/cuda/kvcache.go): an append reads the current one and writes the advanced
// lengths into the other, so no separate launch has to advance them after attention.
//
// kv_rope_append_<kv> (kv = f32 or bf16: the cache's element type), the decode step's
//   one launch before attention. Over one grid-stride index space it does, each part
//   only when asked:
//   - rotq: rotary embedding of q [n, qcols] in place (qcols/hd heads);
//   - rotk: the same for k [n, kcols];
//   - append (kcols == kvHeads*hd): k (rotated when rotk) and v [n, kvHeads*hd] go to
//     k_cache[(off[h] + len[h] + i)*hd + d] (same for v) for i < n, h < kvHeads, d < hd,
//     rounded to nearest even for a bf16 cache, and block 0 writes
//     len_next[h] = len[h] + n. The host has made room (len[h] + n <= cap[h]).
//   One thread per rotation pair (j, j + hd/2) of a q head, of a k head, and of a v head
//   (v is copied pair-wise too). Rotation as in rope.cu: for row i at position
//   p = positions ? positions[i] : pos0 + i,
//     angle = float32(p) * invfreq[j] (float32 product), c, s = cos, sin of it computed
//     in double and rounded to float32, x[j] = a*c - b*s, x[j + hd/2] = b*c + a*s.
//   With rotq = rotk = append = 0 it does nothing; rope-only calls (append = 0) take
//   any two tensors of n rows.
// kv_gather:  dst[pairs[p].x * w + e] = src[pairs[p].y * w + e] for keys and values,
//             p < count, e < w, on 32-bit words (w = hd for float32 caches, hd/2 for
//             bf16): copies kept rows into a new layout (growth, compaction, clones).
//
// Launch: one thread per element or pair, grid-stride, block 256.
// Bound: memory (a few bytes read and written per element); at decode these launches
// are tiny and their cost is the launch itself, hence the fusion.

#define ROPE_BLOCK 256

// bf16_bits rounds a float32 to bfloat16, nearest even; NaN stays NaN (as convert.cu).
__device__ __forceinline__ unsigned short bf16_bits(float f) {
	unsigned int u = __float_as_uint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)(((u >> 16) | 0x40u) & 0xffffu);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (unsigned short)(u >> 16);
}

__device__ __forceinline__ void kv_store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void kv_store(unsigned short* p, long long i, float v) { p[i] = bf16_bits(v); }

// rope_pair rotates (a, b), the pair j of a head of a row at position p.
__device__ __forceinline__ void rope_pair(float& a, float& b, int p, float invfreq) {
	const float angle = __fmul_rn((float)p, invfreq);
	double sd, cd;
	sincos((double)angle, &sd, &cd);
	const float c = (float)cd, s = (float)sd;
	const float na = a * c - b * s, nb = b * c + a * s;
	a = na;
	b = nb;
}

template <typename T>
__device__ __forceinline__ void kv_rope_append(float* __restrict__ q, int qcols, int rotq, float* __restrict__ k,
                                               int kcols, int rotk, const float* __restrict__ v, T* __restrict__ kc,
                                               T* __restrict__ vc, const int* __restrict__ off,
                                               const int* __restrict__ len, int* __restrict__ len_next,
                                               int append, const int* __restrict__ positions, int pos0,
                                               const float* __restrict__ invfreq, int n, int kvHeads, int hd) {
	const int half = hd / 2;
	const int qheads = rotq ? qcols / hd : 0;
	const int kheads = (rotk || append) ? kcols / hd : 0;
	const int vheads = append ? kvHeads : 0;
	const long long nq = (long long)n * qheads * half, nk = (long long)n * kheads * half;
	const long long total = nq + nk + (long long)n * vheads * half;
	if (append && blockIdx.x == 0)
		for (int h = threadIdx.x; h < kvHeads; h += blockDim.x) len_next[h] = len[h] + n;
	for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
	     e += (long long)gridDim.x * blockDim.x) {
		long long t = e;
		int part = 0, heads = qheads;
		if (t >= nq) {
			t -= nq;
			part = 1, heads = kheads;
			if (t >= nk) {
				t -= nk;
				part = 2, heads = vheads;
			}
		}
		const int j = (int)(t % half);
		const long long rh = t / half;
		const int h = (int)(rh % heads);
		const int i = (int)(rh / heads);
		// Positions only for a rotation: an append-only call's list may be stale.
		const int p = (part == 2 || (part == 1 && !rotk)) ? 0 : positions ? positions[i] : pos0 + i;
		if (part == 0) {
			float* x = q + (long long)i * qcols + (long long)h * hd;
			float a = x[j], b = x[j + half];
			rope_pair(a, b, p, invfreq[j]);
			x[j] = a;
			x[j + half] = b;
			continue;
		}
		const float* src = part == 1 ? k + (long long)i * kcols + (long long)h * hd : v + ((long long)i * kvHeads + h) * hd;
		float a = src[j], b = src[j + half];
		if (part == 1 && rotk) {
			rope_pair(a, b, p, invfreq[j]);
			float* x = k + (long long)i * kcols + (long long)h * hd;
			x[j] = a;
			x[j + half] = b;
		}
		if (append) {
			T* dst = part == 1 ? kc : vc;
			const long long row = ((long long)off[h] + len[h] + i) * hd;
			kv_store(dst, row + j, a);
			kv_store(dst, row + j + half, b);
		}
	}
}

#define KV_ROPE_APPEND_KERNEL(SUFFIX, T)                                                                  \
	extern "C" __global__ void __launch_bounds__(ROPE_BLOCK) kv_rope_append_##SUFFIX(                    \
	    float* q, int qcols, int rotq, float* k, int kcols, int rotk, const float* v, T* kc, T* vc,     \
	    const int* off, const int* len, int* len_next, int append, const int* positions, int pos0,     \
	    const float* invfreq, int n, int kvHeads, int hd) {                                              \
		kv_rope_append<T>(q, qcols, rotq, k, kcols, rotk, v, kc, vc, off, len, len_next, append,        \
		                  positions, pos0, invfreq, n, kvHeads, hd);                                     \
	}

KV_ROPE_APPEND_KERNEL(f32, float)
KV_ROPE_APPEND_KERNEL(bf16, unsigned short)

extern "C" __global__ void kv_gather(float* __restrict__ dk, float* __restrict__ dv,
                                     const float* __restrict__ sk, const float* __restrict__ sv,
                                     const int2* __restrict__ pairs, long long count, int hd) {
	const long long total = count * hd;
	for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
	     e += (long long)gridDim.x * blockDim.x) {
		const long long p = e / hd;
		const int d = (int)(e % hd);
		const int2 pr = pairs[p];
		dk[(long long)pr.x * hd + d] = sk[(long long)pr.y * hd + d];
		dv[(long long)pr.x * hd + d] = sv[(long long)pr.y * hd + d];
	}
}
