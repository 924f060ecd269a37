package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"

	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/kvpool"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/sched"
	"github.com/lukv/lukv/tokenizer"
)

const testKey = "test-key"

// harness is a server on the embedded default model behind httptest, an OpenAI client
// pointed at it, and the plain one-by-one generator for reference.
type harness struct {
	url    string
	client openai.Client
	sched  *sched.Scheduler
	pool   *kvpool.Pool
	ref    *generate.Generator
}

func newHarness(t *testing.T, maxRunning, maxWaiting int) *harness {
	t.Helper()
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	m, pool, err := LoadCPU(dir, 64<<20, 0, loader.WeightsF32)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	chat, err := tokenizer.LoadChatTemplate(filepath.Join(dir, "tokenizer_config.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sched.New(sched.Config{Model: m, Pool: pool, MaxRunning: maxRunning, MaxWaiting: maxWaiting})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Model: m, Tokenizer: tok, Chat: chat, Scheduler: s, ModelName: "lukv-tiny", APIKey: testKey, DefaultMaxTokens: 16,
		Eviction: Eviction{Sink: 4, Window: 4}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { ts.Close(); s.Close() })
	plain, err := model.Load(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	return &harness{url: ts.URL, sched: s, pool: pool, ref: &generate.Generator{Model: plain, Tokenizer: tok},
		client: openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey(testKey), option.WithMaxRetries(0))}
}

func completionParams(prompt string, maxTokens int64) openai.CompletionNewParams {
	return openai.CompletionNewParams{Model: "lukv-tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
		MaxTokens: openai.Int(maxTokens), Temperature: openai.Float(0)}
}

// reference is what generate.Generator (plain CPU cache, one request alone) writes.
func (h *harness) reference(t *testing.T, prompt string, maxTokens int) *generate.Result {
	t.Helper()
	res, err := h.ref.Generate(context.Background(), h.ref.Tokenizer.Encode(prompt, true), generate.Options{MaxNewTokens: maxTokens})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (h *harness) waitIdle(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); h.pool.UsedBlocks() != 0 || h.sched.Running() != 0 || h.sched.Waiting() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not idle: %d blocks used, %d running, %d waiting", h.pool.UsedBlocks(), h.sched.Running(), h.sched.Waiting())
		}
	}
}

// TestCompletion: a greedy completion over HTTP is exactly generate's text, with usage
// and finish reason; streamed, the pieces add up to the same text.
func TestCompletion(t *testing.T) {
	h := newHarness(t, 8, 64)
	ctx := context.Background()
	const prompt, n = "The old lighthouse keeper walked along the shore and", 24
	want := h.reference(t, prompt, n)
	got, err := h.client.Completions.New(ctx, completionParams(prompt, n))
	if err != nil {
		t.Fatal(err)
	}
	if got.Choices[0].Text != want.Text {
		t.Fatalf("text %q, generate wrote %q", got.Choices[0].Text, want.Text)
	}
	if got.Usage.PromptTokens != int64(want.PromptTokens) || got.Usage.CompletionTokens != int64(len(want.Tokens)) {
		t.Fatalf("usage %+v, want %d prompt and %d completion tokens", got.Usage, want.PromptTokens, len(want.Tokens))
	}
	if wantReason := finishReason(want.StopReason); string(got.Choices[0].FinishReason) != wantReason {
		t.Fatalf("finish reason %q, want %q", got.Choices[0].FinishReason, wantReason)
	}

	params := completionParams(prompt, n)
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := h.client.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	var chunks int
	var usage openai.CompletionUsage
	for stream.Next() {
		c := stream.Current()
		if len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Text)
			chunks++
		}
		if c.Usage.TotalTokens > 0 {
			usage = c.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != want.Text || chunks < 3 {
		t.Fatalf("streamed %q in %d chunks, want %q in several", text.String(), chunks, want.Text)
	}
	if usage.CompletionTokens != int64(len(want.Tokens)) {
		t.Fatalf("streamed usage %+v", usage)
	}
	h.waitIdle(t)
}

// TestChat: chat completions, streamed and not, render the (fallback) chat template and
// give the same text; stop strings cut it.
func TestChat(t *testing.T) {
	h := newHarness(t, 8, 64)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: "lukv-tiny", MaxTokens: openai.Int(20), Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Answer briefly."), openai.UserMessage("Where is the lighthouse?")}}
	got, err := h.client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	// The same conversation through the template and generate.
	rendered := "<|begin_of_text|>system: Answer briefly.\nuser: Where is the lighthouse?\nassistant:"
	want, err := h.ref.Generate(ctx, h.ref.Tokenizer.Encode(rendered, false), generate.Options{MaxNewTokens: 20})
	if err != nil {
		t.Fatal(err)
	}
	if got.Choices[0].Message.Content != want.Text || got.Choices[0].Message.Role != "assistant" {
		t.Fatalf("chat answer %q (%s), generate wrote %q", got.Choices[0].Message.Content, got.Choices[0].Message.Role, want.Text)
	}
	stream := h.client.Chat.Completions.NewStreaming(ctx, params)
	var streamed strings.Builder
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) > 0 {
			streamed.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil || streamed.String() != want.Text {
		t.Fatalf("streamed %q (%v), want %q", streamed.String(), err, want.Text)
	}
	// A stop string taken from the middle of the answer cuts it there.
	if len(want.Text) > 6 {
		stop := want.Text[3:6]
		params.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: openai.String(stop)}
		cut, err := h.client.Chat.Completions.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		wantCut := want.Text[:strings.Index(want.Text, stop)]
		if cut.Choices[0].Message.Content != wantCut || cut.Choices[0].FinishReason != "stop" {
			t.Fatalf("with stop %q: %q (%s), want %q (stop)", stop, cut.Choices[0].Message.Content, cut.Choices[0].FinishReason, wantCut)
		}
	}
	h.waitIdle(t)
}

