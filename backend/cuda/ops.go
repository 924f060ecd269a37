//go:build cuda

package cuda

// Tensor ops other than MatMul and Attention: Embed, RMSNorm, HeadRMSNorm, the
// elementwise Add, AddBias and SwiGLU, and RoPE (which fusion.go may hold back and merge
// into the cache append). Kernels: kernels/embed.cu, norm.cu, elementwise.cu, rope.cu.

import (
	"fmt"
	"slices"

	"github.com/lukv/lukv/backend"
)

func shapePanic(op string, ts ...*Tensor) {
	s := op + ": shapes"
	for _, t := range ts {
		s += fmt.Sprintf(" [%d, %d]", t.rows, t.cols)
	}
	panic("cuda: " + s + " do not fit")
}

func count(t *Tensor) int64 { return int64(t.rows) * int64(t.cols) }

// embedKernels are the Embed kernels by the table's dtype.
var embedKernels = [3]string{f32: "embed_f32", bf16: "embed_bf16", f16: "embed_f16"}

// Embed: out[i,:] = table[ids[i],:].
func (b *Backend) Embed(out, table backend.Tensor, ids []int) {
	defer b.enter()()
	o, tb := b.f32(out, "Embed out"), b.tensor(table, "Embed table")
	if o.rows != len(ids) || o.cols != tb.cols {
		shapePanic(fmt.Sprintf("Embed of %d ids", len(ids)), o, tb)
	}
	if len(ids) == 0 || o.cols == 0 {
		return
	}
	host := make([]int32, len(ids))
	for i, id := range ids {
		if id < 0 || id >= tb.rows {
			panic(fmt.Sprintf("cuda: Embed: id %d outside the table's %d rows", id, tb.rows))
		}
		host[i] = int32(id)
	}
	if err := b.ids.uploadInt32(host, "Embed ids"); err != nil {
		panic(err)
	}
	b.launch(embedKernels[tb.dt], dim3{len(ids), 1, 1}, dim3{256, 1, 1}, 0, o.ptr, tb.ptr, b.ids.ptr, i32(o.cols, "Embed cols"))
}

// RMSNorm: out[i,:] = x[i,:] / sqrt(mean(x[i,:]^2) + eps) * w.
func (b *Backend) RMSNorm(out, x, w backend.Tensor, eps float32) {
	defer b.enter()()
	o, xm, wm := b.f32(out, "RMSNorm out"), b.f32(x, "RMSNorm x"), b.f32(w, "RMSNorm w")
	if o.rows != xm.rows || o.cols != xm.cols || count(wm) != int64(xm.cols) {
		shapePanic("RMSNorm", o, xm, wm)
	}
	if xm.rows == 0 || xm.cols == 0 {
		return
	}
	b.launch("rmsnorm", dim3{xm.rows, 1, 1}, dim3{256, 1, 1}, 0, o.ptr, xm.ptr, wm.ptr, i32(xm.cols, "RMSNorm cols"), eps)
}

// HeadRMSNorm applies RMSNorm with w [1, headDim] to every head slice of x, in place.
func (b *Backend) HeadRMSNorm(x, w backend.Tensor, headDim int, eps float32) {
	defer b.enter()()
	xm, wm := b.f32(x, "HeadRMSNorm x"), b.f32(w, "HeadRMSNorm w")
	if headDim <= 0 || count(wm) != int64(headDim) {
		shapePanic(fmt.Sprintf("HeadRMSNorm headDim %d", headDim), xm, wm)
	}
	slices := int64(xm.rows) * int64(xm.cols/headDim)
	if slices == 0 {
		return
	}
	const warps = 4
	b.launch("head_rmsnorm", dim3{int((slices + warps - 1) / warps), 1, 1}, dim3{32 * warps, 1, 1}, 0,
		xm.ptr, wm.ptr, i32(xm.rows, "rows"), i32(xm.cols, "cols"), i32(headDim, "headDim"), eps)
}

// AddBias: x[i,:] += bias[0,:].
func (b *Backend) AddBias(x, bias backend.Tensor) {
	defer b.enter()()
	xm, bm := b.f32(x, "AddBias x"), b.f32(bias, "AddBias bias")
	if count(bm) != int64(xm.cols) {
		shapePanic("AddBias", xm, bm)
	}
	if n := count(xm); n > 0 {
		b.launch("add_bias", gridFor(n, b.sms), dim3{256, 1, 1}, 0, xm.ptr, bm.ptr, n, i32(xm.cols, "AddBias cols"))
	}
}

