package loader

import (
	"fmt"
	"io"
	"math"
	"os"
)

// openMapped maps the whole file at path read-only (or, where mmap fails on an unusual
// filesystem or platform, reads it), for the safetensors and GGUF readers. release is
// nil for an empty or read file; otherwise it unmaps.
func openMapped(path string) (data []byte, release func() error, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := st.Size()
	if size > math.MaxInt {
		return nil, nil, fmt.Errorf("%s: %d bytes do not fit in this platform's address space", path, size)
	}
	if size == 0 {
		return nil, nil, nil
	}
	if data, release, err = mapFile(f, int(size)); err != nil {
		if data, err = io.ReadAll(io.NewSectionReader(f, 0, size)); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		release = nil
	}
	return data, release, nil
}
