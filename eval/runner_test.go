package eval

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/runtime/cpu"
	"github.com/lukv/lukv/tokenizer"
)

// TestRunnerSmoke: the default model answers small niah samples with the full cache and
// with SnapKV at 50%, the compressed cells hold half the context, and the table shows
// every method.
func TestRunnerSmoke(t *testing.T) {
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	hay, err := ReadLines(filepath.Join("testdata", "haystack.txt"))
	if err != nil {
		t.Fatal(err)
	}
	words, err := ReadLines(filepath.Join("testdata", "words.txt"))
	if err != nil {
		t.Fatal(err)
	}
	g := &Generator{Tokenizer: tok, Haystack: hay, Words: words, Seed: 7}
	r := &Runner{Model: m, Tokenizer: tok, Sink: 4, Window: 1}
	snap, _ := eviction.NewScorer("snapkv")
	methods := []MethodSpec{{Name: "full"}, {Name: "snapkv", Scorer: snap, Allocator: eviction.UniformAllocator{}}}
	var cells []Cell
	for i := 0; i < 2; i++ {
		s, err := g.Make("niah_single_1", 640, i)
		if err != nil {
			t.Fatal(err)
		}
		for _, meth := range methods {
			c, err := r.RunCell(s, i, meth, 0.5)
			if err != nil {
				t.Fatal(err)
			}
			if meth.Scorer != nil {
				kept := float64(c.KVLiveAfter) / float64(c.KVLiveBefore)
				if kept < 0.45 || kept > 0.55 {
					t.Errorf("%s kept %.2f of the context", meth.Name, kept)
				}
			}
			cells = append(cells, c)
		}
	}
	if cells[0].Score != 1 {
		t.Errorf("full cache missed the needle: %q vs %v", cells[0].Pred, cells[0].Key())
	}
	var buf bytes.Buffer
	WriteTable(&buf, cells)
	for _, want := range []string{"| full | 0% |", "| snapkv | 50% |", "niah_single_1", "% of full"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
}
