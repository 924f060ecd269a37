// Command bf16-noise measures, on the CPU, how far a bf16 KV cache moves a model's logits
// and how much of that a GPU can differ by without any bug: it runs the prompt and greedy
// steps of backend/cuda's TestKVBF16DefaultModel with an exact float32 cache, with keys
// and values rounded to bf16 (backendtest.RoundedKV), and with them first moved by random
// ±1..J float32 ulps and then rounded (what another order of float32 operations can do).
// It prints each run's largest relative error (max|diff| / max|logit|, over the prompt
// and every step) against the rounded run: the numbers behind that test's tolerances.
//
//	go run ./scripts/bf16-noise [--model models/lukv-tiny] [--steps 16] [--seeds 6]
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/tokenizer"
)

// prompt is TestKVBF16DefaultModel's.
const prompt = "The old lighthouse keeper climbed the stairs every evening to light the lamp. One night a storm came in from the sea, and the ships"

func main() {
	dir := flag.String("model", "models/lukv-tiny", "checkpoint folder")
	steps := flag.Int("steps", 16, "greedy decode steps after the prompt")
	seeds := flag.Int("seeds", 6, "jitter seeds per ulp count")
	flag.Parse()
	if err := run(*dir, *steps, *seeds); err != nil {
		fmt.Fprintln(os.Stderr, "bf16-noise:", err)
		os.Exit(1)
	}
}

// trace is one run's logits: the prompt's, then one row per step.
type trace [][]float32

// runWith feeds the prompt, then the given tokens (or, when toks is nil, its own greedy
// choices), and returns its logits and the tokens it was fed.
func runWith(dir string, b backend.Backend, ids, toks []int, steps int) (trace, []int, error) {
	m, err := model.Load(dir, b)
	if err != nil {
		return nil, nil, err
	}
	c := m.NewCache(steps)
	l, err := m.Forward(context.Background(), ids, 0, c, model.ForwardOptions{AllLogits: true})
	if err != nil {
		return nil, nil, err
	}
	tr, n, vocab := trace{l}, len(ids), m.Config.VocabSize
	next := generate.Argmax(l[(n-1)*vocab:])
	var fed []int
	for i := 0; i < steps; i++ {
		if toks != nil {
			next = toks[i]
		}
		fed = append(fed, next)
		if l, err = m.Forward(context.Background(), []int{next}, n+i, c, model.ForwardOptions{}); err != nil {
			return nil, nil, err
		}
		tr = append(tr, l)
		next = generate.Argmax(l)
	}
	return tr, fed, nil
}

// worst is the largest relative error and absolute change of a against b over all rows.
func worst(a, b trace) (rel, abs float64) {
	for i := range a {
		rel = max(rel, backendtest.RelErr(a[i], b[i]))
		for j := range a[i] {
			abs = max(abs, math.Abs(float64(a[i][j]-b[i][j])))
		}
	}
	return rel, abs
}

// top2Gap is the smallest gap between the best and second-best logit of the prompt's
// last position and of every step: how far a logit may move before greedy changes.
func top2Gap(tr trace, vocab int) float64 {
	gap := math.Inf(1)
	rows := append([][]float32{tr[0][len(tr[0])-vocab:]}, tr[1:]...)
	for _, l := range rows {
		a, b := math.Inf(-1), math.Inf(-1)
		for _, v := range l {
			if x := float64(v); x > a {
				a, b = x, a
			} else if x > b {
				b = x
			}
		}
		gap = min(gap, a-b)
	}
	return gap
}

func run(dir string, steps, seeds int) error {
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	ids := tok.Encode(prompt, true)
	rounded, toks, err := runWith(dir, backendtest.RoundedKV{Backend: cpu.New()}, ids, nil, steps)
	if err != nil {
		return err
	}
	exact, _, err := runWith(dir, cpu.New(), ids, toks, steps)
	if err != nil {
		return err
	}
	vocab := len(rounded[1])
	fmt.Printf("model %s, prompt %d tokens + %d greedy steps of the bf16-rounded run\n\n", dir, len(ids), steps)
	rel, abs := worst(exact, rounded)
	fmt.Printf("exact float32 cache vs bf16-rounded: largest relative error %.3g, largest logit change %.3g\n", rel, abs)
	fmt.Printf("bf16-rounded run: smallest top-2 logit gap %.3g\n\n", top2Gap(rounded, vocab))
	fmt.Println("| jitter before rounding | seed | largest relative error vs bf16-rounded |")
	fmt.Println("|---|---|---|")
	most := 0.0
	for _, ulps := range []int{1, 2, 4} {
		for s := 0; s < seeds; s++ {
			b := backendtest.RoundedKV{Backend: cpu.New(), JitterULPs: ulps, Rand: rand.New(rand.NewPCG(uint64(s), 0xbf16))}
			tr, _, err := runWith(dir, b, ids, toks, steps)
			if err != nil {
				return err
			}
			rel, _ := worst(tr, rounded)
			most = max(most, rel)
			fmt.Printf("| ±%d ulp | %d | %.3g |\n", ulps, s, rel)
		}
	}
	fmt.Printf("\nlargest over all jittered runs: %.3g\n", most)
	return nil
}
