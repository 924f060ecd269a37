//go:build cuda

package cuda

// The key-only scorers on the device (kernels/score_keys.cu): KeyDiff (negative cosine
// similarity of each key to the mean normalised key) and K-norm (negative key norm),
// both in double as the host computes them. Host twins: eviction KeyDiffScorer,
// KNormScorer.

import (
	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// kdMaxHeadDim is the largest head dim of the KeyDiff kernels (KD_MAXD).
const kdMaxHeadDim = 256

// scoreKeyDiff runs KeyDiff: partial anchors over row slices, then the scores.
func (b *Backend) scoreKeyDiff(st *scoreState, in backend.LayerInput, k *Tensor, out cu.DevicePtr) error {
	T, nkv, d := len(in.Positions), in.NumKVHeads, in.HeadDim
	splits := min(max(ceilDiv(2*b.sms, nkv), 1), ceilDiv(T, 64))
	rpb := ceilDiv(T, splits)
	splits = ceilDiv(T, rpb)
	if err := st.kd.ensure(int64(nkv*splits*d)*8, "keydiff anchors"); err != nil {
		return err
	}
	b.launch("kd_anchor_partial", dim3{nkv, splits, 1}, dim3{256, 1, 1}, 0,
		st.kd.ptr, k.ptr, int32(T), int32(nkv), int32(d), int32(rpb))
	gx := min(max(ceilDiv(4*b.sms, nkv), 1), ceilDiv(T, 8))
	b.launch("kd_scores", dim3{gx, nkv, 1}, dim3{256, 1, 1}, 0,
		out, st.kd.ptr, k.ptr, int32(T), int32(nkv), int32(d), int32(splits))
	return nil
}

// scoreKNorm runs K-norm: one warp per (token, head).
func (b *Backend) scoreKNorm(in backend.LayerInput, k *Tensor, out cu.DevicePtr) error {
	T, nkv, d := len(in.Positions), in.NumKVHeads, in.HeadDim
	b.launch("knorm_scores", dim3{ceilDiv(T*nkv, 8), 1, 1}, dim3{256, 1, 1}, 0,
		out, k.ptr, int32(T), int32(nkv), int32(d))
	return nil
}
