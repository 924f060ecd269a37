// Command make-train-data streams long-context task samples in many formats (eval/formats)
// and corpus documents as JSON lines, seeded, for scripts/train_model.py --samples-cmd, and
// writes evaluation sets of every family (held-out ones included) for a Python evaluation.
//
// Training (endless unless -n): each line is either a task sample
//
//	{"family": "json", "task": "multihop", "prompt": "...", "answer": " 4417250"}
//
// (the trainer encodes prompt with BOS, then answer + EOS, and trains the answer tokens with
// the answer loss) or, with probability -prose-frac, a corpus document {"text": "..."}.
// Only the trained families can appear: the generator is formats.NewTraining.
//
//	make-train-data -corpus data/broad/train.jsonl.gz \
//	    -words data/corpus/words_train_adj.txt,data/corpus/words_train_noun.txt \
//	    -seed 1 -max-length 16312 [-min-length 256] [-prose-frac 0.2] [-n 0]
//
// Evaluation (-eval): for every family and task, each of -lengths, -n samples (index 0..n-1,
// depths spread by index) drawn from the haystack split and the evaluation words, with gold
// answers and the scoring metric:
//
//	make-train-data -eval -corpus data/broad/haystack.jsonl.gz \
//	    -words data/corpus/words_eval_adj.txt,data/corpus/words_eval_noun.txt \
//	    -lengths 4096,16384 -n 50 -tokenizer models/lukv-tiny/tokenizer.json > eval.jsonl
//
// Lengths are tokens: exact with -tokenizer (a Hugging Face tokenizer.json, via lukv's
// tokenizer), else estimated as bytes / -chars-per-token. -stats prints the token and byte
// counts of a corpus file instead (needs -tokenizer).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/lukv/lukv/eval/formats"
	"github.com/lukv/lukv/tokenizer"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "make-train-data:", err)
		os.Exit(1)
	}
}

type options struct {
	corpus, words, tokenizer, lengths, families, tasks string
	seed                                               uint64
	n, minLen, maxLen                                  int
	proseFrac, charsPerToken                           float64
	eval, stats                                        bool
}

func run() error {
	var o options
	flag.StringVar(&o.corpus, "corpus", "", "JSONL(.gz) corpus documents (scripts/corpus/build_broad.py): filler and prose")
	flag.StringVar(&o.words, "words", "", "comma list of word-list files: the key vocabulary")
	flag.StringVar(&o.tokenizer, "tokenizer", "", "tokenizer.json for exact token counts (default: estimate)")
	flag.Float64Var(&o.charsPerToken, "chars-per-token", 4, "bytes per token of the estimate without -tokenizer")
	flag.Uint64Var(&o.seed, "seed", 1, "random seed")
	flag.IntVar(&o.n, "n", 0, "training: number of lines (0: endless); -eval: samples per family, task and length")
	flag.IntVar(&o.minLen, "min-length", 256, "training: shortest prompt, tokens")
	flag.IntVar(&o.maxLen, "max-length", 4096, "training: longest prompt, tokens (lengths are log-uniform between)")
	flag.Float64Var(&o.proseFrac, "prose-frac", 0.2, "training: fraction of lines that are corpus documents")
	flag.BoolVar(&o.eval, "eval", false, "write an evaluation set of every family (held-out ones included)")
	flag.StringVar(&o.lengths, "lengths", "4096", "-eval: comma list of prompt lengths, tokens")
	flag.StringVar(&o.families, "families", "", "-eval: comma list of families (default all)")
	flag.StringVar(&o.tasks, "tasks", "", "-eval: comma list of tasks (default all; a family renders those it has)")
	flag.BoolVar(&o.stats, "stats", false, "print token and byte counts of -corpus (needs -tokenizer)")
	flag.Parse()
	if o.corpus == "" {
		return errors.New("-corpus is required")
	}
	if !o.eval && !o.stats {
		if err := trainingCorpus(o.corpus); err != nil {
			return err
		}
	}
	docs, err := formats.LoadDocuments(o.corpus, nil)
	if err != nil {
		return fmt.Errorf("-corpus: %w", err)
	}
	var count func(string) int
	if o.tokenizer != "" {
		tok, err := tokenizer.Load(o.tokenizer)
		if err != nil {
			return fmt.Errorf("-tokenizer: %w", err)
		}
		count = func(s string) int { return len(tok.Encode(s, true)) }
	}
	if o.stats {
		if count == nil {
			return errors.New("-stats needs -tokenizer")
		}
		return stats(docs, count)
	}
	if o.words == "" {
		return errors.New("-words is required")
	}
	var words []string
	for _, p := range strings.Split(o.words, ",") {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("-words: %w", err)
		}
		words = append(words, strings.Fields(string(b))...)
	}
	cfg := formats.Config{Filler: formats.SplitDocuments(formats.Texts(docs)), Words: words, Count: count,
		CharsPerToken: o.charsPerToken, Seed: o.seed}
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer out.Flush()
	if o.eval {
		return evalSet(cfg, o, out)
	}
	return training(cfg, docs, o, out)
}

