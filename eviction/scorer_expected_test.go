package eviction

import (
	"fmt"
	"math"
	"testing"
)

// refMatMul multiplies two dense matrices entry by entry.
func refMatMul(a, b [][]float64) [][]float64 {
	out := make([][]float64, len(a))
	for i := range a {
		out[i] = make([]float64, len(b[0]))
		for j := range out[i] {
			for k := range b {
				out[i][j] += a[i][k] * b[k][j]
			}
		}
	}
	return out
}

func refTranspose(a [][]float64) [][]float64 {
	out := make([][]float64, len(a[0]))
	for i := range out {
		out[i] = make([]float64, len(a))
		for j := range a {
			out[i][j] = a[j][i]
		}
	}
	return out
}

// refAverageRotation sums the full D x D RoPE rotation matrices of the positions
// from .. from+n-1 (each made of 2x2 blocks on the pairs (i, i+D/2)) and divides by n.
func refAverageRotation(invFreq []float64, from, n int) [][]float64 {
	half := len(invFreq)
	d := 2 * half
	R := make([][]float64, d)
	for i := range R {
		R[i] = make([]float64, d)
	}
	for p := from; p < from+n; p++ {
		for i := 0; i < half; i++ {
			angle := float64(float32(p) * float32(invFreq[i]))
			c, s := math.Cos(angle), math.Sin(angle)
			R[i][i] += c
			R[i][i+half] -= s
			R[i+half][i] += s
			R[i+half][i+half] += c
		}
	}
	for i := range R {
		for j := range R[i] {
			R[i][j] /= float64(n)
		}
	}
	return R
}

// refExpectedAttention recomputes ExpectedAttentionScorer's non-sink scores [Nkv][T]
// (sink entries left 0) with dense float64 matrices: naive mean and covariance of the
// query rows not at a sink position, rotation by matrix products, Gaussian log-moment,
// softmax, group mean, value norms.
func refExpectedAttention(v *LayerView, s ExpectedAttentionScorer) [][]float64 {
	d, T, group := v.HeadDim, v.T(), v.NumHeads/v.NumKVHeads
	sinkPos := map[int]bool{}
	for j := 0; j < s.NSink; j++ {
		sinkPos[v.Positions[j]] = true
	}
	var rows []int
	for r, p := range v.QueryPositions {
		if !sinkPos[p] {
			rows = append(rows, r)
		}
	}
	R := refAverageRotation(v.RoPE.InvFreq, v.Positions[T-1]+1, s.NFuture)
	out := make([][]float64, v.NumKVHeads)
	for g := range out {
		out[g] = make([]float64, T)
		for hq := 0; hq < group; hq++ {
			h := g*group + hq
			mu := make([]float64, d)
			for _, r := range rows {
				q := testQuery(v.PreRoPEQueries, v, r, h)
				for i := range mu {
					mu[i] += q[i] / float64(len(rows))
				}
			}
			cov := make([][]float64, d)
			for a := range cov {
				cov[a] = make([]float64, d)
				for b := range cov[a] {
					for _, r := range rows {
						q := testQuery(v.PreRoPEQueries, v, r, h)
						cov[a][b] += (q[a] - mu[a]) * (q[b] - mu[b])
					}
					cov[a][b] /= float64(len(rows))
				}
			}
			muCol := make([][]float64, d)
			for i := range muCol {
				muCol[i] = []float64{mu[i]}
			}
			muRot := refMatMul(R, muCol)
			covRot := refMatMul(refMatMul(R, cov), refTranspose(R))
			z := make([]float64, T)
			for j := s.NSink; j < T; j++ {
				k := testVec(v.Keys[g], j, d)
				for i := range k {
					z[j] += muRot[i][0] * k[i] / math.Sqrt(float64(d))
				}
				if s.UseCovariance {
					for a := range k {
						for b := range k {
							z[j] += k[a] * covRot[a][b] * k[b] / float64(2*d)
						}
					}
				}
			}
			var sum float64
			for j := s.NSink; j < T; j++ {
				sum += math.Exp(z[j])
			}
			for j := s.NSink; j < T; j++ {
				out[g][j] += math.Exp(z[j]) / sum / float64(group)
			}
		}
		if s.UseVNorm {
			for j := s.NSink; j < T; j++ {
				val := testVec(v.Values[g], j, d)
				out[g][j] = (out[g][j] + float64(s.Epsilon)) * math.Sqrt(testDot(val, val))
			}
		}
	}
	return out
}

