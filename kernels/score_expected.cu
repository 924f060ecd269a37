// score_expected.cu: ExpectedAttention on the device, CUDA-core form (the host side is
// backend/cuda/score_expected.go; the host twin eviction/scorer_expected.go). Inputs
// where the forward pass left them: rotated queries q [T, heads*D], rotated keys k and
// values v [T, kvHeads*D], positions [T]. Output: scores [kvHeads][T] float32.
//
// Computes, per query head, the mean mu and covariance Sigma of the un-rotated queries
// over the statistics rows, turned by the mean rotation of the next positions (mu',
// Sigma'), then each key's expected logit z_j = mu'.k_j/sqrt(D) + k_j^T Sigma' k_j/(2D),
// the softmax over keys, and score_j = (mean over the group of softmax_j + eps) * ||v_j||
// (row_norms, in score_keys.cu). The products are float32 FMAs; statistics, softmax and
// the rest double, rounded to float32 once.
//
// Kernels, launch shapes (set in score_expected.go) and roles:
//
// score_rope_table   grid-stride over n*D/2, block 256. cos/sin [n][D/2] of
//                    float32(pos[i]) * invfreq[j], computed exactly as kernels/rope.cu
//                    does (double sincos of the float32 angle, rounded to float32), so
//                    un-rotating a query with them undoes RoPE to float32 rounding.
// score_rope_mean    grid (D/2), block 256. cbar, sbar [D/2] (double): the mean of those
//                    cos/sin over positions first .. first+n-1 (eviction averageRotation).
// ea_cov_partial     grid (heads, splits), block >= max(10*(D/32)^2, D). Statistics: for
//                    query head h and a slice of the statistics rows, un-rotates each row
//                    (x = R(p)^T q), subtracts a shift c (the first statistics row) and
//                    accumulates M = sum (x-c)(x-c)^T and s = sum (x-c). Only the upper
//                    block triangle of M is formed (score_expected.cuh): each thread owns
//                    an 8x8 piece of one BD x BD tile.
// ea_cov_reduce      grid (heads, 10), block 256. Sums those partials over the slices.
// ea_cov_rotate      grid (heads, D*D/256), block 256. Sigma = M/n - d d^T, mu = c + d
//                    (d = s/n), then mu' = Rbar mu and Sigma' = Rbar Sigma Rbar^T
//                    (double); writes U^T for ea_logits, U the block-upper part of Sigma'
//                    with off-diagonal blocks doubled (so k^T Sigma' k = k^T U k), and
//                    lin = 2 sqrt(D) mu'.
// ea_logits          grid (heads, key splits), block D, dynamic shared memory
//                    (D*D + D*EA_KTP + D + EA_KT) floats (99 KiB at D = 128: opted in).
//                    z_j = sum_a k_ja ((U k_j)_a + lin_a) / (2D) for every key j >= nsink.
//                    A block holds U and a tile of 64 keys in shared memory; each thread
//                    accumulates (U k)_a for 8 keys x 8 dims a, 4 of them in dim block A1
//                    and 4 in block 3-A1 (A1 = 0 or 1), so that with the zero lower
//                    blocks skipped every thread does the same work (5 blocks of BD per
//                    key and dim).
// ea_softmax_stats   grid (heads), block 1024. Max and sum of exp of z over keys j >= nsink.
// ea_finish          grid (keys/256, kvHeads), block 256. The score.
//
// What bounds it: the two D x D products per query head (the covariance over the
// statistics rows, k^T Sigma' k over the keys) as float32 FMAs with operands from shared
// memory, not the bytes: the keys are read once per query head (4 x 33.5 MB per layer
// at 8k tokens, 32/8 heads of 128 float32: about 30 us of HBM bandwidth on an H200
// even without L2 hits) and the queries twice. Measured:
// 0.61 ms per layer at 8k tokens, 32/8 heads of 128, on an H200
// (results/gpu/2026-11-28-h200-run3, BenchmarkEvictionOverhead/score/expected-attention);
// score_expected_tc.cu moves both products to the tensor cores (0.53 ms there).

#include "score_common.cuh"
#include "score_expected.cuh"

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
