package eviction

import (
	"fmt"
	"slices"
	"strings"
)

// Names and kvpress aliases. NewScorer and NewAllocator take lukv's names and, as
// aliases, the press names of NVIDIA kvpress (kvpress/presses/*), which most users know:
//
//	kvpress name         lukv name           kind       defaults (lukv = kvpress unless noted)
//	expected_attention   expected-attention  scorer     n_future 512, n_sink 4, covariance and v-norm on;
//	                                                    epsilon 0.02 (LU-KV's LUKVPress value; kvpress's
//	                                                    ExpectedAttentionPress adds 0)
//	snapkv               snapkv              scorer     window 64, kernel 5, average pooling
//	keydiff              keydiff             scorer     none
//	knorm                knorm               scorer     none
//	streaming_llm        streaming           scorer     n_sink 4
//	tova                 tova                scorer     none
//	observed_attention   h2o                 scorer     none (lukv computes the attention itself;
//	                                                    kvpress reads it from eager attention)
//	random               random              scorer     seed 0, mixed with the layer (kvpress reseeds
//	                                                    every layer alike; torch's stream differs)
//	pyramidkv            pyramid             allocator  window 64, beta 20 (kvpress's PyramidKVPress also
//	                                                    brings SnapKV scores: pair it with snapkv)
//	adakv                adakv               allocator  alpha_safeguard 0.20
//	lukv                 lukv                allocator  needs a budget curve (--curve)
//	(none)               uniform             allocator  kvpress's ScorerPress: floor(T*(1-ratio)) per head
//
// Every method also protects the first Sink and last Window tokens of each head; lukv's
// command line defaults to sink 4 and window 1, as kvpress's LUKVPress (its other
// presses protect nothing by default: pass --sink 0 --window 0 to match them).

// scorerAliases maps kvpress press names to lukv's scorer names.
var scorerAliases = map[string]string{
	"expected_attention": "expected-attention",
	"streaming_llm":      "streaming",
	"observed_attention": "h2o",
}

// allocatorAliases maps kvpress press names to lukv's allocator names.
var allocatorAliases = map[string]string{
	"pyramidkv": "pyramid",
}

// ScorerNames lists the CLI names NewScorer accepts (--method), in a fixed order; the
// kvpress aliases (see above) are accepted too.
func ScorerNames() []string {
	return []string{"expected-attention", "snapkv", "keydiff", "knorm", "streaming", "tova", "h2o", "random"}
}

// AllocatorNames lists the --allocator values; the kvpress alias pyramidkv is accepted too.
func AllocatorNames() []string { return []string{"uniform", "pyramid", "adakv", "lukv"} }

// aliasList is the sorted aliases of a map, for error messages.
func aliasList(aliases map[string]string) string {
	var out []string
	for k := range aliases {
		out = append(out, k)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// NewScorer returns the scorer a CLI or kvpress name stands for, in its default
// configuration: expected-attention (epsilon 0.02, 512 future positions, 4 sinks,
// covariance and value norms), snapkv (window 64, kernel 5, avg-pool), keydiff, knorm,
// streaming (4 sinks), tova, h2o (observed attention) and random (seed 0).
func NewScorer(name string) (Scorer, error) {
	if n, ok := scorerAliases[name]; ok {
		name = n
	}
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
	return nil, fmt.Errorf("unknown scorer %q (want one of %s, or a kvpress name: %s)", name, strings.Join(ScorerNames(), ", "), aliasList(scorerAliases))
}

// NewAllocator returns the allocator a CLI or kvpress name stands for; lukv needs a
// budget curve.
func NewAllocator(name string, curve *BudgetCurve) (Allocator, error) {
	if n, ok := allocatorAliases[name]; ok {
		name = n
	}
	switch name {
	case "uniform":
		return UniformAllocator{}, nil
	case "pyramid":
		return PyramidAllocator{Window: 64, Beta: 20}, nil
	case "adakv":
		return AdaKVAllocator{Safeguard: 0.2}, nil
	case "lukv":
		if curve == nil {
			return nil, fmt.Errorf("allocator lukv needs a budget curve (--curve FILE.npy)")
		}
		return LUKVAllocator{Curve: curve}, nil
	}
	return nil, fmt.Errorf("unknown allocator %q (want one of %v, or the kvpress name %s)", name, AllocatorNames(), aliasList(allocatorAliases))
}

// MethodNames resolves a method name as the evaluation writes them (kvpress's press names
// for whole methods) to a scorer and an allocator:
//
//	full                 no eviction (scorer and allocator "")
//	<scorer>             that scorer with uniform budgets (expected-attention, snapkv, ...)
//	pyramidkv / pyramid  SnapKV scores, pyramid budgets (kvpress's PyramidKVPress extends SnapKVPress)
//	adakv                ExpectedAttention scores, AdaKV budgets
//	lukv                 ExpectedAttention scores (LU-KV's default scorer), LU-KV budgets
//	<allocator>:<scorer> any other pair, e.g. lukv:keydiff
//
// Scorer and allocator names are returned as given (aliases included); NewScorer and
// NewAllocator resolve them and report unknown ones.
func MethodNames(name string) (scorer, allocator string, err error) {
	if name == "full" {
		return "", "", nil
	}
	if a, sc, ok := strings.Cut(name, ":"); ok {
		if !slices.Contains(AllocatorNames(), a) && allocatorAliases[a] == "" {
			return "", "", fmt.Errorf("method %s: unknown allocator %q before the colon (want one of %s, or %s)", name, a, strings.Join(AllocatorNames(), ", "), aliasList(allocatorAliases))
		}
		return sc, a, nil
	}
	switch name {
	case "pyramidkv", "pyramid":
		return "snapkv", "pyramid", nil
	case "adakv", "lukv":
		return "expected-attention", name, nil
	}
	return name, "uniform", nil
}
