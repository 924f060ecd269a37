package generate

import (
	"context"
	"fmt"
)

// Request is one sequence of a batched generation. Its Options must carry Cache with the
// first Cached prompt tokens already in it (a prefilled, possibly compressed cache).
// Hooks that watch or change one sequence's cache during generation (AfterPrefill,
// DecodeObserver, AfterStep) are supported in a batch of one only; ContextTokens and
// Observer watch a prefill from the start, which a given Cache has already done.
type Request struct {
	Prompt  []int
	Options Options
}

// GenerateBatch continues several prefilled sequences together: each step runs the
// active sequences through one batched forward pass (model.ForwardBatch) of at most
// maxBatch sequences, so the weights are read once per step for the batch instead of
// once per sequence. Each sequence stops on its own (end of sequence, stop string, token
// limit, context) exactly as Generate would stop it, and each result equals Generate's
// for the same request when the backend computes a row the same way whatever the number
// of rows (the CPU backend does; the tests check it). PrefillTime and DecodeTime are the
// batch's, shared by its sequences. Generate runs through the same loop.
func (g *Generator) GenerateBatch(ctx context.Context, reqs []Request, maxBatch int) ([]*Result, error) {
	if maxBatch <= 0 {
		return nil, fmt.Errorf("generate: batch size %d: want at least 1", maxBatch)
	}
	for i, r := range reqs {
		if r.Options.Cache == nil {
			return nil, fmt.Errorf("generate: batch request %d has no prefilled Cache", i)
		}
		if err := g.checkRequest(r, len(reqs)); err != nil {
			return nil, fmt.Errorf("batch request %d: %w", i, err)
		}
	}
	return g.run(ctx, reqs, maxBatch)
}
