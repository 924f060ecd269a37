package eval

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// loadDefault loads the embedded default model on the CPU with its tokenizer.
func loadDefault(t *testing.T) (*model.Model, *tokenizer.Tokenizer) {
	t.Helper()
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
	return m, tok
}

// TestRunnerSmoke: the default model answers small niah samples with the full cache and
// with SnapKV at 50%, the compressed cells hold half the context, and the table shows
// every method.
func TestRunnerSmoke(t *testing.T) {
	m, tok := loadDefault(t)
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
			c, err := r.RunCell(context.Background(), s, i, meth, 0.5)
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

// TestRunSampleMatchesRunCell: sharing one prefill among methods gives exactly the cells
// of the one-prefill-per-cell reference path, for the full cache and three scorer /
// allocator pairs at two ratios.
func TestRunSampleMatchesRunCell(t *testing.T) {
	m, tok := loadDefault(t)
	hay, _ := ReadLines(filepath.Join("testdata", "haystack.txt"))
	words, _ := ReadLines(filepath.Join("testdata", "words.txt"))
	g := &Generator{Tokenizer: tok, Haystack: hay, Words: words, Seed: 11}
	r := &Runner{Model: m, Tokenizer: tok, Sink: 4, Window: 1}
	scorer := func(name string) eviction.Scorer {
		s, err := eviction.NewScorer(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	methods := []MethodSpec{
		{Name: "full"},
		{Name: "snapkv", Scorer: scorer("snapkv"), Allocator: eviction.UniformAllocator{}},
		{Name: "adakv", Scorer: scorer("expected-attention"), Allocator: eviction.AdaKVAllocator{Safeguard: 0.2}},
		{Name: "keydiff-pyramid", Scorer: scorer("keydiff"), Allocator: eviction.PyramidAllocator{Window: 64, Beta: 20}},
	}
	var jobs []Job
	for _, meth := range methods {
		if meth.Scorer == nil {
			jobs = append(jobs, Job{Method: meth})
			continue
		}
		for _, ratio := range []float64{0.5, 0.8} {
			jobs = append(jobs, Job{Method: meth, Ratio: ratio})
		}
	}
	s, err := g.Make("niah_multikey_1", 700, 3)
	if err != nil {
		t.Fatal(err)
	}
	var shared []Cell
	if err := r.RunSample(context.Background(), s, 3, jobs, func(c Cell) error { shared = append(shared, c); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(shared) != len(jobs) {
		t.Fatalf("RunSample emitted %d cells for %d jobs", len(shared), len(jobs))
	}
	distinct := map[int64]bool{}
	for i, j := range jobs {
		want, err := r.RunCell(context.Background(), s, 3, j.Method, j.Ratio)
		if err != nil {
			t.Fatal(err)
		}
		if shared[i] != want {
			t.Errorf("job %d (%s at %.1f): shared prefill gave %+v, own prefill %+v", i, j.Method.Name, j.Ratio, shared[i], want)
		}
		distinct[want.KVLiveAfter] = true
	}
	if len(distinct) < 3 {
		t.Errorf("only %d distinct cache sizes over the jobs: the ratios did not apply", len(distinct))
	}
}

// TestRunSampleChunked: with Runner.Chunk one chunk long (the whole context), chunked
// eviction keeps what one-shot eviction keeps, so every cell is the one-shot cell; with
// short chunks every evicting cell still answers and ends with the budget's live bytes
// (the same count of kept tokens as one-shot), and the full cache is untouched.
func TestRunSampleChunked(t *testing.T) {
	m, tok := loadDefault(t)
	hay, _ := ReadLines(filepath.Join("testdata", "haystack.txt"))
	words, _ := ReadLines(filepath.Join("testdata", "words.txt"))
	g := &Generator{Tokenizer: tok, Haystack: hay, Words: words, Seed: 12}
	keydiff, err := eviction.NewScorer("keydiff")
	if err != nil {
		t.Fatal(err)
	}
	jobs := []Job{{Method: MethodSpec{Name: "full"}},
		{Method: MethodSpec{Name: "keydiff", Scorer: keydiff, Allocator: eviction.UniformAllocator{}}, Ratio: 0.5},
		{Method: MethodSpec{Name: "keydiff", Scorer: keydiff, Allocator: eviction.UniformAllocator{}}, Ratio: 0.8}}
	s, err := g.Make("niah_single_2", 600, 1)
	if err != nil {
		t.Fatal(err)
	}
	run := func(chunk int) []Cell {
		r := &Runner{Model: m, Tokenizer: tok, Sink: 4, Window: 1, Chunk: chunk}
		var cells []Cell
		if err := r.RunSample(context.Background(), s, 1, jobs, func(c Cell) error { cells = append(cells, c); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(cells) != len(jobs) {
			t.Fatalf("chunk %d: %d cells for %d jobs", chunk, len(cells), len(jobs))
		}
		return cells
	}
	oneShot, whole, short := run(0), run(1<<20), run(96)
	for i := range jobs {
		if whole[i] != oneShot[i] {
			t.Errorf("job %d: one chunk gave %+v, one-shot %+v", i, whole[i], oneShot[i])
		}
		if short[i].KVLiveAfter != oneShot[i].KVLiveAfter {
			t.Errorf("job %d: chunks of 96 keep %d live bytes, one-shot %d", i, short[i].KVLiveAfter, oneShot[i].KVLiveAfter)
		}
	}
	if short[0] != oneShot[0] {
		t.Errorf("the full cache changed with chunking: %+v vs %+v", short[0], oneShot[0])
	}
	if short[2].KVLiveBefore >= oneShot[2].KVLiveBefore {
		t.Errorf("chunks of 96 at 0.8 peaked at %d live bytes, no less than the one-shot prefill's %d", short[2].KVLiveBefore, oneShot[2].KVLiveBefore)
	}
}
