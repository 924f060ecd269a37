package loader

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// BF16 returns the named tensor's bfloat16 bit patterns in a fresh slice after checking
// its shape, for backends that keep bf16 weights as bf16; ok is false (with no error)
// when the tensor is not stored as BF16. The mapped pages of the copied bytes are then
// released, so that loading does not hold the file's pages resident beside the copies.
func (c *Checkpoint) BF16(name string, shape ...int) (data []uint16, ok bool, err error) {
	f, err := c.file(name)
	if err != nil {
		return nil, false, err
	}
	info, _ := f.Info(name)
	if !slices.Equal(info.Shape, shape) {
		return nil, false, fmt.Errorf("%s: tensor %q: %w: got %v, want %v", f.Path(), name, ErrShapeMismatch, info.Shape, shape)
	}
	if info.DType != BF16 {
		return nil, false, nil
	}
	raw, err := f.Raw(name)
	if err != nil {
		return nil, false, err
	}
	data = make([]uint16, len(raw)/2)
	for i := range data {
		data[i] = binary.LittleEndian.Uint16(raw[2*i:])
	}
	if f.release != nil {
		dropPages(raw)
	}
	return data, true, nil
}
