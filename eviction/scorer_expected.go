package eviction

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/lukv/lukv/backend"
)

// ExpectedAttentionScorer ranks tokens by the attention that future queries are expected
// to pay them (kvpress ExpectedAttentionPress, expected_attention_press.py; LU-KV's
// default scorer). It models the queries of one query head as a Gaussian: from the
// pre-RoPE queries of the view it takes their mean mu [D] and covariance Sigma [D, D]
// (population covariance, divided by the number of queries), rotates both with the RoPE
// rotation averaged over the NFuture positions that follow the last key,
//
//	Rbar = mean over p = P+1 .. P+NFuture of R(p)   (P = the last key's position),
//	mu' = Rbar mu,  Sigma' = Rbar Sigma Rbar^T,
//
// where R(p) rotates every pair (i, i+D/2) by the angle p*InvFreq[i] ("rotate half",
// as Hugging Face Llama), and scores key j of the group by the log of the expected
// unnormalised attention E[exp(q.k_j/sqrt(D))] under that Gaussian:
//
//	z_j = mu'.k_j/sqrt(D) + k_j^T Sigma' k_j/(2D),   a = softmax_j(z).
//
// The softmax runs over the keys after the first NSink; a is averaged over the query
// heads of the KV group; then, with UseVNorm, score_j = (mean a_j + Epsilon) * ||v_j||
// (without it, score_j = mean a_j and Epsilon is unused, as in kvpress). The first
// NSink tokens, left out of the softmax, score above every other token of the layer
// (the layer's maximum + 1, as kvpress pads them). If T <= NSink every token scores 1.
//
// Which queries feed the statistics: kvpress drops the first n_sink hidden states
// ("outliers"). Here a query row is dropped when its position is at or before the
// NSink-th key's, which after a prefill (queries = keys) is the same thing; for a
// decode-time view (queries = the most recent tokens) no row is dropped. If that
// leaves no row, all rows are used. The future positions start after the last key's
// position; kvpress starts them at q_len (the number of hidden states), which equals
// it after a prefill from position 0. The rotation uses the view's RoPE frequencies
// only: a rope type whose Hugging Face implementation also scales cos and sin
// (attention_scaling != 1, e.g. YaRN) would differ by that factor.
type ExpectedAttentionScorer struct {
	Epsilon       float32 // added to the mean attention before scaling by ||v_j|| (LU-KV uses 0.02; kvpress's default is 0)
	NFuture       int     // future positions the RoPE rotation is averaged over; 0 means 512
	NSink         int     // first tokens left out of the statistics and the softmax, and protected
	UseCovariance bool    // include the k^T Sigma' k/(2D) term
	UseVNorm      bool    // scale by the value norms
}

// Defaults of ExpectedAttentionScorer (LU-KV's configuration of kvpress's press).
const (
	DefaultEAEpsilon = 0.02
	DefaultEANFuture = 512
	DefaultEANSink   = 4
)

// DefaultExpectedAttentionScorer returns the configuration LU-KV profiles and applies:
// epsilon 0.02, 512 future positions, 4 sink tokens, covariance and value norms on.
func DefaultExpectedAttentionScorer() ExpectedAttentionScorer {
	return ExpectedAttentionScorer{Epsilon: DefaultEAEpsilon, NFuture: DefaultEANFuture, NSink: DefaultEANSink,
		UseCovariance: true, UseVNorm: true}
}

// Name is the scorer's CLI name.
func (ExpectedAttentionScorer) Name() string { return "expected-attention" }

func (ExpectedAttentionScorer) needs() viewNeeds { return viewNeeds{preRoPE: true, rope: true} }

// Validate rejects negative counts and a non-finite epsilon.
func (s ExpectedAttentionScorer) Validate() error {
	if s.NFuture < 0 || s.NSink < 0 {
		return fmt.Errorf("expected-attention scorer: NFuture (%d) and NSink (%d) must be >= 0", s.NFuture, s.NSink)
	}
	if e := float64(s.Epsilon); math.IsNaN(e) || math.IsInf(e, 0) {
		return fmt.Errorf("expected-attention scorer: Epsilon %v is not finite", s.Epsilon)
	}
	return nil
}

// Score returns [Nkv][T] expected-attention scores, or nil if CheckScorerView rejects
// the view or the configuration.
func (s ExpectedAttentionScorer) Score(v *LayerView) [][]float32 {
	if CheckScorerView(s, v) != nil {
		return nil
	}
	T, nq, nkv, d := v.T(), v.NumHeads, v.NumKVHeads, v.HeadDim
	group := nq / nkv
	ns := s.NSink
	if T <= ns {
		return filledScores(nkv, T, 1)
	}
	nFuture := s.NFuture
	if nFuture == 0 {
		nFuture = DefaultEANFuture
	}
	rows := s.statisticsRows(v)
	cbar, sbar := averageRotation(v.RoPE, v.Positions[T-1]+1, nFuture)
	n := T - ns
	invSqrtD := 1 / math.Sqrt(float64(d))

	out := make([][]float32, nkv)
	tails := make([][]float32, nkv) // the non-sink part of every head
	parallelHeads(nkv, func(g int) {
		keys := tokenMatrix(v.Keys[g][ns*d:], n, d)
		mean := make([]float64, n)
		for hq := 0; hq < group; hq++ {
			mu, cov := queryStatistics(v.PreRoPEQueries, rows, nq, g*group+hq, d, s.UseCovariance)
			rotatePairs(mu, cbar, sbar)
			z := make([]float64, n)
			blas64.Gemv(blas.NoTrans, invSqrtD, keys, blas64.Vector{N: d, Inc: 1, Data: mu}, 0, blas64.Vector{N: n, Inc: 1, Data: z})
			if s.UseCovariance {
				rotateCovariance(cov, cbar, sbar)
				// Row j of K Sigma' dotted with k_j is k_j^T Sigma' k_j.
				ks := blas64.General{Rows: n, Cols: d, Stride: d, Data: make([]float64, n*d)}
				blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, keys, cov, 0, ks)
				for j := range z {
					var q float64
					for i := 0; i < d; i++ {
						q += ks.Data[j*d+i] * keys.Data[j*d+i]
					}
					z[j] += q / float64(2*d)
				}
			}
			softmaxInPlace(z)
			for j, a := range z {
				mean[j] += a
			}
		}
		for j := range mean {
			mean[j] /= float64(group)
		}
		if s.UseVNorm {
			norms := rowNorms(tokenMatrix(v.Values[g][ns*d:], n, d))
			for j := range mean {
				mean[j] = (mean[j] + float64(s.Epsilon)) * norms[j]
			}
		}
		out[g] = make([]float32, T)
		copy(out[g][ns:], toFloat32(mean))
		tails[g] = out[g][ns:]
	})
	if ns > 0 {
		top := aboveAll(tails)
		for g := range out {
			for j := 0; j < ns; j++ {
				out[g][j] = top
			}
		}
	}
	return out
}

