// score_protect.cu: layer_protect, the "above every other" score, for a scorer's own
// protected tokens (ExpectedAttention's sinks, SnapKV's window: backend/cuda/score_*.go)
// and for eviction's sink and window (backend/cuda/kvcache_device_keep.go).
//
// layer_protect   grid (layers), block 1024. Per layer, m = the largest finite score
//                 over heads x [tlo, thi), top = m + 1 (the next float up when +1 is
//                 lost, m itself when that overflows, 1 when nothing is finite), written
//                 to positions j < p1hi and j >= p2lo of every head. With lower != 0 every
//                 other score >= top (+Inf, or a tie with the largest float) becomes the
//                 next float below top, so protection cannot lose to it (eviction's
//                 ProtectSinkWindow: the device keep path passes 1, the scorers 0).
//
// What bounds it: latency. One block per layer makes one pass over the span and one over
// kvHeads x T scores (not timed on its own: BenchmarkEvictionOverhead's score and evict
// rows include it).

#include "score_common.cuh"

// ---------------------------------------------------------------------------------
// Protection.

// Grid (layers), block 1024. s [layers][nkv][T].
extern "C" __global__ void layer_protect(float* __restrict__ s, int nkv, int T, int tlo, int thi, int p1hi,
                                         int p2lo, int lower) {
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
	const float below = nextafterf(top, NEG_INF);
	for (long long e = threadIdx.x; e < (long long)nkv * T; e += blockDim.x) {
		const int j = (int)(e % T);
		if (j < p1hi || j >= p2lo) {
			ls[e] = top;
		} else if (lower && ls[e] >= top) {
			ls[e] = below;
		}
	}
}
