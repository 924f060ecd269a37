package eviction

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
)

// Budget curves on disk, in kvpress's format: a NumPy .npy file holding a C-order
// array of shape (99, L, H). The authors' step2_compute_curve.py builds the curve as
// float64 and saves it with np.save, so their files (and kvpress's downloads) are '<f8';
// WriteNPY writes '<f8' too. ReadNPY also takes '<f4' (kvpress's uniform fallback curve
// is float32). Provenance goes in a JSON sidecar, <file>.npy.json (CurveMeta), which
// numpy ignores.
//
// The NPY format (numpy.lib.format): the magic "\x93NUMPY", a major and minor version
// byte, the header length (uint16 little-endian in version 1, uint32 in 2 and 3), then
// the header, a Python dict literal such as
//
//	{'descr': '<f8', 'fortran_order': False, 'shape': (99, 32, 8), }
//
// padded with spaces and ended by '\n' so that the data starts on a 64-byte boundary,
// then the raw data.
//
// Why not gorgonia.org/tensor's Dense.ReadNpy/WriteNpy (v0.9.24): its reader panics on
// hostile input (checked: an empty 'descr' slices out of range; a negative dimension
// panics in makeslice; a shape of (99, 100000, 100000) is allocated before any data is
// read and kills the process with a fatal out-of-memory that recover cannot catch),
// ignores the byte-order character (it would read '>f8' as little-endian) and only
// takes version 1.0. The reader has to be ours, and the writer is the same few lines of
// format; linking gorgonia (and arrow, flatbuffers, protobuf behind it) into every
// binary that uses this package only to write a header would also cost more than it
// saves. The tests still use gorgonia as an independent reader and writer to check that
// the formats agree.

// npyMagic opens every .npy file.
const npyMagic = "\x93NUMPY"

// maxNPYHeader bounds the header length a reader accepts (numpy's own limit is 10000
// bytes by default).
const maxNPYHeader = 1 << 16

// maxCurveFile bounds the size of a curve file ReadNPY will load: 99 x 128 layers x 128
// heads of float64 is 13 MB.
const maxCurveFile = 1 << 28

// WriteNPY writes the curve to path as a little-endian float64 .npy of shape
// (99, L, H), loadable by numpy.load and kvpress, and its Meta as JSON to path+".json".
// The curve must be valid (Validate).
func WriteNPY(path string, c *BudgetCurve) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, encodeNPY(c), 0o644); err != nil {
		return err
	}
	meta, err := json.MarshalIndent(c.Meta, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s.json: %w", path, err)
	}
	return os.WriteFile(path+".json", append(meta, '\n'), 0o644)
}

// encodeNPY is the .npy bytes of a valid curve: version 1.0, '<f8', C order.
func encodeNPY(c *BudgetCurve) []byte {
	header := fmt.Sprintf("{'descr': '<f8', 'fortran_order': False, 'shape': (%d, %d, %d), }", c.Ratios, c.Layers, c.KVHeads)
	pre := len(npyMagic) + 2 + 2 // magic, version, uint16 header length
	pad := 64 - (pre+len(header)+1)%64
	if pad == 64 {
		pad = 0
	}
	header += string(bytes.Repeat([]byte{' '}, pad)) + "\n"
	var buf bytes.Buffer
	buf.Grow(pre + len(header) + 8*len(c.Prune))
	buf.WriteString(npyMagic)
	buf.Write([]byte{1, 0})
	buf.Write(binary.LittleEndian.AppendUint16(nil, uint16(len(header))))
	buf.WriteString(header)
	var b [8]byte
	for _, p := range c.Prune {
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(p))
		buf.Write(b[:])
	}
	return buf.Bytes()
}

