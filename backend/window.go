package backend

// WindowedAttention is implemented by backends that can run sliding-window attention
// (Mistral v0.1): the model uses it when the config has a sliding_window, and refuses
// sequences longer than the window on backends without it.
type WindowedAttention interface {
	// AttentionWindow is Attention where query row i sees only the newest window entries
	// of those Attention would let it see (itself included). Without eviction the
	// entries are the positions, so a query at position p sees keys p-window+1 .. p,
	// as transformers' sliding-window mask. After eviction the window counts the entries
	// a head still holds, not positions: it reaches back further than window positions,
	// never over more than window keys.
	AttentionWindow(out, q, k, v Tensor, cache KVCache, layer int, scale float32, window int)
}
