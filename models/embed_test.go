package models

import (
	"os"
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