// statisticsRows lists the query rows the mean and covariance are taken over: those
// after the NSink-th key's position (all rows if that leaves none).
func (s ExpectedAttentionScorer) statisticsRows(v *LayerView) []int {
	tq := v.Tq()
	rows := make([]int, 0, tq)
	sinkEnd := math.MinInt
	if s.NSink > 0 {
		sinkEnd = v.Positions[s.NSink-1]
	}
	for r, p := range v.QueryPositions {
		if p > sinkEnd {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		for r := 0; r < tq; r++ {
			rows = append(rows, r)
		}
	}
	return rows
}

// queryStatistics returns the mean [D] of query head h over the given rows of x
// [Tq, heads*D] and, if withCov, their population covariance [D, D] (sum of outer
// products of the centred rows divided by the number of rows, as kvpress computes it).
func queryStatistics(x []float32, rows []int, heads, h, d int, withCov bool) ([]float64, blas64.General) {
	n := len(rows)
	// ct holds the rows as columns, [D, n]: C^T C is then a NoTrans x Trans product,
	// which gonum computes with unit-stride dot products (much faster than Trans x NoTrans).
	ct := blas64.General{Rows: d, Cols: n, Stride: n, Data: make([]float64, d*n)}
	mu := make([]float64, d)
	for i, r := range rows {
		src := x[r*heads*d+h*d : r*heads*d+(h+1)*d]
		for k, val := range src {
			ct.Data[k*n+i] = float64(val)
			mu[k] += float64(val)
		}
	}
	for k := range mu {
		mu[k] /= float64(n)
	}
	if !withCov {
		return mu, blas64.General{}
	}
	for k := 0; k < d; k++ {
		for i := 0; i < n; i++ {
			ct.Data[k*n+i] -= mu[k]
		}
	}
	cov := blas64.General{Rows: d, Cols: d, Stride: d, Data: make([]float64, d*d)}
	blas64.Gemm(blas.NoTrans, blas.Trans, 1/float64(n), ct, ct, 0, cov)
	return mu, cov
}

// averageRotation returns the mean cosine and sine of every rotated pair's angle over
// the positions first .. first+n-1: Rbar rotates pair (i, i+D/2) by the 2x2 block
// [[cbar_i, -sbar_i], [sbar_i, cbar_i]]. Angles are formed in float32 (rope.CosSin, as
// transformers does).
func averageRotation(rope *backend.RoPE, first, n int) (cbar, sbar []float64) {
	positions := make([]int, n)
	for i := range positions {
		positions[i] = first + i
	}
	cos, sin := rope.CosSin(positions)
	half := len(rope.InvFreq)
	cbar, sbar = make([]float64, half), make([]float64, half)
	for p := 0; p < n; p++ {
		for i := 0; i < half; i++ {
			cbar[i] += float64(cos[p*half+i])
			sbar[i] += float64(sin[p*half+i])
		}
	}
	for i := range cbar {
		cbar[i] /= float64(n)
		sbar[i] /= float64(n)
	}
	return cbar, sbar
}

// rotatePairs replaces x [D] by Rbar x.
func rotatePairs(x, cbar, sbar []float64) {
	half := len(cbar)
	for i := 0; i < half; i++ {
		a, b := x[i], x[i+half]
		x[i] = cbar[i]*a - sbar[i]*b
		x[i+half] = sbar[i]*a + cbar[i]*b
	}
}

// rotateCovariance replaces the [D, D] matrix m by Rbar m Rbar^T: Rbar is applied to
// every column (Rbar m), then to every row (rows of (Rbar m) Rbar^T are Rbar times the
// rows of Rbar m).
func rotateCovariance(m blas64.General, cbar, sbar []float64) {
	d := m.Rows
	col := make([]float64, d)
	for c := 0; c < d; c++ {
		for r := 0; r < d; r++ {
			col[r] = m.Data[r*m.Stride+c]
		}
		rotatePairs(col, cbar, sbar)
		for r := 0; r < d; r++ {
			m.Data[r*m.Stride+c] = col[r]
		}
	}
	for r := 0; r < d; r++ {
		rotatePairs(m.Data[r*m.Stride:r*m.Stride+d], cbar, sbar)
	}
}
