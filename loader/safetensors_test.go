package loader

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// rawFile assembles a safetensors file from a header string and dataLen zero bytes.
func rawFile(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

// randomTensor is a WriteTensor of the given shape with values spread over several
// orders of magnitude, so that rounding is exercised.
func randomTensor(rng *rand.Rand, name string, dt DType, shape ...int) WriteTensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(math.Ldexp(rng.NormFloat64(), rng.IntN(20)-10))
	}
	return WriteTensor{Name: name, DType: dt, Shape: shape, Data: data}
}

// rounded is what reading back t must give: its data through t's dtype.
func rounded(t WriteTensor) []float32 {
	out := make([]float32, len(t.Data))
	for i, v := range t.Data {
		switch t.DType {
		case F32:
			out[i] = v
		case BF16:
			out[i] = BF16ToFloat32(Float32ToBF16(v))
		case F16:
			out[i] = F16ToFloat32(Float32ToF16(v))
		}
	}
	return out
}

func TestSafetensorsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, dt := range []DType{F32, BF16, F16} {
		t.Run(string(dt), func(t *testing.T) {
			tensors := []WriteTensor{
				randomTensor(rng, "model.layers.0.self_attn.q_proj.weight", dt, 8, 5),
				randomTensor(rng, "model.norm.weight", dt, 7),
				randomTensor(rng, "scalar", dt),
				randomTensor(rng, "empty", dt, 0, 3),
				randomTensor(rng, "a<b>&c", dt, 2, 3, 4), // names JSON would HTML-escape
			}
			meta := map[string]string{"format": "pt", "note": "round trip"}
			path := filepath.Join(t.TempDir(), "x.safetensors")
			if err := WriteSafetensors(path, tensors, meta); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if n := binary.LittleEndian.Uint64(raw); n%8 != 0 {
				t.Errorf("header length %d is not a multiple of 8", n)
			}

			f, err := OpenSafetensors(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var names []string
			for _, w := range tensors {
				names = append(names, w.Name)
			}
			slices.Sort(names)
			if !slices.Equal(f.Names(), names) {
				t.Errorf("Names() = %v, want %v", f.Names(), names)
			}
			if m := f.Metadata(); len(m) != 2 || m["format"] != "pt" || m["note"] != "round trip" {
				t.Errorf("Metadata() = %v, want %v", m, meta)
			}
			var prevEnd int64 = -1
			for _, w := range tensors {
				info, ok := f.Info(w.Name)
				if !ok {
					t.Fatalf("Info(%q) missing", w.Name)
				}
				wantShape := w.Shape
				if wantShape == nil {
					wantShape = []int{}
				}
				if info.DType != dt || !slices.Equal(info.Shape, wantShape) || info.Size != int64(len(w.Data)*dt.Size()) {
					t.Errorf("Info(%q) = %+v, want dtype %s shape %v", w.Name, info, dt, w.Shape)
				}
				if info.Offset < prevEnd {
					t.Errorf("tensor %q at %d, before the end of the previous one (%d): order not kept", w.Name, info.Offset, prevEnd)
				}
				prevEnd = info.Offset + info.Size
				b, err := f.Raw(w.Name)
				if err != nil || int64(len(b)) != info.Size {
					t.Errorf("Raw(%q): %d bytes, %v; want %d bytes", w.Name, len(b), err, info.Size)
				}
				got, err := f.Float32(w.Name)
				if err != nil {
					t.Fatal(err)
				}
				if want := rounded(w); !slices.Equal(got, want) {
					t.Errorf("Float32(%q) = %v, want %v", w.Name, got, want)
				}
			}
			if _, err := f.Float32("nope"); !errors.Is(err, ErrMissingTensor) {
				t.Errorf("Float32 of a missing tensor: %v, want ErrMissingTensor", err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Raw(tensors[0].Name); !errors.Is(err, ErrClosed) {
				t.Errorf("Raw after Close: %v, want ErrClosed", err)
			}
		})
	}
}

// TestFloat32MatchesRawBytes decodes the written bytes independently of the reader.
func TestFloat32MatchesRawBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	data := []float32{1, -2.5, 65504, 1e-7, float32(math.Inf(-1))}
	err := WriteSafetensors(path, []WriteTensor{
		{Name: "f32", DType: F32, Shape: []int{5}, Data: data},
		{Name: "bf16", DType: BF16, Shape: []int{5}, Data: data},
		{Name: "f16", DType: F16, Shape: []int{5}, Data: data},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := f.Raw("f32")
	for i, v := range data {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])); got != v {
			t.Errorf("f32 element %d = %v, want %v", i, got, v)
		}
	}
	b, _ = f.Raw("bf16")
	if binary.LittleEndian.Uint16(b) != 0x3F80 || binary.LittleEndian.Uint16(b[2:]) != 0xC020 {
		t.Errorf("bf16 bytes % x, want 1 = 3f80 and -2.5 = c020", b[:4])
	}
	b, _ = f.Raw("f16")
	if binary.LittleEndian.Uint16(b) != 0x3C00 || binary.LittleEndian.Uint16(b[4:]) != 0x7BFF {
		t.Errorf("f16 bytes % x, want 1 = 3c00 and 65504 = 7bff", b[:6])
	}
}

