//go:build cuda

package cuda

// The tensor-core prefill attention (kernels/attention_tc.cu): with Options.TensorCores,
// Backend.Attention over at least attnTCMinRows new rows with a head dim that is a
// multiple of 16 up to 128 copies the layer's live keys and values to bfloat16
// (kv_to_bf16 from a float32 cache, kv_bf16_to_bf16 from a bf16 one, into a scratch
// buffer laid out for the tiles) and runs a FlashAttention-2 style kernel on the
// bf16 tensor cores with float32 accumulation and a float32 online softmax. Decode and
// short calls keep the float32 CUDA-core kernel (attention.go), which reads the float32
// cache directly and needs no conversion pass.
//
// The kernel's tiles take 69632 bytes of shared memory at head dim 128, above the 48 KiB
// a launch gets by default: initAttentionTC opts in (Backend.allowSharedMemory).

import (
	"errors"
	"fmt"
	"math"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// Thresholds and shapes of the tensor-core attention, in one place.
const (
	// attnTCMinRows: fewer new rows keep the CUDA-core kernel. Below one 16-row mma tile
	// per warp of a 64-row block, most of the tensor-core work is padding, and such calls
	// (decode, short chunks over a long cache) are bound by reading the cache, which the
	// CUDA-core kernel does once in float32 while this path first copies it to bf16.
	attnTCMinRows = 64
	// attnTCKeys is the key tile (kernels/attention_tc.cu BN); split-K chunks and the
	// scratch rows per head are multiples of it.
	attnTCKeys = 64
	// attnTCMaxHeadDim is the largest head dim the kernels take (templates 64 and 128;
	// a smaller multiple of 16 is zero-padded to the next one).
	attnTCMaxHeadDim = 128
	// Split-K: used when the row blocks cannot fill two blocks per multiprocessor; then
	// about 4 blocks per multiprocessor, each split at least attnTCSplitMinKeys keys.
	attnTCSplitMinKeys = 256
	attnTCSplitMax     = 128
)

// attnTCWarps is the warps per block (16 query rows each) of the tensor-core attention:
// 4 (64 rows; up to three blocks per multiprocessor) or 8 (128 rows: half the K and V
// traffic, one block per multiprocessor). BenchmarkPrefillAttentionTC measures both: on
// the H200 8 was 237/269 TFLOP/s at 8k/32k against 236/259 for 4
// (results/gpu/2026-11-28-h200-run2/bench-kernels.txt).
var attnTCWarps = 8

// attnTCState is the tensor-core attention's per-backend state.
type attnTCState struct {
	tried bool
	err   error  // why the path is unavailable (once tried)
	kv    devBuf // bf16 copies of one layer's keys then values [2][kvHeads][T][hdp]
	calls int    // attention launches so far (tests check the path ran)
}

// attnTCPlan is the launch shape of one tensor-core attention call.
type attnTCPlan struct {
	hdp, warps    int // padded head dim (kernel template) and warps per block
	rows          int // scratch rows per head: keys any query sees, rounded up to attnTCKeys
	chunk, splits int // keys per split (a multiple of attnTCKeys) and splits (gridDim.z)
	grid          dim3
	block         dim3
	smem          int // dynamic shared memory bytes
}

// attnTCSmem is the kernel's dynamic shared memory: two stages of a K and a V tile of
// attnTCKeys rows of hdp+8 bf16 (the query staging area aliases the second stage).
func attnTCSmem(hdp int) int { return 2 * 2 * attnTCKeys * (hdp + 8) * 2 }

// planAttentionTC chooses the kernel and grid for n new rows of heads query heads over
// caches whose longest head holds maxLen entries before them, or reports false when the
// head dim has no tensor-core kernel (not a multiple of 16, or above 128) or warps is
// not 4 or 8.
func planAttentionTC(n, heads, hd, maxLen, sms, warps int) (attnTCPlan, bool) {
	if hd <= 0 || hd%16 != 0 || hd > attnTCMaxHeadDim || (warps != 4 && warps != 8) || n <= 0 || heads <= 0 {
		return attnTCPlan{}, false
	}
	p := attnTCPlan{hdp: 64, warps: warps}
	if hd > 64 {
		p.hdp = 128
	}
	bm := 16 * warps
	gx := (n + bm - 1) / bm
	visible := maxLen + n // keys the last row sees in the longest head
	p.rows = (visible + attnTCKeys - 1) / attnTCKeys * attnTCKeys
	p.splits = 1
	if blocks := gx * heads; blocks < 2*sms {
		p.splits = min((4*sms+blocks-1)/blocks, visible/attnTCSplitMinKeys, attnTCSplitMax)
		p.splits = max(p.splits, 1)
	}
	p.chunk = (visible + p.splits - 1) / p.splits
	p.chunk = (p.chunk + attnTCKeys - 1) / attnTCKeys * attnTCKeys
	p.splits = (visible + p.chunk - 1) / p.chunk
	p.grid = dim3{gx, heads, p.splits}
	p.block = dim3{32 * warps, 1, 1}
	p.smem = attnTCSmem(p.hdp)
	return p, true
}

// attnTCReady looks up the kernels and opts them into their shared memory on first use,
// reporting whether the path is available (attnTC.err says why not).
func (b *Backend) attnTCReady() bool {
	s := &b.attnTC
	if !s.tried {
		s.tried = true
		s.err = b.initAttentionTC()
	}
	return s.err == nil
}

func (b *Backend) initAttentionTC() error {
	major, err := b.dev.Attribute(cu.ComputeCapabilityMajor)
	if err != nil {
		return fmt.Errorf("cuda: tensor-core attention: compute capability of %s: %w", b.name, err)
	}
	if major < 8 {
		return fmt.Errorf("cuda: tensor-core attention needs compute capability 8.0 or later (bf16 mma.sync, cp.async); %s is %d.x", b.name, major)
	}
	for _, hdp := range []int{64, 128} {
		for _, w := range []int{4, 8} {
			if err := b.allowSharedMemory(attentionTCKernel(hdp, w), attnTCSmem(hdp)); err != nil {
				return err
			}
		}
	}
	return nil
}

// attentionTCKernel is the tensor-core attention kernel for padded head dim hdp and
// warps per block.
func attentionTCKernel(hdp, warps int) string { return fmt.Sprintf("attention_tc_d%d_w%d", hdp, warps) }

// attentionTC runs the attention of Backend.Attention on the tensor cores (after the
// append, with the current device lengths still the ones before the n new rows),
// reporting false, with nothing launched, when the call is not for it: TensorCores off,
// fewer than attnTCMinRows rows, a head dim without a kernel, a GPU without bf16 mma, or
// no device memory for the bf16 copy of the cache (the CUDA-core kernel needs none).
func (b *Backend) attentionTC(om, qm *Tensor, c *KVCache, layer, n, heads, maxLen int, scale float32) bool {
	if !b.opt.TensorCores || n < attnTCMinRows {
		return false
	}
	d, kvh := c.headDim, c.kvHeads
	p, ok := planAttentionTC(n, heads, d, maxLen, b.sms, attnTCWarps)
	if !ok || !b.attnTCReady() {
		return false
	}
	s := &b.attnTC
	plane := int64(kvh) * int64(p.rows) * int64(p.hdp) // elements of the key (or value) copy
	if err := s.kv.ensure(plane*2*2, fmt.Sprintf("attention bf16 copy of layer %d's keys and values (%d rows of %d per head)", layer, p.rows, p.hdp)); err != nil {
		if errors.Is(err, backend.ErrOutOfMemory) {
			return false
		}
		panic(err)
	}
	kb, vb := s.kv.ptr, s.kv.ptr+cu.DevicePtr(plane*2)
	conv := "kv_to_bf16"
	if c.bf16 {
		conv = "kv_bf16_to_bf16"
	}
	b.launch(conv, gridFor(plane/8, b.sms), dim3{256, 1, 1}, 0,
		kb, vb, c.buf.k[layer], c.buf.v[layer], c.offPtr(layer), c.lenPtr(layer),
		i32(n, "Attention rows"), int32(kvh), int32(d), int32(p.hdp), i32(p.rows, "attention rows per head"))

	partO, partML := om.ptr, om.ptr // unused when not split
	if p.splits > 1 {
		partO, partML = b.partials(p.splits, n, heads, d)
	}
	b.launch(attentionTCKernel(p.hdp, p.warps), p.grid, p.block, p.smem,
		om.ptr, partO, partML, qm.ptr, kb, vb, c.lenPtr(layer),
		int32(n), int32(heads), int32(kvh), int32(d), i32(p.rows, "attention rows per head"),
		float32(float64(scale)*math.Log2E), int32(p.chunk), int32(p.splits))
	if p.splits > 1 {
		b.launch("attention_combine", dim3{n * heads, 1, 1}, dim3{d, 1, 1}, 0,
			om.ptr, partO, partML, int32(n), int32(heads), int32(d), int32(p.splits))
	}
	s.calls++
	return true
}

// AttentionPath describes how Attention runs prefill, for benchmarks and logs: on the
// bf16 tensor cores (and for which calls), or on the float32 CUDA-core kernel and why.
func (b *Backend) AttentionPath() string {
	defer b.enter()()
	const cores = "float32 flash kernel on CUDA cores"
	if !b.opt.TensorCores {
		return cores + " (Options.TensorCores off)"
	}
	if !b.attnTCReady() {
		return cores + "; tensor cores requested but unavailable: " + b.attnTC.err.Error()
	}
	return fmt.Sprintf("bf16 tensor-core flash kernel (mma.sync, float32 accumulation and softmax, %d warps per block) for calls of >= %d rows with a head dim that is a multiple of 16 up to %d; %s otherwise",
		attnTCWarps, attnTCMinRows, attnTCMaxHeadDim, cores)
}
