package eviction

// Helpers shared by the token scorers (scorer_*.go): view checks, float64 conversions,
// softmax, 1-D pooling, causal attention rows and the "above every other" score.
//
// Scorers compute in float64 from the float32 activations and round only their final
// scores to float32, so that they agree with a float64 reference to ~1e-7 relative and
// the ranking they induce does not depend on float32 summation order.

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// viewNeeds lists the parts of a LayerView a scorer reads beyond keys and values.
type viewNeeds struct {
	queries bool // rotated queries (Queries) and QueryPositions
	preRoPE bool // pre-RoPE queries (PreRoPEQueries) and QueryPositions
	rope    bool // RoPE frequencies, one per rotated pair
}

// viewScorer is implemented by the scorers of this package: what they read of a view,
// and whether their configuration is usable.
type viewScorer interface {
	needs() viewNeeds
	Validate() error
}

// CheckScorerView reports why s cannot score v, or nil if it can. The scorers of this
// package return nil scores for a view or a configuration this rejects, rather than
// panicking; call it first to learn why. For a scorer from elsewhere only the parts
// every scorer reads (heads, keys, values, positions) are checked.
func CheckScorerView(s Scorer, v *LayerView) error {
	if s == nil {
		return errors.New("eviction: nil scorer")
	}
	need := viewNeeds{}
	if vs, ok := s.(viewScorer); ok {
		if err := vs.Validate(); err != nil {
			return err
		}
		need = vs.needs()
	}
	if err := checkView(v, need); err != nil {
		return fmt.Errorf("%s scorer: %w", s.Name(), err)
	}
	return nil
}

// checkView checks the shapes of v against what a scorer needs.
func checkView(v *LayerView, need viewNeeds) error {
	if v == nil {
		return errors.New("eviction: nil LayerView")
	}
	where := fmt.Sprintf("eviction: layer %d view", v.Layer)
	nq, nkv, d := v.NumHeads, v.NumKVHeads, v.HeadDim
	if nq < 1 || nkv < 1 || d < 1 {
		return fmt.Errorf("%s: need NumHeads, NumKVHeads, HeadDim >= 1, got %d, %d, %d", where, nq, nkv, d)
	}
	if nq%nkv != 0 {
		return fmt.Errorf("%s: NumHeads %d is not a multiple of NumKVHeads %d", where, nq, nkv)
	}
	T := v.T()
	if len(v.Keys) != nkv || len(v.Values) != nkv {
		return fmt.Errorf("%s: %d key and %d value heads for NumKVHeads %d", where, len(v.Keys), len(v.Values), nkv)
	}
	for h := 0; h < nkv; h++ {
		if len(v.Keys[h]) != T*d || len(v.Values[h]) != T*d {
			return fmt.Errorf("%s: KV head %d has %d keys and %d values, want T*HeadDim = %d*%d", where, h, len(v.Keys[h]), len(v.Values[h]), T, d)
		}
	}
	if need.queries || need.preRoPE {
		tq := v.Tq()
		if tq < 1 && T > 0 {
			return fmt.Errorf("%s: no query rows (QueryPositions is empty)", where)
		}
		if need.queries && len(v.Queries) != tq*nq*d {
			return fmt.Errorf("%s: %d query values, want Tq*NumHeads*HeadDim = %d*%d*%d", where, len(v.Queries), tq, nq, d)
		}
		if need.preRoPE && len(v.PreRoPEQueries) != tq*nq*d {
			return fmt.Errorf("%s: %d pre-RoPE query values, want Tq*NumHeads*HeadDim = %d*%d*%d", where, len(v.PreRoPEQueries), tq, nq, d)
		}
	}
	if need.rope {
		if d%2 != 0 {
			return fmt.Errorf("%s: HeadDim %d is odd; RoPE rotates pairs", where, d)
		}
		if v.RoPE == nil || len(v.RoPE.InvFreq) != d/2 {
			n := -1
			if v.RoPE != nil {
				n = len(v.RoPE.InvFreq)
			}
			return fmt.Errorf("%s: need %d RoPE inverse frequencies (HeadDim/2), got %d", where, d/2, n)
		}
	}
	return nil
}

// filledScores returns [nkv][T] scores all equal to value.
func filledScores(nkv, T int, value float32) [][]float32 {
	out := make([][]float32, nkv)
	for h := range out {
		out[h] = make([]float32, T)
		for j := range out[h] {
			out[h][j] = value
		}
	}
	return out
}

// headMatrix copies rows [r0, r1) of head h out of a [rows, heads*d] activation into a
// row-major [r1-r0, d] float64 matrix.
func headMatrix(x []float32, r0, r1, heads, h, d int) blas64.General {
	m := blas64.General{Rows: r1 - r0, Cols: d, Stride: d, Data: make([]float64, (r1-r0)*d)}
	for r := r0; r < r1; r++ {
		src := x[r*heads*d+h*d : r*heads*d+(h+1)*d]
		dst := m.Data[(r-r0)*d : (r-r0+1)*d]
		for i, val := range src {
			dst[i] = float64(val)
		}
	}
	return m
}

