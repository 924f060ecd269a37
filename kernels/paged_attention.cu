// paged_attention.cu: attention and cache maintenance over a paged KV pool
// (backend/cuda/paged.go).
//
// The pool is two flat buffers [blocks * bt, hd] (keys, values) of float32 or bfloat16
// (raw 16-bit words); block b holds pool rows [b*bt, (b+1)*bt). Every (sequence, layer,
// KV head) owns a block table: int32 block ids, entry i covering the head's entries
// [i*bt, (i+1)*bt). A layer's tables of one sequence lie in one device array
// [kvHeads, stride].
//
// One launch serves a batch of sequences. The host describes it in int32 arrays:
//   seqs  [nseq * 8]: per sequence: table pointer (low, high 32 bits) of this layer,
//                     stride, row0 (its first row in q / out), n (its new rows), lens
//                     offset (into lens), 2 unused;
//   lens  [...]:      per sequence, kvHeads lengths after the append;
//   rowseq [rows]:    the sequence of every row of q;
//   slots [rows * kvHeads]: the pool row each new (row, KV head) entry goes to;
//   writes [3 * nw]:  block-table entries to set (address low, high, value).
// Causality is by index, as in every lukv attention: row i of a sequence with n new rows
// sees the first len - n + i + 1 entries of its head (len after the append, so >= 1).
//
// paged_append_<kv>: k, v [rows, kvHeads*hd] (float32, already rotated) go to their
//   slots (rounded to nearest even for bf16), and the table writes are made. Threads over
//   (entry, 4-dim group), grid-stride. Attention reads the tables only in later launches.
// paged_attention_<kv>_t<T>_g<G>: grid (rows * kvHeads, splits), 128 threads (4 warps).
//   A block takes one (row, KV head) and keys [split*chunk, min(visible, (split+1)*chunk))
//   for all the query heads of the group (GQA: each key is read once for the group of at
//   most G query heads; G is the group rounded up to 1, 2, 4 or 8, so that registers hold
//   only what the group needs). A warp takes every 4th key, 4 keys in flight; lane l holds
//   dims [4l + 128t, +4) for t < T (hd <= 128*T), so a key row is read by the warp in one
//   coalesced pass. Online
//   softmax in float32 per warp, the 4 warps merged in shared memory. With one split
//   the block writes out; else it writes its unnormalised output and (max, sum) to the
//   partials [split, row, head, *] and paged_combine merges them.
// paged_combine: one block of hd threads per (row, query head), over the splits that
//   row's head used (ceil(visible / chunk)).
// paged_copy_rows: dst[pairs[p].x * w + e] = src[pairs[p].y * w + e] for keys and values
//   on 32-bit words (w = hd for float32, hd/2 for bf16): gathers, compacts and clones
//   heads, between the pool and scratch buffers.
//
// Bound: memory. At decode every key and value row is read once per KV head and step;
// the split-K keeps the GPU busy at batch 1 over long contexts (the host picks the
// splits so that the grid has a few blocks per SM).

#include <cuda_bf16.h>

#define PAGED_WARPS 4
#define PAGED_UNROLL 4

struct f32kv {
	typedef float elem;
	__device__ static __forceinline__ void load4(const float* p, float* o) {
		float4 x = *reinterpret_cast<const float4*>(p);
		o[0] = x.x; o[1] = x.y; o[2] = x.z; o[3] = x.w;
	}
	__device__ static __forceinline__ void store(float* p, float x) { *p = x; }
};

struct bf16kv {
	typedef unsigned short elem;
	__device__ static __forceinline__ void load4(const unsigned short* p, float* o) {
		uint2 x = *reinterpret_cast<const uint2*>(p);
		o[0] = __uint_as_float(x.x << 16); o[1] = __uint_as_float(x.x & 0xffff0000u);
		o[2] = __uint_as_float(x.y << 16); o[3] = __uint_as_float(x.y & 0xffff0000u);
	}
	__device__ static __forceinline__ void store(unsigned short* p, float f) {
		unsigned int u = __float_as_uint(f);
		if ((u & 0x7fffffffu) > 0x7f800000u) { *p = (unsigned short)(((u >> 16) | 0x40u) & 0xffffu); return; }
		*p = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
	}
};

template <typename KV>
__device__ void paged_append(typename KV::elem* __restrict__ kpool, typename KV::elem* __restrict__ vpool,
                             const float* __restrict__ k, const float* __restrict__ v, const int* __restrict__ slots,
                             long long entries, int hd, const int* __restrict__ writes, int nwrites) {
	long long stride = (long long)gridDim.x * blockDim.x;
	long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	for (long long w = tid; w < nwrites; w += stride) {
		unsigned long long addr = (unsigned long long)(unsigned)writes[3 * w] | ((unsigned long long)(unsigned)writes[3 * w + 1] << 32);
		*reinterpret_cast<int*>(addr) = writes[3 * w + 2];
	}
	long long total = entries * hd;
	for (long long i = tid; i < total; i += stride) {
		long long e = i / hd;
		int d = (int)(i - e * hd);
		long long dst = (long long)slots[e] * hd + d;
		KV::store(kpool + dst, k[i]);
		KV::store(vpool + dst, v[i]);
	}
}

