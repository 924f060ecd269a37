// The CPU check of kernels/paged_attention.cu (run.sh says what it covers).
#include "shim.h"
#include <vector>
#include <thread>
#include <random>
#include <cstdio>
#include <functional>
thread_local dim3e threadIdx, blockIdx;
dim3e blockDim, gridDim;
thread_local float* tl_smem;
thread_local std::barrier<>* tl_block;
thread_local std::barrier<>* tl_warp;
thread_local float* tl_xchg;
#include "kernel.cpp" // kernels/paged_attention.cu, rewritten by run.sh

void launch(dim3e grid, dim3e block, int smemBytes, std::function<void()> body) {
	gridDim = grid; blockDim = block;
	int nthreads = block.x;
	for (int by = 0; by < grid.y; by++) for (int bx = 0; bx < grid.x; bx++) {
		std::vector<float> smem(smemBytes / 4 + 1);
		std::barrier<> bb(nthreads);
		int nw = (nthreads + 31) / 32;
		std::vector<std::barrier<>*> wb;
		std::vector<std::vector<float>> xc(nw, std::vector<float>(32));
		for (int w = 0; w < nw; w++) wb.push_back(new std::barrier<>(std::min(32, nthreads - 32 * w)));
		std::vector<std::thread> ts;
		for (int t = 0; t < nthreads; t++) ts.emplace_back([&, t] {
			threadIdx = {t, 0, 0}; blockIdx = {bx, by, 0};
			tl_smem = smem.data(); tl_block = &bb; tl_warp = wb[t / 32]; tl_xchg = xc[t / 32].data();
			body();
		});
		for (auto& t : ts) t.join();
		for (auto p : wb) delete p;
	}
}

