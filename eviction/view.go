// Package eviction decides which cached tokens each KV head keeps: scorers rank tokens,
// allocators split a budget across heads, the LU-KV solver (profile) builds budget
// curves offline, and Compress applies all of it to a backend.KVCache.
//
// The policy lives here only. Method.Plan decides, once, for every (layer, KV head) how
// many tokens it keeps (plain counts, whatever the allocator: uniform, pyramid, AdaKV's
// pooled budget, LU-KV's curve) and with which scores (sink and window protected); a
// head then keeps its top-count tokens (score descending, ties to the later token, NaN
// lowest, kept in position order). The host path (KVCache.Compact with indices selected
// here) and a device path (backend.DeviceCompaction.KeepTop) consume the same plan.
// When the allocator's counts do not depend on the scores (FixedAllocator: uniform,
// pyramid, LU-KV) and the scores were computed on the device, only the counts are
// planned here (Method.FixedCounts) and the scores never leave the device: the device
// applies the sink and window rule below itself (backend.KeepTopRequest's Sink and
// Window, the same float32 values as ProtectSinkWindow) before selecting
// (Method.CompressCollected).
//
// Sink and window. The first Sink and last Window tokens of every head get a score
// above every other score of the layer (ProtectSinkWindow), and a head's count is never
// below Protected(T, Sink, Window) = min(T, Sink+Window): sink and window tokens are
// always kept, whatever the budget. When an allocator gives a head fewer tokens than
// that (a tiny context or a very high ratio), the head keeps exactly its sink and
// window tokens, so it holds more than the ratio asked for; kvpress's LUKVPress instead
// keeps the head's count and drops some of them (the oldest sink tokens first). Scores
// of +Inf, or ties with the largest float32, are lowered just below the protected score
// so that protection cannot lose to them.
package eviction

import "github.com/lukv/lukv/backend"

// LayerView is what a scorer sees of one layer: the keys and values of the T tokens to
// rank, and the queries of Tq tokens. After a prefill (context or query-aware
// compression) the queries are those of the same T tokens (Tq = T, QueryPositions =
// Positions). During decode-time eviction the queries are only the Tq most recent
// tokens' (as kvpress's DecodingPress buffers them): those tokens are the last Tq of
// the T keys, and causal attention lets each query see keys up to its own position. Shapes use Nq query heads, Nkv KV heads and head dim D; query head h
// belongs to KV head h / (Nq/Nkv).
type LayerView struct {
	Layer                int
	NumHeads, NumKVHeads int
	HeadDim              int
	Positions            []int         // [T] absolute positions of the keys' tokens
	QueryPositions       []int         // [Tq] absolute positions of the queries' tokens
	Queries              []float32     // [Tq, Nq*D] rotated (RoPE applied) queries
	PreRoPEQueries       []float32     // [Tq, Nq*D] queries before RoPE (after bias and q-norm)
	Keys                 [][]float32   // [Nkv][T*D] rotated keys, as cached
	Values               [][]float32   // [Nkv][T*D]
	RoPE                 *backend.RoPE // the model's rotary frequencies
}

// T is the number of tokens in the view.
func (v *LayerView) T() int { return len(v.Positions) }

// Tq is the number of query rows in the view.
func (v *LayerView) Tq() int { return len(v.QueryPositions) }

// Scorer ranks one layer's tokens in every KV head: a higher score means more worth
// keeping. Scores are [Nkv][T].
type Scorer interface {
	Name() string
	Score(v *LayerView) [][]float32
}
