// score.cu: token scorers for KV-cache eviction, on the device (runtime/cuda/score.go).
//
// Each scorer computes what its host twin in eviction/ computes (scorer_expected.go,
// scorer_snapkv.go, scorer_keys.go), reading the layer's activations where the forward
// pass left them: rotated queries q [T, heads*D], rotated keys k and values v
// [T, kvHeads*D], positions [T]. Output: scores [kvHeads][T] float32.
//
// Precision: the large products (query covariance, k^T Sigma' k, window logits) are
// float32 FMAs; statistics, softmax sums, norms and everything after are double, and
// the result is rounded to float32 once. Norm-based scorers (K-norm, KeyDiff) are double
// throughout and so equal the host's float64 scores after rounding.
//
// Kernels (launch shapes in runtime/cuda/score.go):
//
// score_rope_table   cos/sin [n][D/2] of float32(pos[i]) * invfreq[j], computed exactly
//                    as kernels/rope.cu does (double sincos of the float32 angle, rounded
//                    to float32), so un-rotating a query with them undoes RoPE to float32
//                    rounding.
// score_rope_mean    cbar, sbar [D/2] (double): the mean of those cos/sin over positions
//                    first .. first+n-1 (eviction averageRotation).
// ea_cov_partial     expected attention, statistics: for query head h and a slice of the
//                    statistics rows, un-rotates each row (x = R(p)^T q), subtracts a
//                    shift c (the first statistics row) and accumulates M = sum (x-c)
//                    (x-c)^T and s = sum (x-c). Only the upper block triangle of M is
//                    formed: the D dims are 4 blocks of BD = D/4, the 10 block pairs
//                    (A <= B) are tiles of BD x BD, each thread owns an 8x8 piece of one.
// ea_cov_reduce      sums those partials over the slices (double).
// ea_cov_rotate      Sigma = M/n - d d^T, mu = c + d (d = s/n), then mu' = Rbar mu and
//                    Sigma' = Rbar Sigma Rbar^T (double); writes U^T for ea_logits, U the
//                    block-upper part of Sigma' with off-diagonal blocks doubled (so
//                    k^T Sigma' k = k^T U k), and lin = 2 sqrt(D) mu'.
// ea_logits          z_j = mu'.k_j/sqrt(D) + k_j^T Sigma' k_j/(2D)
//                        = sum_a k_ja ((U k_j)_a + lin_a) / (2D)
//                    for every query head and key j >= nsink. A block holds U (D x D) and
//                    a tile of 64 keys in shared memory; each thread accumulates (U k)_a
//                    for 8 keys x 8 dims a, 4 of them in dim block A1 and 4 in block 3-A1
//                    (A1 = 0 or 1), so that with the zero lower blocks skipped every
//                    thread does the same work (5 blocks of BD per key and dim).
// ea_softmax_stats   per query head: max and sum of exp of z over keys j >= nsink.
// ea_finish          score_j = (mean over the group of softmax_j + eps) * ||v_j||.
// row_norms          ||x_j|| per (row, head), double.
// knorm_scores       -||k_j||.
// kd_anchor_partial  KeyDiff: partial sums of k_j / max(||k_j||, 1e-12) over row slices.
// kd_scores          -(k_j . a) / (max(||k_j||, 1e-8) max(||a||, 1e-8)), a the mean.
// snap_logits        SnapKV: scale * q_r . k_j for the w window queries r and all keys j
//                    (masked when pos[j] > pos of r), stored for the keys before the
//                    window; per block, each row's running max and sum of exp.
// snap_stats         combines the blocks' (max, sum) per row.
// snap_reduce        avg_j = mean over window rows of softmax_rj (double).
// snap_pool          pool1d along the keys (avg counting the zero padding, or max
//                    ignoring it) and the mean over the KV group.
// ea_cov_tc,         the tensor-core forms of ea_cov_partial and ea_logits (head dim 128,
// ea_logits_tc       split bf16 operands): see the section at the end of this file.
// layer_protect      the "above every other" score: per layer, m = the largest finite
//                    score over heads x [tlo, thi), top = m + 1 (the next float up when
//                    +1 is lost, m itself when that overflows, 1 when nothing is
//                    finite), written to positions j < p1hi and j >= p2lo of every head.
//                    Used for a scorer's own protected tokens and for sink/window.

