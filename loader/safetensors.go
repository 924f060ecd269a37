package loader

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"unicode/utf8"
)

// MaxHeaderBytes bounds the JSON header of a safetensors file. Real headers are tens
// of KiB to a few MiB; a larger length field means a corrupt or hostile file.
const MaxHeaderBytes = 100 << 20

// TensorInfo describes one tensor of a safetensors file.
type TensorInfo struct {
	Name   string
	DType  DType
	Shape  []int // row-major; [] is a scalar
	Offset int64 // absolute byte offset of the data in the file
	Size   int64 // bytes of data: product(Shape) * DType.Size()
}

// SafetensorsFile is an opened, validated safetensors file. The file is memory-mapped
// (read whole where mmap is unavailable); Raw returns slices of that mapping. It is
// safe for concurrent readers until Close.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data section, which data_offsets index from its start.
type SafetensorsFile struct {
	path     string
	data     []byte // the whole file; nil after Close
	tensors  map[string]TensorInfo
	names    []string // sorted
	metadata map[string]string
	release  func() error // unmaps data; nil when data is on the heap
	closed   bool
}

// OpenSafetensors maps the file at path and validates its header: sizes, JSON,
// dtypes, shapes against data lengths, offsets inside the file, no overlapping
// tensors and no duplicate names.
func OpenSafetensors(path string) (*SafetensorsFile, error) {
	data, release, err := openMapped(path)
	if err != nil {
		return nil, err
	}
	sf, err := parseSafetensors(data, path)
	if err != nil {
		if release != nil {
			release()
		}
		return nil, err
	}
	sf.release = release
	return sf, nil
}

// rawTensor is one header entry as written in the JSON; pointers tell absent fields.
type rawTensor struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// parseSafetensors validates a whole safetensors file held in data. The returned file
// keeps data (no copy); path is only used in error messages.
func parseSafetensors(data []byte, path string) (*SafetensorsFile, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("%s: %w: %d bytes, shorter than the 8-byte header length", path, ErrTruncated, len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > MaxHeaderBytes {
		return nil, fmt.Errorf("%s: %w: header length %d bytes, limit %d", path, ErrHeaderTooLarge, n, MaxHeaderBytes)
	}
	if n > uint64(len(data)-8) {
		return nil, fmt.Errorf("%s: %w: header length %d bytes, but only %d bytes follow", path, ErrTruncated, n, len(data)-8)
	}
	header := data[8 : 8+n]
	dataStart := int64(8 + n)
	dataLen := int64(len(data)) - dataStart

	raws, order, metadata, err := parseHeader(header, path)
	if err != nil {
		return nil, err
	}
	sf := &SafetensorsFile{path: path, data: data, tensors: make(map[string]TensorInfo, len(raws)), metadata: metadata}
	for _, name := range order {
		info, err := checkTensor(name, raws[name], dataLen, path)
		if err != nil {
			return nil, err
		}
		info.Offset += dataStart
		sf.tensors[name] = info
		sf.names = append(sf.names, name)
	}
	sort.Strings(sf.names)
	if err := checkOverlap(sf.tensors, path); err != nil {
		return nil, err
	}
	return sf, nil
}

// parseHeader walks the header's top-level JSON object token by token, so that a
// repeated key is caught (json.Unmarshal would silently keep the last one). It returns
// the tensor entries, their names in header order, and the metadata.
func parseHeader(header []byte, path string) (map[string]rawTensor, []string, map[string]string, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w: %s", path, ErrBadHeader, fmt.Sprintf(format, args...))
	}
	if !utf8.Valid(header) {
		return nil, nil, nil, bad("header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, nil, bad("header is not a JSON object")
	}
	raws := map[string]rawTensor{}
	var order []string
	var metadata map[string]string
	seenMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, nil, bad("%v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, nil, bad("expected a key, got %v", tok)
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, nil, nil, bad("value of %q: %v", name, err)
		}
		_, dup := raws[name]
		if dup || name == "__metadata__" && seenMeta {
			return nil, nil, nil, fmt.Errorf("%s: tensor %q: %w", path, name, ErrDuplicateName)
		}
		if name == "__metadata__" {
			seenMeta = true
			if err := json.Unmarshal(value, &metadata); err != nil {
				return nil, nil, nil, bad("__metadata__ is not a map of strings to strings: %v", err)
			}
			continue
		}
		var rt rawTensor
		if err := json.Unmarshal(value, &rt); err != nil {
			return nil, nil, nil, bad("tensor %q: %v", name, err)
		}
		raws[name] = rt
		order = append(order, name)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, nil, nil, bad("header JSON object is not closed")
	}
	// Only whitespace (the format pads with spaces) may follow the object.
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, nil, bad("data after the header's JSON object")
	}
	return raws, order, metadata, nil
}

