//go:build cuda

package cuda

// Device memory: cuMemAlloc and cuMemFree with lukv's out-of-memory errors (wrapping
// backend.ErrOutOfMemory, saying how much was asked and how much is free), the pool of
// freed tensor buffers reused by exact size, the release of memory whose tensors or
// caches the garbage collector dropped, and devBuf, the scratch buffers that grow on
// demand.

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// allocDevice is cuMemAlloc with lukv's error convention: out of memory wraps
// backend.ErrOutOfMemory and says how much was asked and how much is free. A zero size
// gives the null pointer (the driver refuses zero-byte allocations).
func allocDevice(size int64, what string) (cu.DevicePtr, error) {
	if size == 0 {
		return 0, nil
	}
	p, err := cu.MemAlloc(size)
	if err == nil {
		return p, nil
	}
	if errors.Is(err, cu.OutOfMemory) {
		free, total, _ := cu.MemInfo()
		return 0, fmt.Errorf("cuda: %s: allocating %s with %s of %s free: %w", what, human(size), human(free), human(total), backend.ErrOutOfMemory)
	}
	return 0, fmt.Errorf("cuda: %s: allocating %s: %w", what, human(size), err)
}

// freeDevice releases a device allocation; the null pointer is a no-op.
func freeDevice(p cu.DevicePtr) {
	if p == 0 {
		return
	}
	if err := cu.MemFree(p); err != nil {
		panic(fmt.Errorf("cuda: cuMemFree: %w", err))
	}
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// allocation is one device buffer the garbage collector may hand back (see pool).
type allocation struct {
	ptr    cu.DevicePtr
	size   int64
	pooled bool // return to the pool (tensors) rather than to the driver (KV cache)
}

// pool keeps freed tensor buffers by exact size, so the forward pass's per-call
// activations (the same shapes every decode step) skip cuMemAlloc/cuMemFree, which
// synchronise the device. It holds at most limit bytes; the rest goes back to the
// driver. Tensors and caches dropped without Free are scheduled by runtime cleanups
// (which run on their own goroutine, without the CUDA context) and released at the
// backend's next call.
type pool struct {
	limit int64
	bytes int64
	free  map[int64][]cu.DevicePtr

	mu      sync.Mutex // guards pending only
	pending []allocation
}

func newPool(limit int64) *pool {
	return &pool{limit: limit, free: map[int64][]cu.DevicePtr{}}
}

// get returns a pooled buffer of exactly size bytes, if one is kept.
func (p *pool) get(size int64) (cu.DevicePtr, bool) {
	l := p.free[size]
	if len(l) == 0 {
		return 0, false
	}
	ptr := l[len(l)-1]
	p.free[size] = l[:len(l)-1]
	p.bytes -= size
	return ptr, true
}

// put keeps a buffer for reuse, or frees it when the pool is full.
func (p *pool) put(ptr cu.DevicePtr, size int64) {
	if ptr == 0 {
		return
	}
	if p.bytes+size > p.limit {
		freeDevice(ptr)
		return
	}
	p.free[size] = append(p.free[size], ptr)
	p.bytes += size
}

// release frees every pooled buffer.
func (p *pool) release() {
	p.drain()
	for size, l := range p.free {
		for _, ptr := range l {
			freeDevice(ptr)
		}
		delete(p.free, size)
	}
	p.bytes = 0
}

// schedule is called by cleanups, from any goroutine.
func (p *pool) schedule(a allocation) {
	p.mu.Lock()
	p.pending = append(p.pending, a)
	p.mu.Unlock()
}

// drain releases scheduled allocations; the caller holds the context.
func (p *pool) drain() {
	p.mu.Lock()
	pend := p.pending
	p.pending = nil
	p.mu.Unlock()
	for _, a := range pend {
		if a.pooled {
			p.put(a.ptr, a.size)
		} else {
			freeDevice(a.ptr)
		}
	}
}

// allocTensor returns size bytes for a tensor, from the pool or the driver; when the
// driver is out of memory it empties the pool and tries once more.
func (b *Backend) allocTensor(size int64, what string) (cu.DevicePtr, error) {
	if size == 0 {
		return 0, nil
	}
	if ptr, ok := b.pool.get(size); ok {
		return ptr, nil
	}
	ptr, err := allocDevice(size, what)
	if errors.Is(err, backend.ErrOutOfMemory) && b.pool.bytes > 0 {
		b.pool.release()
		ptr, err = allocDevice(size, what)
	}
	return ptr, err
}

// devBuf is a scratch buffer that grows on demand and is reused across calls.
type devBuf struct {
	ptr  cu.DevicePtr
	size int64
}

// ensure makes the buffer hold at least size bytes (contents are not kept).
func (d *devBuf) ensure(size int64, what string) error {
	if size <= d.size {
		return nil
	}
	d.free()
	n := max(size, 256)
	for n&(n-1) != 0 { // round up to a power of two: few regrowths
		n += n & -n
	}
	ptr, err := allocDevice(n, what)
	if err != nil {
		return err
	}
	d.ptr, d.size = ptr, n
	return nil
}

func (d *devBuf) free() {
	freeDevice(d.ptr)
	d.ptr, d.size = 0, 0
}

// uploadInt32 copies host values into d, growing it as needed.
func (d *devBuf) uploadInt32(v []int32, what string) error {
	if len(v) == 0 {
		return nil
	}
	size := int64(len(v)) * 4
	if err := d.ensure(size, what); err != nil {
		return err
	}
	if err := cu.MemcpyHtoD(d.ptr, unsafe.Pointer(&v[0]), size); err != nil {
		return fmt.Errorf("cuda: %s: copy to device: %w", what, err)
	}
	return nil
}

// uploadFloat32 copies host values into d, growing it as needed.
func (d *devBuf) uploadFloat32(v []float32, what string) error {
	if len(v) == 0 {
		return nil
	}
	size := int64(len(v)) * 4
	if err := d.ensure(size, what); err != nil {
		return err
	}
	if err := cu.MemcpyHtoD(d.ptr, unsafe.Pointer(&v[0]), size); err != nil {
		return fmt.Errorf("cuda: %s: copy to device: %w", what, err)
	}
	return nil
}
