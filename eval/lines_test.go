package eval

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// TestDefaultEvalSplit: the embedded evaluation split is the documented one
// (eval/corpus/README.md's checksums, data/corpus/manifest.json's line counts), and its
// keys follow the split contract (lowercase a-z, 3 to 10 letters).
func TestDefaultEvalSplit(t *testing.T) {
	for _, f := range []struct {
		name, text, sha string
		lines           int
		got             []string
	}{
		{"eval_haystack_devil.txt", defaultHaystack, "2a5f5f2e8a368e92733a24c7bbd39e23da0a065d73c9d103da81aab60a6244c2", 980, DefaultHaystack()},
		{"words_eval_noun.txt", defaultWords, "a047c213a17eb450c11c7a2fe57025ae71eb93db0c7f68b239b081b3c646adab", 21744, DefaultWords()},
	} {
		sum := sha256.Sum256([]byte(f.text))
		if hex.EncodeToString(sum[:]) != f.sha {
			t.Errorf("%s: sha256 %x, want %s", f.name, sum, f.sha)
		}
		if len(f.got) != f.lines {
			t.Errorf("%s: %d lines, want %d", f.name, len(f.got), f.lines)
		}
	}
	for _, w := range DefaultWords() {
		if len(w) < 3 || len(w) > 10 || strings.Trim(w, "abcdefghijklmnopqrstuvwxyz") != "" {
			t.Fatalf("key %q breaks the split contract ([a-z]{3,10})", w)
		}
	}
}
