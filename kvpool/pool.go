// Package kvpool is the KV memory of a server: one pool of fixed-size blocks shared by
// every sequence. A block holds BlockTokens tokens of one (sequence, layer, KV head), so
// each head's cache is a list of blocks (a block table) that grows a block at a time and
// gives blocks back when eviction shortens it. The pool only counts and hands out block
// ids; a backend owns the memory the ids index (backend/cpu's PagedBackend on the CPU).
package kvpool

import (
	"errors"
	"fmt"
	"sync"
)

// ErrFull is returned (wrapped) when the pool has no free block.
var ErrFull = errors.New("kv pool: no free block")

// Pool hands out block ids 0 .. Blocks()-1. It is safe for concurrent use.
type Pool struct {
	blockTokens int
	blockBytes  int64
	mu          sync.Mutex
	free        []int  // stack of free ids
	used        []bool // [blocks] catches double frees
}

// New makes a pool of blocks blocks of blockTokens tokens each; blockBytes is the memory
// one block takes (for reporting).
func New(blocks, blockTokens int, blockBytes int64) (*Pool, error) {
	if blocks <= 0 || blockTokens <= 0 || blockBytes <= 0 {
		return nil, fmt.Errorf("kv pool: %d blocks of %d tokens (%d bytes): want all positive", blocks, blockTokens, blockBytes)
	}
	p := &Pool{blockTokens: blockTokens, blockBytes: blockBytes, free: make([]int, blocks), used: make([]bool, blocks)}
	for i := range p.free {
		p.free[i] = blocks - 1 - i // hand out low ids first
	}
	return p, nil
}

// ForBudget makes a pool of as many blocks as fit in budget bytes, for KV heads of
// headDim float values of elemBytes each (a block holds keys and values).
func ForBudget(budget int64, blockTokens, headDim, elemBytes int) (*Pool, error) {
	blockBytes := int64(blockTokens) * int64(headDim) * 2 * int64(elemBytes)
	if blockBytes <= 0 || budget < blockBytes {
		return nil, fmt.Errorf("kv pool: a budget of %d bytes holds no block of %d bytes (%d tokens x head dim %d x keys and values x %d bytes)", budget, blockBytes, blockTokens, headDim, elemBytes)
	}
	return New(int(budget/blockBytes), blockTokens, blockBytes)
}

// BlockTokens is the number of tokens of one head a block holds.
func (p *Pool) BlockTokens() int { return p.blockTokens }

// BlockBytes is the memory of one block.
func (p *Pool) BlockBytes() int64 { return p.blockBytes }

// Blocks is the pool's size in blocks.
func (p *Pool) Blocks() int { return len(p.used) }

// FreeBlocks is the number of blocks not handed out.
func (p *Pool) FreeBlocks() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// UsedBlocks is the number of blocks handed out.
func (p *Pool) UsedBlocks() int { return p.Blocks() - p.FreeBlocks() }

// BlocksFor is the number of blocks a head of n tokens needs.
func (p *Pool) BlocksFor(n int) int { return (n + p.blockTokens - 1) / p.blockTokens }

// Alloc hands out n blocks, all or none: with fewer than n free it returns ErrFull.
func (p *Pool) Alloc(n int) ([]int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n > len(p.free) {
		return nil, fmt.Errorf("%w: want %d blocks, %d of %d free", ErrFull, n, len(p.free), len(p.used))
	}
	ids := make([]int, n)
	for i := range ids {
		id := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		p.used[id] = true
		ids[i] = id
	}
	return ids, nil
}

// Free gives blocks back. Freeing a block that is not handed out is a bug in the caller
// and panics (it would hand one block to two heads).
func (p *Pool) Free(ids ...int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		if id < 0 || id >= len(p.used) || !p.used[id] {
			panic(fmt.Sprintf("kv pool: free of block %d, which is not in use", id))
		}
		p.used[id] = false
		p.free = append(p.free, id)
	}
}
