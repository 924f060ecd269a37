package eviction

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lukv/lukv/loader"
)

func TestKeyDiffMatchesReference(t *testing.T) {
	v := newScorerTestView(scorerViewSpec{nq: 4, nkv: 2, d: 16, T: 30, tq: 30, seed: 31})
	d := v.HeadDim
	want := make([][]float64, v.NumKVHeads)
	for g := range want {
		anchor := make([]float64, d)
		for j := 0; j < v.T(); j++ {
			k := testVec(v.Keys[g], j, d)
			n := math.Sqrt(testDot(k, k))
			for i := range anchor {
				anchor[i] += k[i] / n / float64(v.T())
			}
		}
		for j := 0; j < v.T(); j++ {
			k := testVec(v.Keys[g], j, d)
			want[g] = append(want[g], -testDot(k, anchor)/math.Sqrt(testDot(k, k)*testDot(anchor, anchor)))
		}
	}
	assertScoresClose(t, "keydiff", KeyDiffScorer{}.Score(v), want, everyToken, 1e-4)
}

// A key pointing along the mean direction scores lowest, its opposite highest.
func TestKeyDiffExtremes(t *testing.T) {
	v := newScorerTestView(scorerViewSpec{nq: 1, nkv: 1, d: 8, T: 10, tq: 10, seed: 32})
	for j := 0; j < v.T(); j++ {
		k := v.Keys[0][j*8 : (j+1)*8]
		clear(k)
		k[0], k[1+j%7] = 1, 0.5 // all keys share a strong component on axis 0
	}
	copy(v.Keys[0][8:16], []float32{-3, 0, 0, 0, 0, 0, 0, 0}) // token 1 opposes it
	s := KeyDiffScorer{}.Score(v)[0]
	if r := testRanking(s); r[0] != 1 {
		t.Fatalf("opposite key ranked %d-th, scores %v", slices.Index(r, 1), s)
	}
}

func TestKNormOrdering(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 0))
	v := newScorerTestView(scorerViewSpec{nq: 2, nkv: 2, d: 8, T: 20, tq: 20, seed: 33})
	norms := make([][]float64, 2)
	for g := range norms {
		for j := 0; j < v.T(); j++ {
			k := v.Keys[g][j*8 : (j+1)*8]
			var n float64
			for _, x := range k {
				n += float64(x) * float64(x)
			}
			target := 0.1 + 10*r.Float64()
			for i := range k {
				k[i] = float32(float64(k[i]) / math.Sqrt(n) * target)
			}
			norms[g] = append(norms[g], target)
		}
	}
	s := KNormScorer{}.Score(v)
	for g := range s {
		for i := range s[g] {
			if math.Abs(float64(s[g][i])+norms[g][i]) > 1e-5*norms[g][i] {
				t.Fatalf("head %d token %d: score %v, want -%v", g, i, s[g][i], norms[g][i])
			}
			for j := range s[g] {
				if norms[g][i] < norms[g][j] && !(s[g][i] > s[g][j]) {
					t.Fatalf("head %d: smaller key norm %v scored %v, not above norm %v's %v", g, norms[g][i], s[g][i], norms[g][j], s[g][j])
				}
			}
		}
	}
}

func TestStreamingKeepsSinkAndRecent(t *testing.T) {
	v := newScorerTestView(scorerViewSpec{nq: 2, nkv: 2, d: 4, T: 30, tq: 30, seed: 34})
	s := StreamingLLMScorer{Sink: 4}.Score(v)
	for g := range s {
		rank := testRanking(s[g])
		for k := 4; k <= v.T(); k++ {
			kept := slices.Clone(rank[:k])
			slices.Sort(kept)
			var want []int
			for j := 0; j < v.T(); j++ {
				if j < 4 || j >= v.T()-(k-4) {
					want = append(want, j)
				}
			}
			if !slices.Equal(kept, want) {
				t.Fatalf("head %d, top %d = %v, want sinks and the most recent: %v", g, k, kept, want)
			}
		}
	}
}

func TestRandomScorer(t *testing.T) {
	v := newScorerTestView(scorerViewSpec{nq: 2, nkv: 2, d: 4, T: 50, tq: 50, seed: 35})
	a, b := RandomScorer{Seed: 7}.Score(v), RandomScorer{Seed: 7}.Score(v)
	c := RandomScorer{Seed: 8}.Score(v)
	w := *v
	w.Layer++
	d := RandomScorer{Seed: 7}.Score(&w)
	for g := range a {
		if !slices.Equal(a[g], b[g]) {
			t.Fatal("same seed gave different scores")
		}
		if slices.Equal(a[g], c[g]) || slices.Equal(a[g], d[g]) {
			t.Fatal("another seed or layer gave the same scores")
		}
		for _, x := range a[g] {
			if x < 0 || x >= 1 {
				t.Fatalf("score %v outside [0, 1)", x)
			}
		}
	}
	if slices.Equal(a[0], a[1]) {
		t.Fatal("two heads got the same scores")
	}
}

