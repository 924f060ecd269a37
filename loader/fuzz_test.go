package loader

import (
	"errors"
	"testing"
)

// FuzzSafetensorsHeader feeds arbitrary bytes as a whole safetensors file. Parsing
// must never panic; an error must wrap one of the package's sentinels; an accepted
// file must have every tensor readable with the size its shape and dtype give.
// Seeds: testdata/fuzz/FuzzSafetensorsHeader.
func FuzzSafetensorsHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := parseSafetensors(data, "fuzz.safetensors")
		if err != nil {
			for _, s := range []error{ErrTruncated, ErrHeaderTooLarge, ErrBadHeader, ErrOverlap,
				ErrShapeMismatch, ErrDuplicateName, ErrUnsupportedDType} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		var total int64
		for _, name := range sf.Names() {
			info, ok := sf.Info(name)
			if !ok {
				t.Fatalf("listed tensor %q has no info", name)
			}
			n := int64(1)
			for _, d := range info.Shape {
				n *= int64(d)
			}
			if n*int64(info.DType.Size()) != info.Size || info.Offset < 8 || info.Offset+info.Size > int64(len(data)) {
				t.Fatalf("tensor %+v inconsistent with a %d-byte file", info, len(data))
			}
			vals, err := sf.Float32(name)
			if err != nil || int64(len(vals)) != n {
				t.Fatalf("Float32(%q): %d values, %v; want %d", name, len(vals), err, n)
			}
			total += info.Size
		}
		if total > int64(len(data)) {
			t.Fatalf("tensors hold %d bytes in a %d-byte file: overlap missed", total, len(data))
		}
	})
}

// FuzzConfig feeds arbitrary bytes as config.json. Parsing must never panic, errors
// must wrap a sentinel, and an accepted config must satisfy the invariants the forward
// pass relies on. Seeds: testdata/fuzz/FuzzConfig.
func FuzzConfig(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, "fuzz/config.json")
		if err != nil {
			for _, s := range []error{ErrUnknownArchitecture, ErrMissingField, ErrBadConfig, ErrUnsupported} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		for _, v := range []int{c.HiddenSize, c.NumLayers, c.NumHeads, c.NumKVHeads, c.HeadDim, c.IntermediateSize,
			c.VocabSize, c.MaxPositionEmbeddings} {
			if v <= 0 || v > maxSize {
				t.Fatalf("size %d out of range in %+v", v, *c)
			}
		}
		if c.NumHeads%c.NumKVHeads != 0 || c.HeadDim%2 != 0 || !(c.RMSNormEps > 0) || !(c.RopeTheta > 0) {
			t.Fatalf("inconsistent config accepted: %+v", *c)
		}
		if s := c.RopeScaling; s != nil {
			if s.Type != "llama3" && s.Type != "linear" || !(s.Factor > 0) {
				t.Fatalf("bad rope scaling accepted: %+v", *s)
			}
			if s.Type == "llama3" && (!(s.HighFreqFactor > s.LowFreqFactor) || !(s.LowFreqFactor > 0) || s.OriginalMaxPositionEmbeddings <= 0) {
				t.Fatalf("bad llama3 scaling accepted: %+v", *s)
			}
		}
		if c.Arch < ArchLlama || c.Arch > ArchQwen3 {
			t.Fatalf("arch %d", c.Arch)
		}
	})
}

// FuzzGGUF feeds arbitrary bytes as a GGUF file: the header, metadata and tensor infos
// must never panic the reader (nor the llama mapping on top), errors must wrap a
// sentinel, and an accepted file's tensors must decode to the values their dims say.
// Seeds: testdata/fuzz/FuzzGGUF (a small llama model file and broken copies of it).
func FuzzGGUF(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGGUF(data, "fuzz.gguf")
		if err != nil {
			for _, s := range []error{ErrTruncated, ErrNotGGUF, ErrBadGGUF, ErrOverlap, ErrDuplicateName, ErrUnsupportedDType} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		for _, name := range g.TensorNames() {
			info, _ := g.Tensor(name)
			n := 1
			for _, d := range info.Dims {
				n *= int(d)
			}
			if info.Offset < 0 || info.Offset+info.Size > int64(len(data)) {
				t.Fatalf("tensor %+v outside a %d-byte file", info, len(data))
			}
			vals, err := g.Float32(name)
			if err != nil || len(vals) != n {
				t.Fatalf("Float32(%q): %d values, %v; want %d", name, len(vals), err, n)
			}
		}
		m := &GGUFModel{File: g, hf: map[string]string{}}
		if err := m.init(); err == nil {
			for _, name := range m.Names() {
				info, _ := g.Tensor(m.hf[name])
				if _, err := m.Expect(name, info.Shape()...); err != nil && !errors.Is(err, ErrShapeMismatch) {
					t.Fatalf("Expect(%q): %v", name, err)
				}
			}
		}
	})
}
