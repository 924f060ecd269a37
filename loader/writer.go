package loader

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// WriteTensor is one tensor to write: Data holds product(Shape) float32 values,
// row-major, converted to DType on writing.
type WriteTensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []float32
}

// headerEntry is one tensor's entry in a safetensors JSON header.
type headerEntry struct {
	DType       DType   `json:"dtype"`
	Shape       []int   `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// WriteSafetensors writes tensors to a safetensors file at path, their data laid out
// in the order given, with an optional "__metadata__" map. The JSON header is padded
// with spaces to a multiple of 8 bytes so the data section starts 8-byte aligned.
func WriteSafetensors(path string, tensors []WriteTensor, metadata map[string]string) error {
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var offset int64
	for _, t := range tensors {
		if err := checkWriteTensor(t, path); err != nil {
			return err
		}
		if _, dup := header[t.Name]; dup {
			return fmt.Errorf("%s: tensor %q: %w", path, t.Name, ErrDuplicateName)
		}
		size := int64(len(t.Data) * t.DType.Size())
		header[t.Name] = headerEntry{DType: t.DType, Shape: nonNil(t.Shape), DataOffsets: []int64{offset, offset + size}}
		offset += size
	}
	var js bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(header); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	hdr := bytes.TrimRight(js.Bytes(), "\n")
	for len(hdr)%8 != 0 {
		hdr = append(hdr, ' ')
	}

	file, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(file, 1<<20)
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], uint64(len(hdr)))
	w.Write(buf[:])
	w.Write(hdr)
	for _, t := range tensors {
		for _, v := range t.Data {
			switch t.DType {
			case F32:
				binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v))
				w.Write(buf[:4])
			case BF16:
				binary.LittleEndian.PutUint16(buf[:], Float32ToBF16(v))
				w.Write(buf[:2])
			case F16:
				binary.LittleEndian.PutUint16(buf[:], Float32ToF16(v))
				w.Write(buf[:2])
			}
		}
	}
	// bufio keeps the first write error; Flush reports it.
	if err := errors.Join(w.Flush(), file.Close()); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// checkWriteTensor validates a tensor before it is written.
func checkWriteTensor(t WriteTensor, path string) error {
	if t.Name == "" || t.Name == "__metadata__" {
		return fmt.Errorf("%s: tensor name %q is not allowed", path, t.Name)
	}
	if t.DType.Size() == 0 {
		return fmt.Errorf("%s: tensor %q: %w: %q", path, t.Name, ErrUnsupportedDType, t.DType)
	}
	n := 1
	for _, d := range t.Shape {
		if d < 0 || d > 0 && n > math.MaxInt/d {
			return fmt.Errorf("%s: tensor %q: %w: invalid shape %v", path, t.Name, ErrShapeMismatch, t.Shape)
		}
		n *= d
	}
	if n != len(t.Data) {
		return fmt.Errorf("%s: tensor %q: %w: shape %v has %d elements, data has %d", path, t.Name, ErrShapeMismatch, t.Shape, n, len(t.Data))
	}
	return nil
}

// nonNil makes a scalar's shape encode as [] rather than null.
func nonNil(shape []int) []int {
	if shape == nil {
		return []int{}
	}
	return shape
}

// WriteShardedCheckpoint writes tensors as a Hugging Face sharded checkpoint in dir:
// model-0000i-of-0000n.safetensors files of at most maxShardBytes of data each (a
// larger tensor gets a shard of its own), filled in the order given, plus
// model.safetensors.index.json mapping every tensor to its shard.
func WriteShardedCheckpoint(dir string, tensors []WriteTensor, maxShardBytes int64) error {
	if maxShardBytes <= 0 {
		return fmt.Errorf("%s: maxShardBytes must be positive, got %d", dir, maxShardBytes)
	}
	var shards [][]WriteTensor
	var cur []WriteTensor
	var curBytes, total int64
	for _, t := range tensors {
		size := int64(len(t.Data) * t.DType.Size())
		if len(cur) > 0 && curBytes+size > maxShardBytes {
			shards = append(shards, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, t)
		curBytes += size
		total += size
	}
	if len(cur) > 0 || len(shards) == 0 {
		shards = append(shards, cur)
	}

	weightMap := map[string]string{}
	for i, shard := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		if err := WriteSafetensors(filepath.Join(dir, name), shard, map[string]string{"format": "pt"}); err != nil {
			return err
		}
		for _, t := range shard {
			if _, dup := weightMap[t.Name]; dup {
				return fmt.Errorf("%s: tensor %q: %w", dir, t.Name, ErrDuplicateName)
			}
			weightMap[t.Name] = name
		}
	}
	index := map[string]any{
		"metadata":   map[string]int64{"total_size": total},
		"weight_map": weightMap,
	}
	js, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, indexFile), append(js, '\n'), 0o644)
}
