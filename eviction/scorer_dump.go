package eviction

// Dumping a LayerView for outside checks: scripts/score_goldens.py reads such a file,
// recomputes every scorer with kvpress's formulas in PyTorch, and writes the scores to
// another safetensors file, which ReadScoreGoldens loads for comparison.
//
// Layer-view file (all F32, row-major):
//
//	queries           [Nq, Tq, D]   rotated queries (LayerView.Queries, head-major)
//	pre_rope_queries  [Nq, Tq, D]   queries before RoPE
//	keys              [Nkv, T, D]   rotated keys, as cached
//	values            [Nkv, T, D]
//	inv_freq          [D/2]         RoPE inverse frequencies (rounded to float32, as
//	                                transformers stores them)
//	positions         [T]           key positions (exact as float32 up to 2^24)
//	query_positions   [Tq]          query positions
//
// metadata: format "lukv-layerview/1", layer, num_heads, num_kv_heads, head_dim.

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/loader"
)

// LayerViewFormat names the layout DumpLayerView writes.
const LayerViewFormat = "lukv-layerview/1"

// maxExactPosition is the largest position a float32 holds exactly.
const maxExactPosition = 1 << 24

// DumpLayerView writes v to a safetensors file at path in the layout above. The view
// must be complete (queries, pre-RoPE queries and RoPE frequencies included).
func DumpLayerView(path string, v *LayerView) error {
	if err := checkView(v, viewNeeds{queries: true, preRoPE: true, rope: true}); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	T, tq, nq, nkv, d := v.T(), v.Tq(), v.NumHeads, v.NumKVHeads, v.HeadDim
	pos, err := positionsF32(v.Positions)
	if err != nil {
		return fmt.Errorf("%s: key %w", path, err)
	}
	qpos, err := positionsF32(v.QueryPositions)
	if err != nil {
		return fmt.Errorf("%s: query %w", path, err)
	}
	invFreq := make([]float32, len(v.RoPE.InvFreq))
	for i, f := range v.RoPE.InvFreq {
		invFreq[i] = float32(f)
	}
	tensors := []loader.WriteTensor{
		{Name: "queries", DType: loader.F32, Shape: []int{nq, tq, d}, Data: headMajor(v.Queries, tq, nq, d)},
		{Name: "pre_rope_queries", DType: loader.F32, Shape: []int{nq, tq, d}, Data: headMajor(v.PreRoPEQueries, tq, nq, d)},
		{Name: "keys", DType: loader.F32, Shape: []int{nkv, T, d}, Data: concatHeads(v.Keys)},
		{Name: "values", DType: loader.F32, Shape: []int{nkv, T, d}, Data: concatHeads(v.Values)},
		{Name: "inv_freq", DType: loader.F32, Shape: []int{d / 2}, Data: invFreq},
		{Name: "positions", DType: loader.F32, Shape: []int{T}, Data: pos},
		{Name: "query_positions", DType: loader.F32, Shape: []int{tq}, Data: qpos},
	}
	meta := map[string]string{
		"format": LayerViewFormat, "layer": strconv.Itoa(v.Layer), "num_heads": strconv.Itoa(nq),
		"num_kv_heads": strconv.Itoa(nkv), "head_dim": strconv.Itoa(d),
	}
	return loader.WriteSafetensors(path, tensors, meta)
}