// Add: x += y. Unless Options.Unfused, when y is the output of the one decode matmul held
// back, the add is done by that matmul's launch (fusion.go fuseAdd).
func (b *Backend) Add(x, y backend.Tensor) {
	defer b.lock()()
	xm, ym := b.f32Held(x, "Add x"), b.f32Held(y, "Add y")
	if xm.rows != ym.rows || xm.cols != ym.cols {
		shapePanic("Add", xm, ym)
	}
	if !b.opt.Unfused && b.pend.fuseAdd(xm, ym) {
		return
	}
	b.flush()
	if n := count(xm); n > 0 {
		b.launch("add_inplace", gridFor(n, b.sms), dim3{256, 1, 1}, 0, xm.ptr, ym.ptr, n)
	}
}

// SwiGLU: out = silu(gate) * up. Unless Options.Unfused, when gate and up are the outputs
// of the two decode matmuls held back, their launch computes it (fusion.go fuseSwiGLU).
func (b *Backend) SwiGLU(out, gate, up backend.Tensor) {
	defer b.lock()()
	o, g, u := b.f32Held(out, "SwiGLU out"), b.f32Held(gate, "SwiGLU gate"), b.f32Held(up, "SwiGLU up")
	if count(o) != count(g) || count(g) != count(u) {
		shapePanic("SwiGLU", o, g, u)
	}
	if !b.opt.Unfused && b.pend.fuseSwiGLU(o, g, u) {
		return
	}
	b.flush()
	if n := count(o); n > 0 {
		b.launch("swiglu", gridFor(n, b.sms), dim3{256, 1, 1}, 0, o.ptr, g.ptr, u.ptr, n)
	}
}

// RoPE rotates every head of x [n, heads*headDim] in place; row i is at positions[i].
// The inverse frequencies are uploaded only when they change (every layer rotates with
// the same ones). Unless Options.Unfused, the rotation is held back (see the top of the
// file): a second RoPE at the same positions joins it, and an Attention over the rotated
// q and k performs it in its cache append; positions that count up from the first need
// no upload (the kernel takes the first).
func (b *Backend) RoPE(x backend.Tensor, headDim int, positions []int, rope *backend.RoPE) {
	defer b.lock()()
	xm := b.f32Held(x, "RoPE x")
	if headDim <= 0 || headDim%2 != 0 || len(positions) != xm.rows || len(rope.InvFreq) != headDim/2 || xm.cols%headDim != 0 {
		panic(fmt.Sprintf("cuda: RoPE: x [%d, %d], headDim %d, %d positions, %d inverse frequencies do not fit",
			xm.rows, xm.cols, headDim, len(positions), len(rope.InvFreq)))
	}
	total := int64(xm.rows) * int64(xm.cols/headDim) * int64(headDim/2)
	if total == 0 {
		return
	}
	freq := make([]float32, len(rope.InvFreq))
	for j, f := range rope.InvFreq {
		freq[j] = float32(f) // backend/rope.go: the angle is float32(p) * float32(f)
	}
	if !slices.Equal(freq, b.freqHost) {
		b.flush() // a held-back rotation reads the old frequencies
		if err := b.invFreq.uploadFloat32(freq, "RoPE inverse frequencies"); err != nil {
			panic(err)
		}
		b.freqHost = freq
	}
	pos := make([]int32, len(positions))
	for i, p := range positions {
		pos[i] = i32(p, "RoPE position")
	}
	if b.opt.Unfused {
		b.flush()
		b.uploadPositions(pos)
		b.launch("rope", gridFor(total, b.sms), dim3{256, 1, 1}, 0, xm.ptr, b.positions.ptr, b.invFreq.ptr,
			i32(xm.rows, "RoPE rows"), i32(xm.cols, "RoPE cols"), i32(headDim, "headDim"))
		return
	}
	call := ropeCall{ptr: xm.ptr, rows: xm.rows, cols: xm.cols, keep: xm}
	if b.pend.joinsRope(call, headDim, pos) {
		b.pend.rope = append(b.pend.rope, call)
		return
	}
	b.flush()
	b.pend.rope, b.pend.ropeHD, b.pend.ropePos = []ropeCall{call}, headDim, pos
	if !consecutive(pos) {
		b.uploadPositions(pos) // after the flush: a flushed rotation read the old ones
	}
}

// uploadPositions puts pos in b.positions unless it holds them already.
func (b *Backend) uploadPositions(pos []int32) {
	if slices.Equal(pos, b.posHost) {
		return
	}
	if err := b.positions.uploadInt32(pos, "RoPE positions"); err != nil {
		panic(err)
	}
	b.posHost = pos
}

// consecutive reports whether pos counts up by one from pos[0] (then the rotation
// kernels take pos[0] instead of the list).
func consecutive(pos []int32) bool {
	for i := range pos {
		if pos[i] != pos[0]+int32(i) {
			return false
		}
	}
	return true
}