func TestSafetensorsBadInput(t *testing.T) {
	const ok = `{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}`
	huge := binary.LittleEndian.AppendUint64(nil, 1<<40) // a header "of 1 TB"
	cases := []struct {
		name string
		file []byte
		want error
	}{
		{"empty file", nil, ErrTruncated},
		{"header length cut", []byte{1, 2, 3}, ErrTruncated},
		{"header claims 1 TB", append(huge, ok...), ErrHeaderTooLarge},
		{"header claims 2^64-1", append(binary.LittleEndian.AppendUint64(nil, math.MaxUint64), ok...), ErrHeaderTooLarge},
		{"header longer than file", rawFile(ok, 16)[:8+len(ok)-5], ErrTruncated},
		{"data cut", rawFile(ok, 15), ErrTruncated},
		{"invalid JSON", rawFile(`{"a":{"dtype":"F32",`, 0), ErrBadHeader},
		{"not an object", rawFile(`[1,2]`, 0), ErrBadHeader},
		{"empty header", rawFile(``, 0), ErrBadHeader},
		{"trailing garbage", rawFile(ok+`x`, 16), ErrBadHeader},
		{"trailing NUL padding", rawFile(ok+"\x00", 16), ErrBadHeader},
		{"invalid UTF-8", rawFile(`{"a\xff":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4), ErrBadHeader},
		{"entry not an object", rawFile(`{"a":5}`, 0), ErrBadHeader},
		{"missing dtype", rawFile(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, 4), ErrBadHeader},
		{"missing shape", rawFile(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, 4), ErrBadHeader},
		{"missing offsets", rawFile(`{"a":{"dtype":"F32","shape":[1]}}`, 4), ErrBadHeader},
		{"three offsets", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 8), ErrBadHeader},
		{"begin after end", rawFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, 4), ErrBadHeader},
		{"negative offset", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, 4), ErrBadHeader},
		{"offset beyond int64", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}}`, 4), ErrBadHeader},
		{"fractional dim", rawFile(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, 4), ErrBadHeader},
		{"metadata not strings", rawFile(`{"__metadata__":{"n":1}}`, 0), ErrBadHeader},
		{"offsets past the end", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, 12), ErrTruncated},
		{"overlap", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), ErrOverlap},
		{"same range twice", rawFile(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, 4), ErrOverlap},
		{"nested range", rawFile(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]}}`, 16), ErrOverlap},
		{"shape too small", rawFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}`, 16), ErrShapeMismatch},
		{"shape too big", rawFile(`{"a":{"dtype":"BF16","shape":[3,3],"data_offsets":[0,16]}}`, 16), ErrShapeMismatch},
		{"negative dim", rawFile(`{"a":{"dtype":"F32","shape":[-2,-2],"data_offsets":[0,16]}}`, 16), ErrBadHeader},
		{"huge dims overflow", rawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,16]}}`, 16), ErrShapeMismatch},
		{"huge dims wrap to size", rawFile(`{"a":{"dtype":"F32","shape":[4611686018427387905,4],"data_offsets":[0,16]}}`, 16), ErrShapeMismatch},
		{"dim beyond int64", rawFile(`{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,16]}}`, 16), ErrBadHeader},
		{"F64", rawFile(`{"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}`, 16), ErrUnsupportedDType},
		{"I64", rawFile(`{"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}`, 16), ErrUnsupportedDType},
		{"U8", rawFile(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 2), ErrUnsupportedDType},
		{"F8_E4M3", rawFile(`{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}`, 2), ErrUnsupportedDType},
		{"duplicate name", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), ErrDuplicateName},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, 0), ErrDuplicateName},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseSafetensors(c.file, "bad.safetensors")
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), "bad.safetensors") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

