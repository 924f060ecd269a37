// topk.cu: which tokens each KV head keeps, and the compaction that keeps them, on the
// device (backend/cuda/kvcache_device_keep.go).
//
// Ranking, as eviction's topK ranks on the host: a token ranks above another when its
// score is higher, or equal and its index later; NaN ranks below every number; -0 equals
// +0. Each token gets a distinct 64-bit key whose order is that rank:
//   key = sortable(score) << 32 | index
// where sortable maps a float to an unsigned integer in the same order (NaN to 0). How
// many tokens each head keeps (AdaKV's pooled budget included) is decided by package
// eviction on the host; this file only selects and compacts.
// The k best tokens are those whose key is >= the k-th largest key, found by an MSD
// radix select (8 passes of 8 bits, shared-memory histograms, warp-aggregated atomics).
// The kept indices are written ascending by an ordered block compaction.
//
// select_topk    grid (layers*kvHeads), block 1024: block (l, h) keeps the counts[l][h]
//                best of scores[l][h][0..T) into keep[l][h][0..count).
// kv_gather_keep grid (x, kvHeads), block 256: copies the kept rows of one layer's keys
//                and values into new buffers: row i of head h goes from old row
//                offs[nkv + h] + keep[h][i] to new row offs[h] + i, i < counts[h]. A row
//                is `words` 32-bit words (float32 or pairs of bfloat16), copied 16 bytes
//                at a time when words is a multiple of 4.

#include <stdint.h>

