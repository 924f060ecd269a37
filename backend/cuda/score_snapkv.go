//go:build cuda

package cuda

// SnapKV on the device (kernels/score_snapkv.cu): the attention of the last Window
// queries over the keys before them, averaged over the window rows, pooled along the
// keys and averaged over the query group; the window itself scores above every other
// token. Host twin: eviction SnapKVScorer.

import (
	"math"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// Shapes of the SnapKV kernels (kernels/score_snapkv.cu).
const (
	skTile          = 64      // SK_RT, SK_KT: window rows and keys per tile
	skP             = 68      // SK_P: padded tile row
	skMaxHeadDim    = 128     // two tiles of D x 68 floats
	snapLogitsBytes = 1 << 28 // the window logits of at most this many bytes are held at once
)

func snapSmem(d int) int { return 2 * d * skP * 4 }

// scoreSnapKV runs SnapKV: the window logits are held for at most snapLogitsBytes worth
// of query heads at a time.
func (b *Backend) scoreSnapKV(st *scoreState, spec backend.ScorerSpec, in backend.LayerInput, q, k *Tensor, out cu.DevicePtr) error {
	T, nq, nkv, d := len(in.Positions), in.NumHeads, in.NumKVHeads, in.HeadDim
	w := min(spec.Window, T)
	if T <= w {
		return fillScores(out, nkv*T, 1)
	}
	if err := st.setPositions(in.Positions); err != nil {
		return err
	}
	prefix := T - w
	prefixP := (prefix + 3) / 4 * 4
	perHead := int64(w) * int64(prefixP) * 4
	hchunk := int(min(int64(nq), max(1, snapLogitsBytes/perHead)))
	rowTiles := ceilDiv(w, skTile)
	kx := min(max(3*b.sms/(hchunk*rowTiles), 1), ceilDiv(T, skTile)) // one wave of three blocks per multiprocessor
	kpb := ceilDiv(ceilDiv(T, kx), skTile) * skTile
	kx = ceilDiv(T, kpb)
	if err := ensureAll("snapkv scratch",
		&st.logits, int64(hchunk)*perHead, &st.pml, int64(hchunk*w*kx*2)*4, &st.ms, int64(hchunk*w*2)*8,
		&st.avg, int64(nq)*int64(prefix)*8); err != nil {
		return err
	}
	scale := float32(1 / math.Sqrt(float64(d)))
	for h0 := 0; h0 < nq; h0 += hchunk {
		hc := min(hchunk, nq-h0)
		b.launch("snap_logits", dim3{kx, hc, rowTiles}, dim3{256, 1, 1}, snapSmem(d),
			st.logits.ptr, st.pml.ptr, q.ptr, k.ptr, st.pos.ptr, int32(T), int32(nq), int32(nkv), int32(d),
			int32(w), int32(prefix), int32(prefixP), int32(h0), int32(kpb), scale)
		b.launch("snap_stats", dim3{ceilDiv(hc*w, 256), 1, 1}, dim3{256, 1, 1}, 0,
			st.ms.ptr, st.pml.ptr, int32(hc*w), int32(kx))
		b.launch("snap_reduce", dim3{ceilDiv(prefix, 256), hc, 1}, dim3{256, 1, 1}, 0,
			st.avg.ptr, st.logits.ptr, st.ms.ptr, int32(w), int32(prefix), int32(prefixP), int32(h0))
	}
	b.launch("snap_pool", dim3{ceilDiv(prefix, 256), nkv, 1}, dim3{256, 1, 1}, 0,
		out, st.avg.ptr, int32(T), int32(prefix), int32(nq), int32(nkv), int32(spec.Kernel), boolInt32(spec.MaxPool))
	// The window scores above every other token of the layer.
	b.launch("layer_protect", dim3{1, 1, 1}, dim3{1024, 1, 1}, 0,
		out, int32(nkv), int32(T), int32(0), int32(prefix), int32(0), int32(prefix), int32(0))
	return nil
}