#include <stdint.h>

#define NEG_INF (-__int_as_float(0x7f800000))
#define POS_INF (__int_as_float(0x7f800000))

// ---------------------------------------------------------------------------------
// Reductions.

__device__ __forceinline__ double warp_sum_d(double v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ float warp_max_f(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

// block_sum_d returns the sum of v over the block to every thread (blockDim.x a multiple
// of 32). scratch: 32 doubles of shared memory; every thread must call it.
__device__ double block_sum_d(double v, double* scratch) {
	v = warp_sum_d(v);
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	__syncthreads();  // an earlier call may still be reading scratch
	if (lane == 0) scratch[warp] = v;
	__syncthreads();
	return warp_sum_d(lane < nw ? scratch[lane] : 0.0);
}

__device__ float block_max_f(float v, float* scratch) {
	v = warp_max_f(v);
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	__syncthreads();
	if (lane == 0) scratch[warp] = v;
	__syncthreads();
	return warp_max_f(lane < nw ? scratch[lane] : NEG_INF);
}

// ---------------------------------------------------------------------------------
// RoPE tables.

extern "C" __global__ void score_rope_table(float* __restrict__ cosT, float* __restrict__ sinT,
                                            const int* __restrict__ pos, const float* __restrict__ invfreq,
                                            int n, int half) {
	const long long total = (long long)n * half;
	for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
	     t += (long long)gridDim.x * blockDim.x) {
		const int i = (int)(t / half), j = (int)(t % half);
		const float angle = __fmul_rn((float)pos[i], invfreq[j]);
		double sd, cd;
		sincos((double)angle, &sd, &cd);
		cosT[t] = (float)cd;
		sinT[t] = (float)sd;
	}
}

// Grid (D/2), block 256.
extern "C" __global__ void score_rope_mean(double* __restrict__ cbar, double* __restrict__ sbar,
                                           const float* __restrict__ invfreq, long long first, int n) {
	__shared__ double scratch[32];
	const int i = blockIdx.x;
	double cs = 0.0, ss = 0.0;
	for (int p = threadIdx.x; p < n; p += blockDim.x) {
		const float angle = __fmul_rn((float)(first + p), invfreq[i]);
		double sd, cd;
		sincos((double)angle, &sd, &cd);
		cs += (double)(float)cd;
		ss += (double)(float)sd;
	}
	cs = block_sum_d(cs, scratch);
	ss = block_sum_d(ss, scratch);
	if (threadIdx.x == 0) {
		cbar[i] = cs / n;
		sbar[i] = ss / n;
	}
}

// ---------------------------------------------------------------------------------
// Expected attention.

#define EA_RC 32   // statistics rows per chunk (ea_cov_partial)
#define EA_KT 64   // keys per tile (ea_logits)
#define EA_KTP 68  // padded row of the transposed key tile (a multiple of 4: float4 reads)

// ea_pair maps a block pair index p in [0, 10) to blocks A <= B:
// (0,0) (0,1) (0,2) (0,3) (1,1) (1,2) (1,3) (2,2) (2,3) (3,3).
__device__ __forceinline__ void ea_pair(int p, int& A, int& B) {
	A = p < 4 ? 0 : p < 7 ? 1 : p < 9 ? 2 : 3;
	const int start = A == 0 ? 0 : A == 1 ? 4 : A == 2 ? 7 : 9;
	B = A + (p - start);
}

__device__ __forceinline__ int ea_pair_index(int A, int B) {
	return (A == 0 ? 0 : A == 1 ? 4 : A == 2 ? 7 : 9) + (B - A);
}

// Grid (heads, splits); block >= max(10*(D/32)^2, D) threads, a multiple of 32; dynamic
// shared memory (EA_RC + 1) * D floats. D is a multiple of 32, at most 128.
// mpart [heads][splits][10][BD][BD], spart [heads][splits][D], shiftOut [heads][D].
extern "C" __global__ void __launch_bounds__(160, 2) ea_cov_partial(float* __restrict__ mpart, float* __restrict__ spart,
                                          float* __restrict__ shiftOut, const float* __restrict__ q,
                                          const float* __restrict__ cosT, const float* __restrict__ sinT,
                                          const int* __restrict__ rows, int nrows, int heads, int D,
                                          int rowsPerSplit, int useCov) {
	extern __shared__ __align__(16) float smem[];
	const int half = D / 2, BD = D / 4, m = BD / 8;
	float* X = smem;                  // [EA_RC][D] shifted, un-rotated rows
	float* shift = smem + EA_RC * D;  // [D]
	const int h = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
	const int tid = threadIdx.x;
	const long long qstride = (long long)heads * D;
	const float* qh = q + (long long)h * D;

	{  // the shift: the first statistics row, un-rotated
		const long long r0 = rows[0];
		for (int j = tid; j < half; j += blockDim.x) {
			const float a = qh[r0 * qstride + j], b = qh[r0 * qstride + half + j];
			const float c = cosT[r0 * half + j], s = sinT[r0 * half + j];
			shift[j] = a * c + b * s;
			shift[half + j] = b * c - a * s;
		}
	}
	__syncthreads();
	if (split == 0)
		for (int j = tid; j < D; j += blockDim.x) shiftOut[(long long)h * D + j] = shift[j];

	const int tiles = m * m, active = 10 * tiles;
	const bool worker = tid < active;
	int p = 0, a0 = 0, b0 = 0, ai = 0, bi = 0;
	if (worker) {
		int A, B;
		p = tid / tiles;
		ea_pair(p, A, B);
		ai = ((tid % tiles) / m) * 8;  // row within the pair's tile
		bi = ((tid % tiles) % m) * 8;  // column within the pair's tile
		a0 = A * BD + ai;
		b0 = B * BD + bi;
	}
	float acc[8][8];
#pragma unroll
	for (int i = 0; i < 8; i++)
#pragma unroll
		for (int j = 0; j < 8; j++) acc[i][j] = 0.f;
	float colsum = 0.f;

	const int rbeg = split * rowsPerSplit, rend = min(nrows, rbeg + rowsPerSplit);
	const int q4 = half / 4;
	for (int base = rbeg; base < rend; base += EA_RC) {
		__syncthreads();  // the previous chunk is consumed
		for (int task = tid; task < EA_RC * q4; task += blockDim.x) {
			const int rr = task / q4, j = (task % q4) * 4;
			float4 lo = make_float4(0.f, 0.f, 0.f, 0.f), hi = lo;
			if (base + rr < rend) {
				const long long r = rows[base + rr];
				const float4 a = *(const float4*)(qh + r * qstride + j);
				const float4 b = *(const float4*)(qh + r * qstride + half + j);
				const float4 c = *(const float4*)(cosT + r * half + j);
				const float4 s = *(const float4*)(sinT + r * half + j);
				lo.x = a.x * c.x + b.x * s.x - shift[j];
				lo.y = a.y * c.y + b.y * s.y - shift[j + 1];
				lo.z = a.z * c.z + b.z * s.z - shift[j + 2];
				lo.w = a.w * c.w + b.w * s.w - shift[j + 3];
				hi.x = b.x * c.x - a.x * s.x - shift[half + j];
				hi.y = b.y * c.y - a.y * s.y - shift[half + j + 1];
				hi.z = b.z * c.z - a.z * s.z - shift[half + j + 2];
				hi.w = b.w * c.w - a.w * s.w - shift[half + j + 3];
			}
			*(float4*)(X + rr * D + j) = lo;
			*(float4*)(X + rr * D + half + j) = hi;
		}
		__syncthreads();
		if (worker && useCov) {
			// Row rr+1's operands are loaded while row rr is multiplied (the last
			// prefetch reads row EA_RC-1 again).
			float4 xa0 = *(const float4*)(X + a0), xa1 = *(const float4*)(X + a0 + 4);
			float4 xb0 = *(const float4*)(X + b0), xb1 = *(const float4*)(X + b0 + 4);
			for (int rr = 0; rr < EA_RC; rr++) {
				const int rn = min(rr + 1, EA_RC - 1);
				const float4 na0 = *(const float4*)(X + rn * D + a0), na1 = *(const float4*)(X + rn * D + a0 + 4);
				const float4 nb0 = *(const float4*)(X + rn * D + b0), nb1 = *(const float4*)(X + rn * D + b0 + 4);
				const float xa[8] = {xa0.x, xa0.y, xa0.z, xa0.w, xa1.x, xa1.y, xa1.z, xa1.w};
				const float xb[8] = {xb0.x, xb0.y, xb0.z, xb0.w, xb1.x, xb1.y, xb1.z, xb1.w};
#pragma unroll
				for (int i = 0; i < 8; i++)
#pragma unroll
					for (int j = 0; j < 8; j++) acc[i][j] = fmaf(xa[i], xb[j], acc[i][j]);
				xa0 = na0;
				xa1 = na1;
				xb0 = nb0;
				xb1 = nb1;
			}
		}
		if (tid < D)
			for (int rr = 0; rr < EA_RC; rr++) colsum += X[rr * D + tid];
	}
	if (worker && useCov) {
		float* out = mpart + ((long long)(h * splits + split) * 10 + p) * BD * BD;
#pragma unroll
		for (int i = 0; i < 8; i++)
#pragma unroll
			for (int j = 0; j < 8; j++) out[(ai + i) * BD + bi + j] = acc[i][j];
	}
	if (tid < D) spart[(long long)(h * splits + split) * D + tid] = colsum;
}

// Grid (heads, 10), block 256. mred [heads][10][BD][BD], sred [heads][D] (double).
extern "C" __global__ void ea_cov_reduce(double* __restrict__ mred, double* __restrict__ sred,
                                         const float* __restrict__ mpart, const float* __restrict__ spart,
                                         int D, int splits, int useCov) {
	const int h = blockIdx.x, p = blockIdx.y;
	const int BD = D / 4, tile = BD * BD;
	if (useCov)
		for (int e = threadIdx.x; e < tile; e += blockDim.x) {
			double s = 0.0;
			for (int k = 0; k < splits; k++) s += (double)mpart[((long long)(h * splits + k) * 10 + p) * tile + e];
			mred[((long long)h * 10 + p) * tile + e] = s;
		}
	if (p == 0)
		for (int a = threadIdx.x; a < D; a += blockDim.x) {
			double s = 0.0;
			for (int k = 0; k < splits; k++) s += (double)spart[(long long)(h * splits + k) * D + a];
			sred[(long long)h * D + a] = s;
		}
}

// ea_m is M[c][d] from the reduced upper block tiles (M is symmetric).
__device__ __forceinline__ double ea_m(const double* mh, int c, int d, int BD) {
	int C = c / BD, Dd = d / BD;
	if (C > Dd) {
		int t = c;
		c = d;
		d = t;
		t = C;
		C = Dd;
		Dd = t;
	}
	return mh[(long long)ea_pair_index(C, Dd) * BD * BD + (c - C * BD) * BD + (d - Dd * BD)];
}

// ea_rrow gives row a of Rbar as two (column, coefficient) pairs: for a < D/2,
// Rbar[a][a] = cb[a], Rbar[a][a+D/2] = -sb[a]; for a = i + D/2, Rbar[a][i] = sb[i],
// Rbar[a][a] = cb[i] (eviction rotatePairs).
__device__ __forceinline__ void ea_rrow(int a, int half, const double* cb, const double* sb, int& c1, double& w1,
                                        int& c2, double& w2) {
	if (a < half) {
		c1 = a;
		w1 = cb[a];
		c2 = a + half;
		w2 = -sb[a];
	} else {
		const int i = a - half;
		c1 = i;
		w1 = sb[i];
		c2 = a;
		w2 = cb[i];
	}
}

// Grid (heads, ceil(D*D/256)), block 256 (>= D). ut [heads][D][D]: ut[h][b][a] = U[a][b];
// lin [heads][D].
extern "C" __global__ void ea_cov_rotate(float* __restrict__ ut, float* __restrict__ lin,
                                         const double* __restrict__ mred, const double* __restrict__ sred,
                                         const float* __restrict__ shift, const double* __restrict__ cb,
                                         const double* __restrict__ sb, int D, int n, int useCov) {
	const int h = blockIdx.x;
	const int half = D / 2, BD = D / 4;
	const double invn = 1.0 / (double)n;
	const double* mh = mred + (long long)h * 10 * BD * BD;
	const double* sh = sred + (long long)h * D;
	const int e = blockIdx.y * blockDim.x + threadIdx.x;
	if (e < D * D) {
		const int b = e / D, a = e % D;
		const int A = a / BD, B = b / BD;
		float val = 0.f;
		if (useCov && A <= B) {
			int c1, c2, d1, d2;
			double w1, w2, v1, v2;
			ea_rrow(a, half, cb, sb, c1, w1, c2, w2);
			ea_rrow(b, half, cb, sb, d1, v1, d2, v2);
			const double s11 = ea_m(mh, c1, d1, BD) * invn - (sh[c1] * invn) * (sh[d1] * invn);
			const double s12 = ea_m(mh, c1, d2, BD) * invn - (sh[c1] * invn) * (sh[d2] * invn);
			const double s21 = ea_m(mh, c2, d1, BD) * invn - (sh[c2] * invn) * (sh[d1] * invn);
			const double s22 = ea_m(mh, c2, d2, BD) * invn - (sh[c2] * invn) * (sh[d2] * invn);
			const double s = w1 * (v1 * s11 + v2 * s12) + w2 * (v1 * s21 + v2 * s22);
			val = (float)(A == B ? s : 2.0 * s);
		}
		ut[(long long)h * D * D + e] = val;
	}
	if (blockIdx.y == 0 && threadIdx.x < D) {
		const int a = threadIdx.x;
		int c1, c2;
		double w1, w2;
		ea_rrow(a, half, cb, sb, c1, w1, c2, w2);
		const double mu1 = (double)shift[(long long)h * D + c1] + sh[c1] * invn;
		const double mu2 = (double)shift[(long long)h * D + c2] + sh[c2] * invn;
		lin[(long long)h * D + a] = (float)(2.0 * sqrt((double)D) * (w1 * mu1 + w2 * mu2));
	}
}

// Grid (heads, splits), block D threads (D = 32, 64 or 128); dynamic shared memory
// (D*D + D*EA_KTP + D + EA_KT) floats. z [heads][T]: written for j in
// [j0 + split*keysPerBlock, min(T, j0 + (split+1)*keysPerBlock)).
extern "C" __global__ void __launch_bounds__(128, 2) ea_logits(float* __restrict__ z, const float* __restrict__ k,
                                     const float* __restrict__ ut, const float* __restrict__ lin, int T, int heads,
                                     int kvHeads, int D, int j0, int keysPerBlock, int useCov) {
	extern __shared__ __align__(16) float smem[];
	float* Us = smem;                // [D][D]: Us[b*D + a] = U[a][b]
	float* Kt = Us + D * D;          // [D][EA_KTP]: Kt[b*EA_KTP + key] = k[key][b]
	float* linS = Kt + D * EA_KTP;   // [D]
	float* red = linS + D;           // [EA_KT]: the A1 = 1 threads' partial sums
	const int h = blockIdx.x, g = h / (heads / kvHeads);
	const int tid = threadIdx.x;
	const int BD = D / 4, nsub = BD / 4, perA = nsub * 8;
	const int A1 = tid / perA, t2 = tid % perA, kg = t2 / nsub, sub = t2 % nsub;
	const int lowA = A1 * BD + sub * 4, highA = (3 - A1) * BD + sub * 4;
	const int bLow = A1 * BD, bHigh = (3 - A1) * BD;

	const float* uh = ut + (long long)h * D * D;
	for (int e = tid * 4; e < D * D; e += blockDim.x * 4) *(float4*)(Us + e) = *(const float4*)(uh + e);
	for (int a = tid; a < D; a += blockDim.x) linS[a] = lin[(long long)h * D + a];

	const long long kstride = (long long)kvHeads * D;
	const float* kh = k + (long long)g * D;
	const int kbeg = j0 + blockIdx.y * keysPerBlock;
	const int kend = min(T, kbeg + keysPerBlock);
	const int d4 = D / 4;
	for (int base = kbeg; base < kend; base += EA_KT) {
		__syncthreads();  // Us, linS ready; the previous tile is consumed
		for (int task = tid; task < EA_KT * d4; task += blockDim.x) {
			const int kk = task % EA_KT, c4 = (task / EA_KT) * 4;
			float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
			if (base + kk < kend) v = *(const float4*)(kh + (long long)(base + kk) * kstride + c4);
			Kt[(c4 + 0) * EA_KTP + kk] = v.x;
			Kt[(c4 + 1) * EA_KTP + kk] = v.y;
			Kt[(c4 + 2) * EA_KTP + kk] = v.z;
			Kt[(c4 + 3) * EA_KTP + kk] = v.w;
		}
		__syncthreads();
		float acc[8][8];  // [key][dim]: dims lowA..lowA+3, then highA..highA+3
#pragma unroll
		for (int i = 0; i < 8; i++)
#pragma unroll
			for (int c = 0; c < 8; c++) acc[i][c] = 0.f;
		if (useCov) {
			// Operands of row b+1 are loaded while row b is multiplied (software
			// pipelining: with two blocks of four warps per multiprocessor, few warps are
			// left to hide the shared-memory latency otherwise). The last prefetch reads
			// row D-1 again.
			float4 ul = *(const float4*)(Us + bLow * D + lowA);
			float4 uu = *(const float4*)(Us + bLow * D + highA);
			float4 k0 = *(const float4*)(Kt + bLow * EA_KTP + kg * 8);
			float4 k1 = *(const float4*)(Kt + bLow * EA_KTP + kg * 8 + 4);
			for (int b = bLow; b < bHigh; b++) {
				const int bn = b + 1;  // <= bHigh < D
				const float4 uln = *(const float4*)(Us + bn * D + lowA);
				const float4 k0n = *(const float4*)(Kt + bn * EA_KTP + kg * 8);
				const float4 k1n = *(const float4*)(Kt + bn * EA_KTP + kg * 8 + 4);
				const float kv[8] = {k0.x, k0.y, k0.z, k0.w, k1.x, k1.y, k1.z, k1.w};
#pragma unroll
				for (int i = 0; i < 8; i++) {
					acc[i][0] = fmaf(ul.x, kv[i], acc[i][0]);
					acc[i][1] = fmaf(ul.y, kv[i], acc[i][1]);
					acc[i][2] = fmaf(ul.z, kv[i], acc[i][2]);
					acc[i][3] = fmaf(ul.w, kv[i], acc[i][3]);
				}
				ul = uln;
				k0 = k0n;
				k1 = k1n;
			}
			uu = *(const float4*)(Us + bHigh * D + highA);
			for (int b = bHigh; b < D; b++) {
				const int bn = min(b + 1, D - 1);
				const float4 uln = *(const float4*)(Us + bn * D + lowA);
				const float4 uun = *(const float4*)(Us + bn * D + highA);
				const float4 k0n = *(const float4*)(Kt + bn * EA_KTP + kg * 8);
				const float4 k1n = *(const float4*)(Kt + bn * EA_KTP + kg * 8 + 4);
				const float kv[8] = {k0.x, k0.y, k0.z, k0.w, k1.x, k1.y, k1.z, k1.w};
#pragma unroll
				for (int i = 0; i < 8; i++) {
					acc[i][0] = fmaf(ul.x, kv[i], acc[i][0]);
					acc[i][1] = fmaf(ul.y, kv[i], acc[i][1]);
					acc[i][2] = fmaf(ul.z, kv[i], acc[i][2]);
					acc[i][3] = fmaf(ul.w, kv[i], acc[i][3]);
					acc[i][4] = fmaf(uu.x, kv[i], acc[i][4]);
					acc[i][5] = fmaf(uu.y, kv[i], acc[i][5]);
					acc[i][6] = fmaf(uu.z, kv[i], acc[i][6]);
					acc[i][7] = fmaf(uu.w, kv[i], acc[i][7]);
				}
				ul = uln;
				uu = uun;
				k0 = k0n;
				k1 = k1n;
			}
		}
		float part[8];
#pragma unroll
		for (int i = 0; i < 8; i++) {
			const int key = kg * 8 + i;
			float s = 0.f;
#pragma unroll
			for (int c = 0; c < 4; c++) {
				s = fmaf(Kt[(lowA + c) * EA_KTP + key], acc[i][c] + linS[lowA + c], s);
				s = fmaf(Kt[(highA + c) * EA_KTP + key], acc[i][4 + c] + linS[highA + c], s);
			}
			part[i] = s;
		}
		// Sum over the nsub threads of this key group (consecutive lanes), then over A1.
		for (int o = nsub / 2; o > 0; o >>= 1)
#pragma unroll
			for (int i = 0; i < 8; i++) part[i] += __shfl_xor_sync(0xffffffffu, part[i], o);
		if (A1 == 1 && sub == 0)
#pragma unroll
			for (int i = 0; i < 8; i++) red[kg * 8 + i] = part[i];
		__syncthreads();
		if (A1 == 0 && sub == 0)
#pragma unroll
			for (int i = 0; i < 8; i++) {
				const int j = base + kg * 8 + i;
				if (j < kend) z[(long long)h * T + j] = (part[i] + red[kg * 8 + i]) / (float)(2 * D);
			}
	}
}

// Grid (heads), block 1024. ms [heads][2] = (max, sum of exp(z - max)) over j in [j0, T).
extern "C" __global__ void ea_softmax_stats(double* __restrict__ ms, const float* __restrict__ z, int T, int j0) {
	__shared__ double scratch[32];
	__shared__ float scratchF[32];
	const int h = blockIdx.x;
	const float* zh = z + (long long)h * T;
	float m = NEG_INF;
	for (int j = j0 + threadIdx.x; j < T; j += blockDim.x) m = fmaxf(m, zh[j]);
	m = block_max_f(m, scratchF);
	double s = 0.0;
	if (m > NEG_INF)
		for (int j = j0 + threadIdx.x; j < T; j += blockDim.x) s += exp((double)zh[j] - (double)m);
	s = block_sum_d(s, scratch);
	if (threadIdx.x == 0) {
		ms[2 * h] = (double)m;
		ms[2 * h + 1] = s;
	}
}

// Grid (ceil((T-j0)/256), kvHeads), block 256. out [kvHeads][T] for j >= j0.
extern "C" __global__ void ea_finish(float* __restrict__ out, const float* __restrict__ z, const double* __restrict__ ms,
                                     const double* __restrict__ vn, int T, int heads, int kvHeads, int j0, float eps,
                                     int useV) {
	const int g = blockIdx.y, G = heads / kvHeads;
	const int j = j0 + blockIdx.x * blockDim.x + threadIdx.x;
	if (j >= T) return;
	double mean = 0.0;
	for (int hq = 0; hq < G; hq++) {
		const int h = g * G + hq;
		const double s = ms[2 * h + 1];
		if (s > 0.0) mean += exp((double)z[(long long)h * T + j] - ms[2 * h]) / s;
	}
	mean /= (double)G;
	if (useV) mean = (mean + (double)eps) * vn[(long long)g * T + j];
	out[(long long)g * T + j] = (float)mean;
}

// ---------------------------------------------------------------------------------
// Norms, K-norm, KeyDiff. One warp per (row, head): block 256 = 8 items.

extern "C" __global__ void row_norms(double* __restrict__ out, const float* __restrict__ x, int T, int heads, int D) {
	const long long item = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (item >= (long long)T * heads) return;  // the whole warp leaves together
	const int lane = threadIdx.x & 31;
	const long long j = item / heads;
	const int g = (int)(item % heads);
	const float* p = x + j * heads * D + (long long)g * D;
	double ss = 0.0;
	for (int c = lane; c < D; c += 32) {
		const double v = p[c];
		ss += v * v;
	}
	ss = warp_sum_d(ss);
	if (lane == 0) out[(long long)g * T + j] = sqrt(ss);
}

extern "C" __global__ void knorm_scores(float* __restrict__ out, const float* __restrict__ k, int T, int heads, int D) {
	const long long item = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (item >= (long long)T * heads) return;
	const int lane = threadIdx.x & 31;
	const long long j = item / heads;
	const int g = (int)(item % heads);
	const float* p = k + j * heads * D + (long long)g * D;
	double ss = 0.0;
	for (int c = lane; c < D; c += 32) {
		const double v = p[c];
		ss += v * v;
	}
	ss = warp_sum_d(ss);
	if (lane == 0) out[(long long)g * T + j] = (float)(-sqrt(ss));
}

#define KD_MAXD 256  // largest head dim of the KeyDiff kernels
#define KD_WARPS 8   // block 256

// Grid (kvHeads, splits), block 256. part [kvHeads][splits][D] (double).
extern "C" __global__ void kd_anchor_partial(double* __restrict__ part, const float* __restrict__ k, int T,
                                             int kvHeads, int D, int rowsPerBlock) {
	__shared__ double sh[KD_WARPS][KD_MAXD];
	const int g = blockIdx.x, split = blockIdx.y;
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	double acc[KD_MAXD / 32];
#pragma unroll
	for (int c = 0; c < KD_MAXD / 32; c++) acc[c] = 0.0;
	const int jb = split * rowsPerBlock, je = min(T, jb + rowsPerBlock);
	for (int j = jb + warp; j < je; j += KD_WARPS) {
		const float* p = k + (long long)j * kvHeads * D + (long long)g * D;
		float v[KD_MAXD / 32];
		double ss = 0.0;
#pragma unroll
		for (int c = 0; c < KD_MAXD / 32; c++) {
			const int d = lane + 32 * c;
			v[c] = d < D ? p[d] : 0.f;
			ss += (double)v[c] * (double)v[c];
		}
		ss = warp_sum_d(ss);
		const double inv = 1.0 / fmax(sqrt(ss), 1e-12);
#pragma unroll
		for (int c = 0; c < KD_MAXD / 32; c++) acc[c] += (double)v[c] * inv;
	}
#pragma unroll
	for (int c = 0; c < KD_MAXD / 32; c++) sh[warp][lane + 32 * c] = acc[c];
	__syncthreads();
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		double s = 0.0;
		for (int w = 0; w < KD_WARPS; w++) s += sh[w][d];
		part[((long long)g * gridDim.y + split) * D + d] = s;
	}
}

