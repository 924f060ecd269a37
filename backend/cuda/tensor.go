//go:build cuda

package cuda

// Tensors: the device Tensor and its dtypes, the backend.Backend methods that make,
// view, read and free them (Weight, Alloc, Free, RowView, Rows, Read), and the exact
// float32 to bfloat16 / float16 conversions behind WeightPolicy.

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// dtype is a tensor's element type on the device.
type dtype uint8

const (
	f32  dtype = iota // float32: activations, vectors, weights that need it
	bf16              // bfloat16 (raw 16-bit words)
	f16               // IEEE half (raw 16-bit words)
)

func (d dtype) size() int64 {
	if d == f32 {
		return 4
	}
	return 2
}

func (d dtype) String() string { return [...]string{"float32", "bfloat16", "float16"}[d] }

// Tensor is a row-major [rows, cols] matrix in device memory. Activations are always
// float32; weights may be bfloat16 or float16 (see WeightPolicy). A row view shares its
// parent's memory and keeps the parent alive.
type Tensor struct {
	rows, cols int
	dt         dtype
	ptr        cu.DevicePtr
	size       int64   // bytes owned; 0 for views
	parent     *Tensor // the owner, for views
	cleanup    runtime.Cleanup
	freed      bool
}

func (t *Tensor) Rows() int { return t.rows }
func (t *Tensor) Cols() int { return t.cols }

// DType is the storage type: "float32", "bfloat16" or "float16".
func (t *Tensor) DType() string { return t.dt.String() }

// own registers the cleanup that returns t's memory when t is dropped without Free.
func (b *Backend) own(t *Tensor) *Tensor {
	if t.size > 0 {
		t.cleanup = runtime.AddCleanup(t, b.pool.schedule, allocation{ptr: t.ptr, size: t.size, pooled: true})
	}
	return t
}

// newTensor allocates an owned tensor of the given type (contents undefined).
func (b *Backend) newTensor(rows, cols int, dt dtype, what string) (*Tensor, error) {
	if rows < 0 || cols < 0 {
		return nil, fmt.Errorf("cuda: %s: negative shape [%d, %d]", what, rows, cols)
	}
	size := int64(rows) * int64(cols) * dt.size()
	ptr, err := b.allocTensor(size, what)
	if err != nil {
		return nil, err
	}
	return b.own(&Tensor{rows: rows, cols: cols, dt: dt, ptr: ptr, size: size}), nil
}

// tensor checks that t is a live tensor of this backend, any dtype.
func (b *Backend) tensor(t backend.Tensor, what string) *Tensor {
	ct, ok := t.(*Tensor)
	if !ok {
		panic(fmt.Sprintf("cuda: %s: tensor of type %T does not belong to the CUDA backend", what, t))
	}
	if ct.freed || (ct.parent != nil && ct.parent.freed) {
		panic(fmt.Sprintf("cuda: %s: tensor [%d, %d] used after Free", what, ct.rows, ct.cols))
	}
	return ct
}

// f32 is tensor, widening a bfloat16 / float16 tensor to float32 in place first (the
// elementwise kernels read float32 only; in the forward pass only MatMul's w and
// Embed's table are ever narrow, and those read every dtype).
func (b *Backend) f32(t backend.Tensor, what string) *Tensor {
	ct := b.tensor(t, what)
	if ct.dt == f32 {
		return ct
	}
	count := int64(ct.rows) * int64(ct.cols)
	ptr, err := b.allocTensor(count*4, what+": widening to float32")
	if err != nil {
		panic(err)
	}
	if count > 0 {
		b.launch(widenKernels[ct.dt], gridFor(count, b.sms), dim3{256, 1, 1}, 0, ptr, ct.ptr, count)
	}
	ct.cleanup.Stop()
	b.pool.put(ct.ptr, ct.size)
	ct.ptr, ct.size, ct.dt = ptr, count*4, f32
	b.own(ct)
	return ct
}