// ReadNPY reads a budget curve from a .npy file: dtype '<f4' or '<f8', C order, shape
// (99, L, H) with L, H >= 1, every value a prune ratio in [0, 1]. If path+".json"
// exists it is read into Meta; otherwise Meta is zero (kvpress's files have none).
// Every problem is an error naming the file; hostile files never panic.
func ReadNPY(path string) (*BudgetCurve, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() > maxCurveFile {
		return nil, fmt.Errorf("%s: %d bytes, too large for a budget curve (limit %d)", path, st.Size(), maxCurveFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := decodeCurveNPY(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	side := path + ".json"
	meta, err := os.ReadFile(side)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(meta, &c.Meta); err != nil {
			return nil, fmt.Errorf("%s: curve metadata: %w", side, err)
		}
	}
	return c, nil
}

// decodeCurveNPY parses .npy bytes into a validated curve (Meta empty).
func decodeCurveNPY(data []byte) (*BudgetCurve, error) {
	h, body, err := parseNPYHeader(data)
	if err != nil {
		return nil, err
	}
	if h.descr != "<f8" && h.descr != "<f4" {
		return nil, fmt.Errorf("not a budget curve: dtype %q, want '<f8' or '<f4' (little-endian float)", h.descr)
	}
	if h.fortran {
		return nil, fmt.Errorf("not a budget curve: Fortran-order array; save it in C order (np.save(path, np.ascontiguousarray(curve)))")
	}
	if len(h.shape) != 3 || h.shape[0] != CurveRatios || h.shape[1] < 1 || h.shape[2] < 1 {
		return nil, fmt.Errorf("not a budget curve: shape %v, want (99, layers, kv_heads)", h.shape)
	}
	L, H := h.shape[1], h.shape[2]
	size := 8
	if h.descr == "<f4" {
		size = 4
	}
	// shape entries are bounded by parseNPYHeader, so this cannot overflow.
	n := CurveRatios * L * H
	if len(body) != n*size {
		return nil, fmt.Errorf("shape %v of %s needs %d data bytes, file has %d", h.shape, h.descr, n*size, len(body))
	}
	c := &BudgetCurve{Ratios: CurveRatios, Layers: L, KVHeads: H, Prune: make([]float64, n)}
	for k := range c.Prune {
		if size == 8 {
			c.Prune[k] = math.Float64frombits(binary.LittleEndian.Uint64(body[8*k:]))
		} else {
			c.Prune[k] = float64(math.Float32frombits(binary.LittleEndian.Uint32(body[4*k:])))
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// npyHeader is what a .npy header says about its array.
type npyHeader struct {
	descr   string
	fortran bool
	shape   []int
}

// maxNPYDim bounds each dimension of the shape so that products of three stay far from
// overflow (and far beyond any real curve).
const maxNPYDim = 1 << 20

// parseNPYHeader checks the magic and version, parses the header dict and returns it
// with the data that follows.
func parseNPYHeader(data []byte) (npyHeader, []byte, error) {
	var h npyHeader
	if len(data) < len(npyMagic)+2 || string(data[:len(npyMagic)]) != npyMagic {
		return h, nil, fmt.Errorf("not a .npy file (no \\x93NUMPY magic)")
	}
	major := data[len(npyMagic)]
	rest := data[len(npyMagic)+2:]
	var hlen int
	switch major {
	case 1:
		if len(rest) < 2 {
			return h, nil, fmt.Errorf(".npy header length truncated")
		}
		hlen, rest = int(binary.LittleEndian.Uint16(rest)), rest[2:]
	case 2, 3:
		if len(rest) < 4 {
			return h, nil, fmt.Errorf(".npy header length truncated")
		}
		n := binary.LittleEndian.Uint32(rest)
		if n > maxNPYHeader {
			return h, nil, fmt.Errorf(".npy header of %d bytes is too long (limit %d)", n, maxNPYHeader)
		}
		hlen, rest = int(n), rest[4:]
	default:
		return h, nil, fmt.Errorf(".npy format version %d.%d not supported (want 1, 2 or 3)", major, data[len(npyMagic)+1])
	}
	if hlen > len(rest) {
		return h, nil, fmt.Errorf(".npy header says %d bytes, file has %d after the preamble", hlen, len(rest))
	}
	p := &literalParser{s: rest[:hlen]}
	dict, err := p.dict()
	if err != nil {
		return h, nil, fmt.Errorf(".npy header %q: %w", truncate(rest[:hlen], 120), err)
	}
	if len(dict) != 3 {
		return h, nil, fmt.Errorf(".npy header has keys %v, want exactly descr, fortran_order and shape", keys(dict))
	}
	var ok bool
	if h.descr, ok = dict["descr"].(string); !ok {
		return h, nil, fmt.Errorf(".npy header: 'descr' missing or not a string")
	}
	if h.fortran, ok = dict["fortran_order"].(bool); !ok {
		return h, nil, fmt.Errorf(".npy header: 'fortran_order' missing or not True/False")
	}
	if h.shape, ok = dict["shape"].([]int); !ok {
		return h, nil, fmt.Errorf(".npy header: 'shape' missing or not a tuple of integers")
	}
	return h, rest[hlen:], nil
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// literalParser reads the small subset of Python literals that .npy headers use: a dict
// of string keys whose values are strings, True/False, or tuples of non-negative
// integers. Anything else is an error.
type literalParser struct {
	s   []byte
	pos int
}

func (p *literalParser) ws() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t' || p.s[p.pos] == '\n' || p.s[p.pos] == '\r') {
		p.pos++
	}
}

func (p *literalParser) peek() byte {
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}

func (p *literalParser) expect(c byte) error {
	p.ws()
	if p.peek() != c {
		return fmt.Errorf("at byte %d: want %q", p.pos, c)
	}
	p.pos++
	return nil
}

// dict parses the whole input as one dict, allowing only whitespace after it.
func (p *literalParser) dict() (map[string]any, error) {
	if err := p.expect('{'); err != nil {
		return nil, err
	}
	d := map[string]any{}
	for {
		p.ws()
		if p.peek() == '}' {
			p.pos++
			break
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		if _, dup := d[k]; dup {
			return nil, fmt.Errorf("key %q twice", k)
		}
		if err := p.expect(':'); err != nil {
			return nil, err
		}
		v, err := p.value()
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		d[k] = v
		p.ws()
		switch p.peek() {
		case ',':
			p.pos++
		case '}':
		default:
			return nil, fmt.Errorf("at byte %d: want ',' or '}'", p.pos)
		}
	}
	p.ws()
	if p.pos != len(p.s) {
		return nil, fmt.Errorf("at byte %d: unexpected text after the dict", p.pos)
	}
	return d, nil
}

// str parses a quoted string without escapes.
func (p *literalParser) str() (string, error) {
	p.ws()
	q := p.peek()
	if q != '\'' && q != '"' {
		return "", fmt.Errorf("at byte %d: want a quoted string", p.pos)
	}
	start := p.pos + 1
	for i := start; i < len(p.s); i++ {
		switch p.s[i] {
		case q:
			p.pos = i + 1
			return string(p.s[start:i]), nil
		case '\\', '\n':
			return "", fmt.Errorf("at byte %d: escapes and newlines in strings are not supported", i)
		}
	}
	return "", fmt.Errorf("at byte %d: unterminated string", p.pos)
}

func (p *literalParser) value() (any, error) {
	p.ws()
	switch c := p.peek(); {
	case c == '\'' || c == '"':
		return p.str()
	case c == '(':
		return p.tuple()
	case bytes.HasPrefix(p.s[p.pos:], []byte("True")):
		p.pos += 4
		return true, nil
	case bytes.HasPrefix(p.s[p.pos:], []byte("False")):
		p.pos += 5
		return false, nil
	}
	return nil, fmt.Errorf("at byte %d: want a string, True, False or a tuple", p.pos)
}

// tuple parses (), (n,) or (n, m, ...) of integers in [0, maxNPYDim].
func (p *literalParser) tuple() ([]int, error) {
	if err := p.expect('('); err != nil {
		return nil, err
	}
	out := []int{}
	for {
		p.ws()
		if p.peek() == ')' {
			p.pos++
			return out, nil
		}
		start := p.pos
		for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
			p.pos++
		}
		if p.pos == start || p.pos-start > 9 {
			return nil, fmt.Errorf("at byte %d: want a dimension (a non-negative integer below %d)", start, maxNPYDim+1)
		}
		n, err := strconv.Atoi(string(p.s[start:p.pos]))
		if err != nil || n > maxNPYDim {
			return nil, fmt.Errorf("at byte %d: dimension %q out of range [0, %d]", start, p.s[start:p.pos], maxNPYDim)
		}
		if p.peek() == 'L' { // Python 2 era numpy wrote long integers as 3L
			p.pos++
		}
		out = append(out, n)
		p.ws()
		switch p.peek() {
		case ',':
			p.pos++
		case ')':
		default:
			return nil, fmt.Errorf("at byte %d: want ',' or ')'", p.pos)
		}
	}
}