func TestNewScorer(t *testing.T) {
	names := ScorerNames()
	if len(names) != 8 {
		t.Fatalf("ScorerNames() = %v", names)
	}
	v := newScorerTestView(scorerViewSpec{nq: 4, nkv: 2, d: 8, T: 80, tq: 80, seed: 36})
	for _, name := range names {
		s, err := NewScorer(name)
		if err != nil {
			t.Fatalf("NewScorer(%q): %v", name, err)
		}
		if s.Name() != name {
			t.Fatalf("NewScorer(%q).Name() = %q", name, s.Name())
		}
		if err := CheckScorerView(s, v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := s.Score(v)
		if len(got) != 2 || len(got[0]) != 80 || len(got[1]) != 80 {
			t.Fatalf("%s: scores have the wrong shape", name)
		}
		for _, row := range got {
			for _, x := range row {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					t.Fatalf("%s: non-finite score %v", name, x)
				}
			}
		}
	}
	if s, _ := NewScorer("expected-attention"); s != DefaultExpectedAttentionScorer() {
		t.Fatalf("expected-attention default = %+v", s)
	}
	_, err := NewScorer("pyramid")
	if err == nil || !strings.Contains(err.Error(), "pyramid") || !strings.Contains(err.Error(), strings.Join(names, ", ")) {
		t.Fatalf("unknown name: error %v should name it and list %v", err, names)
	}
}

func TestProtectSinkWindow(t *testing.T) {
	scores := [][]float32{{5, -1, 3, 9, 2, 0, 1}, {100, 4, 2, 8, 6, 7, 3}}
	orig := [][]float32{slices.Clone(scores[0]), slices.Clone(scores[1])}
	ProtectSinkWindow(scores, 2, 1)
	protected := func(j, T int) bool { return j < 2 || j >= T-1 }
	assertProtected(t, "protect", scores, protected)
	for h := range scores {
		for j := range scores[h] {
			if !protected(j, len(scores[h])) && scores[h][j] != orig[h][j] {
				t.Fatalf("head %d token %d changed from %v to %v", h, j, orig[h][j], scores[h][j])
			}
		}
	}
	// kvpress's value: the layer's maximum (100) + 1.
	if scores[1][6] != 101 || scores[0][0] != 101 {
		t.Fatalf("protected score %v, want 101", scores[1][6])
	}
	// Sink and window covering the whole head, negative sizes, ragged heads.
	short := [][]float32{{3, 1}, {2, 5, 4, 0}}
	ProtectSinkWindow(short, 5, -3)
	if short[0][0] != 6 || short[0][1] != 6 || short[1][3] != 6 {
		t.Fatalf("sink longer than the head: %v", short)
	}
	same := [][]float32{{1, 2, 3}}
	ProtectSinkWindow(same, 0, 0)
	if !slices.Equal(same[0], []float32{1, 2, 3}) {
		t.Fatalf("nothing to protect changed %v", same)
	}
	huge := [][]float32{{math.MaxFloat32 / 2, 1, 2}}
	ProtectSinkWindow(huge, 0, 1)
	if !(huge[0][2] > huge[0][0]) {
		t.Fatalf("+1 lost in rounding: %v", huge)
	}
}

// Malformed views and configurations give an error from CheckScorerView and nil scores,
// never a panic.
func TestScorersRejectBadViews(t *testing.T) {
	good := func() *LayerView {
		return newScorerTestView(scorerViewSpec{nq: 4, nkv: 2, d: 8, T: 20, tq: 20, seed: 37})
	}
	all := []Scorer{DefaultExpectedAttentionScorer(), DefaultSnapKVScorer(), KeyDiffScorer{}, KNormScorer{},
		StreamingLLMScorer{Sink: 4}, TOVAScorer{}, ObservedAttentionScorer{}, RandomScorer{}}
	type bad struct {
		name   string
		view   *LayerView
		scorer func(Scorer) bool // which scorers must reject it
	}
	everyone := func(Scorer) bool { return true }
	readsQueries := func(s Scorer) bool {
		switch s.(type) {
		case ExpectedAttentionScorer, SnapKVScorer, TOVAScorer, ObservedAttentionScorer:
			return true
		}
		return false
	}
	isEA := func(s Scorer) bool { _, ok := s.(ExpectedAttentionScorer); return ok }
	isSnapOrAttn := func(s Scorer) bool { return readsQueries(s) && !isEA(s) }
	var cases []bad
	cases = append(cases, bad{"nil view", nil, everyone})
	v := good()
	v.NumHeads = 3
	cases = append(cases, bad{"heads not a multiple", v, everyone})
	v = good()
	v.Keys[1] = v.Keys[1][:10]
	cases = append(cases, bad{"short keys", v, everyone})
	v = good()
	v.Values = v.Values[:1]
	cases = append(cases, bad{"missing value head", v, everyone})
	v = good()
	v.HeadDim = 0
	cases = append(cases, bad{"zero head dim", v, everyone})
	v = good()
	v.Queries = v.Queries[:5]
	cases = append(cases, bad{"short queries", v, isSnapOrAttn})
	v = good()
	v.PreRoPEQueries = nil
	cases = append(cases, bad{"no pre-RoPE queries", v, isEA})
	v = good()
	v.RoPE = nil
	cases = append(cases, bad{"no RoPE", v, isEA})
	v = good()
	v.QueryPositions, v.Queries, v.PreRoPEQueries = nil, nil, nil
	cases = append(cases, bad{"no query rows", v, readsQueries})
	for _, c := range cases {
		for _, s := range all {
			err := CheckScorerView(s, c.view)
			got := s.Score(c.view)
			if c.scorer(s) {
				if err == nil || got != nil {
					t.Fatalf("%s, %s: error %v, scores %v; want an error and nil", c.name, s.Name(), err, got != nil)
				}
			} else if err != nil || got == nil {
				t.Fatalf("%s, %s: error %v, nil scores %v; it does not read that part", c.name, s.Name(), err, got == nil)
			}
		}
	}
	for _, s := range []Scorer{SnapKVScorer{Window: -1}, SnapKVScorer{Pool: "median"}, ExpectedAttentionScorer{NSink: -1},
		ExpectedAttentionScorer{Epsilon: float32(math.NaN())}, StreamingLLMScorer{Sink: -2}} {
		if err := CheckScorerView(s, good()); err == nil || s.Score(good()) != nil {
			t.Fatalf("%+v: want a configuration error and nil scores", s)
		}
	}
	if err := CheckScorerView(nil, good()); err == nil {
		t.Fatal("nil scorer accepted")
	}
}

