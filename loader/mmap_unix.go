//go:build linux || darwin

package loader

import (
	"os"
	"syscall"
	"unsafe"
)

// mapFile maps size bytes of f read-only. The returned release unmaps them.
func mapFile(f *os.File, size int) (data []byte, release func() error, err error) {
	data, err = syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return syscall.Munmap(data) }, nil
}

// dropPages tells the kernel the mapped pages wholly inside b are not needed any more:
// they leave the process's resident set (a later read faults them in again from the
// file). A failure only means the pages stay resident.
func dropPages(b []byte) {
	page := uintptr(os.Getpagesize())
	if len(b) < int(page) {
		return
	}
	start := uintptr(unsafe.Pointer(&b[0]))
	lo := int((page - start%page) % page)
	hi := len(b) - int((start+uintptr(len(b)))%page)
	if hi-lo >= int(page) {
		syscall.Madvise(b[lo:hi], syscall.MADV_DONTNEED)
	}
}