// One scenario: B sequences, kvh KV heads, group, hd, bt; old lengths per (seq, head), n new rows per seq.
int run(int B, int kvh, int group, int hd, int bt, std::vector<std::vector<int>> oldLens, std::vector<int> nrows, int chunkMin, int sms, bool bf, unsigned seed) {
	std::mt19937 rng(seed);
	std::normal_distribution<float> nd;
	int heads = kvh * group;
	int blocks = 4096;
	std::vector<float> kp(blocks * bt * hd), vp(blocks * bt * hd);
	std::vector<unsigned short> kb(blocks * bt * hd), vb(blocks * bt * hd);
	for (auto& x : kp) x = nd(rng);
	for (auto& x : vp) x = nd(rng);
	auto tobf = [](float f) { unsigned u = __float_as_uint(f); return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); };
	auto frombf = [](unsigned short h) { return __uint_as_float((unsigned)h << 16); };
	if (bf) for (size_t i = 0; i < kp.size(); i++) { kb[i] = tobf(kp[i]); vb[i] = tobf(vp[i]); kp[i] = frombf(kb[i]); vp[i] = frombf(vb[i]); }
	// free list shuffled
	std::vector<int> freeb(blocks); for (int i = 0; i < blocks; i++) freeb[i] = i; std::shuffle(freeb.begin(), freeb.end(), rng);
	int stride = 64;
	std::vector<std::vector<int>> tables(B, std::vector<int>(kvh * stride, -1));
	std::vector<std::vector<std::vector<int>>> hb(B, std::vector<std::vector<int>>(kvh));
	int total = 0; for (int n : nrows) total += n;
	std::vector<float> q(total * heads * hd), k(total * kvh * hd), v(total * kvh * hd);
	for (auto& x : q) x = nd(rng); for (auto& x : k) x = nd(rng); for (auto& x : v) x = nd(rng);
	std::vector<int> desc;
	int lensAt = 8 * B, rowseqAt = lensAt + B * kvh, slotsAt = rowseqAt + total, writesAt = slotsAt + total * kvh;
	desc.assign(writesAt, 0);
	std::vector<int> writes;
	int r0 = 0, maxVis = 0;
	for (int s = 0; s < B; s++) {
		for (int h = 0; h < kvh; h++) {
			int old = oldLens[s][h];
			int need = (old + nrows[s] + bt - 1) / bt;
			int have = (old + bt - 1) / bt;
			for (int i = 0; i < have; i++) { int b = freeb.back(); freeb.pop_back(); hb[s][h].push_back(b); tables[s][h * stride + i] = b; }
			for (int i = have; i < need; i++) {
				int b = freeb.back(); freeb.pop_back(); hb[s][h].push_back(b);
				uint64_t addr = (uint64_t)(uintptr_t)&tables[s][h * stride + i];
				writes.push_back((int)(uint32_t)addr); writes.push_back((int)(uint32_t)(addr >> 32)); writes.push_back(b);
			}
			desc[lensAt + s * kvh + h] = old + nrows[s];
			maxVis = std::max(maxVis, old + nrows[s]);
			for (int i = 0; i < nrows[s]; i++) { int e = old + i; desc[slotsAt + (r0 + i) * kvh + h] = hb[s][h][e / bt] * bt + e % bt; }
		}
		uint64_t tab = (uint64_t)(uintptr_t)tables[s].data();
		desc[8 * s] = (int)(uint32_t)tab; desc[8 * s + 1] = (int)(uint32_t)(tab >> 32); desc[8 * s + 2] = stride;
		desc[8 * s + 3] = r0; desc[8 * s + 4] = nrows[s]; desc[8 * s + 5] = s * kvh;
		for (int i = 0; i < nrows[s]; i++) desc[rowseqAt + r0 + i] = s;
		r0 += nrows[s];
	}
	desc.insert(desc.end(), writes.begin(), writes.end());
	int nw = writes.size() / 3;
	long long entries = (long long)total * kvh;
	launch({8, 1, 1}, {256, 1, 1}, 0, [&] {
		if (bf) paged_append_bf16(kb.data(), vb.data(), k.data(), v.data(), desc.data() + slotsAt, entries, hd, desc.data() + writesAt, nw);
		else paged_append_f32(kp.data(), vp.data(), k.data(), v.data(), desc.data() + slotsAt, entries, hd, desc.data() + writesAt, nw);
	});
	// check tables got the writes
	for (int s = 0; s < B; s++) for (int h = 0; h < kvh; h++) for (size_t i = 0; i < hb[s][h].size(); i++)
		if (tables[s][h * stride + i] != hb[s][h][i]) { printf("table write missing s%d h%d i%zu\n", s, h, i); return 1; }
	if (bf) for (size_t i = 0; i < kp.size(); i++) { kp[i] = frombf(kb[i]); vp[i] = frombf(vb[i]); }
	float scale = 1.0f / sqrtf(hd);
	int items = total * kvh;
	int want = std::max(1, (4 * sms + items - 1) / items);
	int chunk = std::max(chunkMin, (maxVis + want - 1) / want);
	int splits = (maxVis + chunk - 1) / chunk;
	std::vector<float> out(total * heads * hd, -999), po((size_t)splits * total * heads * hd), pml((size_t)splits * total * heads * 2);
	int G = 1; while (G < group) G *= 2;
	int smem = 4 * G * (hd + 2) * 4;
	launch({items, splits, 1}, {128, 1, 1}, smem, [&] {
		const int* d = desc.data();
#define CALL(NAME) NAME(out.data(), po.data(), pml.data(), q.data(), POOLK, POOLV, d, d + lensAt, d + rowseqAt, total, heads, kvh, hd, bt, scale, chunk)
		if (bf) {
#define POOLK kb.data()
#define POOLV vb.data()
			if (hd <= 128) { if (G == 1) CALL(paged_attention_bf16_t1_g1); else if (G == 2) CALL(paged_attention_bf16_t1_g2); else if (G == 4) CALL(paged_attention_bf16_t1_g4); else CALL(paged_attention_bf16_t1_g8); }
			else { if (G == 1) CALL(paged_attention_bf16_t2_g1); else if (G == 2) CALL(paged_attention_bf16_t2_g2); else if (G == 4) CALL(paged_attention_bf16_t2_g4); else CALL(paged_attention_bf16_t2_g8); }
#undef POOLK
#undef POOLV
		} else {
#define POOLK kp.data()
#define POOLV vp.data()
			if (hd <= 128) { if (G == 1) CALL(paged_attention_f32_t1_g1); else if (G == 2) CALL(paged_attention_f32_t1_g2); else if (G == 4) CALL(paged_attention_f32_t1_g4); else CALL(paged_attention_f32_t1_g8); }
			else { if (G == 1) CALL(paged_attention_f32_t2_g1); else if (G == 2) CALL(paged_attention_f32_t2_g2); else if (G == 4) CALL(paged_attention_f32_t2_g4); else CALL(paged_attention_f32_t2_g8); }
		}
	});
	if (splits > 1)
		launch({total * heads, 1, 1}, {std::min(hd, 256), 1, 1}, 0, [&] {
			paged_combine(out.data(), po.data(), pml.data(), desc.data(), desc.data() + lensAt, desc.data() + rowseqAt, total, heads, kvh, hd, chunk);
		});
	// reference
	double maxerr = 0, maxref = 0;
	r0 = 0;
	for (int s = 0; s < B; s++) {
		for (int i = 0; i < nrows[s]; i++) for (int h = 0; h < heads; h++) {
			int g = h / group;
			int len = desc[lensAt + s * kvh + g];
			int vis = len - nrows[s] + i + 1;
			std::vector<double> sc(vis); double mx = -1e300;
			for (int j = 0; j < vis; j++) {
				long long row = (long long)hb[s][g][j / bt] * bt + j % bt; double dot = 0;
				for (int d = 0; d < hd; d++) dot += (double)q[((r0 + i) * heads + h) * hd + d] * kp[row * hd + d];
				sc[j] = dot * scale; mx = std::max(mx, sc[j]);
			}
			double sum = 0; for (auto& x : sc) { x = exp(x - mx); sum += x; }
			for (int d = 0; d < hd; d++) {
				double acc = 0;
				for (int j = 0; j < vis; j++) { long long row = (long long)hb[s][g][j / bt] * bt + j % bt; acc += sc[j] / sum * vp[row * hd + d]; }
				double got = out[((r0 + i) * heads + h) * hd + d];
				maxerr = std::max(maxerr, fabs(got - acc)); maxref = std::max(maxref, fabs(acc));
			}
		}
		r0 += nrows[s];
	}
	printf("B=%d kvh=%d group=%d hd=%d bt=%d bf=%d splits=%d chunk=%d: rel err %.3g\n", B, kvh, group, hd, bt, bf, splits, chunk, maxerr / maxref);
	return maxerr / maxref > 1e-4;
}

int main() {
	int fails = 0;
	fails += run(3, 2, 2, 16, 4, {{0, 1}, {3, 4}, {5, 9}}, {1, 1, 1}, 256, 132, false, 1);
	fails += run(2, 2, 4, 64, 16, {{15, 16}, {17, 0}}, {1, 3}, 8, 132, false, 2);
	fails += run(2, 2, 3, 36, 8, {{70, 1}, {7, 30}}, {2, 1}, 16, 4, true, 3);
	fails += run(1, 1, 8, 256, 16, {{300}}, {1}, 32, 8, true, 4);
	fails += run(2, 1, 1, 128, 32, {{100}, {0}}, {5, 2}, 16, 8, false, 5);
	printf(fails ? "FAIL\n" : "PASS\n");
	return fails;
}
