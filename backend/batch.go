package backend

// BatchedAttention is implemented by backends that run the attention of several
// sequences, each over its own cache, in one call: q, k, v and out hold the sequences'
// rows stacked (sequence s has rows[s] rows, in order), and each sequence's rows are
// Attention over caches[s]. model.ForwardBatch uses it when it is there (the server's
// batched decode step over a paged cache) and otherwise calls Attention once per
// sequence through Rows views; both compute the same function.
type BatchedAttention interface {
	AttentionBatch(out, q, k, v Tensor, caches []KVCache, rows []int, layer int, scale float32)
}
