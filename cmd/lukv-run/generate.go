package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/lukv/lukv"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/memplan"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

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

func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// Flags.
	modelFlag := fs.String("model", "", "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json) or GGUF file; empty: the embedded default model, "+models.DefaultName)
	prompt := fs.String("prompt", "", "prompt text")
	promptFile := fs.String("prompt-file", "", "read the prompt from this file ('-' for standard input)")
	question := fs.String("question", "", "text appended after the prompt (the context); with --compress-at context it arrives after eviction")
	noBOS := fs.Bool("no-special", false, "do not add the tokenizer's special tokens (BOS) to the prompt")
	// Unset, these three take generation_config.json's values when the checkpoint has one.
	maxNew := fs.Int("max-new-tokens", 64, "most tokens to generate, >= 0 (unset: generation_config.json's max_new_tokens, else 64)")
	temperature := fs.Float64("temperature", 0, "sampling temperature, >= 0; 0 is greedy (unset: generation_config.json's when do_sample, else 0)")
	topP := fs.Float64("top-p", 1, "nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1] (unset: generation_config.json's when do_sample, else 1)")
	seed := fs.Uint64("seed", 0, "random seed for sampling")
	var stops stringList
	fs.Var(&stops, "stop", "stop before this string (repeatable)")
	device := fs.String("device", "cpu", "cpu or cuda")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	weightsF := addWeightsFlag(fs)
	jsonOut := fs.Bool("json", false, "print one JSON object with the text and stats instead of streaming")
	chat := fs.Bool("chat", false, "send --prompt as a user message through the model's chat template (tokenizer_config.json's chat_template; tokenizer.FallbackChatTemplate when it has none)")
	ev := addEvictFlags(fs)
	cf := addChunkFlags(fs)
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
	// Every flag is checked before the model loads.
	if err := checkSampling(*maxNew, *temperature, *topP); err != nil {
		return err
	}
	if err := checkThreads(*threads); err != nil {
		return err
	}
	weights, err := weightsF.format()
	if err != nil {
		return err
	}
	if err := ev.check(); err != nil {
		return err
	}
	text, err := promptText(*prompt, *promptFile)
	if err != nil {
		return err
	}
	if err := checkUTF8("--question", *question); err != nil {
		return err
	}
	// The prompt is tokenized and the memory checked before the weights are loaded.
	b, err := backendFor(*device, *threads, fastPrecision, weights)
	if err != nil {
		return err
	}
	dir, err := modelDir(*modelFlag)
	if err != nil {
		return err
	}
	cfg, err := loader.ModelConfig(dir)
	if err != nil {
		return err
	}
	// generation_config.json's sampling defaults fill the flags the user did not set.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	defaults := cfg.Generation.Defaults()
	if !set["temperature"] {
		*temperature = defaults.Temperature
	}
	if !set["top-p"] {
		*topP = defaults.TopP
	}
	if !set["max-new-tokens"] && defaults.MaxNewTokens > 0 {
		*maxNew = defaults.MaxNewTokens
	}
	if err := checkSampling(*maxNew, *temperature, *topP); err != nil {
		return fmt.Errorf("%s/generation_config.json: %w", dir, err)
	}
	tok, err := lukv.LoadTokenizer(dir)
	if err != nil {
		return err
	}
	addSpecial := !*noBOS
	if *chat {
		ct, err := tokenizer.LoadChatTemplate(filepath.Join(dir, "tokenizer_config.json"), true)
		if err != nil {
			return fmt.Errorf("--chat: %w", err)
		}
		if text, err = ct.Render([]tokenizer.ChatMessage{{Role: "user", Content: text}}, true); err != nil {
			return fmt.Errorf("--chat: %w", err)
		}
		addSpecial = false // the template writes BOS itself
	}
	ids := tok.Encode(text, addSpecial)
	contextTokens := len(ids)
	if *question != "" {
		ids = append(ids, tok.Encode(*question, false)...)
	}
	chunk, ratio, err := cf.plan(b, weights, cfg, ev, contextTokens, len(ids)-contextTokens+*maxNew)
	if err != nil {
		return err
	}
	*ev.compression = ratio
	m, err := model.LoadWith(dir, b, model.LoadOptions{Weights: weights})
	if err != nil {
		return err
	}
	method, err := ev.build(m, *modelFlag == "")
	if err != nil {
		return err
	}
	opt := generate.Options{MaxNewTokens: *maxNew, Temperature: *temperature, TopP: *topP, Seed: *seed, StopStrings: stops}
	if method != nil {
		e := lukv.Eviction{Method: *method, At: lukv.When(*ev.at), Every: *ev.every, Buffer: *ev.buffer}
		if err := e.Apply(&opt, m, contextTokens, len(ids)); err != nil {
			return err
		}
	}
	if err := cf.apply(&opt, m, method, *ev.at, chunk); err != nil {
		return err
	}
	if !*jsonOut {
		opt.OnText = func(piece string) { io.WriteString(stdout, piece) }
	}
	g := &generate.Generator{Model: m, Tokenizer: tok}
	res, err := g.Generate(ctx, ids, opt)
	if err != nil {
		if !*jsonOut {
			fmt.Fprintln(stdout) // end the streamed text before the error
		}
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(generateOutput{Model: dir, Device: m.Backend.Name(), Prompt: text, Method: methodName(method), Result: res,
			PrefillTokensPerSec: res.PrefillTokensPerSec(), DecodeTokensPerSec: res.DecodeTokensPerSec()})
	}
	fmt.Fprintln(stdout)
	kv := memplan.FormatSize(res.KVBytes)
	if method != nil {
		kv = fmt.Sprintf("%s -> %s (%.1f%% fewer bytes, %.1f%% fewer tokens held, after %s eviction at %s, %.1f ms)", memplan.FormatSize(res.KVBytesPrefill), memplan.FormatSize(res.KVBytesCompressed),
			100*(1-float64(res.KVBytesCompressed)/float64(res.KVBytesPrefill)), 100*(1-float64(res.KVLiveCompressed)/float64(res.KVLivePrefill)),
			methodName(method), *ev.at, float64(res.CompressTime.Microseconds())/1000)
	}
	if len(res.Chunks) > 1 {
		kv = fmt.Sprintf("peak %s (%s live) in %d chunks of %d -> %s", memplan.FormatSize(res.KVBytesPrefill), memplan.FormatSize(res.KVLivePrefill), len(res.Chunks), chunk, memplan.FormatSize(res.KVBytes))
		if method != nil {
			kv += fmt.Sprintf(" (%s eviction after every chunk)", methodName(method))
		}
	}
	fmt.Fprintf(stderr, "[lukv] prompt %d tokens | prefill %.3f s (%.1f tok/s) | decode %d tokens, %.1f tok/s | KV cache %s | stop: %s\n",
		res.PromptTokens, res.PrefillTime.Seconds(), res.PrefillTokensPerSec(), len(res.Tokens), res.DecodeTokensPerSec(),
		kv, res.StopReason)
	return nil
}