func TestExpectedAttentionMatchesReference(t *testing.T) {
	def := DefaultExpectedAttentionScorer()
	noCov, noNorm, noSink, fewFuture := def, def, def, def
	noCov.UseCovariance = false
	noNorm.UseVNorm = false
	noSink.NSink = 0
	fewFuture.NFuture = 7
	cases := []struct {
		name string
		spec scorerViewSpec
		s    ExpectedAttentionScorer
	}{
		{"default gqa", scorerViewSpec{nq: 4, nkv: 2, d: 16, T: 40, tq: 40, seed: 1}, def},
		{"no covariance", scorerViewSpec{nq: 4, nkv: 2, d: 16, T: 40, tq: 40, seed: 2}, noCov},
		{"no value norm", scorerViewSpec{nq: 4, nkv: 2, d: 16, T: 40, tq: 40, seed: 3}, noNorm},
		{"no sink mha", scorerViewSpec{nq: 3, nkv: 3, d: 8, T: 25, tq: 25, seed: 4}, noSink},
		{"7 future positions", scorerViewSpec{nq: 2, nkv: 1, d: 16, T: 30, tq: 30, seed: 5}, fewFuture},
		{"decode view", scorerViewSpec{nq: 4, nkv: 2, d: 16, T: 40, tq: 9, start: 100, seed: 6}, def},
	}
	for _, c := range cases {
		v := newScorerTestView(c.spec)
		got := c.s.Score(v)
		want := refExpectedAttention(v, c.s)
		assertScoresClose(t, c.name, got, want, func(j int) bool { return j >= c.s.NSink }, 1e-4)
		if c.s.NSink > 0 {
			assertProtected(t, c.name, got, func(j, T int) bool { return j < c.s.NSink })
		}
	}
}

// Without value norms the scores of a head are a mean of softmaxes: they sum to 1.
func TestExpectedAttentionIsADistribution(t *testing.T) {
	s := DefaultExpectedAttentionScorer()
	s.UseVNorm = false
	v := newScorerTestView(scorerViewSpec{nq: 8, nkv: 2, d: 16, T: 50, tq: 50, seed: 7})
	for g, row := range s.Score(v) {
		var sum float64
		for _, x := range row[s.NSink:] {
			if x <= 0 {
				t.Fatalf("head %d: non-positive attention %v", g, x)
			}
			sum += float64(x)
		}
		if math.Abs(sum-1) > 1e-5 {
			t.Fatalf("head %d: attention sums to %v, want 1", g, sum)
		}
	}
}

// The covariance term must matter: a view whose queries vary a lot ranks differently
// with and without it, and epsilon shifts the scores by epsilon*||v||.
func TestExpectedAttentionOptionsMatter(t *testing.T) {
	v := newScorerTestView(scorerViewSpec{nq: 2, nkv: 1, d: 16, T: 30, tq: 30, seed: 8})
	s := DefaultExpectedAttentionScorer()
	withCov := s.Score(v)
	s.UseCovariance = false
	noCov := s.Score(v)
	if fmt.Sprint(withCov) == fmt.Sprint(noCov) {
		t.Fatal("covariance term changed nothing")
	}
	s = DefaultExpectedAttentionScorer()
	s.Epsilon = 0
	zero := s.Score(v)
	for j := s.NSink; j < v.T(); j++ {
		val := testVec(v.Values[0], j, v.HeadDim)
		shift := float64(withCov[0][j]) - float64(zero[0][j])
		if want := DefaultEAEpsilon * math.Sqrt(testDot(val, val)); math.Abs(shift-want) > 1e-5*want+1e-7 {
			t.Fatalf("token %d: epsilon shifted the score by %v, want %v", j, shift, want)
		}
	}
}

func TestExpectedAttentionFewTokens(t *testing.T) {
	s := DefaultExpectedAttentionScorer()
	for _, T := range []int{0, 1, 4} {
		v := newScorerTestView(scorerViewSpec{nq: 2, nkv: 2, d: 8, T: T, tq: T, seed: 9})
		if T == 0 {
			v.QueryPositions, v.Queries, v.PreRoPEQueries = nil, nil, nil
		}
		got := s.Score(v)
		if len(got) != 2 {
			t.Fatalf("T=%d: %d heads, want 2", T, len(got))
		}
		for _, row := range got {
			if len(row) != T {
				t.Fatalf("T=%d: %d scores", T, len(row))
			}
			for _, x := range row {
				if x != row[0] {
					t.Fatalf("T=%d <= NSink: scores %v are not all equal", T, row)
				}
			}
		}
	}
	// One token past the sinks: it is the whole softmax.
	v := newScorerTestView(scorerViewSpec{nq: 2, nkv: 1, d: 8, T: 5, tq: 5, seed: 10})
	s.UseVNorm = false
	if got := s.Score(v); got[0][4] != 1 || got[0][0] <= 1 {
		t.Fatalf("T = NSink+1: scores %v, want last = 1 and sinks above it", got[0])
	}
}