// ReadLayerView reads a file DumpLayerView wrote back into a LayerView (inverse
// frequencies come back rounded to float32).
func ReadLayerView(path string) (*LayerView, error) {
	f, err := loader.OpenSafetensors(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	meta := f.Metadata()
	if meta["format"] != LayerViewFormat {
		return nil, fmt.Errorf("%s: metadata format %q, want %q", path, meta["format"], LayerViewFormat)
	}
	var ints [4]int
	for i, key := range []string{"layer", "num_heads", "num_kv_heads", "head_dim"} {
		if ints[i], err = strconv.Atoi(meta[key]); err != nil {
			return nil, fmt.Errorf("%s: metadata %s: %w", path, key, err)
		}
	}
	v := &LayerView{Layer: ints[0], NumHeads: ints[1], NumKVHeads: ints[2], HeadDim: ints[3]}
	nq, nkv, d := v.NumHeads, v.NumKVHeads, v.HeadDim
	if nq < 1 || nkv < 1 || d < 2 || d%2 != 0 {
		return nil, fmt.Errorf("%s: metadata heads %d/%d, head_dim %d are not a valid layer", path, nq, nkv, d)
	}
	get := func(name string, rank int) ([]float32, []int, error) {
		info, ok := f.Info(name)
		if !ok {
			return nil, nil, fmt.Errorf("%s: tensor %q: %w", path, name, loader.ErrMissingTensor)
		}
		if len(info.Shape) != rank {
			return nil, nil, fmt.Errorf("%s: tensor %q has shape %v, want rank %d", path, name, info.Shape, rank)
		}
		data, err := f.Float32(name)
		return data, info.Shape, err
	}
	pos, ps, err := get("positions", 1)
	if err != nil {
		return nil, err
	}
	qpos, qs, err := get("query_positions", 1)
	if err != nil {
		return nil, err
	}
	T, tq := ps[0], qs[0]
	want := map[string][]int{
		"queries": {nq, tq, d}, "pre_rope_queries": {nq, tq, d},
		"keys": {nkv, T, d}, "values": {nkv, T, d}, "inv_freq": {d / 2},
	}
	data := map[string][]float32{}
	for name, shape := range want {
		x, got, err := get(name, len(shape))
		if err != nil {
			return nil, err
		}
		for i := range shape {
			if got[i] != shape[i] {
				return nil, fmt.Errorf("%s: tensor %q has shape %v, want %v", path, name, got, shape)
			}
		}
		data[name] = x
	}
	v.Positions, v.QueryPositions = intsOf(pos), intsOf(qpos)
	v.Queries = rowMajor(data["queries"], tq, nq, d)
	v.PreRoPEQueries = rowMajor(data["pre_rope_queries"], tq, nq, d)
	v.Keys, v.Values = make([][]float32, nkv), make([][]float32, nkv)
	for h := 0; h < nkv; h++ {
		v.Keys[h] = data["keys"][h*T*d : (h+1)*T*d]
		v.Values[h] = data["values"][h*T*d : (h+1)*T*d]
	}
	v.RoPE = &backend.RoPE{InvFreq: make([]float64, d/2)}
	for i, x := range data["inv_freq"] {
		v.RoPE.InvFreq[i] = float64(x)
	}
	return v, nil
}

// ReadScoreGoldens reads the scores scripts/score_goldens.py wrote: one [Nkv, T] F32
// tensor per scorer, named by its CLI name (see ScorerNames). It returns them as
// name -> [Nkv][T].
func ReadScoreGoldens(path string) (map[string][][]float32, error) {
	f, err := loader.OpenSafetensors(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][][]float32{}
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		if len(info.Shape) != 2 {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, want [Nkv, T]", path, name, info.Shape)
		}
		data, err := f.Float32(name)
		if err != nil {
			return nil, err
		}
		heads, T := info.Shape[0], info.Shape[1]
		out[name] = make([][]float32, heads)
		for h := range out[name] {
			out[name][h] = data[h*T : (h+1)*T]
		}
	}
	if len(out) == 0 {
		return nil, errors.New(path + ": no score tensors")
	}
	return out, nil
}

// positionsF32 converts positions to float32, refusing any a float32 cannot hold
// exactly.
func positionsF32(p []int) ([]float32, error) {
	out := make([]float32, len(p))
	for i, x := range p {
		if x < 0 || x > maxExactPosition {
			return nil, fmt.Errorf("position %d (index %d) is outside [0, 2^24], not exact as float32", x, i)
		}
		out[i] = float32(x)
	}
	return out, nil
}

// intsOf converts float32 positions back to ints.
func intsOf(x []float32) []int {
	out := make([]int, len(x))
	for i, v := range x {
		out[i] = int(v)
	}
	return out
}

// headMajor turns [rows, heads*d] into [heads, rows, d].
func headMajor(x []float32, rows, heads, d int) []float32 {
	out := make([]float32, len(x))
	for r := 0; r < rows; r++ {
		for h := 0; h < heads; h++ {
			copy(out[(h*rows+r)*d:(h*rows+r+1)*d], x[(r*heads+h)*d:(r*heads+h+1)*d])
		}
	}
	return out
}

// rowMajor turns [heads, rows, d] back into [rows, heads*d].
func rowMajor(x []float32, rows, heads, d int) []float32 {
	out := make([]float32, len(x))
	for r := 0; r < rows; r++ {
		for h := 0; h < heads; h++ {
			copy(out[(r*heads+h)*d:(r*heads+h+1)*d], x[(h*rows+r)*d:(h*rows+r+1)*d])
		}
	}
	return out
}

// concatHeads joins [heads][n] into one [heads*n] slice.
func concatHeads(x [][]float32) []float32 {
	var out []float32
	for _, h := range x {
		out = append(out, h...)
	}
	return out
}