// widenKernels convert a narrow tensor to float32, by its dtype.
var widenKernels = [3]string{bf16: "widen_bf16", f16: "widen_f16"}

// Weight uploads data [rows, cols]. Vectors (rows == 1) stay float32; matrices are
// stored as the backend's WeightPolicy says.
func (b *Backend) Weight(data []float32, rows, cols int) (backend.Tensor, error) {
	if rows < 0 || cols < 0 || len(data) != rows*cols {
		return nil, fmt.Errorf("cuda: weight of %d values does not fill [%d, %d]", len(data), rows, cols)
	}
	defer b.enter()()
	dt := f32
	var narrow []uint16
	if rows > 1 {
		switch b.opt.Weights {
		case WeightsExact:
			if h, ok := toBF16Exact(data); ok {
				dt, narrow = bf16, h
			} else if h, ok := toF16Exact(data); ok {
				dt, narrow = f16, h
			}
		case WeightsBF16:
			dt, narrow = bf16, toBF16Rounded(data)
		}
	}
	t, err := b.newTensor(rows, cols, dt, fmt.Sprintf("weight [%d, %d] %s", rows, cols, dt))
	if err != nil {
		return nil, err
	}
	if t.size == 0 {
		return t, nil
	}
	src := unsafe.Pointer(&data[0])
	if narrow != nil {
		src = unsafe.Pointer(&narrow[0])
	}
	if err := cu.MemcpyHtoD(t.ptr, src, t.size); err != nil {
		return nil, fmt.Errorf("cuda: weight [%d, %d]: copy to device: %w", rows, cols, err)
	}
	return t, nil
}

// Alloc returns a zeroed float32 tensor. Out of device memory it panics with an error
// wrapping backend.ErrOutOfMemory (backend.Backend.Alloc has no error result).
func (b *Backend) Alloc(rows, cols int) backend.Tensor {
	defer b.enter()()
	t, err := b.newTensor(rows, cols, f32, fmt.Sprintf("activation [%d, %d]", rows, cols))
	if err != nil {
		panic(err)
	}
	if t.size > 0 {
		if err := cu.MemsetD32Async(t.ptr, 0, t.size/4, cu.NoStream); err != nil {
			panic(fmt.Errorf("cuda: zeroing [%d, %d]: %w", rows, cols, err))
		}
	}
	return t
}

// Free returns t's memory to the backend's pool now. Views and freed tensors are left
// alone.
func (b *Backend) Free(t backend.Tensor) {
	ct, ok := t.(*Tensor)
	if !ok || ct.freed || ct.parent != nil {
		return
	}
	defer b.enter()()
	ct.cleanup.Stop()
	b.pool.put(ct.ptr, ct.size)
	ct.ptr, ct.size, ct.freed = 0, 0, true
}

// RowView is row i of t as a [1, cols] float32 tensor sharing t's memory.
func (b *Backend) RowView(t backend.Tensor, i int) backend.Tensor {
	defer b.enter()()
	ct := b.f32(t, "RowView")
	if i < 0 || i >= ct.rows {
		panic(fmt.Sprintf("cuda: RowView: row %d of a [%d, %d] tensor", i, ct.rows, ct.cols))
	}
	owner := ct
	if ct.parent != nil {
		owner = ct.parent
	}
	return &Tensor{rows: 1, cols: ct.cols, dt: f32, ptr: ct.ptr + cu.DevicePtr(int64(i)*int64(ct.cols)*4), parent: owner}
}

// Rows is rows [i, i+n) of t as an [n, cols] float32 tensor sharing t's memory.
func (b *Backend) Rows(t backend.Tensor, i, n int) backend.Tensor {
	defer b.enter()()
	ct := b.f32(t, "Rows")
	if i < 0 || n < 0 || i+n > ct.rows {
		panic(fmt.Sprintf("cuda: Rows %d..%d of a [%d, %d] tensor", i, i+n, ct.rows, ct.cols))
	}
	owner := ct
	if ct.parent != nil {
		owner = ct.parent
	}
	return &Tensor{rows: n, cols: ct.cols, dt: f32, ptr: ct.ptr + cu.DevicePtr(int64(i)*int64(ct.cols)*4), parent: owner}
}

