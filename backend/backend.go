// Package backend defines what a compute backend must do for the Llama-family forward
// pass (model/) and the per-head KV cache it keeps. The CPU backend (backend/cpu) is the
// reference every other backend is tested against. (Named backend, not runtime, so that
// it does not shadow the standard library's runtime package.)
package backend

import "errors"

// Tensor is a row-major matrix owned by a backend: Rows x Cols float values. Activations
// are [tokens, features]; weights are [out, in] as Hugging Face stores them; vectors
// (norm weights, biases) are [1, n].
type Tensor interface {
	Rows() int
	Cols() int
}

// Backend runs the operations of the forward pass. Every method works on tensors the same
// backend created. Shapes are checked by the caller (model/); a backend may panic on a
// shape mismatch because that is a programming error, not bad input.
type Backend interface {
	// Name is "cpu" or "cuda".
	Name() string
	// Weight uploads host data of shape [rows, cols] (float32 already converted from the
	// checkpoint's dtype).
	Weight(data []float32, rows, cols int) (Tensor, error)
	// Alloc returns a zeroed activation tensor [rows, cols].
	Alloc(rows, cols int) Tensor
	// Free releases a tensor's memory early (a no-op where the GC does it).
	Free(t Tensor)
	// RowView is row i of t as a [1, cols] tensor sharing t's memory.
	RowView(t Tensor, i int) Tensor
	// Rows is rows [i, i+n) of t as an [n, cols] tensor sharing t's memory (a batch of
	// sequences runs its attention one sequence's rows at a time through it).
	Rows(t Tensor, i, n int) Tensor
	// Read copies a tensor to host memory.
	Read(t Tensor) []float32

	// Embed: out[i,:] = table[ids[i],:].
	Embed(out, table Tensor, ids []int)
	// RMSNorm: out[i,:] = x[i,:] / sqrt(mean(x[i,:]^2) + eps) * w.
	RMSNorm(out, x, w Tensor, eps float32)
	// HeadRMSNorm applies RMSNorm with weight w [1, headDim] to every head slice of x in
	// place (Qwen3's q/k norms).
	HeadRMSNorm(x, w Tensor, headDim int, eps float32)
	// MatMul: out = x @ w^T, x [n, in], w [out, in], out [n, out].
	MatMul(out, x, w Tensor)
	// AddBias: x[i,:] += b[0,:].
	AddBias(x, b Tensor)
	// Add: x += y (residual connection).
	Add(x, y Tensor)
	// SwiGLU: out = silu(gate) * up.
	SwiGLU(out, gate, up Tensor)
	// RoPE rotates every head of x [n, heads*headDim] in place; row i is at position
	// positions[i]. Pairs are (j, j+headDim/2) ("rotate half", as Hugging Face Llama).
	RoPE(x Tensor, headDim int, positions []int, rope *RoPE)

	// NewKVCache makes an empty cache for layers x kvHeads heads of headDim, with room
	// for reserve tokens per head before it must grow.
	NewKVCache(layers, kvHeads, headDim, reserve int) KVCache
	// Attention appends k and v (the n new tokens, [n, kvHeads*headDim], already rotated)
	// to layer's cache, then computes causal attention of q [n, heads*headDim] over each
	// head's cache into out [n, heads*headDim]. Query head h reads KV head h/(heads/kvHeads).
	// Causality is by index: query row i sees the first len-n+i+1 entries of its head.
	Attention(out, q, k, v Tensor, cache KVCache, layer int, scale float32)
}

// KVCache holds keys and values per layer and per KV head. Every head has its own length,
// so eviction can keep different tokens in different heads and free the rest. The cpu
// and cuda caches lay heads out with package kv (offsets, lengths, capacities, and the
// plans of growing, compacting and cloning). Which tokens to keep is package eviction's
// decision; a cache only carries it out (Compact, or DeviceCompaction on a device).
type KVCache interface {
	Layers() int
	KVHeads() int
	HeadDim() int
	// Len is the number of tokens head (layer, head) holds.
	Len(layer, head int) int
	// Bytes is the device or host memory the cache holds now (allocated, not just live).
	Bytes() int64
	// LiveBytes is the memory the held tokens need (sum of lengths x 2 x headDim x elem).
	LiveBytes() int64
	// Compact keeps, for every head of layer, exactly the entries keep[head] (ascending
	// indices into the head's current entries) and releases the rest, leaving room for
	// reserve more tokens per head.
	Compact(layer int, keep [][]int, reserve int) error
	// Keys and Values copy head (layer, head)'s entries to the host: [Len, headDim].
	Keys(layer, head int) []float32
	Values(layer, head int) []float32
	// Truncate drops every head's entries past the first n (n <= each head's length),
	// keeping the memory: the profiler rewinds to the context this way between questions.
	Truncate(n int) error
	// Clone returns an independent copy holding the same entries, with room for reserve
	// more tokens per head: one prefill can serve several eviction methods.
	Clone(reserve int) (KVCache, error)
	// Reset empties the cache.
	Reset()
}

// ErrOutOfMemory is returned (wrapped) when a backend cannot allocate.
var ErrOutOfMemory = errors.New("out of memory")
