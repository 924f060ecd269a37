// Command int8-quality measures what int8 weights (package quant, --weights int8) cost a
// model against its float weights on the CPU: perplexity on held-out text, and the
// largest and mean logit differences with top-1 agreement on a prompt. The eval suite's
// accuracy is measured by lukv-run eval (scripts/int8-quality.sh runs both).
//
//	go run ./scripts/int8-quality [--model DIR] [--text FILE,...] [--ctx 1024] [--chunks 8]
//
// Perplexity is computed as scripts/eval_model_hf.py does: the text's lines are encoded
// and joined with EOS (id 1 for the default model), cut into chunks of BOS + ctx-1 tokens,
// and every next token's negative log-likelihood is averaged. Without --text it uses the
// embedded evaluation haystack (The Devil's Dictionary, which the default model never
// trained on). A model whose vocabulary is not its tokenizer's (a random-weight
// checkpoint) gets logit differences only (--ppl=false).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/lukv/lukv"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "int8-quality:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("model", "", "checkpoint folder (default: the embedded default model)")
	texts := flag.String("text", "", "held-out text files, comma-separated (default: the embedded evaluation haystack)")
	ctxLen := flag.Int("ctx", 1024, "perplexity chunk length (BOS + ctx-1 tokens)")
	chunks := flag.Int("chunks", 8, "most chunks per text")
	ppl := flag.Bool("ppl", true, "measure perplexity")
	formats := flag.String("weights", "f32,bf16,int8", "weight formats to compare; the first is the reference")
	promptTokens := flag.Int("prompt-tokens", 256, "tokens of the logit-difference prompt")
	threads := flag.Int("threads", 0, "CPU threads")
	flag.Parse()
	if *dir == "" {
		d, err := models.DefaultDir()
		if err != nil {
			return err
		}
		*dir = d
	}
	var fs []loader.WeightFormat
	for _, s := range strings.Split(*formats, ",") {
		f, err := loader.ParseWeightFormat(s)
		if err != nil {
			return fmt.Errorf("--weights: %w", err)
		}
		fs = append(fs, f)
	}
	files := strings.Split(*texts, ",")
	if *texts == "" {
		files = []string{filepath.Join("eval", "corpus", "eval_haystack_devil.txt")}
	}
	tok, err := lukv.LoadTokenizer(*dir)
	if err != nil {
		return err
	}
	// The logit prompt: the first text's opening tokens.
	docs, err := readLines(files[0])
	if err != nil {
		return err
	}
	prompt := tok.Encode(strings.Join(docs, "\n"), true)
	if len(prompt) > *promptTokens {
		prompt = prompt[:*promptTokens]
	}
	fmt.Printf("# int8-quality: model %s, CPU, prompt %d tokens from %s; perplexity chunks of %d tokens (at most %d per text)\n", *dir, len(prompt), files[0], *ctxLen, *chunks)
	var ref []float32
	for i, f := range fs {
		m, err := model.LoadWith(*dir, &cpu.Backend{Threads: *threads, WidenBF16: f == loader.WeightsF32}, model.LoadOptions{Weights: f})
		if err != nil {
			return err
		}
		logits, err := m.Forward(context.Background(), clampIDs(prompt, m.Config.VocabSize), 0, m.NewCache(len(prompt)), model.ForwardOptions{AllLogits: true})
		if err != nil {
			return err
		}
		line := fmt.Sprintf("weights %-4s", f)
		if i == 0 {
			ref = logits
			line += " (reference)"
		} else {
			line += fmt.Sprintf(" vs %s: %s", fs[0], compare(logits, ref, m.Config.VocabSize))
		}
		if *ppl {
			for _, file := range files {
				p, n, err := perplexity(m, tok.Encode, file, *ctxLen, *chunks)
				if err != nil {
					return err
				}
				line += fmt.Sprintf(" | ppl %s %.4f (%d tokens)", filepath.Base(file), p, n)
			}
		}
		fmt.Println(line)
	}
	return nil
}

// clampIDs maps token ids into a smaller vocabulary (a random checkpoint's).
func clampIDs(ids []int, vocab int) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = id % vocab
	}
	return out
}

// compare reports the largest and mean absolute logit differences (and the largest
// relative to the largest reference logit) and how often the arg-max agrees, per row.
func compare(got, want []float32, vocab int) string {
	var maxd, sum, maxref float64
	agree, rows := 0, len(got)/vocab
	for r := range rows {
		g, w := got[r*vocab:(r+1)*vocab], want[r*vocab:(r+1)*vocab]
		ga, wa := 0, 0
		for i := range g {
			d := math.Abs(float64(g[i] - w[i]))
			maxd, sum = math.Max(maxd, d), sum+d
			maxref = math.Max(maxref, math.Abs(float64(w[i])))
			if g[i] > g[ga] {
				ga = i
			}
			if w[i] > w[wa] {
				wa = i
			}
		}
		if ga == wa {
			agree++
		}
	}
	return fmt.Sprintf("logits max |diff| %.4f (%.2f%% of max |logit| %.2f), mean |diff| %.5f, top-1 agrees %d/%d",
		maxd, 100*maxd/maxref, maxref, sum/float64(len(got)), agree, rows)
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// perplexity is exp(mean next-token NLL) over chunks of BOS (0) + ctx-1 tokens of the
// file's lines joined by EOS (1), as scripts/eval_model_hf.py measures it.
func perplexity(m *model.Model, encode func(string, bool) []int, path string, ctx, maxChunks int) (float64, int, error) {
	docs, err := readLines(path)
	if err != nil {
		return 0, 0, err
	}
	var ids []int
	for _, d := range docs {
		ids = append(append(ids, encode(d, false)...), 1)
	}
	n := min(maxChunks, len(ids)/(ctx-1))
	if n == 0 {
		return 0, 0, fmt.Errorf("%s: %d tokens, fewer than one chunk of %d", path, len(ids), ctx)
	}
	V := m.Config.VocabSize
	var nll float64
	count := 0
	for c := range n {
		x := append([]int{0}, ids[c*(ctx-1):(c+1)*(ctx-1)]...)
		logits, err := m.Forward(context.Background(), x, 0, m.NewCache(len(x)), model.ForwardOptions{AllLogits: true})
		if err != nil {
			return 0, 0, err
		}
		for i := 0; i+1 < len(x); i++ {
			row := logits[i*V : (i+1)*V]
			mx := row[0]
			for _, v := range row {
				mx = max(mx, v)
			}
			var s float64
			for _, v := range row {
				s += math.Exp(float64(v - mx))
			}
			nll += math.Log(s) + float64(mx) - float64(row[x[i+1]])
			count++
		}
	}
	return math.Exp(nll / float64(count)), count, nil
}
