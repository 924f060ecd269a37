// Command chunked-quality compares chunked eviction (the context prefilled --chunk tokens
// at a time, evicting after every chunk) with one-shot eviction (the whole context
// prefilled, then evicted once) on RULER-style tasks with the embedded default model on
// the CPU, at the same methods and ratios:
//
//	go run ./scripts/chunked-quality --length 2048 --samples 5 --chunk 256
//
// It prints, per method and ratio, the mean score of both, how many answers are the same
// and the peak live KV bytes of each.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eval"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

func main() {
	length := flag.Int("length", 2048, "sample length in tokens (prompt + answer)")
	samples := flag.Int("samples", 5, "samples per task")
	tasks := flag.String("tasks", "niah_single_2,niah_multikey_1,niah_multivalue,vt", "RULER tasks")
	chunk := flag.Int("chunk", 256, "chunk size of the chunked prefill")
	ratios := flag.String("ratios", "0.5,0.8", "compression ratios")
	methods := flag.String("methods", "lukv,snapkv", "lukv (expected-attention scores, LU-KV curve) and/or snapkv (uniform budgets)")
	flag.Parse()
	if err := run(*length, *samples, strings.Split(*tasks, ","), *chunk, *ratios, strings.Split(*methods, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "chunked-quality:", err)
		os.Exit(1)
	}
}

type key struct {
	method string
	ratio  float64
}

type tally struct {
	oneShot, chunked float64 // score sums
	same, n          int
	peakOne, peakCh  int64
}

func run(length, samples int, tasks []string, chunk int, ratioList string, methodNames []string) error {
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
	var ratios []float64
	for _, r := range strings.Split(ratioList, ",") {
		x, err := strconv.ParseFloat(r, 64)
		if err != nil {
			return fmt.Errorf("--ratios: %w", err)
		}
		ratios = append(ratios, x)
	}
	var specs []eval.MethodSpec
	for _, name := range methodNames {
		scorer, alloc := "snapkv", "uniform"
		if name == "lukv" {
			scorer, alloc = "expected-attention", "lukv"
		} else if name != "snapkv" {
			return fmt.Errorf("--methods: %q is not lukv or snapkv", name)
		}
		s, _ := eviction.NewScorer(scorer)
		var curve *eviction.BudgetCurve
		if alloc == "lukv" {
			p, err := models.DefaultCurve(scorer)
			if err != nil {
				return err
			}
			if curve, err = eviction.ReadNPY(p); err != nil {
				return err
			}
		}
		a, err := eviction.NewAllocator(alloc, curve)
		if err != nil {
			return err
		}
		specs = append(specs, eval.MethodSpec{Name: name, Scorer: s, Allocator: a})
	}
	var jobs []eval.Job
	for _, s := range specs {
		for _, r := range ratios {
			jobs = append(jobs, eval.Job{Method: s, Ratio: r})
		}
	}
	gen := &eval.Generator{Tokenizer: tok, Haystack: eval.DefaultHaystack(), Words: eval.DefaultWords(), Seed: 1}
	runner := &eval.Runner{Model: m, Tokenizer: tok, Sink: 4, Window: 1}
	g := &generate.Generator{Model: m, Tokenizer: tok}
	tallies := map[key]*tally{}
	start := time.Now()
	for _, task := range tasks {
		for i := 0; i < samples; i++ {
			s, err := gen.Make(task, length, i)
			if err != nil {
				return err
			}
			oneShot := map[key]eval.Cell{}
			err = runner.RunSample(context.Background(), s, i, jobs, func(c eval.Cell) error {
				oneShot[key{c.Method, c.Ratio}] = c
				return nil
			})
			if err != nil {
				return err
			}
			ctxIDs := tok.Encode(s.Context, true)
			prompt := append(append([]int(nil), ctxIDs...), tok.Encode(s.Question, false)...)
			for _, j := range jobs {
				method := eviction.Method{Scorer: j.Method.Scorer, Allocator: j.Method.Allocator, Ratio: j.Ratio, Sink: 4, Window: 1}
				ev, err := eviction.NewChunkedEvictor(m, method)
				if err != nil {
					return err
				}
				res, err := g.Generate(context.Background(), prompt, generate.Options{MaxNewTokens: s.MaxNewTokens,
					ContextTokens: len(ctxIDs), Chunked: &generate.ChunkedPrefill{Chunk: chunk, Evictor: ev}})
				if err != nil {
					return err
				}
				k := key{j.Method.Name, j.Ratio}
				t := tallies[k]
				if t == nil {
					t = &tally{}
					tallies[k] = t
				}
				one := oneShot[k]
				t.oneShot += one.Score
				t.chunked += eval.ScoreSample(s, res.Text)
				if strings.TrimSpace(one.Pred) == strings.TrimSpace(res.Text) {
					t.same++
				}
				t.n++
				t.peakOne = max(t.peakOne, one.KVLiveBefore)
				t.peakCh = max(t.peakCh, res.KVLivePrefill)
			}
			fmt.Fprintf(os.Stderr, "%s sample %d done (%s)\n", task, i, time.Since(start).Round(time.Second))
		}
	}
	rev := "unknown"
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		rev = strings.TrimSpace(string(out))
	}
	fmt.Printf("chunked vs one-shot eviction, %s, lukv-tiny on the CPU, %s, commit %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), strings.Join(os.Args[1:], " "), rev)
	fmt.Printf("tasks %s, %d samples each, length %d, chunk %d, sink 4, window 1 (%s)\n\n", strings.Join(tasks, ","), samples, length, chunk, time.Since(start).Round(time.Second))
	fmt.Println("| method | ratio | one-shot score | chunked score | difference (points) | same answer | peak live KV one-shot | peak live KV chunked |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, j := range jobs {
		t := tallies[key{j.Method.Name, j.Ratio}]
		one, ch := 100*t.oneShot/float64(t.n), 100*t.chunked/float64(t.n)
		fmt.Printf("| %s | %.2f | %.1f | %.1f | %+.1f | %d/%d | %.2f MiB | %.2f MiB |\n", j.Method.Name, j.Ratio, one, ch, ch-one, t.same, t.n,
			float64(t.peakOne)/(1<<20), float64(t.peakCh)/(1<<20))
	}
	return nil
}
