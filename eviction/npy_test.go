package eviction

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gorgonia.org/tensor"
)

// randCurve3 is a valid random curve.
func randCurve3(r *rand.Rand, L, H int) *BudgetCurve {
	c := NewBudgetCurve(L, H)
	for k := range c.Prune {
		c.Prune[k] = r.Float64()
	}
	return c
}

func TestNPYRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	dir := t.TempDir()
	for _, shape := range [][2]int{{1, 1}, {32, 8}, {3, 5}} {
		c := randCurve3(r, shape[0], shape[1])
		c.Meta = CurveMeta{Model: "meta-llama/Llama-3.1-8B-Instruct", Scorer: "expected_attention", Sink: 4, Window: 1,
			CalibrationSHA256: strings.Repeat("ab", 32), Version: CurveVersion, Questions: 30, ContextTokens: 4096}
		path := filepath.Join(dir, "curve.npy")
		if err := WriteNPY(path, c); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		hlen := int(binary.LittleEndian.Uint16(raw[8:]))
		if (10+hlen)%64 != 0 || raw[10+hlen-1] != '\n' {
			t.Errorf("header of %d bytes: data not 64-aligned or header not ended by a newline", hlen)
		}
		got, err := ReadNPY(path)
		if err != nil {
			t.Fatal(err)
		}
		if got.Layers != c.Layers || got.KVHeads != c.KVHeads || got.Ratios != CurveRatios || got.Meta != c.Meta {
			t.Fatalf("read back %d x %d, meta %+v", got.Layers, got.KVHeads, got.Meta)
		}
		for k := range c.Prune {
			if got.Prune[k] != c.Prune[k] {
				t.Fatalf("entry %d: %v, wrote %v", k, got.Prune[k], c.Prune[k])
			}
		}
	}
}

// numpyValue is the formula make_numpy_curves.py fills its curves with.
func numpyValue(i, l, h int) float64 {
	return min(1, max(0, float64(i+1)/100+0.001*float64(l)-0.0005*float64(h)))
}

// TestReadNumpyFiles reads curves that numpy itself wrote (testdata/make_numpy_curves.py)
// and checks that WriteNPY's bytes are identical to numpy's for the same array.
func TestReadNumpyFiles(t *testing.T) {
	for _, name := range []string{"numpy_f8.npy", "numpy_f4.npy"} {
		path := filepath.Join("testdata", name)
		c, err := ReadNPY(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Layers != 2 || c.KVHeads != 3 || c.Meta != (CurveMeta{}) {
			t.Fatalf("%s: %d x %d, meta %+v", name, c.Layers, c.KVHeads, c.Meta)
		}
		for i := 0; i < CurveRatios; i++ {
			for l := 0; l < 2; l++ {
				for h := 0; h < 3; h++ {
					want := numpyValue(i, l, h)
					if strings.Contains(name, "f4") {
						want = float64(float32(want))
					}
					if got := c.At(i, l, h); math.Abs(got-want) > 1e-15 {
						t.Fatalf("%s [%d, %d, %d] = %v, want %v", name, i, l, h, got, want)
					}
				}
			}
		}
		if name == "numpy_f8.npy" {
			raw, _ := os.ReadFile(path)
			if !bytes.Equal(encodeNPY(c), raw) {
				t.Errorf("WriteNPY's bytes differ from numpy's np.save for the same array")
			}
		}
	}
	for name, want := range map[string]string{
		"numpy_fortran.npy":   "Fortran",
		"numpy_bigendian.npy": `">f8"`,
		"numpy_shape2d.npy":   "shape [99 3]",
	} {
		path := filepath.Join("testdata", name)
		_, err := ReadNPY(path)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming the file and saying %q", name, err, want)
		}
	}
}

// npyBytes assembles a .npy file by hand: magic, version, header length, header, data.
func npyBytes(major byte, header string, data []byte) []byte {
	b := []byte("\x93NUMPY")
	b = append(b, major, 0)
	if major == 1 {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(header)))
	} else {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(header)))
	}
	b = append(b, header...)
	return append(b, data...)
}

