package eval

// LongBench (v1, THUDM/LongBench) loader: reads the official <dataset>.jsonl files and
// builds prompts as LongBench's pred.py does, from the user's copy of LongBench's
// config/dataset2prompt.json and config/dataset2maxlen.json (lukv does not bundle
// LongBench's prompt texts).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lukv/lukv/tokenizer"
)

// LongBenchOptions says which LongBench data to load and how large a prompt may be.
type LongBenchOptions struct {
	// Dir holds LongBench's data files, <dataset>.jsonl (the official data.zip: one JSON
	// object per line with input, context, answers, length, dataset, language,
	// all_classes, _id; LongBench-E files are <dataset>_e.jsonl).
	Dir string
	// ConfigDir holds LongBench's dataset2prompt.json and dataset2maxlen.json (the
	// LongBench/config folder of a THUDM/LongBench checkout).
	ConfigDir string
	// Datasets to load, by file name without ".jsonl"; empty: every dataset in Dir that
	// has a prompt in dataset2prompt.json and a LongBench metric.
	Datasets []string
	// Samples is how many samples to read per dataset, the first ones of the file; 0: all.
	Samples int
	// MaxTokens is the token budget of prompt plus generation; a longer context is cut in
	// its middle (see LoadLongBench). 0: no limit.
	MaxTokens int
	// Tokenizer counts tokens for MaxTokens (the model's tokenizer); needed only then.
	Tokenizer *tokenizer.Tokenizer
}

// noChatDatasets are the datasets pred.py feeds to chat models without their chat
// template: few-shot and code completion prompts work better raw.
var noChatDatasets = map[string]bool{"trec": true, "triviaqa": true, "samsum": true, "lsht": true, "lcc": true, "repobench-p": true}

// LongBenchUsesChat tells whether pred.py wraps dataset's prompt in a chat model's chat
// template (false for trec, triviaqa, samsum, lsht, lcc, repobench-p). LoadLongBench
// builds raw prompts, as for a base model; a runner that evaluates a chat model adds the
// template around Context and Question for the datasets where this is true.
func LongBenchUsesChat(dataset string) bool { return !noChatDatasets[longBenchBase(dataset)] }

