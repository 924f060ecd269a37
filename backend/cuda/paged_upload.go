//go:build cuda

package cuda

// The paged attention's descriptors go to the device once per layer and decode step. A
// plain cuMemcpyHtoD from pageable memory waits for all queued GPU work first, which
// would idle the GPU while the host queues each layer's next launches. Instead they are
// staged in page-locked host memory (a ring, reused once the device has passed it) and
// copied with cuMemcpyHtoDAsync on the launch stream: in stream order, after the kernels
// of the previous layer that read the same device buffer.

/*
#include <cuda.h>

static int lukv_alloc_host(void** p, size_t bytes) { return (int)cuMemAllocHost(p, bytes); }
*/
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// pinnedRing is page-locked host memory handed out front to back; when a request does
// not fit behind the last one, the device is synchronised (every earlier copy is done)
// and the ring starts over.
type pinnedRing struct {
	ptr        unsafe.Pointer
	size, used int64
}

const pinnedRingBytes = 8 << 20

// uploadAsync copies v into d (grown as needed) through the pinned ring, queued on the
// launch stream. The caller holds the backend.
func (p *PagedBackend) uploadAsync(d *devBuf, v []int32, what string) error {
	if len(v) == 0 {
		return nil
	}
	size := int64(len(v)) * 4
	if err := d.ensure(size, what); err != nil {
		return err
	}
	r := &p.ring
	if r.size < size {
		if err := cu.Synchronize(); err != nil {
			return fmt.Errorf("cuda paged: %s: %w", what, err)
		}
		r.free()
		n := max(size, pinnedRingBytes)
		var ptr unsafe.Pointer
		if code := C.lukv_alloc_host(&ptr, C.size_t(n)); code != 0 {
			return fmt.Errorf("cuda paged: %s: cuMemAllocHost of %s failed (CUresult %d)", what, human(n), int(code))
		}
		r.ptr, r.size, r.used = ptr, n, 0
	}
	if r.used+size > r.size {
		if err := cu.Synchronize(); err != nil {
			return fmt.Errorf("cuda paged: %s: %w", what, err)
		}
		r.used = 0
	}
	src := unsafe.Add(r.ptr, r.used)
	copy(unsafe.Slice((*int32)(src), len(v)), v)
	if err := cu.MemcpyHtoDAsync(d.ptr, src, size, cu.NoStream); err != nil {
		return fmt.Errorf("cuda paged: %s: copy to device: %w", what, err)
	}
	r.used += (size + 255) &^ 255
	return nil
}

// free releases the ring (after the device is done with it).
func (r *pinnedRing) free() {
	if r.ptr != nil {
		if err := cu.MemFreeHost(r.ptr); err != nil {
			panic(fmt.Errorf("cuda paged: cuMemFreeHost: %w", err))
		}
	}
	r.ptr, r.size, r.used = nil, 0, 0
}
