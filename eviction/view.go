// Package eviction decides which cached tokens each KV head keeps: scorers rank tokens,
// allocators split a budget across heads, the LU-KV solver (profile) builds budget
// curves offline, and Compress applies all of it to a backend.KVCache.
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
