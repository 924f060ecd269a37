package loader

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"github.com/lukv/lukv/quant"
)

// GGUFKV is one metadata entry to write. Value is one of uint8, int8, uint16, int16,
// uint32, int32, uint64, int64, float32, float64, bool, string, or a slice of one of
// those ([]string, []int32, []float32, ...).
type GGUFKV struct {
	Key   string
	Value any
}

// GGUFWriteTensor is one tensor to write: product(Shape) float32 values, row-major with
// Shape outermost first (Hugging Face's order: [out, in] for a weight), encoded as Type
// on writing. The values are Data, or what Load returns when Data is nil (so a converter
// holds one tensor at a time).
type GGUFWriteTensor struct {
	Name  string
	Type  GGMLType
	Shape []int
	Data  []float32
	Load  func() ([]float32, error)
}

// WriteGGUF writes a version-3 GGUF file with 32-byte alignment.
func WriteGGUF(path string, kvs []GGUFKV, tensors []GGUFWriteTensor) (err error) {
	const align = 32
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	w := &ggufWriter{w: bufio.NewWriterSize(f, 1<<20)}
	w.u32(ggufMagic)
	w.u32(3)
	w.u64(uint64(len(tensors)))
	w.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		w.str(kv.Key)
		if err := w.value(kv.Value, true); err != nil {
			return fmt.Errorf("%s: metadata %s: %w", path, kv.Key, err)
		}
	}
	// Tensor infos (sizes follow from shapes and types), then the data, each tensor
	// padded to the alignment.
	sizes := make([]uint64, len(tensors))
	var off uint64
	for i, t := range tensors {
		n := uint64(1)
		for _, d := range t.Shape {
			n *= uint64(max(d, 0))
		}
		if len(t.Shape) == 0 || len(t.Shape) > maxGGUFDims || n == 0 || (t.Data != nil && n != uint64(len(t.Data))) || (t.Data == nil && t.Load == nil) {
			return fmt.Errorf("%s: tensor %q: shape %v for %d values: %w", path, t.Name, t.Shape, len(t.Data), ErrShapeMismatch)
		}
		row, ok := t.Type.rowBytes(uint64(t.Shape[len(t.Shape)-1]))
		if !ok {
			return fmt.Errorf("%s: tensor %q: %w: %v with rows of %d values", path, t.Name, ErrUnsupportedDType, t.Type, t.Shape[len(t.Shape)-1])
		}
		sizes[i] = row * (n / uint64(t.Shape[len(t.Shape)-1]))
		w.str(t.Name)
		w.u32(uint32(len(t.Shape)))
		for j := len(t.Shape) - 1; j >= 0; j-- { // innermost first
			w.u64(uint64(t.Shape[j]))
		}
		w.u32(uint32(t.Type))
		w.u64(off)
		off += (sizes[i] + align - 1) / align * align
	}
	w.pad(align)
	for i, t := range tensors {
		x := t.Data
		if x == nil {
			if x, err = t.Load(); err != nil {
				return err
			}
		}
		b, err := encodeGGML(x, t.Type, t.Shape[len(t.Shape)-1])
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", path, t.Name, err)
		}
		if uint64(len(b)) != sizes[i] {
			return fmt.Errorf("%s: tensor %q: %d bytes of data, the shape needs %d: %w", path, t.Name, len(b), sizes[i], ErrShapeMismatch)
		}
		w.bytes(b)
		w.pad(align)
	}
	if w.err != nil {
		return w.err
	}
	return w.w.Flush()
}

