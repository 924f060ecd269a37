package loader

// GGUF, llama.cpp's single-file format: a header, typed key/value metadata, tensor
// descriptions, then aligned tensor data. This file reads the container; gguf_llama.go
// maps a Llama model in it to a Config and Hugging Face tensor names, gguf_write.go
// writes one.
//
// The reader is lukv's own rather than github.com/gpustack/gguf-parser-go: that library
// does expose tensor offsets and metadata, but it is built for memory estimates and
// remote files (it brings an HTTP client, json-iterator, a ring buffer, x/crypto, x/exp
// and x/tools into the module), its typed accessors panic on a type mismatch, and it
// writes nothing, while the converter needs a writer that agrees with the reader. The
// container is small; this reader validates every count, length and offset against the
// file before using it.
//
// Layout (little-endian): "GGUF", version uint32 (2 or 3), tensor count uint64,
// metadata count uint64; metadata entries (key string, value type uint32, value);
// tensor infos (name string, n_dims uint32, dims uint64[n_dims] innermost first, ggml
// type uint32, offset uint64 from the data section); padding to general.alignment
// (32 by default); the data section. A string is a uint64 length and its bytes.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"slices"
	"sort"
	"unicode/utf8"
)

// GGUF errors (besides ErrTruncated, ErrDuplicateName, ErrOverlap, ErrUnsupportedDType).
var (
	// ErrNotGGUF: the file does not start with the GGUF magic.
	ErrNotGGUF = errors.New("not a GGUF file")
	// ErrBadGGUF: the header, metadata or tensor infos are malformed.
	ErrBadGGUF = errors.New("bad GGUF file")
)

// GGMLType is a tensor element type of a GGUF file (ggml's type numbers).
type GGMLType uint32

// The ggml types lukv reads and writes.
const (
	GGMLF32  GGMLType = 0
	GGMLF16  GGMLType = 1
	GGMLQ8_0 GGMLType = 8  // blocks of 32: a float16 scale d, then 32 int8 q; x = d*q
	GGMLQ4_K GGMLType = 12 // super-blocks of 256 with 4-bit quants (gguf_kquants.go)
	GGMLQ6_K GGMLType = 14 // super-blocks of 256 with 6-bit quants (gguf_kquants.go)
	GGMLBF16 GGMLType = 30 // bfloat16
)

// q8Block is the number of values of one Q8_0 block, q8Bytes its size in bytes.
const (
	q8Block = 32
	q8Bytes = 2 + q8Block
)

func (t GGMLType) String() string {
	switch t {
	case GGMLF32:
		return "F32"
	case GGMLF16:
		return "F16"
	case GGMLQ8_0:
		return "Q8_0"
	case GGMLQ4_K:
		return "Q4_K"
	case GGMLQ6_K:
		return "Q6_K"
	case GGMLBF16:
		return "BF16"
	}
	return fmt.Sprintf("ggml type %d", uint32(t))
}

// rowBytes is the size of a row of n values, ok false for a type lukv does not read or
// an n that its blocks cannot tile.
func (t GGMLType) rowBytes(n uint64) (uint64, bool) {
	switch t {
	case GGMLF32:
		return 4 * n, true
	case GGMLF16, GGMLBF16:
		return 2 * n, true
	case GGMLQ8_0:
		return n / q8Block * q8Bytes, n%q8Block == 0
	case GGMLQ4_K:
		return n / kBlock * q4KBytes, n%kBlock == 0
	case GGMLQ6_K:
		return n / kBlock * q6KBytes, n%kBlock == 0
	}
	return 0, false
}

