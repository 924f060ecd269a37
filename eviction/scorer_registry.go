package eviction

import (
	"fmt"
	"strings"
)

// ScorerNames lists the CLI names NewScorer accepts (--method), in a fixed order.
func ScorerNames() []string {
	return []string{"expected-attention", "snapkv", "keydiff", "knorm", "streaming", "tova", "h2o", "random"}
}

// NewScorer returns the scorer a CLI name stands for, in its default configuration:
// expected-attention (epsilon 0.02, 512 future positions, 4 sinks, covariance and value
// norms), snapkv (window 64, kernel 5, avg-pool), keydiff, knorm, streaming (4 sinks),
// tova, h2o (observed attention) and random (seed 0).
func NewScorer(name string) (Scorer, error) {
	switch name {
	case "expected-attention":
		return DefaultExpectedAttentionScorer(), nil
	case "snapkv":
		return DefaultSnapKVScorer(), nil
	case "keydiff":
		return KeyDiffScorer{}, nil
	case "knorm":
		return KNormScorer{}, nil
	case "streaming":
		return StreamingLLMScorer{Sink: DefaultStreamingSink}, nil
	case "tova":
		return TOVAScorer{}, nil
	case "h2o":
		return ObservedAttentionScorer{}, nil
	case "random":
		return RandomScorer{}, nil
	}
	return nil, fmt.Errorf("unknown scorer %q (want one of %s)", name, strings.Join(ScorerNames(), ", "))
}