__device__ __forceinline__ unsigned int sortable(float f) {
	if (f != f) return 0u;  // NaN: below everything
	unsigned int u = __float_as_uint(f);
	if (f == 0.0f) u = 0u;  // -0 == +0
	return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ unsigned long long head_key(const float* s, long long j) {
	return ((unsigned long long)sortable(s[j]) << 32) | (unsigned long long)j;
}

struct SelectScratch {
	unsigned int hist[256];
	unsigned int warpCnt[32];
	unsigned int warpOff[32];
	unsigned int total;
	unsigned int digit;
	long long rem;
};

// block_select returns the k-th largest key (1 <= k <= number of valid items) over items
// 0 .. n-1, where keyOf(i, key) reports whether item i takes part and sets its key. Keys
// must be distinct. Every thread of the block calls it and gets the result.
template <class KeyFn>
__device__ unsigned long long block_select(KeyFn keyOf, long long n, long long k, SelectScratch& S) {
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	unsigned long long prefix = 0ull, mask = 0ull;
	for (int shift = 56; shift >= 0; shift -= 8) {
		for (int b = tid; b < 256; b += blockDim.x) S.hist[b] = 0u;
		__syncthreads();
		for (long long base = 0; base < n; base += blockDim.x) {
			const long long i = base + tid;
			unsigned long long key = 0ull;
			bool ok = false;
			if (i < n) ok = keyOf(i, key);
			ok = ok && (key & mask) == prefix;
			const unsigned int digit = ok ? (unsigned int)(key >> shift) & 255u : 256u;
			const unsigned int peers = __match_any_sync(0xffffffffu, digit);
			if (ok && lane == __ffs(peers) - 1) atomicAdd(&S.hist[digit], (unsigned int)__popc(peers));
		}
		__syncthreads();
		if (warp == 0) {
			// Lane l sums bins 255-8l down to 248-8l; a scan over lanes then finds the bin
			// holding the k-th largest.
			unsigned int c[8], sum = 0u;
#pragma unroll
			for (int t = 0; t < 8; t++) {
				c[t] = S.hist[255 - 8 * lane - t];
				sum += c[t];
			}
			unsigned int incl = sum;
			for (int o = 1; o < 32; o <<= 1) {
				const unsigned int y = __shfl_up_sync(0xffffffffu, incl, o);
				if (lane >= o) incl += y;
			}
			const unsigned int excl = incl - sum;
			const bool here = (long long)excl < k && k <= (long long)incl;
			const unsigned int ballot = __ballot_sync(0xffffffffu, here);
			if (lane == __ffs(ballot) - 1) {
				long long rem = k - (long long)excl;
				unsigned int d = 255u - 8u * lane;
#pragma unroll
				for (int t = 0; t < 8; t++) {
					if (rem <= (long long)c[t]) {
						d = 255u - 8u * lane - t;
						break;
					}
					rem -= c[t];
				}
				S.digit = d;
				S.rem = rem;
			}
		}
		__syncthreads();
		prefix |= (unsigned long long)S.digit << shift;
		mask |= 255ull << shift;
		k = S.rem;
		__syncthreads();  // S.digit and S.rem are read before the next pass rewrites them
	}
	return prefix;
}

// block_compact writes, in increasing order, every i < n with sel(i) to out[0 ..] and
// returns how many there were. Every thread of the block calls it.
template <class SelFn>
__device__ int block_compact(SelFn sel, long long n, int* __restrict__ out, SelectScratch& S) {
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
	int written = 0;
	for (long long base = 0; base < n; base += blockDim.x) {
		const long long i = base + tid;
		const bool s = i < n && sel(i);
		const unsigned int ballot = __ballot_sync(0xffffffffu, s);
		if (lane == 0) S.warpCnt[warp] = __popc(ballot);
		__syncthreads();
		if (warp == 0) {
			const unsigned int v = lane < nw ? S.warpCnt[lane] : 0u;
			unsigned int incl = v;
			for (int o = 1; o < 32; o <<= 1) {
				const unsigned int y = __shfl_up_sync(0xffffffffu, incl, o);
				if (lane >= o) incl += y;
			}
			S.warpOff[lane] = incl - v;
			if (lane == 31) S.total = incl;
		}
		__syncthreads();
		if (s) out[written + S.warpOff[warp] + __popc(ballot & ((1u << lane) - 1u))] = (int)i;
		written += (int)S.total;
		__syncthreads();
	}
	return written;
}

extern "C" __global__ void select_topk(int* __restrict__ keep, const float* __restrict__ scores,
                                       const int* __restrict__ counts, int T) {
	__shared__ SelectScratch S;
	const long long hd = blockIdx.x;
	const float* s = scores + hd * T;
	int* out = keep + hd * T;
	const int k = counts[hd];
	if (k <= 0) return;
	if (k >= T) {
		for (int j = threadIdx.x; j < T; j += blockDim.x) out[j] = j;
		return;
	}
	auto keyOf = [s](long long i, unsigned long long& key) {
		key = head_key(s, i);
		return true;
	};
	const unsigned long long thr = block_select(keyOf, T, k, S);
	block_compact([s, thr](long long i) { return head_key(s, i) >= thr; }, T, out, S);
}

extern "C" __global__ void kv_gather_keep(unsigned int* __restrict__ dk, unsigned int* __restrict__ dv,
                                          const unsigned int* __restrict__ sk, const unsigned int* __restrict__ sv,
                                          const int* __restrict__ keep, const int* __restrict__ counts,
                                          const int* __restrict__ offs, int nkv, int T, int words) {
	const int h = blockIdx.y;
	const int* kh = keep + (long long)h * T;
	const long long nbase = offs[h], obase = offs[nkv + h];
	if ((words & 3) == 0) {  // 16-byte units
		const int u = words / 4;
		const long long total = (long long)counts[h] * u;
		for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
		     e += (long long)gridDim.x * blockDim.x) {
			const long long i = e / u;
			const int c = (int)(e % u);
			const long long src = (obase + kh[i]) * u + c, dst = (nbase + i) * u + c;
			((uint4*)dk)[dst] = ((const uint4*)sk)[src];
			((uint4*)dv)[dst] = ((const uint4*)sv)[src];
		}
		return;
	}
	const long long total = (long long)counts[h] * words;
	for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
	     e += (long long)gridDim.x * blockDim.x) {
		const long long i = e / words;
		const int c = (int)(e % words);
		const long long src = (obase + kh[i]) * words + c, dst = (nbase + i) * words + c;
		dk[dst] = sk[src];
		dv[dst] = sv[src];
	}
}