// trainingCorpus refuses the reserved splits of scripts/corpus/build_broad.py (haystack:
// evaluation filler; heldout: perplexity text), which must never feed training.
func trainingCorpus(path string) error {
	if base := filepath.Base(path); strings.HasPrefix(base, "haystack") || strings.HasPrefix(base, "heldout") {
		return fmt.Errorf("-corpus %s: a reserved split (evaluation filler or perplexity text) cannot feed training", path)
	}
	return nil
}

type trainLine struct {
	Family string `json:"family,omitempty"`
	Task   string `json:"task,omitempty"`
	Prompt string `json:"prompt,omitempty"`
	Answer string `json:"answer,omitempty"`
	Text   string `json:"text,omitempty"`
}

func training(cfg formats.Config, docs []formats.Document, o options, out *bufio.Writer) error {
	if o.minLen < 64 || o.maxLen < o.minLen {
		return fmt.Errorf("-min-length %d, -max-length %d: want 64 <= min <= max", o.minLen, o.maxLen)
	}
	if o.proseFrac < 0 || o.proseFrac > 1 {
		return fmt.Errorf("-prose-frac %v: want 0..1", o.proseFrac)
	}
	g, err := formats.NewTraining(cfg)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(o.seed, 0x7261696e))
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	lo, hi := math.Log(float64(o.minLen)), math.Log(float64(o.maxLen))
	for i := 0; o.n == 0 || i < o.n; i++ {
		var line trainLine
		if r.Float64() < o.proseFrac {
			line.Text = docs[r.IntN(len(docs))].Text
		} else {
			length := int(math.Exp(lo + r.Float64()*(hi-lo)))
			s, err := g.Random(r, length)
			if err != nil {
				return fmt.Errorf("sample %d (length %d): %w", i, length, err)
			}
			line = trainLine{Family: s.Family, Task: s.Task, Prompt: s.Prompt, Answer: s.Answer}
		}
		if err := enc.Encode(line); err != nil {
			return err // stdout closed: the trainer has what it needs
		}
	}
	return nil
}

type evalLine struct {
	Family        string   `json:"family"`
	Task          string   `json:"task"`
	HeldOut       bool     `json:"held_out"`
	Length        int      `json:"length"`
	Index         int      `json:"index"`
	Context       string   `json:"context"`
	Question      string   `json:"question"`
	Gold          []string `json:"gold"`
	Metric        string   `json:"metric"`
	Depth         int      `json:"depth"`
	QuestionFirst bool     `json:"question_first"`
	MaxNewTokens  int      `json:"max_new_tokens"`
}

func evalSet(cfg formats.Config, o options, out *bufio.Writer) error {
	g, err := formats.NewEvaluation(cfg)
	if err != nil {
		return err
	}
	var lengths []int
	for _, s := range strings.Split(o.lengths, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("-lengths: %q is not a positive integer", s)
		}
		lengths = append(lengths, n)
	}
	fams := formats.AllFamilies()
	if o.families != "" {
		fams = strings.Split(o.families, ",")
	}
	n := o.n
	if n == 0 {
		n = 50
	}
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for _, fam := range fams {
		tasks := formats.FamilyTasks(fam)
		if tasks == nil {
			return fmt.Errorf("-families: unknown family %q (families: %v)", fam, formats.AllFamilies())
		}
		if o.tasks != "" { // the asked tasks this family renders
			var keep []string
			for _, t := range strings.Split(o.tasks, ",") {
				if slices.Contains(tasks, t) {
					keep = append(keep, t)
				} else if !slices.Contains(formats.Tasks(), t) {
					return fmt.Errorf("-tasks: unknown task %q (tasks: %v)", t, formats.Tasks())
				}
			}
			tasks = keep
		}
		for _, task := range tasks {
			for _, length := range lengths {
				for i := 0; i < n; i++ {
					s, err := g.Make(formats.Spec{Family: fam, Task: task, Length: length, Index: i,
						Depth: i * 100 / max(1, n-1), Distractors: -1})
					if err != nil {
						return err
					}
					if err := enc.Encode(evalLine{fam, task, s.HeldOut, length, i, s.Context, s.Question, s.Gold,
						s.Metric, s.Depth, s.QuestionFirst, s.MaxNewTokens}); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// stats prints documents, bytes and tokens of the corpus, by source and in all.
func stats(docs []formats.Document, count func(string) int) error {
	type agg struct{ docs, bytes, tokens int }
	by := map[string]*agg{}
	var order []string
	var all agg
	for _, d := range docs {
		a := by[d.Src]
		if a == nil {
			a = &agg{}
			by[d.Src] = a
			order = append(order, d.Src)
		}
		t := count(d.Text) - 1 // without BOS
		a.docs, a.bytes, a.tokens = a.docs+1, a.bytes+len(d.Text), a.tokens+t
		all.docs, all.bytes, all.tokens = all.docs+1, all.bytes+len(d.Text), all.tokens+t
	}
	fmt.Printf("%-22s %7s %12s %12s %6s\n", "source", "docs", "bytes", "tokens", "B/tok")
	for _, s := range append(order, "all") {
		a := by[s]
		if s == "all" {
			a = &all
		}
		fmt.Printf("%-22s %7d %12d %12d %6.2f\n", s, a.docs, a.bytes, a.tokens, float64(a.bytes)/float64(max(1, a.tokens)))
	}
	return nil
}
