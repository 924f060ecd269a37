// score_snapkv.cu: SnapKV on the device (the host side is backend/cuda/score_snapkv.go;
// the host twin eviction/scorer_snapkv.go). Inputs: rotated queries q [T, heads*D],
// rotated keys k [T, kvHeads*D], positions [T]. Output: scores [kvHeads][T] float32 for
// the keys before the window (score_protect.cu's layer_protect then puts the window
// above them).
//
// Kernels, launch shapes (set in score_snapkv.go) and roles:
//
// snap_logits   grid (key blocks, query heads in this chunk, ceil(w/64)), block 256,
//               dynamic shared memory 2*D*SK_P floats. scale * q_r . k_j for the w window
//               queries r and all keys j (masked when pos[j] > pos of r), stored for the
//               keys before the window; per block, each row's running max and sum of exp.
// snap_stats    grid (hc*w/256), block 256. Combines the blocks' (max, sum) per row.
// snap_reduce   grid (prefix/256, hc), block 256. avg_j = mean over window rows of
//               softmax_rj (double).
// snap_pool     grid (prefix/256, kvHeads), block 256. pool1d along the keys (avg
//               counting the zero padding, or max ignoring it) and the mean over the KV
//               group.
//
// The window logits are float32 dot products, the softmax and pooling double. The host
// holds at most 256 MiB of logits at once (score_snapkv.go snapLogitsBytes) and loops
// over chunks of query heads.
//
// What bounds it: the window logits, w x T float32 dot products of D per query head,
// written to device memory and read back by snap_reduce (w x prefix floats per head).
// Measured: 0.31 ms per layer at 8k tokens, 32/8 heads of 128, on an H200
// (results/gpu/2026-11-28-h200-run3, BenchmarkEvictionOverhead/score/snapkv).

#include "score_common.cuh"

// ---------------------------------------------------------------------------------
// SnapKV.

#define SK_RT 64  // window rows per block
#define SK_KT 64  // keys per tile
#define SK_P 68   // padded row of the transposed tiles

// online softmax state: combine (m, s) with (m2, s2).
__device__ __forceinline__ void sk_combine(float& m, float& s, float m2, float s2) {
	if (m2 == NEG_INF) return;
	if (m == NEG_INF) {
		m = m2;
		s = s2;
		return;
	}
	if (m2 > m) {
		s = s * expf(m - m2) + s2;
		m = m2;
	} else {
		s = s + s2 * expf(m2 - m);
	}
}

// Grid (key blocks, heads in this chunk, ceil(w/64)), block 256; dynamic shared memory
// 2*D*SK_P floats. logits [hchunk][w][prefixP] for keys j < prefix; pml
// [hchunk][w][gridDim.x][2] the block's (max, sum) per window row.
extern "C" __global__ void snap_logits(float* __restrict__ logits, float* __restrict__ pml,
                                       const float* __restrict__ q, const float* __restrict__ k,
                                       const int* __restrict__ pos, int T, int heads, int kvHeads, int D, int w,
                                       int prefix, int prefixP, int h0, int keysPerBlock, float scale) {
	extern __shared__ __align__(16) float smem[];
	float* Qt = smem;             // [D][SK_P]: Qt[d*SK_P + row]
	float* Kt = smem + D * SK_P;  // [D][SK_P]: Kt[d*SK_P + key]
	const int hh = blockIdx.y, h = h0 + hh, g = h / (heads / kvHeads);
	const int rt = blockIdx.z;
	const int tid = threadIdx.x;
	const int rg = tid >> 4, kq = tid & 15;  // 16 row groups x 16 key groups, 4 each
	const int d4 = D / 4;
	const long long qs = (long long)heads * D, ks = (long long)kvHeads * D;

	for (int task = tid; task < SK_RT * d4; task += blockDim.x) {
		const int rr = task % SK_RT, c4 = (task / SK_RT) * 4;
		const int r = rt * SK_RT + rr;
		float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
		if (r < w) v = *(const float4*)(q + (long long)(T - w + r) * qs + (long long)h * D + c4);
		Qt[(c4 + 0) * SK_P + rr] = v.x;
		Qt[(c4 + 1) * SK_P + rr] = v.y;
		Qt[(c4 + 2) * SK_P + rr] = v.z;
		Qt[(c4 + 3) * SK_P + rr] = v.w;
	}
	int rrow[4], qpos[4];
	bool rvalid[4];
	float mrow[4], srow[4];
#pragma unroll
	for (int i = 0; i < 4; i++) {
		rrow[i] = rt * SK_RT + rg * 4 + i;
		rvalid[i] = rrow[i] < w;
		qpos[i] = rvalid[i] ? pos[T - w + rrow[i]] : 0;
		mrow[i] = NEG_INF;
		srow[i] = 0.f;
	}
	const int kbeg = blockIdx.x * keysPerBlock, kend = min(T, kbeg + keysPerBlock);
	const float* kh = k + (long long)g * D;
	for (int base = kbeg; base < kend; base += SK_KT) {
		__syncthreads();
		for (int task = tid; task < SK_KT * d4; task += blockDim.x) {
			const int kk = task % SK_KT, c4 = (task / SK_KT) * 4;
			float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
			if (base + kk < kend) v = *(const float4*)(kh + (long long)(base + kk) * ks + c4);
			Kt[(c4 + 0) * SK_P + kk] = v.x;
			Kt[(c4 + 1) * SK_P + kk] = v.y;
			Kt[(c4 + 2) * SK_P + kk] = v.z;
			Kt[(c4 + 3) * SK_P + kk] = v.w;
		}
		__syncthreads();
		float acc[4][4];
#pragma unroll
		for (int i = 0; i < 4; i++)
#pragma unroll
			for (int jj = 0; jj < 4; jj++) acc[i][jj] = 0.f;
#pragma unroll 4
		for (int d = 0; d < D; d++) {
			const float4 qv = *(const float4*)(Qt + d * SK_P + rg * 4);
			const float4 kv = *(const float4*)(Kt + d * SK_P + kq * 4);
			const float qa[4] = {qv.x, qv.y, qv.z, qv.w}, ka[4] = {kv.x, kv.y, kv.z, kv.w};
#pragma unroll
			for (int i = 0; i < 4; i++)
#pragma unroll
				for (int jj = 0; jj < 4; jj++) acc[i][jj] = fmaf(qa[i], ka[jj], acc[i][jj]);
		}
		const int j0 = base + kq * 4;
		int kpos[4];
#pragma unroll
		for (int jj = 0; jj < 4; jj++) kpos[jj] = j0 + jj < kend ? pos[j0 + jj] : 0;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			float l[4];
#pragma unroll
			for (int jj = 0; jj < 4; jj++) {
				const bool vis = rvalid[i] && j0 + jj < kend && kpos[jj] <= qpos[i];
				l[jj] = vis ? acc[i][jj] * scale : NEG_INF;
				if (vis) sk_combine(mrow[i], srow[i], l[jj], 1.f);
			}
			// j0 is a multiple of 4 and the row is padded to prefixP: a group that starts
			// before prefix fits the row (entries past prefix are never read).
			if (rvalid[i] && j0 < prefix)
				*(float4*)(logits + ((long long)hh * w + rrow[i]) * prefixP + j0) = make_float4(l[0], l[1], l[2], l[3]);
		}
	}
	// Combine the 16 key groups of each row group (lanes rg*16 .. rg*16+15 of a warp).