// checkSampling checks --max-new-tokens, --temperature and --top-p.
func checkSampling(maxNew int, temperature, topP float64) error {
	switch {
	case maxNew < 0:
		return fmt.Errorf("--max-new-tokens %d: must be >= 0", maxNew)
	case math.IsNaN(temperature) || math.IsInf(temperature, 0) || temperature < 0:
		return fmt.Errorf("--temperature %v: want a number >= 0 (0 is greedy)", temperature)
	case math.IsNaN(topP) || !(topP > 0 && topP <= 1):
		return fmt.Errorf("--top-p %v: want 0 < p <= 1 (1 keeps every token)", topP)
	}
	return nil
}

// methodName is "full" or scorer/allocator@ratio.
func methodName(m *eviction.Method) string {
	if m == nil {
		return "full"
	}
	return m.String()
}

// promptText returns the prompt from --prompt or --prompt-file (exactly one): not empty,
// and valid UTF-8.
func promptText(prompt, file string) (string, error) {
	switch {
	case prompt != "" && file != "":
		return "", errors.New("give either --prompt or --prompt-file, not both")
	case file != "":
		var data []byte
		var err error
		if file == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return "", fmt.Errorf("--prompt-file: %w", err)
		}
		if len(data) == 0 {
			return "", fmt.Errorf("--prompt-file %s: the file is empty", file)
		}
		return string(data), checkUTF8("--prompt-file "+file, string(data))
	case prompt == "":
		return "", errors.New("no prompt: give --prompt TEXT or --prompt-file FILE")
	}
	return prompt, checkUTF8("--prompt", prompt)
}

// checkUTF8 rejects text that is not valid UTF-8, naming the first bad byte's offset
// (the tokenizer would otherwise replace it silently).
func checkUTF8(what, text string) error {
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		if r == utf8.RuneError && size == 1 {
			return fmt.Errorf("%s: invalid UTF-8 at byte offset %d (byte 0x%02x); the prompt must be UTF-8 text", what, i, text[i])
		}
		i += size
	}
	return nil
}