// f8Data is the little-endian float64 bytes of n values v(k).
func f8Data(n int, v func(k int) float64) []byte {
	var b []byte
	for k := 0; k < n; k++ {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v(k)))
	}
	return b
}

func TestReadHandMadeNPY(t *testing.T) {
	dir := t.TempDir()
	// Version 2.0, keys in another order, double quotes, no trailing comma, no padding.
	data := f8Data(99*1*2, func(k int) float64 { return float64(k%99) / 100 })
	raw := npyBytes(2, `{"shape": (99, 1, 2), "fortran_order": False, "descr": "<f8"}`+"\n", data)
	path := filepath.Join(dir, "hand.npy")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := ReadNPY(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Layers != 1 || c.KVHeads != 2 || c.Prune[5] != 5.0/100 || c.Prune[len(c.Prune)-1] != 98.0/100 {
		t.Fatalf("hand-made file read as %d x %d, %v", c.Layers, c.KVHeads, c.Prune[:6])
	}
	// A sidecar is read when present, and a broken one is an error naming it.
	if err := os.WriteFile(path+".json", []byte(`{"model": "m", "sink": 4, "window": 1, "questions": 3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err = ReadNPY(path); err != nil || c.Meta.Model != "m" || c.Meta.Questions != 3 {
		t.Fatalf("with sidecar: %+v, %v", c, err)
	}
	if err := os.WriteFile(path+".json", []byte(`{"model": `), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err = ReadNPY(path); err == nil || !strings.Contains(err.Error(), "hand.npy.json") {
		t.Errorf("broken sidecar: %v", err)
	}
	if _, err := ReadNPY(filepath.Join(dir, "missing.npy")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestReadBadNPY(t *testing.T) {
	good := f8Data(99*2*3, func(int) float64 { return 0.5 })
	hdr := func(descr, fortran, shape string) string {
		return "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }\n"
	}
	ok := hdr("<f8", "False", "(99, 2, 3)")
	cases := []struct {
		name string
		raw  []byte
		want string
	}{
		{"empty", nil, "magic"},
		{"bad magic", []byte("\x93NUMPZ\x01\x00\x10\x00"), "magic"},
		{"version 4", npyBytes(4, ok, good), "version 4"},
		{"truncated length", []byte("\x93NUMPY\x01\x00\x10"), "truncated"},
		{"header past the end", npyBytes(1, ok, nil)[:20], "header says"},
		{"huge v2 header", append([]byte("\x93NUMPY\x02\x00"), 0xff, 0xff, 0xff, 0x7f), "too long"},
		{"not a dict", npyBytes(1, "[1, 2]\n", good), "want '{'"},
		{"missing key", npyBytes(1, "{'descr': '<f8', 'shape': (99, 2, 3)}", good), "exactly descr"},
		{"extra key", npyBytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (99, 2, 3), 'x': 'y'}", good), "exactly descr"},
		{"duplicate key", npyBytes(1, "{'descr': '<f8', 'descr': '<f8', 'shape': (99, 2, 3)}", good), "twice"},
		{"empty descr", npyBytes(1, hdr("", "False", "(99, 2, 3)"), good), `dtype ""`},
		{"int dtype", npyBytes(1, hdr("<i8", "False", "(99, 2, 3)"), good), `dtype "<i8"`},
		{"object dtype", npyBytes(1, "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (99, 2, 3)}", good), "want a string"},
		{"fortran", npyBytes(1, hdr("<f8", "True", "(99, 2, 3)"), good), "Fortran"},
		{"fortran not bool", npyBytes(1, hdr("<f8", "'no'", "(99, 2, 3)"), good), "True/False"},
		{"98 rows", npyBytes(1, hdr("<f8", "False", "(98, 2, 3)"), good), "want (99, layers, kv_heads)"},
		{"zero heads", npyBytes(1, hdr("<f8", "False", "(99, 2, 0)"), nil), "want (99, layers, kv_heads)"},
		{"negative dim", npyBytes(1, hdr("<f8", "False", "(99, -2, 3)"), good), "want a dimension"},
		{"huge dims", npyBytes(1, hdr("<f8", "False", "(99, 1048576, 1048576)"), good), "needs"},
		{"dim overflow", npyBytes(1, hdr("<f8", "False", "(99, 99999999999999999999, 3)"), good), "want a dimension"},
		{"shape not a tuple", npyBytes(1, hdr("<f8", "False", "'big'"), good), "tuple of integers"},
		{"unterminated string", npyBytes(1, "{'descr: '<f8'}", good), "want ':'"},
		{"escape", npyBytes(1, `{'des\'cr': '<f8'}`, good), "escapes"},
		{"trailing text", npyBytes(1, ok[:len(ok)-1]+" junk", good), "after the dict"},
		{"short data", npyBytes(1, ok, good[:len(good)-1]), "needs 4752 data bytes, file has 4751"},
		{"long data", npyBytes(1, ok, append(good, 0)), "file has 4753"},
		{"NaN value", npyBytes(1, ok, f8Data(99*2*3, func(k int) float64 { return math.NaN() })), "prune ratio in [0, 1]"},
		{"value above 1", npyBytes(1, ok, f8Data(99*2*3, func(k int) float64 { return 1.25 })), "prune ratio in [0, 1]"},
	}
	dir := t.TempDir()
	for _, tc := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".npy")
		if err := os.WriteFile(path, tc.raw, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadNPY(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming the file and containing %q", tc.name, err, tc.want)
		}
	}
}

// TestNPYAgreesWithGorgonia uses gorgonia.org/tensor's own .npy code as an independent
// implementation: it reads what WriteNPY writes, and ReadNPY reads what it writes.
func TestNPYAgreesWithGorgonia(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	c := randCurve3(r, 4, 2)
	var d tensor.Dense
	if err := d.ReadNpy(bytes.NewReader(encodeNPY(c))); err != nil {
		t.Fatal(err)
	}
	if s := d.Shape(); len(s) != 3 || s[0] != 99 || s[1] != 4 || s[2] != 2 {
		t.Fatalf("gorgonia reads shape %v", s)
	}
	got, ok := d.Data().([]float64)
	if !ok || len(got) != len(c.Prune) {
		t.Fatalf("gorgonia reads %T", d.Data())
	}
	for k := range got {
		if got[k] != c.Prune[k] {
			t.Fatalf("gorgonia entry %d: %v, want %v", k, got[k], c.Prune[k])
		}
	}
	g := tensor.New(tensor.WithShape(99, 4, 2), tensor.WithBacking(append([]float64(nil), c.Prune...)))
	var buf bytes.Buffer
	if err := g.WriteNpy(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := decodeCurveNPY(buf.Bytes())
	if err != nil {
		t.Fatalf("reading gorgonia's file: %v", err)
	}
	for k := range back.Prune {
		if back.Prune[k] != c.Prune[k] {
			t.Fatalf("entry %d of gorgonia's file: %v, want %v", k, back.Prune[k], c.Prune[k])
		}
	}
}

// FuzzReadNPY: no input may panic; whatever decodes is a valid curve that survives a
// write and read unchanged. Seeds: testdata/fuzz/FuzzReadNPY and a written curve.
func FuzzReadNPY(f *testing.F) {
	c := NewBudgetCurve(1, 2)
	for k := range c.Prune {
		c.Prune[k] = float64(k) / float64(len(c.Prune))
	}
	f.Add(encodeNPY(c))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCurveNPY(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("decoded an invalid curve: %v", err)
		}
		back, err := decodeCurveNPY(encodeNPY(c))
		if err != nil {
			t.Fatalf("re-encoded curve does not decode: %v", err)
		}
		for k := range c.Prune {
			if back.Prune[k] != c.Prune[k] {
				t.Fatalf("entry %d changed in a round trip: %v -> %v", k, c.Prune[k], back.Prune[k])
			}
		}
	})
}