#pragma unroll
	for (int i = 0; i < 4; i++)
		for (int o = 8; o > 0; o >>= 1) {
			const float m2 = __shfl_xor_sync(0xffffffffu, mrow[i], o);
			const float s2 = __shfl_xor_sync(0xffffffffu, srow[i], o);
			sk_combine(mrow[i], srow[i], m2, s2);
		}
	if (kq == 0)
#pragma unroll
		for (int i = 0; i < 4; i++)
			if (rvalid[i]) {
				float* o = pml + (((long long)hh * w + rrow[i]) * gridDim.x + blockIdx.x) * 2;
				o[0] = mrow[i];
				o[1] = srow[i];
			}
}

// Grid ceil(rows/256), block 256; rows = hchunk*w. ms [rows][2] (double): the row's
// max and sum of exp(l - max) over all its visible keys.
extern "C" __global__ void snap_stats(double* __restrict__ ms, const float* __restrict__ pml, int rows, int parts) {
	const int r = blockIdx.x * blockDim.x + threadIdx.x;
	if (r >= rows) return;
	const float* p = pml + (long long)r * parts * 2;
	float M = NEG_INF;
	for (int i = 0; i < parts; i++) M = fmaxf(M, p[2 * i]);
	double S = 0.0;
	if (M > NEG_INF)
		for (int i = 0; i < parts; i++)
			if (p[2 * i] > NEG_INF) S += (double)p[2 * i + 1] * exp((double)p[2 * i] - (double)M);
	ms[2 * r] = (double)M;
	ms[2 * r + 1] = S;
}

// Grid (ceil(prefix/256), hchunk), block 256. avg [heads][prefix] (double).
extern "C" __global__ void snap_reduce(double* __restrict__ avg, const float* __restrict__ logits,
                                       const double* __restrict__ ms, int w, int prefix, int prefixP, int h0) {
	const int hh = blockIdx.y;
	const int j = blockIdx.x * blockDim.x + threadIdx.x;
	if (j >= prefix) return;
	double acc = 0.0;
	for (int r = 0; r < w; r++) {
		const long long row = (long long)hh * w + r;
		const double M = ms[2 * row], S = ms[2 * row + 1];
		const float l = logits[row * prefixP + j];
		if (S > 0.0 && l > NEG_INF) acc += (double)expf((float)((double)l - M)) / S;
	}
	avg[(long long)(h0 + hh) * prefix + j] = acc / (double)w;
}

// Grid (ceil(prefix/256), kvHeads), block 256. out [kvHeads][T] for j < prefix.
extern "C" __global__ void snap_pool(float* __restrict__ out, const double* __restrict__ avg, int T, int prefix,
                                     int heads, int kvHeads, int kernel, int useMax) {
	const int g = blockIdx.y, G = heads / kvHeads;
	const int j = blockIdx.x * blockDim.x + threadIdx.x;
	if (j >= prefix) return;
	double mean = 0.0;
	for (int hq = 0; hq < G; hq++) {
		const double* a = avg + (long long)(g * G + hq) * prefix;
		double x;
		if (kernel <= 1) {
			x = a[j];
		} else {
			const int pad = kernel / 2;
			const int lo = max(0, j - pad), hi = min(prefix, j - pad + kernel);
			if (useMax) {
				x = -HUGE_VAL;
				for (int i = lo; i < hi; i++) x = fmax(x, a[i]);
			} else {
				x = 0.0;
				for (int i = lo; i < hi; i++) x += a[i];
				x /= (double)kernel;
			}
		}
		mean += x;
	}
	out[(long long)g * T + j] = (float)(mean / (double)G);
}
