package serve

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lukv/lukv/sched"
)

// metrics are the server's Prometheus series (GET /metrics).
type metrics struct {
	requests        *prometheus.CounterVec // by endpoint and HTTP status
	promptTokens    prometheus.Counter
	generatedTokens prometheus.Counter
	ttft            prometheus.Histogram
	itl             prometheus.Histogram
	evictedEntries  prometheus.Counter
	evictedTokens   prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, s *sched.Scheduler) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lukv_requests_total",
			Help: "HTTP requests by endpoint and status code."}, []string{"endpoint", "code"}),
		promptTokens:    prometheus.NewCounter(prometheus.CounterOpts{Name: "lukv_prompt_tokens_total", Help: "Prompt tokens of admitted requests."}),
		generatedTokens: prometheus.NewCounter(prometheus.CounterOpts{Name: "lukv_generated_tokens_total", Help: "Tokens generated."}),
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lukv_time_to_first_token_seconds",
			Help: "From request arrival to the first generated token.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}),
		itl: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lukv_inter_token_latency_seconds",
			Help: "Between consecutive generated tokens of a sequence.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		evictedEntries: prometheus.NewCounter(prometheus.CounterOpts{Name: "lukv_kv_entries_evicted_total",
			Help: "KV cache entries (token, layer, KV head) dropped by eviction."}),
		evictedTokens: prometheus.NewCounter(prometheus.CounterOpts{Name: "lukv_tokens_evicted_total",
			Help: "Evicted entries over layers x KV heads: whole tokens' worth of KV cache evicted."}),
	}
	pool := s.Pool()
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(m.requests, m.promptTokens, m.generatedTokens, m.ttft, m.itl, m.evictedEntries, m.evictedTokens,
		gauge("lukv_kv_bytes_used", "KV pool memory held by sequences.", func() float64 { return float64(int64(pool.UsedBlocks()) * pool.BlockBytes()) }),
		gauge("lukv_kv_bytes_free", "KV pool memory free.", func() float64 { return float64(int64(pool.FreeBlocks()) * pool.BlockBytes()) }),
		gauge("lukv_kv_blocks_used", "KV pool blocks held by sequences.", func() float64 { return float64(pool.UsedBlocks()) }),
		gauge("lukv_kv_blocks_free", "KV pool blocks free.", func() float64 { return float64(pool.FreeBlocks()) }),
		gauge("lukv_sequences_running", "Sequences in the decode batch.", func() float64 { return float64(s.Running()) }),
		gauge("lukv_sequences_waiting", "Requests waiting for KV memory or a batch slot.", func() float64 { return float64(s.Waiting()) }),
	)
	return m
}
