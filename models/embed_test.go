package models

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDefaultCurve: the embedded curves unpack next to the model, and a scorer without
// a curve is an error that lists the ones there are.
func TestDefaultCurve(t *testing.T) {
	p, err := DefaultCurve("keydiff")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "\x93NUMPY") {
		t.Errorf("%s is not an .npy file", p)
	}
	if _, err := os.Stat(p + ".json"); err != nil {
		t.Errorf("curve metadata not unpacked: %v", err)
	}
	_, err = DefaultCurve("no-such-scorer")
	if err == nil || !strings.Contains(err.Error(), "expected-attention") {
		t.Errorf("unknown scorer: got %v, want an error listing the curves", err)
	}
}

// TestUnpackRepairsDamagedCache: a cached copy whose weights were changed on disk,
// or that lost a file, is unpacked again (same folder, embedded bytes back) instead
// of being used as is; an intact copy is reused.
func TestUnpackRepairsDamagedCache(t *testing.T) {
	base := t.TempDir()
	dir, err := unpack(base)
	if err != nil {
		t.Fatal(err)
	}
	contents, err := embedded()
	if err != nil {
		t.Fatal(err)
	}
	weights := filepath.Join(dir, "model.safetensors")
	curve := filepath.Join(dir, "curves", "keydiff.npy")
	for _, damage := range []struct {
		name string
		do   func() error
	}{
		{"a flipped byte in the weights", func() error {
			b, err := os.ReadFile(weights)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 0x40
			return os.WriteFile(weights, b, 0o644)
		}},
		{"truncated weights", func() error { return os.Truncate(weights, 1000) }},
		{"a missing curve", func() error { return os.Remove(curve) }},
	} {
		if err := damage.do(); err != nil {
			t.Fatal(err)
		}
		again, err := unpack(base)
		if err != nil {
			t.Fatalf("%s: %v", damage.name, err)
		}
		if again != dir {
			t.Errorf("%s: unpacked into %s, want %s", damage.name, again, dir)
		}
		for name, path := range map[string]string{"model.safetensors": weights, "curves/keydiff.npy": curve} {
			b, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(b, contents[name]) {
				t.Errorf("%s: %s not restored (%v)", damage.name, name, err)
			}
		}
	}
	// Intact: reused, not rewritten.
	st, err := os.Stat(weights)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unpack(base); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(weights); !os.SameFile(st, st2) {
		t.Error("an intact copy was unpacked again")
	}
	if left, _ := filepath.Glob(filepath.Join(base, "damaged-*")); len(left) > 0 {
		t.Errorf("damaged copies left behind: %v", left)
	}
}