// LoadLongBench reads LongBench samples. For each dataset the prompt is dataset2prompt's
// template (Python str.format syntax) with {context} and {input} filled from the jsonl
// line, and MaxNewTokens is dataset2maxlen's entry; Task is "longbench/<dataset>", Gold the
// answers and AllClasses all_classes. LongBench-E files (<dataset>_e.jsonl) use the
// prompt and length of <dataset>.
//
// Context is the template up to and including the context, Question the rest with the
// input filled in, so a cache compressed after Context does not know the question
// (query-agnostic, as kvpress evaluates). Every LongBench template has {context} before
// {input}; should one have {input} first, that input stays in Context (which then is no
// longer query-agnostic) since Context must be a prefix of the prompt.
//
// Truncation differs from pred.py: LongBench cuts the middle of the whole tokenized prompt
// to model2maxlen tokens (first half + last half, each decoded), which can cut into the
// instructions or the question when they are long. Here the question must stay whole, so
// the middle of the context alone is cut (first half and last half of its tokens kept,
// each decoded without special tokens) until Encode(Context, true) + Encode(Question,
// false), the tokens a runner feeds, fit MaxTokens - MaxNewTokens; generation is budgeted
// inside MaxTokens rather than on top of it.
func LoadLongBench(opt LongBenchOptions) ([]Sample, error) {
	switch {
	case opt.Dir == "":
		return nil, errors.New("eval: LongBench: no data folder given (LongBenchOptions.Dir)")
	case opt.ConfigDir == "":
		return nil, errors.New("eval: LongBench: no config folder given (LongBenchOptions.ConfigDir: the LongBench/config folder of a THUDM/LongBench checkout)")
	case opt.Samples < 0 || opt.MaxTokens < 0:
		return nil, fmt.Errorf("eval: LongBench: negative Samples (%d) or MaxTokens (%d)", opt.Samples, opt.MaxTokens)
	case opt.MaxTokens > 0 && opt.Tokenizer == nil:
		return nil, errors.New("eval: LongBench: MaxTokens needs a Tokenizer to count tokens")
	}
	var prompts map[string]string
	if err := readLongBenchConfig(opt.ConfigDir, "dataset2prompt.json", &prompts); err != nil {
		return nil, err
	}
	var maxLen map[string]int
	if err := readLongBenchConfig(opt.ConfigDir, "dataset2maxlen.json", &maxLen); err != nil {
		return nil, err
	}
	// promptKey: the config key of a data file's dataset ("qasper_e" -> "qasper").
	promptKey := func(name string) (string, bool) {
		if _, ok := prompts[name]; ok {
			return name, true
		}
		if base := strings.TrimSuffix(name, "_e"); base != name {
			_, ok := prompts[base]
			return base, ok
		}
		return "", false
	}
	datasets := opt.Datasets
	if len(datasets) == 0 {
		files, err := filepath.Glob(filepath.Join(opt.Dir, "*.jsonl"))
		if err != nil {
			return nil, fmt.Errorf("eval: LongBench: %w", err)
		}
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".jsonl")
			if _, ok := promptKey(name); ok && LongBenchMetric(name) != "" {
				datasets = append(datasets, name)
			}
		}
		if len(datasets) == 0 {
			return nil, fmt.Errorf("eval: LongBench: no <dataset>.jsonl in %s has a prompt in %s", opt.Dir, filepath.Join(opt.ConfigDir, "dataset2prompt.json"))
		}
		sortLongBench(datasets)
	}
	var out []Sample
	for _, name := range datasets {
		key, ok := promptKey(name)
		if !ok {
			return nil, fmt.Errorf("eval: LongBench: %s has no prompt for dataset %q", filepath.Join(opt.ConfigDir, "dataset2prompt.json"), name)
		}
		if LongBenchMetric(name) == "" {
			return nil, fmt.Errorf("eval: LongBench: dataset %q has no LongBench metric (known: %v)", name, LongBenchDatasets())
		}
		gen, ok := maxLen[key]
		if !ok || gen <= 0 {
			return nil, fmt.Errorf("eval: LongBench: %s has no positive length for dataset %q", filepath.Join(opt.ConfigDir, "dataset2maxlen.json"), key)
		}
		tmpl, err := parseTemplate(prompts[key])
		if err != nil {
			return nil, fmt.Errorf("eval: LongBench: prompt for %q in %s: %w", key, filepath.Join(opt.ConfigDir, "dataset2prompt.json"), err)
		}
		samples, err := readLongBenchFile(filepath.Join(opt.Dir, name+".jsonl"), opt.Samples)
		if err != nil {
			return nil, err
		}
		for _, r := range samples {
			head, tail := tmpl.fill(r.input)
			ctx := r.context
			if opt.MaxTokens > 0 {
				budget := opt.MaxTokens - gen
				if ctx, err = fitContext(opt.Tokenizer, head, r.context, tail, budget); err != nil {
					return nil, fmt.Errorf("eval: LongBench: %s: %w (MaxTokens %d - MaxNewTokens %d)", r.where, err, opt.MaxTokens, gen)
				}
			}
			out = append(out, Sample{
				Task:         "longbench/" + name,
				Prompt:       head + ctx + tail,
				Context:      head + ctx,
				Question:     tail,
				Gold:         r.answers,
				MaxNewTokens: gen,
				AllClasses:   r.allClasses,
			})
		}
	}
	return out, nil
}

// sortLongBench orders dataset names as pred.py lists them, a LongBench-E file after its
// dataset, unknown names last by name.
func sortLongBench(names []string) {
	rank := func(n string) int {
		b := longBenchBase(n)
		for i, e := range longBenchOrder {
			if e.name == b {
				return i
			}
		}
		return len(longBenchOrder)
	}
	sort.Slice(names, func(i, j int) bool {
		ri, rj := rank(names[i]), rank(names[j])
		if ri != rj {
			return ri < rj
		}
		return names[i] < names[j]
	})
}

// readLongBenchConfig decodes LongBench's config file name from dir into v.
func readLongBenchConfig(dir, name string, v any) error {
	path := filepath.Join(dir, name)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("eval: LongBench config %s is missing (ConfigDir must be the LongBench/config folder of a THUDM/LongBench checkout)", path)
	}
	if err != nil {
		return fmt.Errorf("eval: LongBench config: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("eval: LongBench config %s: %w", path, err)
	}
	return nil
}

// longBenchRecord is the part of a LongBench jsonl line that prompts and scoring use;
// where is "file:line" for errors.
type longBenchRecord struct {
	input, context string
	answers        []string
	allClasses     []string
	where          string
}

