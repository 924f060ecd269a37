// Command needle-survival measures, for RULER-style samples on the default model, how
// many of the answer's tokens (the needle's value in the context) each eviction method
// keeps, head by head: the mechanism behind the accuracies of `lukv-run eval ruler`.
// It prefills each sample's context once on the CPU, scores it with every scorer, applies
// every allocator at each ratio, and reports per method the mean share of needle tokens
// kept over all (layer, KV head) pairs and the share of heads that keep all of them.
//
//	go run ./scripts/needle-survival --tasks niah_single_1,niah_single_2,niah_multikey_1 \
//	    --length 4096 --samples 4 --ratios 0.5,0.8,0.9
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eval"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// method is a scorer with an allocator, as lukv-run eval names them.
type method struct {
	name, scorer, alloc string
}

var methods = []method{
	{"snapkv", "snapkv", "uniform"},
	{"expected-attention", "expected-attention", "uniform"},
	{"keydiff", "keydiff", "uniform"},
	{"pyramidkv", "snapkv", "pyramid"},
	{"adakv", "expected-attention", "adakv"},
	{"lukv", "expected-attention", "lukv"},
	{"lukv:keydiff", "keydiff", "lukv"},
	{"adakv:keydiff", "keydiff", "adakv"},
}

// viewScorer scores every layer of a prefill with several scorers.
type viewScorer struct {
	m       *model.Model
	scorers map[string]eviction.Scorer
	scores  map[string][][][]float32 // scorer -> [layer][head][T]
}

func (v *viewScorer) ObserveLayer(layer int, positions []int, x, q, k, val backend.Tensor) {
	view := (&eviction.Collector{Model: v.m}).View(layer, positions, x, q, k, val)
	for name, s := range v.scorers {
		v.scores[name][layer] = s.Score(view)
	}
}

// needleTokens returns the context token indices whose text overlaps any gold string.
func needleTokens(tok *tokenizer.Tokenizer, ids []int, gold []string) []int {
	var text strings.Builder
	starts := make([]int, len(ids))
	for i, id := range ids {
		starts[i] = text.Len()
		text.WriteString(tok.Decode([]int{id}, false))
	}
	s := text.String()
	hit := map[int]bool{}
	for _, g := range gold {
		for off := 0; ; {
			j := strings.Index(s[off:], g)
			if j < 0 {
				break
			}
			a, b := off+j, off+j+len(g)
			for i := range ids {
				end := len(s)
				if i+1 < len(ids) {
					end = starts[i+1]
				}
				if starts[i] < b && end > a {
					hit[i] = true
				}
			}
			off = b
		}
	}
	var out []int
	for i := range hit {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

func main() {
	tasks := flag.String("tasks", "niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multivalue", "tasks")
	length := flag.Int("length", 4096, "sample length in tokens")
	samples := flag.Int("samples", 4, "samples per task")
	ratiosFlag := flag.String("ratios", "0.5,0.8,0.9", "compression ratios")
	haystack := flag.String("haystack", "data/corpus/eval_haystack_devil.txt", "essay haystack")
	wordsFlag := flag.String("words", "data/corpus/words_eval_noun.txt", "key vocabulary")
	flag.Parse()
	if err := run(strings.Split(*tasks, ","), *length, *samples, *ratiosFlag, *haystack, *wordsFlag); err != nil {
		fmt.Fprintln(os.Stderr, "needle-survival:", err)
		os.Exit(1)
	}
}

func run(tasks []string, length, samples int, ratiosFlag, haystack, wordsFile string) error {
	var ratios []float64
	for _, f := range strings.Split(ratiosFlag, ",") {
		r, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return err
		}
		ratios = append(ratios, r)
	}
	dir, err := models.DefaultDir()
	if err != nil {
		return err
	}
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	hay, err := eval.ReadLines(haystack)
	if err != nil {
		return err
	}
	words, err := eval.ReadLines(wordsFile)
	if err != nil {
		return err
	}
	gen := &eval.Generator{Tokenizer: tok, Haystack: hay, Words: words, Seed: 42}
	allocs := map[string]eviction.Allocator{}
	for _, me := range methods {
		var curve *eviction.BudgetCurve
		if me.alloc == "lukv" {
			p, err := models.DefaultCurve(me.scorer)
			if err != nil {
				return err
			}
			if curve, err = eviction.ReadNPY(p); err != nil {
				return err
			}
		}
		a, err := eviction.NewAllocator(me.alloc, curve)
		if err != nil {
			return err
		}
		allocs[me.name] = a
	}
	L, H := m.Config.NumLayers, m.Config.NumKVHeads
	fmt.Printf("# Needle survival on %s, %d-token samples, %d per task, seed 42 (sink 4, window 1 as the evaluation)\n\n", models.DefaultName, length, samples)
	for _, task := range tasks {
		type acc struct{ recall, full, n float64 }
		res := map[string]*acc{}
		perLayer := map[string][]float64{} // method@ratio -> [layer] mean recall
		for i := 0; i < samples; i++ {
			s, err := gen.Make(task, length, i)
			if err != nil {
				return err
			}
			ctx := tok.Encode(s.Context, true)
			needle := needleTokens(tok, ctx, s.Gold)
			if len(needle) == 0 {
				return fmt.Errorf("%s sample %d: no context token holds the answer %v", task, i, s.Gold)
			}
			vs := &viewScorer{m: m, scorers: map[string]eviction.Scorer{}, scores: map[string][][][]float32{}}
			for _, me := range methods {
				if vs.scorers[me.scorer] == nil {
					sc, err := eviction.NewScorer(me.scorer)
					if err != nil {
						return err
					}
					vs.scorers[me.scorer] = sc
					vs.scores[me.scorer] = make([][][]float32, L)
				}
			}
			cache := m.NewCache(len(ctx))
			_, err = m.Forward(context.Background(), ctx, 0, cache, model.ForwardOptions{Observer: vs})
			if err != nil {
				return err
			}
			for _, me := range methods {
				for _, ratio := range ratios {
					key := fmt.Sprintf("%s@%.0f%%", me.name, 100*ratio)
					if res[key] == nil {
						res[key] = &acc{}
						perLayer[key] = make([]float64, L)
					}
					for layer := 0; layer < L; layer++ {
						sc := vs.scores[me.scorer][layer]
						method := eviction.Method{Allocator: allocs[me.name], Ratio: ratio, Sink: 4, Window: 1}
						keep, err := method.KeepLayer(layer, L, sc)
						if err != nil {
							return err
						}
						for h := 0; h < H; h++ {
							kept := map[int]bool{}
							for _, j := range keep[h] {
								kept[j] = true
							}
							got := 0
							for _, j := range needle {
								if kept[j] {
									got++
								}
							}
							r := float64(got) / float64(len(needle))
							res[key].recall += r
							if got == len(needle) {
								res[key].full++
							}
							res[key].n++
							perLayer[key][layer] += r / float64(H*samples)
						}
					}
				}
			}
		}
		fmt.Printf("## %s\n\n| method | needle tokens kept (mean over heads) | heads keeping the whole needle | per layer 0..%d |\n|---|---|---|---|\n", task, L-1)
		var keys []string
		for k := range res {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			a := res[k]
			var pl []string
			for _, x := range perLayer[k] {
				pl = append(pl, fmt.Sprintf("%.0f", 100*x))
			}
			fmt.Printf("| %s | %.1f%% | %.1f%% | %s |\n", k, 100*a.recall/a.n, 100*a.full/a.n, strings.Join(pl, " "))
		}
		fmt.Println()
	}
	return nil
}
