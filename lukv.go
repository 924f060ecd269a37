// Package lukv is lukv as a Go library: load a checkpoint, generate text while evicting
// part of the KV cache, and read what the cache held. It ties the packages together;
// each part is usable on its own:
//
//   - model loads a Hugging Face checkpoint (Llama, Mistral, Qwen2/3) onto a backend
//     (backend/cpu, or backend/cuda in builds with -tags cuda) and runs the forward pass;
//     models holds the embedded default model, lukv-tiny;
//   - generate turns a model and its tokenizer into text (sampling, stop strings,
//     streaming, batches), with hooks between prefill and decode;
//   - eviction scores the cached tokens, splits a budget across heads (uniform, AdaKV,
//     pyramid, LU-KV's profiled curves) and compacts the cache; eviction.Profiler makes
//     an LU-KV budget curve;
//   - bench measures speed against the floors.
//
// Load or LoadDefault gives a generate.Generator; Eviction.Apply wires an
// eviction.Method into a generation's options, after the context, after the question or
// every few decode steps. The examples show each step.
package lukv

import (
	"fmt"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// Load loads a checkpoint onto b and returns a generator over it: a Hugging Face folder
// (config.json, *.safetensors, tokenizer.json, optionally tokenizer_config.json and
// generation_config.json) or a GGUF file (weights, config and tokenizer in one file).
func Load(path string, b backend.Backend) (*generate.Generator, error) {
	return LoadWith(path, b, model.LoadOptions{})
}

// LoadWith is Load with options: the format the weight matrices are held in (f32, bf16,
// int8 quantized at load, or auto: the checkpoint's own; see model.LoadOptions).
func LoadWith(path string, b backend.Backend, opt model.LoadOptions) (*generate.Generator, error) {
	m, err := model.LoadWith(path, b, opt)
	if err != nil {
		return nil, err
	}
	tok, err := LoadTokenizer(path)
	if err != nil {
		return nil, err
	}
	return &generate.Generator{Model: m, Tokenizer: tok}, nil
}

// LoadTokenizer loads a checkpoint's tokenizer: the one stored in a GGUF file, or a
// folder's tokenizer.json with tokenizer_config.json's BOS/EOS rules.
func LoadTokenizer(path string) (*tokenizer.Tokenizer, error) {
	if loader.IsGGUF(path) {
		return tokenizer.LoadGGUF(path)
	}
	return tokenizer.LoadDir(path)
}

// LoadDefault loads the embedded default model (models.DefaultName, extracted to the
// user's cache folder on first use) onto b.
func LoadDefault(b backend.Backend) (*generate.Generator, error) {
	dir, err := models.DefaultDir()
	if err != nil {
		return nil, err
	}
	return Load(dir, b)
}

// When says when a generation evicts.
type When string

const (
	// AfterContext evicts once the context is prefilled, before the question is:
	// query-agnostic, the scorer cannot see the question (kvpress's default protocol).
	AfterContext When = "context"
	// AfterQuestion evicts once the whole prompt is prefilled; the question's tokens are
	// protected like the window (eviction may read them, not drop them).
	AfterQuestion When = "question"
	// DuringDecode evicts after the prompt and then every Every generated tokens.
	DuringDecode When = "decode"
)

// Eviction is an eviction method and when a generation runs it.
type Eviction struct {
	Method eviction.Method
	At     When
	// Every and Buffer are DuringDecode's period and the recent tokens whose queries the
	// scorer sees (Buffer <= Every).
	Every, Buffer int
}

// Apply sets opt's hooks so that generating prompt, whose first contextTokens tokens are
// the context and the rest the question, evicts as e says (AfterContext also sets
// opt.ContextTokens). Call it after opt.MaxNewTokens is set: the compressed cache keeps
// room for the tokens still to come. Each Apply is for one generation.
func (e Eviction) Apply(opt *generate.Options, m *model.Model, contextTokens, promptTokens int) error {
	if contextTokens <= 0 || contextTokens > promptTokens {
		return fmt.Errorf("lukv: %d context tokens in a %d-token prompt: want 0 < context <= prompt", contextTokens, promptTokens)
	}
	method := e.Method
	collector := method.NewCollector(m)
	opt.Observer = collector
	// compress evicts after the first prefill, leaving room for reserve more tokens.
	compressFor := func(method eviction.Method, reserve int) func(backend.KVCache, int) error {
		return func(cache backend.KVCache, _ int) error {
			defer collector.Release() // one compression per generation
			return method.CompressCollected(cache, collector, reserve)
		}
	}
	switch e.At {
	case AfterContext:
		opt.ContextTokens = contextTokens
		opt.AfterPrefill = compressFor(method, promptTokens-contextTokens+opt.MaxNewTokens)
	case AfterQuestion:
		method.Window = max(method.Window, promptTokens-contextTokens)
		opt.AfterPrefill = compressFor(method, opt.MaxNewTokens)
	case DuringDecode:
		ev, err := eviction.NewDecodeEvictor(m, method, e.Every, e.Buffer)
		if err != nil {
			return err
		}
		compress := compressFor(method, e.Every)
		opt.AfterPrefill = func(cache backend.KVCache, n int) error {
			if err := compress(cache, n); err != nil {
				return err
			}
			ev.SetBudgets(cache)
			return nil
		}
		opt.DecodeObserver = ev
		opt.AfterStep = ev.AfterStep
	default:
		return fmt.Errorf("lukv: eviction at %q: want %q, %q or %q", e.At, AfterContext, AfterQuestion, DuringDecode)
	}
	return nil
}
