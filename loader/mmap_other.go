//go:build !(linux || darwin)

package loader

import (
	"errors"
	"os"
)

// mapFile is not available on this platform; OpenSafetensors reads the file instead.
func mapFile(f *os.File, size int) ([]byte, func() error, error) {
	return nil, nil, errors.New("mmap not supported on this platform")
}

// dropPages does nothing where files are read, not mapped.
func dropPages(b []byte) {}
