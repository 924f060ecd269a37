package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// newCUDABackend is set by cuda.go in binaries built with -tags cuda.
var newCUDABackend func() (backend.Backend, error)

// backendFor returns the backend a --device flag names.
func backendFor(device string, threads int) (backend.Backend, error) {
	switch device {
	case "cpu":
		return &cpu.Backend{Threads: threads}, nil
	case "cuda":
		if newCUDABackend == nil {
			return nil, errors.New("--device cuda: this lukv-run was built without GPU support; build it with `go build -tags cuda ./cmd/lukv-run` on a machine with the CUDA toolkit (see README)")
		}
		return newCUDABackend()
	default:
		return nil, fmt.Errorf("--device %q: want cpu or cuda", device)
	}
}

// modelDir resolves --model: a folder, or the embedded default when empty.
func modelDir(flagValue string) (string, error) {
	if flagValue == "" {
		return models.DefaultDir()
	}
	st, err := os.Stat(flagValue)
	if err != nil {
		return "", fmt.Errorf("--model: %w", err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("--model %s: not a folder (want a Hugging Face checkpoint folder with config.json, *.safetensors and tokenizer.json)", flagValue)
	}
	return flagValue, nil
}

// openModel resolves --model, makes the --device backend and loads the model and its
// tokenizer onto it. It returns the model's folder too.
func openModel(modelFlag, device string, threads int) (string, *model.Model, *tokenizer.Tokenizer, error) {
	b, err := backendFor(device, threads)
	if err != nil {
		return "", nil, nil, err
	}
	dir, err := modelDir(modelFlag)
	if err != nil {
		return "", nil, nil, err
	}
	m, err := model.Load(dir, b)
	if err != nil {
		return "", nil, nil, err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return "", nil, nil, err
	}
	return dir, m, tok, nil
}

// generateOutput is the --json output of generate.
type generateOutput struct {
	Model  string `json:"model"`
	Device string `json:"device"`
	Prompt string `json:"prompt"`
	Method string `json:"method"`
	*generate.Result
	PrefillTokensPerSec float64 `json:"prefill_tokens_per_sec"`
	DecodeTokensPerSec  float64 `json:"decode_tokens_per_sec"`
}

func runGenerate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelFlag := fs.String("model", "", "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json); empty: the embedded default model, "+models.DefaultName)
	prompt := fs.String("prompt", "", "prompt text")
	promptFile := fs.String("prompt-file", "", "read the prompt from this file ('-' for standard input)")
	maxNew := fs.Int("max-new-tokens", 64, "most tokens to generate")
	temperature := fs.Float64("temperature", 0, "sampling temperature; 0 is greedy")
	topP := fs.Float64("top-p", 1, "nucleus sampling: keep the most likely tokens up to this probability mass")
	seed := fs.Uint64("seed", 0, "random seed for sampling")
	device := fs.String("device", "cpu", "cpu or cuda")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	jsonOut := fs.Bool("json", false, "print one JSON object with the text and stats instead of streaming")
	noBOS := fs.Bool("no-special", false, "do not add the tokenizer's special tokens (BOS) to the prompt")
	question := fs.String("question", "", "text appended after the prompt (the context); with --compress-at context it arrives after eviction")
	ev := addEvictFlags(fs)
	cf := addChunkFlags(fs)
	var stops stringList
	fs.Var(&stops, "stop", "stop before this string (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lukv-run generate [flags]\n\nGenerates a continuation of the prompt, printing text as it is produced and then a stats line\n(prompt tokens, prefill time, decode tokens/s, KV cache bytes) on standard error.\nWithout --model it runs the embedded default model (%s).\n\nFlags:\n", models.DefaultName)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("generate: unexpected argument %q (the prompt goes in --prompt)", fs.Arg(0))
	}
	text, err := promptText(*prompt, *promptFile)
	if err != nil {
		return err
	}
	if *maxNew < 0 {
		return fmt.Errorf("--max-new-tokens %d: must be >= 0", *maxNew)
	}
	// The prompt is tokenized and the memory checked before the weights are loaded.
	b, err := backendFor(*device, *threads)
	if err != nil {
		return err
	}
	dir, err := modelDir(*modelFlag)
	if err != nil {
		return err
	}
	cfg, err := loader.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	ids := tok.Encode(text, !*noBOS)
	contextTokens := len(ids)
	if *question != "" {
		ids = append(ids, tok.Encode(*question, false)...)
	}
	chunk, ratio, err := cf.plan(b, cfg, ev, contextTokens, len(ids)-contextTokens+*maxNew)
	if err != nil {
		return err
	}
	*ev.compression = ratio
	m, err := model.Load(dir, b)
	if err != nil {
		return err
	}
	method, err := ev.build(m, *modelFlag == "")
	if err != nil {
		return err
	}
	opt := generate.Options{MaxNewTokens: *maxNew, Temperature: *temperature, TopP: *topP, Seed: *seed, StopStrings: stops}
	if err := ev.apply(&opt, m, method, contextTokens, len(ids), *maxNew); err != nil {
		return err
	}
	if err := cf.apply(&opt, m, method, *ev.at, chunk); err != nil {
		return err
	}
	if !*jsonOut {
		opt.OnText = func(piece string) { io.WriteString(stdout, piece) }
	}
	g := &generate.Generator{Model: m, Tokenizer: tok}
	res, err := g.Generate(context.Background(), ids, opt)
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(generateOutput{Model: dir, Device: m.Backend.Name(), Prompt: text, Method: methodName(method, *ev.at), Result: res,
			PrefillTokensPerSec: res.PrefillTokensPerSec(), DecodeTokensPerSec: res.DecodeTokensPerSec()})
	}
	fmt.Fprintln(stdout)
	kv := humanBytes(res.KVBytes)
	if method != nil {
		kv = fmt.Sprintf("%s -> %s (%.1f%% fewer bytes, %.1f%% fewer tokens held, after %s eviction at %s, %.1f ms)", humanBytes(res.KVBytesPrefill), humanBytes(res.KVBytesCompressed),
			100*(1-float64(res.KVBytesCompressed)/float64(res.KVBytesPrefill)), 100*(1-float64(res.KVLiveCompressed)/float64(res.KVLivePrefill)),
			methodName(method, *ev.at), *ev.at, float64(res.CompressTime.Microseconds())/1000)
	}
	if len(res.Chunks) > 1 {
		kv = fmt.Sprintf("peak %s (%s live) in %d chunks of %d -> %s", humanBytes(res.KVBytesPrefill), humanBytes(res.KVLivePrefill), len(res.Chunks), chunk, humanBytes(res.KVBytes))
		if method != nil {
			kv += fmt.Sprintf(" (%s eviction after every chunk)", methodName(method, *ev.at))
		}
	}
	fmt.Fprintf(stderr, "[lukv] prompt %d tokens | prefill %.3f s (%.1f tok/s) | decode %d tokens, %.1f tok/s | KV cache %s | stop: %s\n",
		res.PromptTokens, res.PrefillTime.Seconds(), res.PrefillTokensPerSec(), len(res.Tokens), res.DecodeTokensPerSec(),
		kv, res.StopReason)
	return nil
}

// methodName is "full" or scorer/allocator@ratio.
func methodName(m *eviction.Method, at string) string {
	if m == nil {
		return "full"
	}
	return m.String()
}

// promptText returns the prompt from --prompt or --prompt-file (exactly one).
func promptText(prompt, file string) (string, error) {
	switch {
	case prompt != "" && file != "":
		return "", errors.New("give either --prompt or --prompt-file, not both")
	case file == "-":
		data, err := io.ReadAll(os.Stdin)
		return string(data), err
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--prompt-file: %w", err)
		}
		return string(data), nil
	case prompt == "":
		return "", errors.New("no prompt: give --prompt TEXT or --prompt-file FILE")
	}
	return prompt, nil
}

// humanBytes prints a byte count with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
