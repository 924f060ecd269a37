// Package eviction decides which cached tokens each KV head keeps: scorers rank tokens,
// allocators split a budget across heads, the LU-KV solver (profile) builds budget
// curves offline, and Compress applies all of it to a runtime.KVCache.
package eviction

import lrt "github.com/lukv/lukv/runtime"

// LayerView is what a scorer sees of one layer once a prompt has been prefilled: every
// prompt token's queries, keys and values (T tokens). Shapes use Nq query heads, Nkv KV
// heads and head dim D; query head h belongs to KV head h / (Nq/Nkv).
type LayerView struct {
	Layer                int
	NumHeads, NumKVHeads int
	HeadDim              int
	Positions            []int       // [T] absolute positions of the tokens
	Queries              []float32   // [T, Nq*D] rotated (RoPE applied) queries
	PreRoPEQueries       []float32   // [T, Nq*D] queries before RoPE (after bias and q-norm)
	Keys                 [][]float32 // [Nkv][T*D] rotated keys, as cached
	Values               [][]float32 // [Nkv][T*D]
	RoPE                 *lrt.RoPE   // the model's rotary frequencies
}

// T is the number of tokens in the view.
func (v *LayerView) T() int { return len(v.Positions) }

// Scorer ranks one layer's tokens in every KV head: a higher score means more worth
// keeping. Scores are [Nkv][T].
type Scorer interface {
	Name() string
	Score(v *LayerView) [][]float32
}