// TestSafetensorsErrorsNameTensor checks that a tensor's problem names that tensor.
func TestSafetensorsErrorsNameTensor(t *testing.T) {
	file := rawFile(`{"ok":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"blocks.3.w":{"dtype":"F64","shape":[1],"data_offsets":[4,12]}}`, 12)
	_, err := parseSafetensors(file, "m.safetensors")
	if !errors.Is(err, ErrUnsupportedDType) || !strings.Contains(err.Error(), `"blocks.3.w"`) || !strings.Contains(err.Error(), "F64") {
		t.Errorf("got %v, want ErrUnsupportedDType naming tensor blocks.3.w and F64", err)
	}
}

// TestSafetensorsValidEdgeCases are files that are odd but valid.
func TestSafetensorsValidEdgeCases(t *testing.T) {
	cases := []struct {
		name   string
		file   []byte
		tensor int
	}{
		{"no tensors", rawFile(`{}`, 0), 0},
		{"only metadata", rawFile(`{"__metadata__":{"format":"pt"}}`, 0), 0},
		{"space padding", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}   `, 4), 1},
		{"hole between tensors", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, 12), 2},
		{"empty tensor inside another's range", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0,99],"data_offsets":[4,4]}}`, 8), 2},
		{"zero dim with huge dims", rawFile(`{"a":{"dtype":"F32","shape":[0,9223372036854775807,9223372036854775807],"data_offsets":[0,0]}}`, 0), 1},
		{"adjacent out of order", rawFile(`{"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, 8), 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := parseSafetensors(c.file, "edge.safetensors")
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Names()) != c.tensor {
				t.Errorf("%d tensors, want %d", len(f.Names()), c.tensor)
			}
			for _, name := range f.Names() {
				if _, err := f.Float32(name); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestOpenSafetensorsFiles covers the mmap path on real files, bad ones included.
func TestOpenSafetensorsFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenSafetensors(filepath.Join(dir, "absent.safetensors")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent file: %v, want ErrNotExist", err)
	}
	empty := filepath.Join(dir, "empty.safetensors")
	os.WriteFile(empty, nil, 0o644)
	if _, err := OpenSafetensors(empty); !errors.Is(err, ErrTruncated) {
		t.Errorf("empty file: %v, want ErrTruncated", err)
	}
	good := filepath.Join(dir, "good.safetensors")
	if err := WriteSafetensors(good, []WriteTensor{{Name: "w", DType: F32, Shape: []int{4, 4}, Data: make([]float32, 16)}}, nil); err != nil {
		t.Fatal(err)
	}
	whole, _ := os.ReadFile(good)
	for _, cut := range []int{4, 12, len(whole) - 1} {
		p := filepath.Join(dir, "cut.safetensors")
		os.WriteFile(p, whole[:cut], 0o644)
		if _, err := OpenSafetensors(p); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), p) {
			t.Errorf("file cut to %d bytes: %v, want ErrTruncated naming %s", cut, err, p)
		}
	}
}

func TestWriteSafetensorsRejects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.safetensors")
	cases := []struct {
		name    string
		tensors []WriteTensor
		want    error
	}{
		{"data shorter than shape", []WriteTensor{{Name: "a", DType: F32, Shape: []int{2, 2}, Data: make([]float32, 3)}}, ErrShapeMismatch},
		{"negative dim", []WriteTensor{{Name: "a", DType: F32, Shape: []int{-1, -1}, Data: make([]float32, 1)}}, ErrShapeMismatch},
		{"unsupported dtype", []WriteTensor{{Name: "a", DType: "F64", Shape: []int{1}, Data: make([]float32, 1)}}, ErrUnsupportedDType},
		{"duplicate", []WriteTensor{{Name: "a", DType: F32, Shape: []int{1}, Data: []float32{1}}, {Name: "a", DType: F32, Shape: []int{1}, Data: []float32{1}}}, ErrDuplicateName},
	}
	for _, c := range cases {
		if err := WriteSafetensors(path, c.tensors, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	if err := WriteSafetensors(path, []WriteTensor{{Name: "__metadata__", DType: F32, Data: []float32{1}}}, nil); err == nil {
		t.Error("a tensor named __metadata__ was accepted")
	}
}