// TestConcurrentEqualsSequential: N greedy requests sent at once (some with eviction)
// give exactly the tokens of the same requests sent one at a time.
func TestConcurrentEqualsSequential(t *testing.T) {
	h := newHarness(t, 8, 64)
	ctx := context.Background()
	const n = 10
	params := make([]openai.CompletionNewParams, n)
	var opts [n][]option.RequestOption
	for i := range params {
		params[i] = completionParams(fmt.Sprintf("Story %d: once upon a time in a village by the %s,", i, strings.Repeat("sea and the ", i%4+1)), int64(6+2*i))
		if i%3 == 0 {
			opts[i] = []option.RequestOption{option.WithJSONSet("kv_method", "knorm"), option.WithJSONSet("kv_compression", 0.5)}
		}
		if i%4 == 1 {
			params[i].Temperature, params[i].Seed = openai.Float(0.9), openai.Int(int64(i))
		}
	}
	sequential := make([]string, n)
	for i := range params {
		c, err := h.client.Completions.New(ctx, params[i], opts[i]...)
		if err != nil {
			t.Fatal(err)
		}
		sequential[i] = c.Choices[0].Text
	}
	concurrent := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range params {
		wg.Go(func() {
			c, err := h.client.Completions.New(ctx, params[i], opts[i]...)
			if errs[i] = err; err == nil {
				concurrent[i] = c.Choices[0].Text
			}
		})
	}
	wg.Wait()
	for i := range params {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if concurrent[i] != sequential[i] {
			t.Errorf("request %d: concurrent %q, sequential %q", i, concurrent[i], sequential[i])
		}
	}
	h.waitIdle(t)
}

// TestCancelMidStream: clients that go away mid-stream cancel their sequences; every
// block goes back to the pool and the server keeps serving.
func TestCancelMidStream(t *testing.T) {
	h := newHarness(t, 8, 64)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stream := h.client.Completions.NewStreaming(ctx, completionParams(fmt.Sprintf("Request %d goes on and on", i), 400), option.WithJSONSet("ignore_eos", true))
			for got := 0; stream.Next(); got++ {
				if got == 3+i {
					cancel()
					break
				}
			}
			stream.Close()
		})
	}
	wg.Wait()
	h.waitIdle(t)
	// Still serving.
	if _, err := h.client.Completions.New(context.Background(), completionParams("After the storm", 4)); err != nil {
		t.Fatal(err)
	}
	h.waitIdle(t)
}

