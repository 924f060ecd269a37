// kvcache.cu: per-head KV cache maintenance.
//
// A layer's keys and values are two flat float32 buffers [rows, hd]; KV head h owns rows
// [off[h], off[h] + cap[h]) and uses the first len[h]. off and len live on the device as
// int32 [kvHeads] (the host keeps the authoritative copy and the capacities).
//
// kv_append:  k_cache[(off[h] + len[h] + i)*hd + d] = k[i, h*hd + d]   (same for v)
//             for i < n, h < kvHeads, d < hd; k, v [n, kvHeads*hd]. The host has made
//             room (len[h] + n <= cap[h]). len is NOT advanced here: the attention launch
//             that follows reads the old len, then kv_commit advances it.
// kv_commit:  len[h] += n for h < kvHeads (one block of >= kvHeads threads).
// kv_gather:  dst[pairs[p].x * hd + d] = src[pairs[p].y * hd + d] for keys and values,
//             p < count: copies kept rows into a new layout (growth, compaction).
//
// Launch: kv_append and kv_gather one thread per element, grid-stride, block 256;
// kv_commit grid 1, block 32*ceil(kvHeads/32).
// Bound: memory, 2 x 4 bytes read + written per element.

extern "C" __global__ void kv_append(float* __restrict__ kc, float* __restrict__ vc,
                                     const float* __restrict__ k, const float* __restrict__ v,
                                     const int* __restrict__ off, const int* __restrict__ len,
                                     int n, int kvHeads, int hd) {
	const long long row = (long long)kvHeads * hd;
	const long long total = (long long)n * row;
	for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
	     e += (long long)gridDim.x * blockDim.x) {
		const long long i = e / row;
		const int r = (int)(e % row);
		const int h = r / hd, d = r % hd;
		const long long dst = ((long long)off[h] + len[h] + i) * hd + d;
		kc[dst] = k[e];
		vc[dst] = v[e];
	}
}

extern "C" __global__ void kv_commit(int* len, int kvHeads, int n) {
	const int h = threadIdx.x;
	if (h < kvHeads) len[h] += n;
}

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