extern "C" __global__ void paged_append_f32(float* kpool, float* vpool, const float* k, const float* v, const int* slots,
                                            long long entries, int hd, const int* writes, int nwrites) {
	paged_append<f32kv>(kpool, vpool, k, v, slots, entries, hd, writes, nwrites);
}

extern "C" __global__ void paged_append_bf16(unsigned short* kpool, unsigned short* vpool, const float* k, const float* v,
                                             const int* slots, long long entries, int hd, const int* writes, int nwrites) {
	paged_append<bf16kv>(kpool, vpool, k, v, slots, entries, hd, writes, nwrites);
}

// seqInfo decodes a sequence's descriptor entry.
struct seqInfo {
	const int* table;
	int stride, row0, n, lensOff;
};

__device__ __forceinline__ seqInfo load_seq(const int* seqs, int s) {
	const int* e = seqs + 8 * s;
	seqInfo r;
	r.table = reinterpret_cast<const int*>((unsigned long long)(unsigned)e[0] | ((unsigned long long)(unsigned)e[1] << 32));
	r.stride = e[2];
	r.row0 = e[3];
	r.n = e[4];
	r.lensOff = e[5];
	return r;
}

template <typename KV, int T, int G>
__device__ void paged_attention(float* __restrict__ out, float* __restrict__ part_o, float* __restrict__ part_ml,
                                const float* __restrict__ q, const typename KV::elem* __restrict__ kpool,
                                const typename KV::elem* __restrict__ vpool, const int* __restrict__ seqs,
                                const int* __restrict__ lens, const int* __restrict__ rowseq, int rows, int heads,
                                int kvHeads, int hd, int bt, float scale, int chunk) {
	extern __shared__ float smem[]; // [PAGED_WARPS][G][hd + 2]
	const int item = blockIdx.x;
	const int row = item / kvHeads, g = item - row * kvHeads;
	const int split = blockIdx.y;
	const seqInfo s = load_seq(seqs, rowseq[row]);
	const int len = lens[s.lensOff + g];
	const int visible = len - s.n + (row - s.row0) + 1;
	const int begin = split * chunk;
	if (begin >= visible) return; // this head needs fewer splits (the combine skips them)
	const int end = min(visible, begin + chunk);
	const int group = heads / kvHeads;
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const int* table = s.table + (long long)g * s.stride;

	float qv[G][T][4];
	float acc[G][T][4];
	float m[G], l[G];
#pragma unroll
	for (int h = 0; h < G; h++) {
		m[h] = -INFINITY;
		l[h] = 0.f;
#pragma unroll
		for (int t = 0; t < T; t++) {
			const int d = 4 * lane + 128 * t;
#pragma unroll
			for (int c = 0; c < 4; c++) {
				acc[h][t][c] = 0.f;
				qv[h][t][c] = (h < group && d < hd) ? q[((long long)row * heads + g * group + h) * hd + d + c] * scale : 0.f;
			}
		}
	}

	for (int j0 = begin + warp; j0 < end; j0 += PAGED_UNROLL * PAGED_WARPS) {
		// PAGED_UNROLL keys per warp in flight: load their rows, then score them.
		float kk[PAGED_UNROLL][T][4], vv[PAGED_UNROLL][T][4];
#pragma unroll
		for (int u = 0; u < PAGED_UNROLL; u++) {
			const int j = j0 + u * PAGED_WARPS;
			const long long prow = j < end ? (long long)table[j / bt] * bt + j % bt : 0;
#pragma unroll
			for (int t = 0; t < T; t++) {
				const int d = 4 * lane + 128 * t;
				if (j < end && d < hd) {
					KV::load4(kpool + prow * hd + d, kk[u][t]);
					KV::load4(vpool + prow * hd + d, vv[u][t]);
				} else {
#pragma unroll
					for (int c = 0; c < 4; c++) kk[u][t][c] = vv[u][t][c] = 0.f;
				}
			}
		}
#pragma unroll
		for (int u = 0; u < PAGED_UNROLL; u++) {
			const int j = j0 + u * PAGED_WARPS;
			if (j >= end) break; // uniform across the warp
#pragma unroll
			for (int h = 0; h < G; h++) {
				if (h >= group) break;
				float dot = 0.f;
#pragma unroll
				for (int t = 0; t < T; t++)
#pragma unroll
					for (int c = 0; c < 4; c++) dot += qv[h][t][c] * kk[u][t][c];
#pragma unroll
				for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
				const float mn = fmaxf(m[h], dot);
				const float corr = __expf(m[h] - mn), p = __expf(dot - mn);
				l[h] = l[h] * corr + p;
#pragma unroll
				for (int t = 0; t < T; t++)
#pragma unroll
					for (int c = 0; c < 4; c++) acc[h][t][c] = acc[h][t][c] * corr + p * vv[u][t][c];
				m[h] = mn;
			}
		}
	}

	// Merge the warps: each writes (max, sum, output) per query head of the group.
	const int w = hd + 2;
#pragma unroll
	for (int h = 0; h < G; h++) {
		if (h >= group) break;
		float* sp = smem + (warp * G + h) * w;
		if (lane == 0) {
			sp[0] = m[h];
			sp[1] = l[h];
		}
#pragma unroll
		for (int t = 0; t < T; t++) {
			const int d = 4 * lane + 128 * t;
			if (d < hd) {
#pragma unroll
				for (int c = 0; c < 4; c++) sp[2 + d + c] = acc[h][t][c];
			}
		}
	}
	__syncthreads();
	const bool split_k = gridDim.y > 1;
	for (int x = threadIdx.x; x < group * hd; x += blockDim.x) {
		const int h = x / hd, d = x - h * hd;
		float M = -INFINITY;
		for (int wi = 0; wi < PAGED_WARPS; wi++) M = fmaxf(M, smem[(wi * G + h) * w]);
		float L = 0.f, O = 0.f;
		for (int wi = 0; wi < PAGED_WARPS; wi++) {
			const float* sp = smem + (wi * G + h) * w;
			if (sp[1] == 0.f) continue; // a warp that saw no key (its max is -inf)
			const float f = __expf(sp[0] - M);
			L += sp[1] * f;
			O += sp[2 + d] * f;
		}
		const long long qh = (long long)row * heads + g * group + h;
		if (!split_k) {
			out[qh * hd + d] = O / L;
		} else {
			const long long pi = (long long)split * rows * heads + qh;
			part_o[pi * hd + d] = O;
			if (d == 0) {
				part_ml[2 * pi] = M;
				part_ml[2 * pi + 1] = L;
			}
		}
	}
}

