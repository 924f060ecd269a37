package bench

import (
	"slices"
	"strings"
	"testing"
)

// TestDefaultContexts: the standard lengths that fit with the decode steps, else the
// largest power of two that does.
func TestDefaultContexts(t *testing.T) {
	for _, c := range []struct {
		maxPos, steps int
		want          []int
	}{
		{16384, 32, []int{8192}},
		{131072, 32, []int{8192, 32768, 65536}},
		{65536, 32, []int{8192, 32768}},             // 65536 + 34 does not fit
		{65536 + 34, 32, []int{8192, 32768, 65536}}, // exactly fits
		{256, 32, []int{128}},
		{4096, 32, []int{2048}},
	} {
		got := DefaultContexts(c.maxPos, c.steps)
		if !slices.Equal(got, c.want) {
			t.Errorf("DefaultContexts(%d, %d) = %v, want %v", c.maxPos, c.steps, got, c.want)
		}
		s := Settings{Contexts: got, Compression: []float64{0.5}, DecodeSteps: c.steps, Warmup: 1, OverheadRatio: 0.8}
		if err := s.Check(c.maxPos); err != nil {
			t.Errorf("defaults for %d positions fail their own check: %v", c.maxPos, err)
		}
	}
}

func TestSettingsCheck(t *testing.T) {
	ok := Settings{Contexts: []int{64}, Compression: []float64{0.5}, DecodeSteps: 4, Warmup: 8, OverheadRatio: 0.8, OverheadContexts: []int{64}}
	if err := ok.Check(128); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		edit func(*Settings)
		want string
	}{
		{func(s *Settings) { s.Contexts = []int{124} }, "needs 130 positions"},
		{func(s *Settings) { s.OverheadContexts = []int{200} }, "200 tokens"},
		{func(s *Settings) { s.Contexts = nil }, "no contexts"},
		{func(s *Settings) { s.Contexts = []int{0} }, "must be > 0"},
		{func(s *Settings) { s.Compression = []float64{1} }, "compression 1"},
		{func(s *Settings) { s.DecodeSteps = 0 }, "decode steps"},
		{func(s *Settings) { s.OverheadRatio = 0 }, "overhead ratio"},
		{func(s *Settings) { s.MaxSeconds = -1 }, "time budgets"},
	} {
		s := ok
		c.edit(&s)
		if err := s.Check(128); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error mentioning %q", s, err, c.want)
		}
	}
}
