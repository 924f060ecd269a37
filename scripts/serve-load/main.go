// Command serve-load is the server's load test: it starts lukv's server in-process on a
// loopback port (CPU, the embedded default model), sends -n requests of mixed lengths,
// -concurrency at a time (10% malformed, 10% cancelled mid-stream, the rest completions
// and chat completions, streamed or not, some with eviction), and checks that every
// valid request completed, every malformed one got a 4xx JSON error, the KV pool is
// empty at the end, and the live heap stays flat after warm-up. It stops by itself: after
// the last request or at -max-time, whichever comes first. Exit status 1 when a check
// fails.
//
//	go run ./scripts/serve-load -n 1000 -concurrency 32
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/sched"
	"github.com/lukv/lukv/serve"
	"github.com/lukv/lukv/tokenizer"
)

func main() {
	n := flag.Int("n", 1000, "requests to send")
	concurrency := flag.Int("concurrency", 32, "requests in flight at once")
	maxTime := flag.Duration("max-time", 20*time.Minute, "stop sending after this long")
	kvMemory := flag.Int64("kv-memory", 32<<20, "KV pool bytes")
	threads := flag.Int("threads", 0, "CPU threads (0: all)")
	flag.Parse()
	if err := run(*n, *concurrency, *maxTime, *kvMemory, *threads); err != nil {
		fmt.Fprintln(os.Stderr, "serve-load:", err)
		os.Exit(1)
	}
}

// kind is what a request is meant to test.
type kind int

const (
	valid kind = iota
	malformed
	cancelled
)

type outcome struct {
	kind   kind
	ok     bool
	detail string
	tokens int
	ttft   time.Duration // streamed requests only
}