// Grid (x, kvHeads), block 256: block x scores rows x*8 + warp, stepping by gridDim.x*8.
extern "C" __global__ void kd_scores(float* __restrict__ out, const double* __restrict__ part,
                                     const float* __restrict__ k, int T, int kvHeads, int D, int splits) {
	__shared__ double anchor[KD_MAXD];
	__shared__ double scratch[32];
	const int g = blockIdx.y;
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		double s = 0.0;
		for (int sp = 0; sp < splits; sp++) s += part[((long long)g * splits + sp) * D + d];
		anchor[d] = s / (double)(T > 0 ? T : 1);
	}
	__syncthreads();
	double a2 = 0.0;
	for (int d = threadIdx.x; d < D; d += blockDim.x) a2 += anchor[d] * anchor[d];
	a2 = block_sum_d(a2, scratch);
	const double an = fmax(sqrt(a2), 1e-8);
	for (long long j = (long long)blockIdx.x * KD_WARPS + warp; j < T; j += (long long)gridDim.x * KD_WARPS) {
		const float* p = k + j * kvHeads * D + (long long)g * D;
		double dot = 0.0, ss = 0.0;
		for (int d = lane; d < D; d += 32) {
			const double v = p[d];
			dot += v * anchor[d];
			ss += v * v;
		}
		dot = warp_sum_d(dot);
		ss = warp_sum_d(ss);
		if (lane == 0) out[(long long)g * T + j] = (float)(-dot / (fmax(sqrt(ss), 1e-8) * an));
	}
}

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

