//go:build cuda

package cuda

// The split-K decode attention of kernels/decode_attention.cu (decode_attn_kv<KV>_g<G>):
// one new row per call, every KV head over its own length, K and V tiles staged in
// shared memory by cp.async (a whole tile in flight at once), the splits merged by the
// last block of each KV head. attention.go's Attention calls decodeSplitK for one-row
// calls when it is on (LUKV_CUDA_DECODE_ATTN=splitk, or decodeSplitKOn in tests); until
// it has been measured against attention_decode_* on the H200 it is opt-in.

import (
	"fmt"
	"math"
	"math/bits"
	"os"

	"gorgonia.org/cu"
)

// decodeSplitKOn turns the kernel on for one-row Attention calls.
var decodeSplitKOn = os.Getenv("LUKV_CUDA_DECODE_ATTN") == "splitk"

// Constants of kernels/decode_attention.cu.
const (
	daThreads   = 128 // DA_THREADS
	daMaxSplits = 256 // DA_MAX_SPLITS
	// daBlocksPerSM is the target of resident blocks per multiprocessor the splits aim
	// at (72.7 KB of shared memory each for bf16, hd 128: 3 fit).
	daBlocksPerSM = 3
)

// decodeSplitKKernels are decode_attn_kv<bf16 cache>_g<G> by cache type and log2 G.
var decodeSplitKKernels = [2][4]string{
	{"decode_attn_kv0_g1", "decode_attn_kv0_g2", "decode_attn_kv0_g4", "decode_attn_kv0_g8"},
	{"decode_attn_kv1_g1", "decode_attn_kv1_g2", "decode_attn_kv1_g4", "decode_attn_kv1_g8"},
}

// splitKPlan is the launch shape of decode_attn_* for one call.
type splitKPlan struct {
	lgG           int // log2 of the vectors per block (the group rounded up)
	tile          int // keys per tile (kernels: 64 bf16, 32 float32)
	chunk, splits int // keys per split (a multiple of tile) and gridDim.x
	smem          int // dynamic shared memory bytes
}

// planSplitK chooses decode_attn_*'s shape for heads query heads over kvHeads heads of
// hd whose longest head holds maxLen entries before the new row, or reports false when
// the kernel does not apply: a group above 8, hd not a multiple of 16 or above 256.
// Splits aim at daBlocksPerSM blocks per multiprocessor, at least one tile each.
func planSplitK(heads, kvHeads, hd, maxLen, sms int, bf16 bool) (splitKPlan, bool) {
	if kvHeads < 1 || heads%kvHeads != 0 || heads == 0 || hd <= 0 || hd%16 != 0 || hd > 256 {
		return splitKPlan{}, false
	}
	group := heads / kvHeads
	if group > 8 {
		return splitKPlan{}, false
	}
	p := splitKPlan{lgG: bits.Len(uint(group - 1)), tile: 32}
	esz := 4
	if bf16 {
		p.tile, esz = 64, 2
	}
	g := 1 << p.lgG
	visible := maxLen + 1
	tiles := (visible + p.tile - 1) / p.tile
	splits := (daBlocksPerSM*max(sms, 1) + kvHeads - 1) / kvHeads
	splits = max(1, min(splits, tiles, daMaxSplits))
	p.chunk = (tiles + splits - 1) / splits * p.tile
	p.splits = (visible + p.chunk - 1) / p.chunk
	p.smem = 2*2*p.tile*(hd*esz+16) + g*hd*4 + g*p.tile*4
	return p, true
}

// decodeSplitK runs decode_attn_* for one new row of q (after the append) into om when
// the kernel is on and applies; false: the caller uses another kernel.
func (b *Backend) decodeSplitK(om, qm *Tensor, c *KVCache, layer, heads, maxLen int, scale float32) bool {
	if !decodeSplitKOn || qm.rows != 1 {
		return false
	}
	p, ok := planSplitK(heads, c.kvHeads, c.headDim, maxLen, b.sms, c.bf16)
	if !ok {
		return false
	}
	kv := 0
	if c.bf16 {
		kv = 1
	}
	kern := decodeSplitKKernels[kv][p.lgG]
	if p.smem > 48<<10 {
		if err := b.allowSharedMemory(kern, p.smem); err != nil {
			panic(err)
		}
	}
	partO, partML, counter := om.ptr, om.ptr, om.ptr // unused when not split
	if p.splits > 1 {
		partO, partML = b.partials(p.splits, 1, heads, c.headDim)
		// One counter per KV head, zero between launches (each launch's last blocks reset
		// theirs; attention_decode_* shares the buffer and keeps it zero too).
		if need := int64(c.kvHeads) * 4; need > b.decCount.size {
			if err := b.decCount.ensure(need, "attention split counters"); err != nil {
				panic(err)
			}
			if err := cu.MemsetD32Async(b.decCount.ptr, 0, b.decCount.size/4, cu.NoStream); err != nil {
				panic(fmt.Errorf("cuda: zeroing the attention split counters: %w", err))
			}
		}
		counter = b.decCount.ptr
	}
	b.launch(kern, dim3{p.splits, c.kvHeads, 1}, dim3{daThreads, 1, 1}, p.smem,
		om.ptr, partO, partML, counter, qm.ptr, c.buf.k[layer], c.buf.v[layer], c.offPtr(layer), c.lenPtr(layer),
		int32(heads), int32(c.kvHeads), int32(c.headDim), float32(float64(scale)*math.Log2E),
		i32(p.chunk, "attention chunk"), int32(p.splits))
	return true
}