#define PAGED_ATTENTION(NAME, KV, T, G)                                                                           \
	extern "C" __global__ void __launch_bounds__(32 * PAGED_WARPS) NAME(                                             \
	    float* out, float* part_o, float* part_ml, const float* q, const KV::elem* kpool, const KV::elem* vpool,     \
	    const int* seqs, const int* lens, const int* rowseq, int rows, int heads, int kvHeads, int hd, int bt,        \
	    float scale, int chunk) {                                                                                    \
		paged_attention<KV, T, G>(out, part_o, part_ml, q, kpool, vpool, seqs, lens, rowseq, rows, heads, kvHeads,  \
		                          hd, bt, scale, chunk);                                                              \
	}

#define PAGED_ATTENTION_GROUPS(KVNAME, KV, T)                    \
	PAGED_ATTENTION(paged_attention_##KVNAME##_t##T##_g1, KV, T, 1) \
	PAGED_ATTENTION(paged_attention_##KVNAME##_t##T##_g2, KV, T, 2) \
	PAGED_ATTENTION(paged_attention_##KVNAME##_t##T##_g4, KV, T, 4) \
	PAGED_ATTENTION(paged_attention_##KVNAME##_t##T##_g8, KV, T, 8)

PAGED_ATTENTION_GROUPS(f32, f32kv, 1)
PAGED_ATTENTION_GROUPS(f32, f32kv, 2)
PAGED_ATTENTION_GROUPS(bf16, bf16kv, 1)
PAGED_ATTENTION_GROUPS(bf16, bf16kv, 2)

extern "C" __global__ void paged_combine(float* __restrict__ out, const float* __restrict__ part_o,
                                         const float* __restrict__ part_ml, const int* __restrict__ seqs,
                                         const int* __restrict__ lens, const int* __restrict__ rowseq, int rows,
                                         int heads, int kvHeads, int hd, int chunk) {
	const int qh = blockIdx.x;
	const int row = qh / heads, h = qh - row * heads;
	const int g = h / (heads / kvHeads);
	const seqInfo s = load_seq(seqs, rowseq[row]);
	const int visible = lens[s.lensOff + g] - s.n + (row - s.row0) + 1;
	const int used = (visible + chunk - 1) / chunk;
	float M = -INFINITY;
	for (int c = 0; c < used; c++) M = fmaxf(M, part_ml[2 * ((long long)c * rows * heads + qh)]);
	for (int d = threadIdx.x; d < hd; d += blockDim.x) {
		float L = 0.f, O = 0.f;
		for (int c = 0; c < used; c++) {
			const long long pi = (long long)c * rows * heads + qh;
			const float f = __expf(part_ml[2 * pi] - M);
			L += part_ml[2 * pi + 1] * f;
			O += part_o[pi * hd + d] * f;
		}
		out[(long long)qh * hd + d] = O / L;
	}
}

extern "C" __global__ void paged_copy_rows(unsigned int* __restrict__ dk, unsigned int* __restrict__ dv,
                                           const unsigned int* __restrict__ sk, const unsigned int* __restrict__ sv,
                                           const int* __restrict__ pairs, long long count, int w) {
	long long stride = (long long)gridDim.x * blockDim.x;
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count * w; i += stride) {
		long long p = i / w;
		int e = (int)(i - p * w);
		long long dst = (long long)pairs[2 * p] * w + e, src = (long long)pairs[2 * p + 1] * w + e;
		dk[dst] = sk[src];
		dv[dst] = sv[src];
	}
}
