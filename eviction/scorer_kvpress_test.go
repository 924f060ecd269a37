package eviction

import (
	"math"
	"path/filepath"
	"testing"
)

// TestScorersMatchKvpressFormulas compares every scorer with scores that
// scripts/score_goldens.py computed in PyTorch, following kvpress's formulas, on the GPU
// machine (2026-11-28, torch 2.11) for dumped random views: a multi-head prefill view and a
// decode-shaped view (16 recent queries over 200 keys at positions 1000+), and layer 3 of
// the default model lukv-tiny after a 256-token prefill of its calibration context
// (dumped by scripts/dumpview).
func TestScorersMatchKvpressFormulas(t *testing.T) {
	for _, name := range []string{"mha", "decode", "lukvtiny_l3"} {
		view, err := ReadLayerView(filepath.Join("testdata", "kvpress_gold", name+".safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		golds, err := ReadScoreGoldens(filepath.Join("testdata", "kvpress_gold", name+".scores.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		if len(golds) < 7 {
			t.Fatalf("%s: goldens for %d scorers, want 7", name, len(golds))
		}
		for scorer, want := range golds {
			s, err := NewScorer(scorer)
			if err != nil {
				t.Fatal(err)
			}
			got := s.Score(view)
			if len(got) != len(want) {
				t.Fatalf("%s/%s: %d heads, want %d", name, scorer, len(got), len(want))
			}
			var diff, scale float64
			for h := range want {
				for j := range want[h] {
					diff = max(diff, math.Abs(float64(got[h][j]-want[h][j])))
					scale = max(scale, math.Abs(float64(want[h][j])))
				}
			}
			if diff/scale > 1e-4 {
				t.Errorf("%s/%s: relative error %.2e vs kvpress formulas", name, scorer, diff/scale)
			}
		}
	}
}