// tokenMatrix turns one head's [n*d] keys or values into a row-major [n, d] float64
// matrix.
func tokenMatrix(x []float32, n, d int) blas64.General {
	m := blas64.General{Rows: n, Cols: d, Stride: d, Data: make([]float64, n*d)}
	for i, val := range x[:n*d] {
		m.Data[i] = float64(val)
	}
	return m
}

// rowNorms returns the Euclidean norm of every row of m.
func rowNorms(m blas64.General) []float64 {
	out := make([]float64, m.Rows)
	for r := range out {
		var s float64
		for _, x := range m.Data[r*m.Stride : r*m.Stride+m.Cols] {
			s += x * x
		}
		out[r] = math.Sqrt(s)
	}
	return out
}

// softmaxInPlace replaces x by softmax(x), subtracting the maximum first. Entries equal
// to -Inf get probability 0; if every entry is -Inf, x becomes all zeros.
func softmaxInPlace(x []float64) {
	m := math.Inf(-1)
	for _, v := range x {
		m = max(m, v)
	}
	if math.IsInf(m, -1) {
		clear(x)
		return
	}
	var sum float64
	for i, v := range x {
		e := math.Exp(v - m)
		x[i] = e
		sum += e
	}
	for i := range x {
		x[i] /= sum
	}
}

// pool1d smooths x along the sequence with a window of kernel values, stride 1, output
// as long as x, as PyTorch's F.avg_pool1d / F.max_pool1d with padding kernel/2 do (and
// for an odd kernel, as kvpress uses them, exactly so): output j pools inputs
// j-kernel/2 .. j-kernel/2+kernel-1. "avg" counts the padding as zeros and always
// divides by kernel (count_include_pad=True, PyTorch's default); "max" ignores the
// padding. For an even kernel PyTorch's output is one longer; this keeps its first
// len(x) values. kernel <= 1 returns a copy of x.
func pool1d(x []float64, kernel int, useMax bool) []float64 {
	out := make([]float64, len(x))
	if kernel <= 1 {
		copy(out, x)
		return out
	}
	pad := kernel / 2
	for j := range out {
		lo, hi := max(0, j-pad), min(len(x), j-pad+kernel)
		if useMax {
			m := math.Inf(-1)
			for _, v := range x[lo:hi] {
				m = max(m, v)
			}
			out[j] = m
		} else {
			var s float64
			for _, v := range x[lo:hi] {
				s += v
			}
			out[j] = s / float64(kernel)
		}
	}
	return out
}

// attentionProbs computes causal attention probabilities of the queries q [n, d] (at
// positions qpos) over the keys k [T, d] (at positions kpos): row r is
// softmax_j(scale * q_r.k_j) over the keys with kpos[j] <= qpos[r], 0 for the others.
// The result is row-major [n, T].
func attentionProbs(q blas64.General, qpos []int, k blas64.General, kpos []int, scale float64) []float64 {
	T := k.Rows
	out := blas64.General{Rows: q.Rows, Cols: T, Stride: T, Data: make([]float64, q.Rows*T)}
	if q.Rows == 0 || T == 0 {
		return out.Data
	}
	blas64.Gemm(blas.NoTrans, blas.Trans, scale, q, k, 0, out)
	for r := 0; r < q.Rows; r++ {
		row := out.Data[r*T : (r+1)*T]
		for j := range row {
			if kpos[j] > qpos[r] {
				row[j] = math.Inf(-1)
			}
		}
		softmaxInPlace(row)
	}
	return out.Data
}

// layerMax is the largest finite score over every head; ok is false when there is none.
func layerMax(scores [][]float32) (m float32, ok bool) {
	m = float32(math.Inf(-1))
	for _, s := range scores {
		for _, x := range s {
			if !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) && x > m {
				m, ok = x, true
			}
		}
	}
	return m, ok
}

// aboveAll returns a finite score strictly above every finite score of the layer: the
// maximum + 1, as kvpress pads its protected tokens (scores.max() + 1), or the next
// representable value when the maximum is too large for +1 to change it; 1 when the
// layer has no finite score.
func aboveAll(scores [][]float32) float32 {
	m, ok := layerMax(scores)
	if !ok {
		return 1
	}
	up := m + 1
	if up <= m {
		up = math.Nextafter32(m, float32(math.Inf(1)))
	}
	if math.IsInf(float64(up), 1) {
		return m // m is the largest float32: the best left is a tie
	}
	return up
}

// toFloat32 rounds float64 scores to float32.
func toFloat32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// parallelHeads runs f(g) for every KV head g < n concurrently and waits: heads are
// independent, and a scorer's layer at 16k tokens is seconds of float64 work.
func parallelHeads(n int, f func(g int)) {
	var wg sync.WaitGroup
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(g)
		}()
	}
	wg.Wait()
}