func run(n, concurrency int, maxTime time.Duration, kvMemory int64, threads int) error {
	dir, err := models.DefaultDir()
	if err != nil {
		return err
	}
	m, pool, err := serve.LoadCPU(dir, kvMemory, threads, loader.WeightsF32)
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	chat, err := tokenizer.LoadChatTemplate(filepath.Join(dir, "tokenizer_config.json"), true)
	if err != nil {
		return err
	}
	s, err := sched.New(sched.Config{Model: m, Pool: pool, MaxRunning: concurrency, MaxWaiting: 4 * concurrency})
	if err != nil {
		return err
	}
	defer s.Close()
	srv, err := serve.New(serve.Config{Model: m, Tokenizer: tok, Chat: chat, Scheduler: s, ModelName: "lukv-tiny", DefaultMaxTokens: 32,
		Eviction: serve.Eviction{Sink: 4, Window: 4}})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // loopback only
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	defer hs.Close()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency * 2}}
	goroutines0 := runtime.NumGoroutine()

	fmt.Printf("serve-load: %d requests, %d at a time, on %s (GOMAXPROCS %d), KV pool %d blocks of %d tokens (%d MiB)\n",
		n, concurrency, base, runtime.GOMAXPROCS(0), pool.Blocks(), pool.BlockTokens(), kvMemory>>20)
	ctx, stop := context.WithTimeout(context.Background(), maxTime)
	defer stop()
	start := time.Now()
	outcomes := make([]outcome, n)
	var next, done atomic.Int64
	var heapMu sync.Mutex
	var heap []uint64 // live heap after GC, at every 10% of requests done
	sample := func() {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heapMu.Lock()
		heap = append(heap, ms.HeapAlloc)
		heapMu.Unlock()
	}
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				r := rand.New(rand.NewPCG(uint64(i), 7))
				outcomes[i] = request(ctx, client, base, i, r)
				if d := done.Add(1); d%int64(max(n/10, 1)) == 0 {
					sample()
					fmt.Printf("  %4d/%d done, %5.1fs, %d blocks used, %d running, %d waiting\n", d, n, time.Since(start).Seconds(), pool.UsedBlocks(), s.Running(), s.Waiting())
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Let cancelled sequences reach their step boundary.
	for deadline := time.Now().Add(10 * time.Second); (pool.UsedBlocks() != 0 || s.Running() != 0) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	client.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)

	var failures []string
	counts := map[kind]int{}
	okCounts := map[kind]int{}
	var tokens int
	var ttfts []time.Duration
	sent := int(done.Load())
	for i, o := range outcomes[:sent] {
		counts[o.kind]++
		if o.ok {
			okCounts[o.kind]++
		} else if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf("request %d: %s", i, o.detail))
		}
		tokens += o.tokens
		if o.ttft > 0 {
			ttfts = append(ttfts, o.ttft)
		}
	}
	slices.Sort(ttfts)
	pct := func(p float64) time.Duration {
		if len(ttfts) == 0 {
			return 0
		}
		return ttfts[min(len(ttfts)-1, int(p*float64(len(ttfts))))]
	}
	fmt.Printf("sent %d of %d requests in %.1fs (%.1f req/s); %d tokens generated (%.1f tok/s)\n", sent, n, elapsed.Seconds(), float64(sent)/elapsed.Seconds(), tokens, float64(tokens)/elapsed.Seconds())
	fmt.Printf("valid: %d/%d completed; malformed: %d/%d answered 4xx JSON; cancelled mid-stream: %d/%d cancelled after their first chunks\n",
		okCounts[valid], counts[valid], okCounts[malformed], counts[malformed], okCounts[cancelled], counts[cancelled])
	fmt.Printf("time to first token (streamed, client side): p50 %v p99 %v\n", pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond))
	fmt.Printf("pool at the end: %d of %d blocks used; %d running, %d waiting; goroutines %d at start, %d at end\n",
		pool.UsedBlocks(), pool.Blocks(), s.Running(), s.Waiting(), goroutines0, runtime.NumGoroutine())
	var mib []string
	for _, h := range heap {
		mib = append(mib, fmt.Sprintf("%.1f", float64(h)/(1<<20)))
	}
	fmt.Printf("live heap after GC at every 10%% of requests (MiB): %s\n", strings.Join(mib, " "))

	// The checks.
	if sent < n {
		failures = append(failures, fmt.Sprintf("only %d of %d requests sent within -max-time %v", sent, n, maxTime))
	}
	if pool.UsedBlocks() != 0 {
		failures = append(failures, fmt.Sprintf("%d blocks still used: a leak", pool.UsedBlocks()))
	}
	if len(heap) >= 3 {
		// After warm-up (the first sample), the live heap may wander but not grow with the
		// number of requests: the last sample within 25% + 8 MiB of the warm-up one.
		warm, last := heap[1], heap[len(heap)-1]
		if float64(last) > 1.25*float64(warm)+8<<20 {
			failures = append(failures, fmt.Sprintf("live heap grew from %.1f MiB after warm-up to %.1f MiB", float64(warm)/(1<<20), float64(last)/(1<<20)))
		}
	}
	if resp, err := client.Get(base + "/health"); err != nil || resp.StatusCode != 200 {
		failures = append(failures, fmt.Sprintf("server not healthy at the end: %v", err))
	}
	if okCounts[valid] != counts[valid] || okCounts[malformed] != counts[malformed] || okCounts[cancelled] != counts[cancelled] {
		failures = append(failures, "some requests did not end as expected")
	}
	if len(failures) > 0 {
		fmt.Println("FAIL")
		for _, f := range failures {
			fmt.Println("  " + f)
		}
		return fmt.Errorf("%d checks failed", len(failures))
	}
	fmt.Println("PASS: every valid request completed, every malformed one got a 4xx JSON error, every cancelled one was cancelled, the pool is empty, the live heap is flat")
	return nil
}

var words = strings.Fields("the keeper of the old lighthouse walked along the shore at dusk and counted ships that passed the harbour while gulls circled above the rocks")

