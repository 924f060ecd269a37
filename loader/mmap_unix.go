//go:build linux || darwin

package loader

import (
	"os"
	"syscall"
)

// mapFile maps size bytes of f read-only. The returned release unmaps them.
func mapFile(f *os.File, size int) (data []byte, release func() error, err error) {
	data, err = syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return syscall.Munmap(data) }, nil
}