// TestBadRequests: each malformed or impossible request gets a 4xx with an OpenAI-style
// JSON error body, and the server keeps serving after it.
func TestBadRequests(t *testing.T) {
	h := newHarness(t, 8, 64)
	long := strings.Repeat("word ", 20000) // more tokens than the 16k context
	cases := []struct {
		name, path, body, key string
		status                int
		param                 string
	}{
		{"malformed JSON", "/v1/completions", `{"prompt": "hi",`, testKey, 400, ""},
		{"not an object", "/v1/completions", `[1, 2]`, testKey, 400, ""},
		{"unknown model", "/v1/completions", `{"model": "gpt-9", "prompt": "hi"}`, testKey, 404, "model"},
		{"no prompt", "/v1/completions", `{"model": "lukv-tiny"}`, testKey, 400, "prompt"},
		{"prompt of numbers", "/v1/completions", `{"prompt": {"a": 1}}`, testKey, 400, "prompt"},
		{"empty messages", "/v1/chat/completions", `{"model": "lukv-tiny", "messages": []}`, testKey, 400, "messages"},
		{"bad role", "/v1/chat/completions", `{"messages": [{"role": "wizard", "content": "x"}]}`, testKey, 400, "messages"},
		{"prompt longer than the context", "/v1/completions", `{"prompt": "` + long + `"}`, testKey, 400, "messages"},
		{"negative max_tokens", "/v1/completions", `{"prompt": "hi", "max_tokens": -5}`, testKey, 400, "max_tokens"},
		{"zero max_tokens", "/v1/completions", `{"prompt": "hi", "max_tokens": 0}`, testKey, 400, "max_tokens"},
		{"huge max_tokens", "/v1/completions", `{"prompt": "hi", "max_tokens": 1000000000}`, testKey, 400, "max_tokens"},
		{"max_tokens a string", "/v1/completions", `{"prompt": "hi", "max_tokens": "ten"}`, testKey, 400, ""},
		{"temperature too high", "/v1/completions", `{"prompt": "hi", "temperature": 7}`, testKey, 400, "temperature"},
		{"negative temperature", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "x"}], "temperature": -1}`, testKey, 400, "temperature"},
		{"top_p zero", "/v1/completions", `{"prompt": "hi", "top_p": 0}`, testKey, 400, "top_p"},
		{"n of 3", "/v1/completions", `{"prompt": "hi", "n": 3}`, testKey, 400, "n"},
		{"five stops", "/v1/completions", `{"prompt": "hi", "stop": ["a","b","c","d","e"]}`, testKey, 400, "stop"},
		{"kv_compression 1", "/v1/completions", `{"prompt": "hi", "kv_method": "knorm", "kv_compression": 1}`, testKey, 400, "kv_compression"},
		{"unknown kv_method", "/v1/completions", `{"prompt": "hi", "kv_method": "magic", "kv_compression": 0.5}`, testKey, 400, "kv_method"},
		{"unknown kv_allocator", "/v1/completions", `{"prompt": "hi", "kv_method": "knorm", "kv_allocator": "x", "kv_compression": 0.5}`, testKey, 400, "kv_allocator"},
		{"no API key", "/v1/completions", `{"prompt": "hi"}`, "", 401, ""},
		{"wrong API key", "/v1/models", ``, "nope", 401, ""},
		{"unknown route", "/v1/embeddings", `{}`, testKey, 404, ""},
	}
	for _, c := range cases {
		method := http.MethodPost
		if c.body == "" {
			method = http.MethodGet
		}
		req, _ := http.NewRequest(method, h.url+c.path, strings.NewReader(c.body))
		if c.key != "" {
			req.Header.Set("Authorization", "Bearer "+c.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Error *struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Param   *string `json:"param"`
			} `json:"error"`
		}
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.name, resp.StatusCode, c.status, body)
			continue
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
			t.Errorf("%s: body %s is not an OpenAI error", c.name, body)
			continue
		}
		if c.param != "" && (e.Error.Param == nil || *e.Error.Param != c.param) {
			t.Errorf("%s: param %v, want %q (%s)", c.name, e.Error.Param, c.param, e.Error.Message)
		}
		// The server keeps serving.
		if _, err := h.client.Completions.New(context.Background(), completionParams("Hello", 2)); err != nil {
			t.Fatalf("after %s: %v", c.name, err)
		}
	}
	// The official client sees the errors as *openai.Error with the status.
	_, err := h.client.Completions.New(context.Background(), openai.CompletionNewParams{Model: "gpt-9", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("x")}})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Param != "model" {
		t.Fatalf("unknown model through the client: %v", err)
	}
	h.waitIdle(t)
}

// TestQueueFull: with one running slot and one waiting place, a third request gets 429
// with a JSON error, and the others complete.
func TestQueueFull(t *testing.T) {
	h := newHarness(t, 1, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Go(func() {
			_, err := h.client.Completions.New(ctx, completionParams("A long tale", 300), option.WithJSONSet("ignore_eos", true))
			if err != nil && ctx.Err() == nil {
				t.Error(err)
			}
		})
		if i == 0 {
			for h.sched.Running() != 1 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	for h.sched.Waiting() != 1 {
		time.Sleep(time.Millisecond)
	}
	_, err := h.client.Completions.New(context.Background(), completionParams("One too many", 2))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Type != "rate_limit_error" {
		t.Fatalf("third request: got %v, want 429", err)
	}
	cancel() // no need to wait for 600 tokens
	wg.Wait()
	h.waitIdle(t)
}

// TestModelsHealthMetrics: /v1/models lists the model; /health answers; /metrics counts
// requests and tokens and shows the pool.
func TestModelsHealthMetrics(t *testing.T) {
	h := newHarness(t, 8, 64)
	page, err := h.client.Models.List(context.Background())
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != "lukv-tiny" {
		t.Fatalf("models: %v %+v", err, page)
	}
	if _, err := h.client.Completions.New(context.Background(), completionParams("Hello there", 3),
		option.WithJSONSet("kv_method", "knorm"), option.WithJSONSet("kv_compression", 0.5)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{"/health", `"status":"ok"`},
		{"/metrics", `lukv_requests_total{code="200",endpoint="/v1/completions"} 1`},
		{"/metrics", "lukv_generated_tokens_total 3"},
		{"/metrics", "lukv_kv_blocks_used 0"},
		{"/metrics", "lukv_time_to_first_token_seconds_count 1"},
		{"/metrics", "lukv_inter_token_latency_seconds_count 2"},
		{"/metrics", "lukv_sequences_running 0"},
		{"/metrics", "lukv_kv_entries_evicted_total"},
	} {
		resp, err := http.Get(h.url + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), c.want) {
			t.Errorf("%s: status %d, no %q in:\n%s", c.path, resp.StatusCode, c.want, body)
		}
	}
}
