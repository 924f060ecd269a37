package eviction

import (
	"reflect"
	"strings"
	"testing"
)

// TestKvpressAliases: every kvpress name in the documented table gives exactly what its
// lukv name gives (same type, same defaults); unknown names are refused with an error
// that lists the aliases too.
func TestKvpressAliases(t *testing.T) {
	scorers := map[string]string{
		"expected_attention": "expected-attention", "snapkv": "snapkv", "keydiff": "keydiff", "knorm": "knorm",
		"streaming_llm": "streaming", "tova": "tova", "observed_attention": "h2o", "random": "random",
	}
	for alias, name := range scorers {
		a, err := NewScorer(alias)
		if err != nil {
			t.Fatalf("NewScorer(%q): %v", alias, err)
		}
		b, err := NewScorer(name)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("kvpress %q gives %#v, lukv %q gives %#v", alias, a, name, b)
		}
	}
	if s, _ := NewScorer("expected_attention"); s.(ExpectedAttentionScorer).Epsilon != 0.02 {
		t.Errorf("expected_attention epsilon %v, want LU-KV's 0.02", s.(ExpectedAttentionScorer).Epsilon)
	}
	if s, _ := NewScorer("streaming_llm"); s.(StreamingLLMScorer).Sink != 4 {
		t.Errorf("streaming_llm n_sink %v, want kvpress's 4", s.(StreamingLLMScorer).Sink)
	}
	curve := NewBudgetCurve(1, 1)
	for alias, name := range map[string]string{"pyramidkv": "pyramid", "adakv": "adakv", "lukv": "lukv"} {
		a, err := NewAllocator(alias, curve)
		if err != nil {
			t.Fatalf("NewAllocator(%q): %v", alias, err)
		}
		b, _ := NewAllocator(name, curve)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("kvpress %q gives %#v, lukv %q gives %#v", alias, a, name, b)
		}
	}
	if a, _ := NewAllocator("pyramidkv", nil); a != (PyramidAllocator{Window: 64, Beta: 20}) {
		t.Errorf("pyramidkv = %#v, want kvpress's window 64, beta 20", a)
	}
	if a, _ := NewAllocator("adakv", nil); a != (AdaKVAllocator{Safeguard: 0.2}) {
		t.Errorf("adakv = %#v, want kvpress's alpha_safeguard 0.2", a)
	}
	if _, err := NewScorer("pyramidkv"); err == nil || !strings.Contains(err.Error(), "observed_attention") {
		t.Errorf("unknown scorer: %v, want an error listing the kvpress names", err)
	}
	if _, err := NewAllocator("snapkv", nil); err == nil || !strings.Contains(err.Error(), "pyramidkv") {
		t.Errorf("unknown allocator: %v, want an error naming pyramidkv", err)
	}
}

// TestMethodNames: whole-method names resolve to the scorer and allocator the evaluation
// reports them as, and an unknown allocator before a colon is an error naming it.
func TestMethodNames(t *testing.T) {
	for _, c := range []struct{ name, scorer, alloc string }{
		{"full", "", ""},
		{"snapkv", "snapkv", "uniform"},
		{"expected_attention", "expected_attention", "uniform"},
		{"pyramidkv", "snapkv", "pyramid"},
		{"adakv", "expected-attention", "adakv"},
		{"lukv", "expected-attention", "lukv"},
		{"lukv:keydiff", "keydiff", "lukv"},
		{"pyramidkv:knorm", "knorm", "pyramidkv"},
	} {
		s, a, err := MethodNames(c.name)
		if err != nil || s != c.scorer || a != c.alloc {
			t.Errorf("MethodNames(%q) = %q, %q, %v; want %q, %q", c.name, s, a, err, c.scorer, c.alloc)
		}
	}
	if _, _, err := MethodNames("bogus:snapkv"); err == nil || !strings.Contains(err.Error(), `"bogus"`) {
		t.Errorf("unknown allocator: error %v, want one naming \"bogus\"", err)
	}
}
