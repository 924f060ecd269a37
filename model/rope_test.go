package model

import (
	"math"
	"testing"

	"github.com/lukv/lukv/loader"
)

// The references below re-derive transformers' modeling_rope_utils formulas in plain
// float64, written from the formulas, not from rope.go: lukv's frequencies must match
// them to float32 rounding.

// refDefault is 1 / base^(2j/D).
func refDefault(base float64, D int) []float64 {
	out := make([]float64, D/2)
	for j := range out {
		out[j] = math.Pow(base, -float64(2*j)/float64(D))
	}
	return out
}

// refYarn follows _compute_yarn_parameters: a ramp over pair index between the
// "correction dims" of beta_fast and beta_slow rotations over the original context.
func refYarn(base float64, D int, factor float64, orig int, betaFast, betaSlow float64, truncate bool) []float64 {
	corrDim := func(rot float64) float64 {
		return float64(D) * math.Log(float64(orig)/(rot*2*math.Pi)) / (2 * math.Log(base))
	}
	lo, hi := corrDim(betaFast), corrDim(betaSlow)
	if truncate {
		lo, hi = math.Floor(lo), math.Ceil(hi)
	}
	if lo < 0 {
		lo = 0
	}
	if hi > float64(D-1) {
		hi = float64(D - 1)
	}
	if lo == hi {
		hi += 0.001
	}
	out := refDefault(base, D)
	for j, f := range out {
		ramp := (float64(j) - lo) / (hi - lo)
		ramp = math.Max(0, math.Min(1, ramp))
		extrapolation := 1 - ramp
		out[j] = (f/factor)*(1-extrapolation) + f*extrapolation
	}
	return out
}

// refDynamic follows _compute_dynamic_ntk_parameters for a sequence of seqLen tokens.
func refDynamic(base float64, D int, factor float64, maxPos, seqLen int) []float64 {
	if seqLen < maxPos {
		seqLen = maxPos
	}
	b := base * math.Pow(factor*float64(seqLen)/float64(maxPos)-(factor-1), float64(D)/float64(D-2))
	return refDefault(b, D)
}

func closeFreqs(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d frequencies, want %d", what, len(got), len(want))
	}
	for j := range got {
		if math.Abs(got[j]-want[j]) > tol*want[j] {
			t.Errorf("%s: pair %d: %.9g, want %.9g", what, j, got[j], want[j])
		}
	}
}

func ropeConfig(D int, theta float64, maxPos int, sc *loader.RopeScaling) *loader.Config {
	return &loader.Config{HeadDim: D, RopeTheta: theta, MaxPositionEmbeddings: maxPos, RopeScaling: sc}
}

func TestRoPELinear(t *testing.T) {
	r, err := NewRoPE(ropeConfig(64, 10000, 4096, &loader.RopeScaling{Type: "linear", Factor: 4}))
	if err != nil {
		t.Fatal(err)
	}
	want := refDefault(10000, 64)
	for j := range want {
		want[j] /= 4
	}
	closeFreqs(t, "linear", r.InvFreq, want, 2e-7)
}

func TestRoPEYarn(t *testing.T) {
	cases := []struct {
		name     string
		D        int
		theta    float64
		maxPos   int
		sc       loader.RopeScaling
		truncate bool
		attn     float64 // expected attention factor
	}{
		// Qwen2.5's recommended long-context setting.
		{"qwen2.5", 128, 1e6, 32768, loader.RopeScaling{Type: "yarn", Factor: 4, OriginalMaxPositionEmbeddings: 32768, BetaFast: 32, BetaSlow: 1},
			true, 0.1*math.Log(4) + 1},
		// No original context given: max_position_embeddings stands for it.
		{"small, default orig", 16, 10000, 64, loader.RopeScaling{Type: "yarn", Factor: 4, BetaFast: 32, BetaSlow: 1}, true, 0.1*math.Log(4) + 1},
		// DeepSeek-style mscale, untruncated bounds.
		{"mscale, no truncate", 64, 10000, 4096, loader.RopeScaling{Type: "yarn", Factor: 40, OriginalMaxPositionEmbeddings: 4096,
			BetaFast: 32, BetaSlow: 1, Mscale: 0.707, MscaleAllDim: 0.707, NoTruncate: true}, false, 1},
		{"explicit attention factor", 64, 10000, 4096, loader.RopeScaling{Type: "yarn", Factor: 8, OriginalMaxPositionEmbeddings: 2048,
			BetaFast: 16, BetaSlow: 2, AttentionFactor: 1.25}, true, 1.25},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := ropeConfig(c.D, c.theta, c.maxPos, &c.sc)
			r, err := NewRoPE(cfg)
			if err != nil {
				t.Fatal(err)
			}
			orig := c.sc.OriginalMaxPositionEmbeddings
			if orig == 0 {
				orig = c.maxPos
			}
			want := refYarn(c.theta, c.D, c.sc.Factor, orig, c.sc.BetaFast, c.sc.BetaSlow, c.truncate)
			closeFreqs(t, c.name, r.InvFreq, want, 2e-7)
			// The fastest pair is never interpolated, the slowest always is.
			def := refDefault(c.theta, c.D)
			if math.Abs(r.InvFreq[0]-def[0]) > 1e-7 {
				t.Errorf("pair 0 changed: %g, want %g", r.InvFreq[0], def[0])
			}
			last := len(def) - 1
			if math.Abs(r.InvFreq[last]-def[last]/c.sc.Factor) > 1e-6*def[last] {
				t.Errorf("slowest pair %g, want %g / %g", r.InvFreq[last], def[last], c.sc.Factor)
			}
			if got := AttentionFactor(cfg); math.Abs(got-c.attn) > 1e-12 {
				t.Errorf("attention factor %g, want %g", got, c.attn)
			}
		})
	}
}

func TestRoPEDynamic(t *testing.T) {
	cfg := ropeConfig(32, 10000, 64, &loader.RopeScaling{Type: "dynamic", Factor: 2})
	r, err := NewRoPE(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closeFreqs(t, "within the context", r.InvFreq, refDefault(10000, 32), 2e-7)
	for _, seq := range []int{65, 100, 128, 500} {
		closeFreqs(t, "dynamic", DynamicRoPE(cfg, seq).InvFreq, refDynamic(10000, 32, 2, 64, seq), 2e-6)
	}
	// At twice the context with factor 2 the base is theta * 3^(D/(D-2)).
	b := 10000 * math.Pow(3, 32.0/30)
	closeFreqs(t, "base at 2M", DynamicRoPE(cfg, 128).InvFreq, refDefault(b, 32), 2e-6)
	if AttentionFactor(cfg) != 1 {
		t.Errorf("dynamic attention factor %g, want 1", AttentionFactor(cfg))
	}
}

func TestRoPEUnknownType(t *testing.T) {
	if _, err := NewRoPE(ropeConfig(16, 10000, 64, &loader.RopeScaling{Type: "longrope", Factor: 2})); err == nil {
		t.Error("longrope accepted")
	}
}