// ---------------------------------------------------------------------------------
// Protection.

// Grid (layers), block 1024. s [layers][nkv][T].
extern "C" __global__ void layer_protect(float* __restrict__ s, int nkv, int T, int tlo, int thi, int p1hi,
                                         int p2lo) {
	__shared__ float scratch[32];
	float* ls = s + (long long)blockIdx.x * nkv * T;
	const long long span = thi > tlo ? thi - tlo : 0;
	float m = NEG_INF;
	for (long long e = threadIdx.x; e < (long long)nkv * span; e += blockDim.x) {
		const long long hh = e / span;
		const float v = ls[hh * T + tlo + e % span];
		if (isfinite(v)) m = fmaxf(m, v);
	}
	m = block_max_f(m, scratch);  // every thread has finished reading
	float top = 1.0f;
	if (m > NEG_INF) {
		float up = __fadd_rn(m, 1.0f);
		if (!(up > m)) up = nextafterf(m, POS_INF);
		if (isinf(up)) up = m;
		top = up;
	}
	for (long long e = threadIdx.x; e < (long long)nkv * T; e += blockDim.x) {
		const int j = (int)(e % T);
		if (j < p1hi || j >= p2lo) ls[e] = top;
	}
}

// ---------------------------------------------------------------------------------
// Expected attention on the bf16 tensor cores (runtime/cuda/score.go uses these with
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