// GGUF metadata value types.
const (
	ggufUint8 uint32 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

// ggufMagic is "GGUF" read as a little-endian uint32.
const ggufMagic = 0x46554747

// maxGGUFDims is ggml's limit on tensor dimensions.
const maxGGUFDims = 4

// GGUFTensor describes one tensor of a GGUF file.
type GGUFTensor struct {
	Name   string
	Dims   []uint64 // innermost (contiguous) first, as ggml's ne
	Type   GGMLType
	Offset int64 // absolute byte offset of the data in the file
	Size   int64 // bytes of data
}

// Shape is the row-major shape (outermost first), as Hugging Face and safetensors
// write it: ggml's [in, out] weight is [out, in].
func (t GGUFTensor) Shape() []int {
	s := make([]int, len(t.Dims))
	for i, d := range t.Dims {
		s[len(s)-1-i] = int(d)
	}
	return s
}

// GGUFFile is an opened, validated GGUF file, memory-mapped (read whole where mmap is
// unavailable).
type GGUFFile struct {
	path     string
	Version  uint32
	data     []byte
	release  func() error
	meta     map[string]any // uint64, int64, float64, bool, string, or []any of them
	keys     []string       // in file order
	tensors  map[string]GGUFTensor
	names    []string // in file order
	dataFrom int64    // start of the data section
}

// OpenGGUF maps and validates the GGUF file at path.
func OpenGGUF(path string) (*GGUFFile, error) {
	data, release, err := openMapped(path)
	if err != nil {
		return nil, err
	}
	g, err := ParseGGUF(data, path)
	if err != nil {
		if release != nil {
			release()
		}
		return nil, err
	}
	g.release = release
	return g, nil
}

// IsGGUF reports whether the file at path starts with the GGUF magic.
func IsGGUF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [4]byte
	_, err = io.ReadFull(f, b[:])
	return err == nil && binary.LittleEndian.Uint32(b[:]) == ggufMagic
}

// ggufReader walks the header; every read checks the bytes are there.
type ggufReader struct {
	data []byte
	pos  int
	path string
}

func (r *ggufReader) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", r.path, ErrBadGGUF, fmt.Sprintf(format, args...))
}

