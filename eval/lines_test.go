package eval

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
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

// TestLoadCellsGzip: a results file reads the same plain and gzip-compressed (results/
// keeps them compressed), and a broken line is an error naming the file and the line.
func TestLoadCellsGzip(t *testing.T) {
	dir := t.TempDir()
	text := `{"task":"vt","length":4096,"index":3,"method":"lukv","ratio":0.8,"score":0.5,"pred":" a b"}` + "\n" +
		`{"task":"cwe","length":8192,"index":0,"method":"full","ratio":0,"score":1,"pred":"x"}` + "\n"
	plain, zipped := filepath.Join(dir, "results.jsonl"), filepath.Join(dir, "results.jsonl.gz")
	if err := os.WriteFile(plain, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(text))
	zw.Close()
	if err := os.WriteFile(zipped, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := LoadCells(plain)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadCells(zipped)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2 || !reflect.DeepEqual(a, b) || a[0].Method != "lukv" || a[0].Ratio != 0.8 {
		t.Fatalf("plain %+v, gzip %+v", a, b)
	}
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(text+"{not json\n"), 0o644)
	if _, err := LoadCells(bad); err == nil || !strings.Contains(err.Error(), "bad.jsonl:3") {
		t.Fatalf("broken line: %v, want an error naming bad.jsonl:3", err)
	}
}
