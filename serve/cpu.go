package serve

import (
	"fmt"

	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/kvpool"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/model"
)

// BlockTokens is the tokens of one KV head a pool block holds.
const BlockTokens = 16

// LoadCPU loads the checkpoint in dir onto a CPU backend whose KV caches share one pool
// of kvBytes bytes (float32 blocks of BlockTokens tokens), its matrices held as weights.
func LoadCPU(dir string, kvBytes int64, threads int, weights loader.WeightFormat) (*model.Model, *kvpool.Pool, error) {
	cfg, err := loader.ModelConfig(dir)
	if err != nil {
		return nil, nil, err
	}
	pool, err := kvpool.ForBudget(kvBytes, BlockTokens, cfg.HeadDim, 4)
	if err != nil {
		return nil, nil, fmt.Errorf("--kv-memory: %w", err)
	}
	b, err := cpu.NewPaged(&cpu.Backend{Threads: threads, WidenBF16: weights == loader.WeightsF32}, pool, cfg.HeadDim)
	if err != nil {
		return nil, nil, err
	}
	m, err := model.LoadWith(dir, b, model.LoadOptions{Weights: weights})
	if err != nil {
		return nil, nil, err
	}
	return m, pool, nil
}