func TestScorersTinyViews(t *testing.T) {
	all := []Scorer{DefaultExpectedAttentionScorer(), DefaultSnapKVScorer(), KeyDiffScorer{}, KNormScorer{},
		StreamingLLMScorer{Sink: 4}, TOVAScorer{}, ObservedAttentionScorer{}, RandomScorer{}}
	for _, T := range []int{0, 1, 2} {
		v := newScorerTestView(scorerViewSpec{nq: 2, nkv: 1, d: 4, T: T, tq: T, seed: 38})
		for _, s := range all {
			got := s.Score(v)
			if len(got) != 1 || len(got[0]) != T {
				t.Fatalf("T=%d %s: got %v", T, s.Name(), got)
			}
		}
	}
}

func TestDumpLayerViewRoundTrip(t *testing.T) {
	dir := t.TempDir()
	v := newScorerTestView(scorerViewSpec{nq: 4, nkv: 2, d: 8, T: 12, tq: 5, start: 7, seed: 39})
	path := filepath.Join(dir, "view.safetensors")
	if err := DumpLayerView(path, v); err != nil {
		t.Fatal(err)
	}
	f, err := loader.OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Info("queries")
	q, _ := f.Float32("queries")
	f.Close()
	if !slices.Equal(info.Shape, []int{4, 5, 8}) {
		t.Fatalf("queries shape %v, want [Nq Tq D]", info.Shape)
	}
	// Head-major: head 2, row 3, element 1 sits at ((2*5)+3)*8+1.
	if q[(2*5+3)*8+1] != v.Queries[(3*4+2)*8+1] {
		t.Fatal("queries not stored head-major")
	}
	w, err := ReadLayerView(path)
	if err != nil {
		t.Fatal(err)
	}
	if w.Layer != v.Layer || w.NumHeads != 4 || w.NumKVHeads != 2 || w.HeadDim != 8 ||
		!slices.Equal(w.Positions, v.Positions) || !slices.Equal(w.QueryPositions, v.QueryPositions) ||
		!slices.Equal(w.Queries, v.Queries) || !slices.Equal(w.PreRoPEQueries, v.PreRoPEQueries) ||
		!slices.Equal(w.Keys[1], v.Keys[1]) || !slices.Equal(w.Values[0], v.Values[0]) {
		t.Fatal("view changed in the round trip")
	}
	for i, f := range v.RoPE.InvFreq {
		if w.RoPE.InvFreq[i] != float64(float32(f)) {
			t.Fatalf("inv_freq[%d] = %v, want %v", i, w.RoPE.InvFreq[i], float32(f))
		}
	}
	v.Positions[0] = 1 << 25
	if err := DumpLayerView(filepath.Join(dir, "bad.safetensors"), v); err == nil {
		t.Fatal("a position float32 cannot hold was accepted")
	}
	if _, err := ReadLayerView(filepath.Join(dir, "missing.safetensors")); err == nil {
		t.Fatal("missing file read")
	}

	golden := filepath.Join(dir, "scores.safetensors")
	err = loader.WriteSafetensors(golden, []loader.WriteTensor{
		{Name: "knorm", DType: loader.F32, Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := ReadScoreGoldens(golden)
	if err != nil {
		t.Fatal(err)
	}
	if len(g) != 1 || !slices.Equal(g["knorm"][1], []float32{4, 5, 6}) {
		t.Fatalf("goldens read back as %v", g)
	}
	if _, err := ReadScoreGoldens(path); err == nil {
		t.Fatal("a layer-view file was read as score goldens")
	}
}