// request sends request i: 10% malformed, 10% cancelled mid-stream, the rest valid.
func request(ctx context.Context, client *http.Client, base string, i int, r *rand.Rand) outcome {
	switch i % 10 {
	case 3:
		return sendMalformed(ctx, client, base, r)
	case 7:
		return sendCancelled(ctx, client, base, r)
	}
	// Prompts of 5 to ~130 words (short to middle; the CPU run has to finish in
	// minutes), 1 to 32 new tokens.
	lengths := []int{5, 20, 60, 120}
	nw := lengths[r.IntN(len(lengths))] + r.IntN(10)
	var prompt []string
	for j := 0; j < nw; j++ {
		prompt = append(prompt, words[(i+j*3)%len(words)])
	}
	body := map[string]any{"model": "lukv-tiny", "max_tokens": 1 + r.IntN(32), "temperature": []float64{0, 0, 0.7}[r.IntN(3)], "seed": i}
	chat := r.IntN(3) == 0
	path := "/v1/completions"
	if chat {
		path = "/v1/chat/completions"
		body["messages"] = []map[string]string{{"role": "user", "content": strings.Join(prompt, " ")}}
	} else {
		body["prompt"] = strings.Join(prompt, " ")
	}
	if r.IntN(4) == 0 {
		body["kv_method"], body["kv_compression"] = []string{"knorm", "streaming", "expected-attention"}[r.IntN(3)], 0.5+0.4*r.Float64()
	}
	stream := r.IntN(2) == 0
	body["stream"] = stream
	o := outcome{kind: valid}
	start := time.Now()
	resp, err := post(ctx, client, base+path, body)
	if err != nil {
		o.detail = err.Error()
		return o
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		data, _ := io.ReadAll(resp.Body)
		o.detail = fmt.Sprintf("status %d: %s", resp.StatusCode, data)
		return o
	}
	if !stream {
		var c struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || len(c.Choices) != 1 || c.Choices[0].FinishReason == "" {
			o.detail = fmt.Sprintf("bad completion body (%v)", err)
			return o
		}
		o.ok, o.tokens = true, c.Usage.CompletionTokens
		return o
	}
	sc := bufio.NewScanner(resp.Body)
	finished, doneSeen := false, false
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			doneSeen = true
			break
		}
		if o.ttft == 0 {
			o.ttft = time.Since(start)
		}
		var c struct {
			Choices []struct {
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Error any `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil || c.Error != nil {
			o.detail = "bad or error chunk: " + line
			return o
		}
		if len(c.Choices) == 1 && c.Choices[0].FinishReason != nil {
			finished = true
		} else {
			o.tokens++ // chunks, roughly tokens
		}
	}
	if !finished || !doneSeen {
		o.detail = fmt.Sprintf("stream ended without finish reason (%v) or [DONE] (%v): %v", finished, doneSeen, sc.Err())
		return o
	}
	o.ok = true
	return o
}

func post(ctx context.Context, client *http.Client, url string, body any) (*http.Response, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return client.Do(req)
}

var malformedBodies = []string{
	`{"prompt": "unterminated`,
	`{"model": "no-such-model", "prompt": "hi"}`,
	`{"prompt": "hi", "max_tokens": -3}`,
	`{"prompt": "hi", "temperature": 9}`,
	`{"messages": []}`,
	`{"prompt": "hi", "max_tokens": 99999999}`,
	`{"prompt": "hi", "kv_method": "nope", "kv_compression": 0.5}`,
	`not json at all`,
}

func sendMalformed(ctx context.Context, client *http.Client, base string, r *rand.Rand) outcome {
	o := outcome{kind: malformed}
	body := malformedBodies[r.IntN(len(malformedBodies))]
	path := "/v1/completions"
	if strings.Contains(body, "messages") {
		path = "/v1/chat/completions"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		o.detail = err.Error()
		return o
	}
	resp, err := client.Do(req)
	if err != nil {
		o.detail = err.Error()
		return o
	}
	defer resp.Body.Close()
	var e struct {
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 400 || resp.StatusCode >= 500 || json.Unmarshal(data, &e) != nil || e.Error == nil || e.Error.Message == "" {
		o.detail = fmt.Sprintf("malformed %s: status %d, body %s", body, resp.StatusCode, data)
		return o
	}
	o.ok = true
	return o
}

// sendCancelled streams a long generation and hangs up after 1 to 5 chunks.
func sendCancelled(ctx context.Context, client *http.Client, base string, r *rand.Rand) outcome {
	o := outcome{kind: cancelled}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	after := 1 + r.IntN(5)
	resp, err := post(cctx, client, base+"/v1/completions", map[string]any{"prompt": "a long story about the sea", "max_tokens": 100, "ignore_eos": true, "stream": true})
	if err != nil {
		o.detail = err.Error()
		return o
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		o.detail = fmt.Sprintf("status %d", resp.StatusCode)
		return o
	}
	sc := bufio.NewScanner(resp.Body)
	chunks := 0
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			chunks++
			if chunks == after {
				cancel()
				o.ok, o.tokens = true, chunks
				return o
			}
		}
	}
	o.detail = fmt.Sprintf("stream ended after %d chunks, before the cancel at %d", chunks, after)
	return o
}
