package kvpool

import (
	"errors"
	"testing"
)

func TestPoolAccounting(t *testing.T) {
	p, err := New(10, 16, 4096)
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.Alloc(4)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Alloc(6)
	if err != nil {
		t.Fatal(err)
	}
	if p.FreeBlocks() != 0 || p.UsedBlocks() != 10 {
		t.Fatalf("free %d used %d, want 0 and 10", p.FreeBlocks(), p.UsedBlocks())
	}
	seen := map[int]bool{}
	for _, id := range append(a, b...) {
		if seen[id] || id < 0 || id >= 10 {
			t.Fatalf("block %d handed out twice or out of range", id)
		}
		seen[id] = true
	}
	if _, err := p.Alloc(1); !errors.Is(err, ErrFull) {
		t.Fatalf("full pool: got %v, want ErrFull", err)
	}
	p.Free(a...)
	if p.FreeBlocks() != 4 {
		t.Fatalf("free %d after freeing 4", p.FreeBlocks())
	}
	// All or none: 5 do not fit in 4, and nothing is taken.
	if _, err := p.Alloc(5); !errors.Is(err, ErrFull) || p.FreeBlocks() != 4 {
		t.Fatalf("alloc 5 of 4 free: %v, free %d", err, p.FreeBlocks())
	}
	p.Free(b...)
	if p.UsedBlocks() != 0 {
		t.Fatalf("used %d after freeing all", p.UsedBlocks())
	}
	if p.BlocksFor(0) != 0 || p.BlocksFor(1) != 1 || p.BlocksFor(16) != 1 || p.BlocksFor(17) != 2 {
		t.Fatal("BlocksFor rounds wrong")
	}
}

func TestPoolDoubleFreePanics(t *testing.T) {
	p, _ := New(2, 4, 64)
	ids, _ := p.Alloc(1)
	p.Free(ids...)
	defer func() {
		if recover() == nil {
			t.Fatal("double free did not panic")
		}
	}()
	p.Free(ids...)
}

func TestForBudget(t *testing.T) {
	p, err := ForBudget(1<<20, 16, 32, 4) // a block: 16 x 32 x 2 x 4 = 4 KiB
	if err != nil {
		t.Fatal(err)
	}
	if p.Blocks() != 256 || p.BlockBytes() != 4096 {
		t.Fatalf("blocks %d of %d bytes, want 256 of 4096", p.Blocks(), p.BlockBytes())
	}
	if _, err := ForBudget(100, 16, 32, 4); err == nil {
		t.Fatal("budget below one block: want an error")
	}
	if _, err := New(0, 16, 1); err == nil {
		t.Fatal("zero blocks: want an error")
	}
}
