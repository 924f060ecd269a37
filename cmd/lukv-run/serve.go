package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/kvpool"
	"github.com/lukv/lukv/memplan"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/sched"
	"github.com/lukv/lukv/serve"
	"github.com/lukv/lukv/tokenizer"
)

// loadServeCUDA is set by serve_cuda.go in binaries built with -tags cuda: it loads the
// checkpoint onto the GPU with its KV pool (kvBytes; 0: the memory left but leave) and
// returns a function that frees the pool.
var loadServeCUDA func(dir string, kvBytes, leave int64) (*model.Model, *kvpool.Pool, func(), error)

// runServe is `lukv-run serve`: it serves until ctx is cancelled (main cancels it on
// Ctrl-C or SIGTERM), then shuts down gracefully.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelFlag := fs.String("model", "", "Hugging Face checkpoint folder; empty: the embedded default model, "+models.DefaultName)
	name := fs.String("model-name", "", "the model id clients send (default: the checkpoint folder's name)")
	host := fs.String("host", "127.0.0.1", "address to listen on (0.0.0.0 exposes the server to the network)")
	port := fs.Int("port", 8000, "port to listen on")
	apiKey := fs.String("api-key", "", "require 'Authorization: Bearer KEY' on /v1/ routes (default: $LUKV_API_KEY, else none)")
	device := fs.String("device", "cpu", "cpu or cuda (a GPU pool of KV blocks, batched decode attention through the block tables)")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	weightsF := addWeightsFlag(fs)
	kvMemory := fs.String("kv-memory", "auto", "KV cache pool shared by all sequences (bytes, or with KiB/MiB/GiB); auto: 256MiB on the CPU, on the GPU all the memory left after the weights but --gpu-leave")
	gpuLeave := fs.String("gpu-leave", "12GiB", "with --device cuda and --kv-memory auto: GPU memory left out of the KV pool for activations, the prefill's scratch cache and eviction scores (a one-pass prefill of a 32k prompt on an 8B model needs about 8GiB)")
	prefillChunk := fs.Int("prefill-chunk", 2048, "prefill prompts this many tokens at a time, between decode steps of the running sequences (0: whole prompts; requests with eviction always prefill in one pass)")
	stepLog := fs.String("step-log", "", "write one JSON line per batched decode step (batch, seconds, live KV bytes) to this file (benchmarks)")
	maxRunning := fs.Int("max-running", 32, "most sequences decoded together")
	maxWaiting := fs.Int("max-waiting", 256, "most requests waiting for memory; more get 429")
	maxTokens := fs.Int("default-max-tokens", 256, "max_tokens of a request that gives none")
	method := fs.String("kv-method", "full", "default eviction scorer: full (no eviction), "+strings.Join(eviction.ScorerNames(), ", ")+" (a request's kv_method overrides it)")
	allocator := fs.String("kv-allocator", "uniform", "default budget allocator: "+strings.Join(eviction.AllocatorNames(), ", ")+" (kv_allocator overrides it)")
	compression := fs.Float64("kv-compression", 0, "default fraction of each prompt's KV cache to evict, 0 <= c < 1 (kv_compression overrides it)")
	sink := fs.Int("kv-sink", 4, "first tokens every head keeps")
	window := fs.Int("kv-window", 1, "last tokens every head keeps")
	curveFlag := fs.String("curve", "", "LU-KV budget curve (.npy) for kv_allocator lukv (default model: its own curve per scorer)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lukv-run serve [flags]\n\nServes the model over an OpenAI-compatible HTTP API (POST /v1/completions, /v1/chat/completions;\nGET /v1/models, /health, /metrics) with continuous batching over a shared KV block pool and\nper-request eviction (body fields kv_method, kv_allocator, kv_compression).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	if *device != "cpu" && *device != "cuda" {
		return fmt.Errorf("--device %q: want cpu or cuda", *device)
	}
	if *prefillChunk < 0 {
		return fmt.Errorf("--prefill-chunk %d: want >= 0", *prefillChunk)
	}
	if err := checkThreads(*threads); err != nil {
		return err
	}
	weights, err := weightsF.format()
	if err != nil {
		return err
	}
	if *port < 0 || *port > 65535 {
		return fmt.Errorf("--port %d: want 0..65535", *port)
	}
	var kvBytes int64 // 0: auto
	if *kvMemory != "auto" {
		if kvBytes, err = memplan.ParseSize(*kvMemory); err != nil {
			return fmt.Errorf("--kv-memory: %w", err)
		}
		if kvBytes <= 0 {
			return fmt.Errorf("--kv-memory %q: want a positive size or auto", *kvMemory)
		}
	} else if *device == "cpu" {
		kvBytes = 256 << 20
	}
	leave, err := memplan.ParseSize(*gpuLeave)
	if err != nil {
		return fmt.Errorf("--gpu-leave: %w", err)
	}
	if *apiKey == "" {
		*apiKey = os.Getenv("LUKV_API_KEY")
	}
	dir, err := modelDir(*modelFlag)
	if err != nil {
		return err
	}

	var m *model.Model
	var pool *kvpool.Pool
	if *device == "cuda" {
		if loadServeCUDA == nil {
			return errors.New("--device cuda: this lukv-run was built without GPU support; build it with `go build -tags cuda ./cmd/lukv-run` on a machine with the CUDA toolkit (see README)")
		}
		var release func()
		if m, pool, release, err = loadServeCUDA(dir, kvBytes, leave); err != nil {
			return err
		}
		defer release()
	} else if m, pool, err = serve.LoadCPU(dir, kvBytes, *threads, weights); err != nil {
		return err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	chat, err := tokenizer.LoadChatTemplate(filepath.Join(dir, "tokenizer_config.json"), *modelFlag == "")
	if err != nil {
		fmt.Fprintf(stderr, "[lukv] %v: /v1/chat/completions will answer 400\n", err)
		chat = nil
	}
	scfg := sched.Config{Model: m, Pool: pool, MaxRunning: *maxRunning, MaxWaiting: *maxWaiting, PrefillChunk: *prefillChunk}
	if *stepLog != "" {
		f, err := os.Create(*stepLog)
		if err != nil {
			return fmt.Errorf("--step-log: %w", err)
		}
		defer f.Close()
		enc := json.NewEncoder(f)
		if err := enc.Encode(map[string]any{"weight_bytes": memplan.WeightBytes(m.Config, m.Backend, weights), "device": *device,
			"kv_pool_bytes": int64(pool.Blocks()) * pool.BlockBytes(), "block_tokens": pool.BlockTokens()}); err != nil {
			return fmt.Errorf("--step-log: %w", err)
		}
		scfg.OnStep = func(st sched.Step) {
			enc.Encode(map[string]any{"batch": st.Batch, "seconds": st.Time.Seconds(), "live_kv_bytes": st.LiveKVBytes})
		}
	}
	s, err := sched.New(scfg)
	if err != nil {
		return err
	}
	defer s.Close()
	if *name == "" {
		*name = filepath.Base(dir)
		if *modelFlag == "" {
			*name = models.DefaultName
		}
	}
	defaultModel := *modelFlag == ""
	srv, err := serve.New(serve.Config{Model: m, Tokenizer: tok, Chat: chat, Scheduler: s, ModelName: *name, APIKey: *apiKey,
		DefaultMaxTokens: *maxTokens,
		Eviction:         serve.Eviction{Method: *method, Allocator: *allocator, Compression: *compression, Sink: *sink, Window: *window},
		Curve: func(scorer string) (*eviction.BudgetCurve, error) {
			path := *curveFlag
			if path == "" {
				if !defaultModel {
					return nil, errors.New("no --curve given to the server")
				}
				var err error
				if path, err = models.DefaultCurve(scorer); err != nil {
					return nil, err
				}
			}
			c, err := eviction.ReadNPY(path)
			if err != nil {
				return nil, err
			}
			return c, c.CheckFits(m.Config.NumLayers, m.Config.NumKVHeads)
		}})
	if err != nil {
		return fmt.Errorf("--kv-method/--kv-allocator/--kv-compression: %w", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		return fmt.Errorf("--host/--port: %w", err)
	}
	fmt.Fprintf(stderr, "[lukv] serving %s on http://%s (KV pool %s in %d blocks of %d tokens; eviction default %s@%g)\n",
		*name, ln.Addr(), memplan.FormatSize(int64(pool.Blocks())*pool.BlockBytes()), pool.Blocks(), pool.BlockTokens(), *method, *compression)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		fmt.Fprintln(stderr, "[lukv] shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	}
}