// checkTensor validates one header entry against a data section of dataLen bytes and
// returns its info with Offset relative to the data section.
func checkTensor(name string, rt rawTensor, dataLen int64, path string) (TensorInfo, error) {
	fail := func(sentinel error, format string, args ...any) (TensorInfo, error) {
		return TensorInfo{}, fmt.Errorf("%s: tensor %q: %w: %s", path, name, sentinel, fmt.Sprintf(format, args...))
	}
	if rt.DType == nil || rt.Shape == nil || rt.DataOffsets == nil {
		return fail(ErrBadHeader, "needs dtype, shape and data_offsets")
	}
	dt := DType(*rt.DType)
	if dt.Size() == 0 {
		return fail(ErrUnsupportedDType, "%q (supported: BF16, F16, F32)", *rt.DType)
	}
	offs := *rt.DataOffsets
	if len(offs) != 2 {
		return fail(ErrBadHeader, "data_offsets has %d entries, want 2", len(offs))
	}
	begin, end := offs[0], offs[1]
	if begin < 0 || end < 0 || begin > end {
		return fail(ErrBadHeader, "data_offsets [%d, %d] are not a range", begin, end)
	}
	if end > dataLen {
		return fail(ErrTruncated, "data_offsets [%d, %d] end past the data section of %d bytes", begin, end, dataLen)
	}
	// Byte length of the shape, refusing negative dimensions and int64 overflow.
	shape := make([]int, len(*rt.Shape))
	nbytes := int64(dt.Size())
	for i, d := range *rt.Shape {
		if d < 0 || d > math.MaxInt {
			return fail(ErrBadHeader, "shape %v has an invalid dimension %d", *rt.Shape, d)
		}
		shape[i] = int(d)
	}
	if !slices.Contains(shape, 0) {
		for _, d := range *rt.Shape {
			if nbytes > math.MaxInt64/d {
				return fail(ErrShapeMismatch, "shape %v of %s overflows int64 bytes", *rt.Shape, dt)
			}
			nbytes *= d
		}
	} else {
		nbytes = 0
	}
	if nbytes != end-begin {
		return fail(ErrShapeMismatch, "shape %v of %s is %d bytes, data_offsets [%d, %d] hold %d", shape, dt, nbytes, begin, end, end-begin)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Offset: begin, Size: nbytes}, nil
}

// checkOverlap fails if two tensors share a byte. Holes between tensors are allowed.
func checkOverlap(tensors map[string]TensorInfo, path string) error {
	var ranges []TensorInfo
	for _, t := range tensors {
		if t.Size > 0 { // an empty range holds no bytes and cannot overlap
			ranges = append(ranges, t)
		}
	}
	slices.SortFunc(ranges, func(a, b TensorInfo) int {
		if a.Offset != b.Offset {
			return compare(a.Offset, b.Offset)
		}
		return compare(a.Size, b.Size)
	})
	for i := 1; i < len(ranges); i++ {
		// Sorted by start and pairwise disjoint so far, so the previous range ends last.
		a, b := ranges[i-1], ranges[i]
		if b.Offset < a.Offset+a.Size {
			return fmt.Errorf("%s: tensors %q and %q: %w: bytes [%d, %d) and [%d, %d) of the file", path, a.Name, b.Name, ErrOverlap,
				a.Offset, a.Offset+a.Size, b.Offset, b.Offset+b.Size)
		}
	}
	return nil
}

func compare(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Path is the file's path as given to OpenSafetensors.
func (f *SafetensorsFile) Path() string { return f.path }

// Names lists the tensor names, sorted.
func (f *SafetensorsFile) Names() []string { return slices.Clone(f.names) }

// Info describes the named tensor; ok is false when there is none.
func (f *SafetensorsFile) Info(name string) (TensorInfo, bool) {
	t, ok := f.tensors[name]
	t.Shape = slices.Clone(t.Shape)
	return t, ok
}

// Metadata is a copy of the header's "__metadata__" map (empty when absent).
func (f *SafetensorsFile) Metadata() map[string]string {
	m := make(map[string]string, len(f.metadata))
	for k, v := range f.metadata {
		m[k] = v
	}
	return m
}

// Raw returns the tensor's bytes, little-endian, as a slice of the mapped file (no
// copy): do not write to it, and do not use it after Close.
func (f *SafetensorsFile) Raw(name string) ([]byte, error) {
	if f.closed {
		return nil, fmt.Errorf("%s: tensor %q: %w", f.path, name, ErrClosed)
	}
	t, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: %w", f.path, name, ErrMissingTensor)
	}
	return f.data[t.Offset : t.Offset+t.Size : t.Offset+t.Size], nil
}

// Float32 converts the tensor to a fresh []float32 (row-major, product(Shape)
// elements). BF16 and F16 widen exactly.
func (f *SafetensorsFile) Float32(name string) ([]float32, error) {
	raw, err := f.Raw(name)
	if err != nil {
		return nil, err
	}
	return decodeFloat32(raw, f.tensors[name].DType), nil
}

// decodeFloat32 converts little-endian elements of dtype dt to float32.
func decodeFloat32(raw []byte, dt DType) []float32 {
	out := make([]float32, len(raw)/dt.Size())
	switch dt {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = BF16ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case F16:
		for i := range out {
			out[i] = F16ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	}
	return out
}

// Close releases the mapping. Slices from Raw must not be used afterwards.
func (f *SafetensorsFile) Close() error {
	var err error
	if f.release != nil {
		err = f.release()
		f.release = nil
	}
	f.data = nil
	f.closed = true
	return err
}
