package backend

import "errors"

// Optional device paths for KV-cache eviction. A backend that can rank a layer's tokens
// without copying its queries, keys and values to the host implements DeviceScoring; a
// KV cache that can keep each head's top-count tokens and compact itself without the
// kept indices travelling through the host implements DeviceCompaction. Both are
// primitives with exact contracts: which tokens to protect and how many each head keeps
// is decided in package eviction only. Package eviction uses
// them when they are there (Collector, Method.Compress) and otherwise runs its own host
// code, which stays the reference: a device path computes the same function, exactly
// for selection and compaction, and up to the float32 rounding its documentation states
// for scoring.

// ErrUnsupported is returned (wrapped) by a device path for a configuration it does not
// implement (a head dim its kernels do not take, a scorer option it lacks); the caller
// falls back to the host path.
var ErrUnsupported = errors.New("not supported on this device path")

// ScorerKind names a scorer a device may implement.
type ScorerKind int

const (
	// ScoreExpectedAttention is eviction.ExpectedAttentionScorer (kvpress ExpectedAttentionPress).
	ScoreExpectedAttention ScorerKind = iota + 1
	// ScoreSnapKV is eviction.SnapKVScorer.
	ScoreSnapKV
	// ScoreKeyDiff is eviction.KeyDiffScorer.
	ScoreKeyDiff
	// ScoreKNorm is eviction.KNormScorer.
	ScoreKNorm
)

func (k ScorerKind) String() string {
	switch k {
	case ScoreExpectedAttention:
		return "expected-attention"
	case ScoreSnapKV:
		return "snapkv"
	case ScoreKeyDiff:
		return "keydiff"
	case ScoreKNorm:
		return "knorm"
	}
	return "unknown scorer"
}

// ScorerSpec is a scorer and its parameters, with every default already filled in (the
// device applies them as given). The fields mean what they mean on eviction's scorers.
type ScorerSpec struct {
	Kind ScorerKind

	// Expected attention.
	Epsilon       float32 // added to the mean attention before scaling by ||v||
	NFuture       int     // future positions the RoPE rotation is averaged over (>= 1)
	NSink         int     // first tokens left out of the statistics and the softmax
	UseCovariance bool    // include k^T Sigma' k / (2D)
	UseVNorm      bool    // scale by the value norms

	// SnapKV.
	Window  int  // observation window (>= 1)
	Kernel  int  // pooling kernel (<= 1: none)
	MaxPool bool // max-pooling instead of average pooling
}

// LayerInput is what a device scorer reads of one layer after a prefill, as
// model.Observer receives it: the T tokens' rotated queries Q [T, NumHeads*HeadDim],
// rotated keys K and values V [T, NumKVHeads*HeadDim], at Positions [T] (queries and
// keys are the same tokens). Pre-RoPE queries are recovered on the device by rotating Q
// back.
type LayerInput struct {
	Layer                int
	Positions            []int
	Q, K, V              Tensor
	NumHeads, NumKVHeads int
	HeadDim              int
	RoPE                 *RoPE
}

// DeviceScores holds the scores of Layers() layers x KVHeads() heads x Tokens() tokens in
// device memory, float32, in layer, head, token order.
type DeviceScores interface {
	Layers() int
	KVHeads() int
	Tokens() int
	// Read copies all scores to the host: [Layers*KVHeads*Tokens].
	Read() ([]float32, error)
	// Free releases the device memory now (the garbage collector does it otherwise).
	Free()
}

// DeviceScoring is implemented by a Backend that scores tokens on the device.
type DeviceScoring interface {
	// NewScores allocates room for the scores of layers x kvHeads heads x tokens.
	NewScores(layers, kvHeads, tokens int) (DeviceScores, error)
	// ScoreLayer scores in.Layer's tokens with spec into dst's slot for that layer. It
	// returns an error wrapping ErrUnsupported, having changed nothing, for a
	// configuration the device does not implement.
	ScoreLayer(spec ScorerSpec, in LayerInput, dst DeviceScores) error
}

// KeepTopRequest asks a cache to keep, in every head h of layers 0 .. len(Counts)-1,
// its Counts[layer][h] highest-scored tokens (score descending, ties to the later
// token, NaN lowest), in position order, and to release the rest, leaving room for
// Reserve more tokens per head. Every head must hold exactly the T tokens scored, all
// heads the same number.
//
// The scores come from the host (Scores) or are already on the device (Device, made by
// this backend's DeviceScoring for exactly len(Counts) layers; it is read, not changed,
// and takes the place of Scores). Before selecting, the device protects sink and window
// when they are positive: tokens [0, Sink) and [T-Window, T) of every head rank above
// every other token of the layer, by the rule eviction.ProtectSinkWindow states and
// implements on the host (the same float32 values). The policy (sink and window sizes,
// budgets) is eviction's, which fills the request (eviction.Method.Plan, FixedCounts).
type KeepTopRequest struct {
	Scores       [][][]float32 // [layers][kvHeads][T] on the host, used as given
	Device       DeviceScores  // [layers][kvHeads][T] on the device, instead of Scores
	Sink, Window int           // tokens protected on the device before selecting
	Counts       [][]int       // [layers][kvHeads] tokens to keep, in [0, T]
	Reserve      int
}

// DeviceCompaction is implemented by a KVCache that selects and compacts on the device.
type DeviceCompaction interface {
	// KeepTop applies req: afterwards the cache is exactly what KVCache.Compact with
	// each head's top Counts indices leaves. A request the device does not implement
	// returns an error wrapping ErrUnsupported with the cache unchanged; other errors
	// may leave some layers compacted.
	KeepTop(req KeepTopRequest) error
}