// Read copies t to the host as float32.
func (b *Backend) Read(t backend.Tensor) []float32 {
	defer b.enter()()
	ct := b.tensor(t, "Read")
	count := ct.rows * ct.cols
	out := make([]float32, count)
	if count == 0 {
		return out
	}
	if ct.dt == f32 {
		if err := cu.MemcpyDtoH(unsafe.Pointer(&out[0]), ct.ptr, int64(count)*4); err != nil {
			panic(fmt.Errorf("cuda: Read [%d, %d]: %w", ct.rows, ct.cols, err))
		}
		return out
	}
	raw := make([]uint16, count)
	if err := cu.MemcpyDtoH(unsafe.Pointer(&raw[0]), ct.ptr, int64(count)*2); err != nil {
		panic(fmt.Errorf("cuda: Read [%d, %d]: %w", ct.rows, ct.cols, err))
	}
	for i, h := range raw {
		if ct.dt == bf16 {
			out[i] = math.Float32frombits(uint32(h) << 16)
		} else {
			out[i] = f16ToF32(h)
		}
	}
	return out
}

// errNotExact marks a value with no exact narrow representation.
var errNotExact = errors.New("not exactly representable")

// toBF16Exact returns data as bfloat16 words when every value is one exactly.
func toBF16Exact(data []float32) ([]uint16, bool) {
	for _, v := range data {
		if math.Float32bits(v)&0xffff != 0 {
			return nil, false
		}
	}
	out := make([]uint16, len(data))
	for i, v := range data {
		out[i] = uint16(math.Float32bits(v) >> 16)
	}
	return out, true
}

// toBF16Rounded rounds every value to the nearest bfloat16 (ties to even); NaN stays NaN.
func toBF16Rounded(data []float32) []uint16 {
	out := make([]uint16, len(data))
	for i, v := range data {
		bits := math.Float32bits(v)
		if v != v {
			out[i] = uint16(bits>>16) | 0x40 // quiet NaN, sign kept
			continue
		}
		bits += 0x7fff + (bits>>16)&1
		out[i] = uint16(bits >> 16)
	}
	return out
}

// toF16Exact returns data as IEEE half words when every value is one exactly.
func toF16Exact(data []float32) ([]uint16, bool) {
	out := make([]uint16, len(data))
	for i, v := range data {
		h, err := f32ToF16Exact(v)
		if err != nil {
			return nil, false
		}
		out[i] = h
	}
	return out, true
}

// f32ToF16Exact converts a float32 that is exactly a half (normal, subnormal, zero or
// infinite) to its bits.
func f32ToF16Exact(v float32) (uint16, error) {
	bits := math.Float32bits(v)
	sign := uint16(bits>>16) & 0x8000
	exp := int(bits>>23) & 0xff
	man := bits & 0x7fffff
	switch {
	case exp == 0xff:
		if man != 0 {
			return 0, errNotExact // NaN
		}
		return sign | 0x7c00, nil
	case exp == 0:
		if man != 0 {
			return 0, errNotExact // float32 subnormals are below half's range
		}
		return sign, nil
	}
	e := exp - 127
	switch {
	case e >= -14 && e <= 15: // half normal
		if man&0x1fff != 0 {
			return 0, errNotExact
		}
		return sign | uint16(e+15)<<10 | uint16(man>>13), nil
	case e >= -24 && e < -14: // half subnormal: k * 2^-24 with k < 1024
		full := man | 0x800000 // 1.man * 2^23
		shift := uint(-(e + 1))
		if full&(1<<shift-1) != 0 {
			return 0, errNotExact
		}
		return sign | uint16(full>>shift), nil
	}
	return 0, errNotExact
}

// f16ToF32 widens IEEE half bits.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		// zero or subnormal: man * 2^-24
		f := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}