func (r *ggufReader) take(n uint64, what string) ([]byte, error) {
	if n > uint64(len(r.data)-r.pos) {
		return nil, fmt.Errorf("%s: %w: %s needs %d bytes at offset %d, the file has %d", r.path, ErrTruncated, what, n, r.pos, len(r.data))
	}
	b := r.data[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return b, nil
}

func (r *ggufReader) u32(what string) (uint32, error) {
	b, err := r.take(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *ggufReader) u64(what string) (uint64, error) {
	b, err := r.take(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *ggufReader) str(what string) (string, error) {
	n, err := r.u64(what + " length")
	if err != nil {
		return "", err
	}
	b, err := r.take(n, what)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// ggufFixedSize is the size in bytes of each fixed-size metadata value type.
var ggufFixedSize = map[uint32]uint64{ggufUint8: 1, ggufInt8: 1, ggufUint16: 2, ggufInt16: 2, ggufUint32: 4, ggufInt32: 4,
	ggufFloat32: 4, ggufBool: 1, ggufUint64: 8, ggufInt64: 8, ggufFloat64: 8}

// value reads one metadata value of type typ; depth bounds nested arrays.
func (r *ggufReader) value(typ uint32, key string, depth int) (any, error) {
	if n, ok := ggufFixedSize[typ]; ok {
		b, err := r.take(n, "metadata "+key)
		if err != nil {
			return nil, err
		}
		switch typ {
		case ggufUint8:
			return uint64(b[0]), nil
		case ggufInt8:
			return int64(int8(b[0])), nil
		case ggufUint16:
			return uint64(binary.LittleEndian.Uint16(b)), nil
		case ggufInt16:
			return int64(int16(binary.LittleEndian.Uint16(b))), nil
		case ggufUint32:
			return uint64(binary.LittleEndian.Uint32(b)), nil
		case ggufInt32:
			return int64(int32(binary.LittleEndian.Uint32(b))), nil
		case ggufFloat32:
			return float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), nil
		case ggufBool:
			if b[0] > 1 {
				return nil, r.errorf("metadata %s: bool byte %d", key, b[0])
			}
			return b[0] == 1, nil
		case ggufUint64:
			return binary.LittleEndian.Uint64(b), nil
		case ggufInt64:
			return int64(binary.LittleEndian.Uint64(b)), nil
		default: // ggufFloat64
			return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
		}
	}
	switch typ {
	case ggufString:
		return r.str("metadata " + key)
	case ggufArray:
		if depth > 2 {
			return nil, r.errorf("metadata %s: arrays nested deeper than 2", key)
		}
		et, err := r.u32("metadata " + key + " element type")
		if err != nil {
			return nil, err
		}
		n, err := r.u64("metadata " + key + " length")
		if err != nil {
			return nil, err
		}
		// Every element takes at least one byte: a longer array cannot fit.
		if n > uint64(len(r.data)-r.pos) {
			return nil, fmt.Errorf("%s: %w: metadata %s: %d elements, %d bytes left", r.path, ErrTruncated, key, n, len(r.data)-r.pos)
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = r.value(et, key, depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, r.errorf("metadata %s: unknown value type %d", key, typ)
}

// ParseGGUF validates a whole GGUF file held in data (kept, not copied); path is for
// messages.
func ParseGGUF(data []byte, path string) (*GGUFFile, error) {
	r := &ggufReader{data: data, path: path}
	magic, err := r.u32("magic")
	if err != nil {
		return nil, err
	}
	if magic != ggufMagic {
		return nil, fmt.Errorf("%s: %w (magic %#08x)", path, ErrNotGGUF, magic)
	}
	g := &GGUFFile{path: path, data: data, meta: map[string]any{}, tensors: map[string]GGUFTensor{}}
	if g.Version, err = r.u32("version"); err != nil {
		return nil, err
	}
	switch {
	case g.Version == 2 || g.Version == 3:
	case bits.ReverseBytes32(g.Version) <= 3:
		return nil, r.errorf("big-endian GGUF (version %d byte-swapped) is not supported", bits.ReverseBytes32(g.Version))
	default:
		return nil, r.errorf("version %d (supported: 2, 3)", g.Version)
	}
	nTensors, err := r.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nMeta, err := r.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// A metadata entry takes at least 13 bytes, a tensor info at least 28.
	if rest := uint64(len(data) - r.pos); nMeta > rest/13 || nTensors > rest/28 {
		return nil, fmt.Errorf("%s: %w: %d metadata entries and %d tensors cannot fit in %d bytes", path, ErrTruncated, nMeta, nTensors, rest)
	}
	for range nMeta {
		key, err := r.str("metadata key")
		if err != nil {
			return nil, err
		}
		if !utf8.ValidString(key) || key == "" {
			return nil, r.errorf("metadata key %q is not a non-empty UTF-8 string", key)
		}
		if _, dup := g.meta[key]; dup {
			return nil, fmt.Errorf("%s: metadata %q: %w", path, key, ErrDuplicateName)
		}
		typ, err := r.u32("metadata " + key + " type")
		if err != nil {
			return nil, err
		}
		if g.meta[key], err = r.value(typ, key, 0); err != nil {
			return nil, err
		}
		g.keys = append(g.keys, key)
	}
	align := uint64(32)
	if v, ok := g.meta["general.alignment"]; ok {
		a, isInt := v.(uint64)
		if !isInt || a == 0 || a&(a-1) != 0 || a > 1<<16 {
			return nil, r.errorf("general.alignment %v is not a power of two up to 65536", v)
		}
		align = a
	}
	for range nTensors {
		if err := g.readTensorInfo(r); err != nil {
			return nil, err
		}
	}
	g.dataFrom = int64((uint64(r.pos) + align - 1) / align * align)
	if g.dataFrom > int64(len(data)) {
		return nil, fmt.Errorf("%s: %w: the data section starts at %d, past the end (%d bytes)", path, ErrTruncated, g.dataFrom, len(data))
	}
	dataLen := uint64(int64(len(data)) - g.dataFrom)
	for _, name := range g.names {
		t := g.tensors[name]
		off := uint64(t.Offset) // relative until here
		if off%align != 0 {
			return nil, r.errorf("tensor %q: offset %d is not a multiple of the alignment %d", name, off, align)
		}
		if off > dataLen || uint64(t.Size) > dataLen-off {
			return nil, fmt.Errorf("%s: tensor %q: %w: data [%d, %d) of a %d-byte data section", path, name, ErrTruncated, off, off+uint64(t.Size), dataLen)
		}
		t.Offset = g.dataFrom + int64(off)
		g.tensors[name] = t
	}
	return g, g.checkOverlap()
}

// readTensorInfo reads and checks one tensor description (offset still relative).
func (g *GGUFFile) readTensorInfo(r *ggufReader) error {
	name, err := r.str("tensor name")
	if err != nil {
		return err
	}
	if !utf8.ValidString(name) || name == "" || len(name) > 256 {
		return r.errorf("tensor name %q: want 1..256 bytes of UTF-8", name)
	}
	if _, dup := g.tensors[name]; dup {
		return fmt.Errorf("%s: tensor %q: %w", g.path, name, ErrDuplicateName)
	}
	nd, err := r.u32("tensor " + name + " dimension count")
	if err != nil {
		return err
	}
	if nd == 0 || nd > maxGGUFDims {
		return r.errorf("tensor %q: %d dimensions, want 1..%d", name, nd, maxGGUFDims)
	}
	t := GGUFTensor{Name: name, Dims: make([]uint64, nd)}
	elems := uint64(1)
	for i := range t.Dims {
		if t.Dims[i], err = r.u64("tensor " + name + " dimension"); err != nil {
			return err
		}
		// Each dimension and the product stay below 2^40: no overflow, far above any model.
		if t.Dims[i] == 0 || t.Dims[i] > 1<<40 || elems > (1<<40)/t.Dims[i] {
			return r.errorf("tensor %q: dimensions %v out of range", name, t.Dims[:i+1])
		}
		elems *= t.Dims[i]
	}
	typ, err := r.u32("tensor " + name + " type")
	if err != nil {
		return err
	}
	t.Type = GGMLType(typ)
	row, ok := t.Type.rowBytes(t.Dims[0])
	if !ok {
		if _, known := t.Type.rowBytes(0); known {
			block := map[GGMLType]int{GGMLQ8_0: q8Block, GGMLQ4_K: kBlock, GGMLQ6_K: kBlock}[t.Type]
			return r.errorf("tensor %q: %v rows of %d values are not whole %d-value blocks", name, t.Type, t.Dims[0], block)
		}
		return fmt.Errorf("%s: tensor %q: %w: %v (lukv reads F32, F16, BF16, Q8_0, Q4_K and Q6_K)", g.path, name, ErrUnsupportedDType, t.Type)
	}
	t.Size = int64(row * (elems / t.Dims[0]))
	off, err := r.u64("tensor " + name + " offset")
	if err != nil {
		return err
	}
	if off > 1<<62 {
		return r.errorf("tensor %q: offset %d out of range", name, off)
	}
	t.Offset = int64(off)
	g.tensors[name] = t
	g.names = append(g.names, name)
	return nil
}

// checkOverlap rejects tensors whose data share bytes.
func (g *GGUFFile) checkOverlap() error {
	ts := make([]GGUFTensor, 0, len(g.tensors))
	for _, t := range g.tensors {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Offset < ts[j].Offset })
	for i := 1; i < len(ts); i++ {
		if ts[i-1].Offset+ts[i-1].Size > ts[i].Offset {
			return fmt.Errorf("%s: tensors %q and %q: %w", g.path, ts[i-1].Name, ts[i].Name, ErrOverlap)
		}
	}
	return nil
}

// Path is the file's path.
func (g *GGUFFile) Path() string { return g.path }

// Keys lists the metadata keys in file order.
func (g *GGUFFile) Keys() []string { return slices.Clone(g.keys) }

// Value is the metadata value of key: uint64 (unsigned integers), int64 (signed), float64,
// bool, string, or []any of those.
func (g *GGUFFile) Value(key string) (any, bool) {
	v, ok := g.meta[key]
	return v, ok
}

// TensorNames lists the tensors in file order.
func (g *GGUFFile) TensorNames() []string { return slices.Clone(g.names) }

// Tensor describes the named tensor.
func (g *GGUFFile) Tensor(name string) (GGUFTensor, bool) {
	t, ok := g.tensors[name]
	return t, ok
}

// Float32 decodes the named tensor to float32 in file order (row-major in Shape's order:
// ggml's innermost dimension is contiguous), dequantizing Q8_0, Q4_K and Q6_K.
func (g *GGUFFile) Float32(name string) ([]float32, error) {
	if g.data == nil && g.tensors == nil {
		return nil, fmt.Errorf("%s: %w", g.path, ErrClosed)
	}
	t, ok := g.tensors[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: %w", g.path, name, ErrMissingTensor)
	}
	raw := g.data[t.Offset : t.Offset+t.Size]
	switch t.Type {
	case GGMLF32:
		return decodeFloat32(raw, F32), nil
	case GGMLF16:
		return decodeFloat32(raw, F16), nil
	case GGMLBF16:
		return decodeFloat32(raw, BF16), nil
	case GGMLQ4_K:
		return dequantizeQ4K(raw, make([]float32, 0, len(raw)/q4KBytes*kBlock)), nil
	case GGMLQ6_K:
		return dequantizeQ6K(raw, make([]float32, 0, len(raw)/q6KBytes*kBlock)), nil
	default: // GGMLQ8_0: validated at open
		out := make([]float32, 0, len(raw)/q8Bytes*q8Block)
		for b := 0; b < len(raw); b += q8Bytes {
			d := F16ToFloat32(binary.LittleEndian.Uint16(raw[b:]))
			for _, q := range raw[b+2 : b+q8Bytes] {
				out = append(out, d*float32(int8(q)))
			}
		}
		return out, nil
	}
}

// Close unmaps the file.
func (g *GGUFFile) Close() error {
	var err error
	if g.release != nil {
		err = g.release()
	}
	g.data, g.tensors, g.release = nil, nil, nil
	return err
}