// readLongBenchFile reads the first limit records (0: all) of a LongBench jsonl file;
// blank lines are skipped. input, context (strings) and answers (a list of strings) are
// required, all_classes may be null or a list of strings; other fields are not read.
func readLongBenchFile(path string, limit int) ([]longBenchRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: LongBench data: %w", err)
	}
	defer f.Close()
	rd := bufio.NewReader(f) // lines hold whole documents: no line length limit
	var out []longBenchRecord
	for n := 1; limit == 0 || len(out) < limit; n++ {
		line, err := rd.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("eval: LongBench data %s:%d: %w", path, n, err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			r, perr := parseLongBenchLine(line)
			if perr != nil {
				return nil, fmt.Errorf("eval: LongBench data %s:%d: %w", path, n, perr)
			}
			r.where = fmt.Sprintf("%s:%d", path, n)
			out = append(out, r)
		}
		if err == io.EOF {
			break
		}
	}
	return out, nil
}

// parseLongBenchLine decodes one jsonl line.
func parseLongBenchLine(line []byte) (longBenchRecord, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return longBenchRecord{}, fmt.Errorf("bad JSON: %w", err)
	}
	get := func(name string, v any, required bool) error {
		raw, ok := fields[name]
		if !ok || string(raw) == "null" {
			if required {
				return fmt.Errorf("missing field %q", name)
			}
			return nil
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return fmt.Errorf("field %q: %w", name, err)
		}
		return nil
	}
	var r longBenchRecord
	if err := get("input", &r.input, true); err != nil {
		return r, err
	}
	if err := get("context", &r.context, true); err != nil {
		return r, err
	}
	if err := get("answers", &r.answers, true); err != nil {
		return r, err
	}
	if err := get("all_classes", &r.allClasses, false); err != nil {
		return r, err
	}
	return r, nil
}

// promptTemplate is a dataset2prompt template cut at its {context}: literal text and
// {input} fields before it (head) and after it (tail).
type promptTemplate struct {
	head, tail []templatePart
}

// templatePart is literal text, or the input field when input is set.
type templatePart struct {
	text  string
	input bool
}

// parseTemplate reads a template in Python str.format syntax ("{{" and "}}" are literal
// braces) whose only fields are {context}, exactly once, and {input}, any number of times.
func parseTemplate(s string) (promptTemplate, error) {
	var t promptTemplate
	parts := &t.head
	contexts := 0
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			*parts = append(*parts, templatePart{text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '{' && i+1 < len(s) && s[i+1] == '{', c == '}' && i+1 < len(s) && s[i+1] == '}':
			lit.WriteByte(c)
			i++
		case c == '}':
			return t, fmt.Errorf("single '}' at byte %d", i)
		case c == '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return t, fmt.Errorf("unclosed '{' at byte %d", i)
			}
			name := s[i+1 : i+end]
			flush()
			switch name {
			case "context":
				contexts++
				parts = &t.tail
			case "input":
				*parts = append(*parts, templatePart{input: true})
			default:
				return t, fmt.Errorf("unsupported field {%s} (only {context} and {input})", name)
			}
			i += end
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	if contexts != 1 {
		return t, fmt.Errorf("{context} appears %d times, want once", contexts)
	}
	return t, nil
}

// fill returns the template's text before and after {context} with input filled in.
func (t promptTemplate) fill(input string) (head, tail string) {
	join := func(parts []templatePart) string {
		var b strings.Builder
		for _, p := range parts {
			if p.input {
				b.WriteString(input)
			} else {
				b.WriteString(p.text)
			}
		}
		return b.String()
	}
	return join(t.head), join(t.tail)
}

// fitContext returns ctx, or ctx with its middle cut out, so that
// len(Encode(head+ctx, true)) + len(Encode(tail, false)) <= budget. The cut keeps the
// first and last halves of ctx's tokens, each decoded on its own (as pred.py decodes its
// two halves); since tokens do not add up exactly across the joins, the kept count is
// lowered by the overshoot until the prompt fits.
func fitContext(tok *tokenizer.Tokenizer, head, ctx, tail string, budget int) (string, error) {
	tailN := len(tok.Encode(tail, false))
	count := func(c string) int { return len(tok.Encode(head+c, true)) + tailN }
	n := count(ctx)
	if n <= budget {
		return ctx, nil
	}
	ids := tok.Encode(ctx, false)
	keep := len(ids) - (n - budget)
	for tries := 0; keep > 0 && tries < 32; tries++ {
		first := keep / 2
		cut := tok.Decode(ids[:first], true) + tok.Decode(ids[len(ids)-(keep-first):], true)
		m := count(cut)
		if m <= budget {
			return cut, nil
		}
		keep -= max(m-budget, 1)
	}
	return "", fmt.Errorf("the prompt does not fit %d tokens even with its context cut (%d tokens without any context)", budget, count(""))
}