// encodeGGML encodes values (rows of rowLen) as typ.
func encodeGGML(x []float32, typ GGMLType, rowLen int) ([]byte, error) {
	switch typ {
	case GGMLF32:
		out := make([]byte, 4*len(x))
		for i, v := range x {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out, nil
	case GGMLF16, GGMLBF16:
		out := make([]byte, 2*len(x))
		for i, v := range x {
			h := Float32ToF16(v)
			if typ == GGMLBF16 {
				h = Float32ToBF16(v)
			}
			binary.LittleEndian.PutUint16(out[2*i:], h)
		}
		return out, nil
	case GGMLQ8_0:
		if rowLen%q8Block != 0 {
			return nil, fmt.Errorf("Q8_0 needs rows of whole %d-value blocks, got rows of %d", q8Block, rowLen)
		}
		return QuantizeQ8_0(x)
	case GGMLQ4_K, GGMLQ6_K:
		if rowLen%kBlock != 0 {
			return nil, fmt.Errorf("%v needs rows of whole %d-value blocks, got rows of %d", typ, kBlock, rowLen)
		}
		if typ == GGMLQ4_K {
			return quantizeQ4K(x)
		}
		return quantizeQ6K(x)
	}
	return nil, fmt.Errorf("%w: %v", ErrUnsupportedDType, typ)
}

// QuantizeQ8_0 encodes x (a multiple of 32 values) as Q8_0 blocks: package quant's int8
// values (d = max|x|/127, q = round(x/d), as llama.cpp's reference quantizer up to its
// rounding of x*(1/d)) with d stored as float16. Loading the file as int8 weights thus
// gives exactly the values quantizing at load gives, with the scale rounded to float16.
func QuantizeQ8_0(x []float32) ([]byte, error) {
	m, err := quant.Quantize(x, 1, len(x))
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(x)/q8Block*q8Bytes)
	for b, d := range m.Scales {
		o := out[b*q8Bytes:]
		binary.LittleEndian.PutUint16(o, Float32ToF16(d))
		for i, q := range m.Q[b*q8Block : (b+1)*q8Block] {
			o[2+i] = byte(q)
		}
	}
	return out, nil
}

// ggufWriter writes little-endian values, keeping the first error.
type ggufWriter struct {
	w   *bufio.Writer
	err error
	n   uint64 // bytes written
}

func (w *ggufWriter) bytes(b []byte) {
	if w.err == nil {
		_, w.err = w.w.Write(b)
		w.n += uint64(len(b))
	}
}

func (w *ggufWriter) u32(v uint32) { w.bytes(binary.LittleEndian.AppendUint32(nil, v)) }
func (w *ggufWriter) u64(v uint64) { w.bytes(binary.LittleEndian.AppendUint64(nil, v)) }
func (w *ggufWriter) str(s string) { w.u64(uint64(len(s))); w.bytes([]byte(s)) }

func (w *ggufWriter) pad(align uint64) {
	if r := w.n % align; r != 0 {
		w.bytes(make([]byte, align-r))
	}
}

// value writes a metadata value, with its type tag when tagged (array elements share
// the array's element type).
func (w *ggufWriter) value(v any, tagged bool) error {
	tag := func(t uint32) {
		if tagged {
			w.u32(t)
		}
	}
	switch x := v.(type) {
	case uint8:
		tag(ggufUint8)
		w.bytes([]byte{x})
	case int8:
		tag(ggufInt8)
		w.bytes([]byte{byte(x)})
	case uint16:
		tag(ggufUint16)
		w.bytes(binary.LittleEndian.AppendUint16(nil, x))
	case int16:
		tag(ggufInt16)
		w.bytes(binary.LittleEndian.AppendUint16(nil, uint16(x)))
	case uint32:
		tag(ggufUint32)
		w.u32(x)
	case int32:
		tag(ggufInt32)
		w.u32(uint32(x))
	case uint64:
		tag(ggufUint64)
		w.u64(x)
	case int64:
		tag(ggufInt64)
		w.u64(uint64(x))
	case float32:
		tag(ggufFloat32)
		w.u32(math.Float32bits(x))
	case float64:
		tag(ggufFloat64)
		w.u64(math.Float64bits(x))
	case bool:
		tag(ggufBool)
		b := byte(0)
		if x {
			b = 1
		}
		w.bytes([]byte{b})
	case string:
		tag(ggufString)
		w.str(x)
	case []string:
		return writeArray(w, ggufString, x)
	case []int32:
		return writeArray(w, ggufInt32, x)
	case []uint32:
		return writeArray(w, ggufUint32, x)
	case []float32:
		return writeArray(w, ggufFloat32, x)
	default:
		return fmt.Errorf("value of type %T cannot be written", v)
	}
	return nil
}

func writeArray[T any](w *ggufWriter, elem uint32, xs []T) error {
	w.u32(ggufArray)
	w.u32(elem)
	w.u64(uint64(len(xs)))
	for _, x := range xs {
		if err := w.value(any(x), false); err != nil {
			return err
		}
	}
	return nil
}
