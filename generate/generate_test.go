package generate

import (
	"context"
	"math"

	"slices"
	"strings"
	"testing"

	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/model"
)

func TestSamplerGreedyAndSeeded(t *testing.T) {
	logits := []float32{0.1, 2.5, 2.5, -1, 0.3}
	if got := NewSampler(0, 1, 1).Sample(logits); got != 1 {
		t.Errorf("greedy picked %d, want 1 (first of the tied maxima)", got)
	}
	draw := func(seed uint64) []int {
		s := NewSampler(1.0, 1, seed)
		var ids []int
		for i := 0; i < 50; i++ {
			ids = append(ids, s.Sample(logits))
		}
		return ids
	}
	a, b, c := draw(7), draw(7), draw(8)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different draws: %v vs %v", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("different seeds gave identical draws")
	}
	seen := map[int]bool{}
	for _, id := range a {
		seen[id] = true
	}
	if len(seen) < 3 {
		t.Errorf("temperature 1 sampled only %v", seen)
	}
}

func TestSamplerTopP(t *testing.T) {
	// Probabilities ~ 0.64, 0.24, 0.09, ...: top-p 0.5 keeps only the first.
	logits := []float32{3, 2, 1, 0, -1}
	s := NewSampler(1, 0.5, 3)
	for i := 0; i < 200; i++ {
		if id := s.Sample(logits); id != 0 {
			t.Fatalf("top-p 0.5 sampled %d outside the nucleus", id)
		}
	}
	s = NewSampler(1, 0.9, 3)
	for i := 0; i < 500; i++ {
		if id := s.Sample(logits); id > 2 {
			t.Fatalf("top-p 0.9 sampled %d outside the nucleus {0,1,2}", id)
		}
	}
}

// TestStopStreamHoldsBackAndCuts: text that could start a stop string is held back, and
// the output ends before the stop string.
func TestStopStreamHoldsBackAndCuts(t *testing.T) {
	var out []string
	s := &stopStream{stops: []string{"END", "\n\n"}, onText: func(p string) { out = append(out, p) }}
	feed := func(piece string) bool {
		s.text.WriteString(piece)
		return s.emit(false)
	}
	if feed("Hello E") {
		t.Fatal("stopped early")
	}
	if got := strings.Join(out, ""); got != "Hello " {
		t.Errorf("streamed %q, want %q (the E could start END)", got, "Hello ")
	}
	if feed("N") {
		t.Fatal("stopped early")
	}
	if !feed("Dmore") {
		t.Fatal("did not stop at END")
	}
	s.emit(true)
	if got := strings.Join(out, ""); got != "Hello " {
		t.Errorf("final text %q, want %q", got, "Hello ")
	}
}

// TestOptionsRejected: sampling settings that would give garbage or be silently changed
// are errors, before any work.
func TestOptionsRejected(t *testing.T) {
	g := &Generator{Model: &model.Model{Config: &loader.Config{MaxPositionEmbeddings: 16}}}
	for _, o := range []Options{
		{Temperature: math.NaN()}, {Temperature: -1}, {Temperature: math.Inf(1)},
		{TopP: math.NaN()}, {TopP: 2}, {TopP: -0.5}, {MaxNewTokens: -1},
	} {
		_, err := g.Generate(context.Background(), []int{1, 2}, o)
		if err == nil || !strings.Contains(err.Error(), "want") {
			t.Errorf("%+v: error %v, want a refusal", o, err)
		}
		if _, err := g.GenerateBatch(context.Background(), []Request{{Prompt: []int{1, 2}, Options: o}}, 1); err == nil {
			t.Errorf("batch %+v: no error", o)
		}
	}
}
