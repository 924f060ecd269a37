//go:build cuda

// Package cuda is lukv's GPU backend: backend.Backend and backend.KVCache on an NVIDIA
// GPU through the CUDA driver API (gorgonia.org/cu), with the kernels of kernels/*.cu
// compiled by nvcc (scripts/build-kernels.sh) and loaded at run time.
//
// Precision: activations and all arithmetic are float32 (float32 accumulation in every
// reduction), as in the CPU reference backend. The KV cache is float32, or bfloat16 with
// Options.KVBF16 (keys and values rounded to nearest even as they are appended). Weights are stored
// in the narrowest of bfloat16, float16 and float32 that holds every value of the tensor
// exactly (WeightsExact, the default): a bf16 or fp16 checkpoint keeps its own precision
// at half the memory of float32 and computes the same function as the CPU backend, up to
// float32 rounding order. WeightsBF16 rounds every weight to bfloat16 instead.
//
// Build with `-tags cuda`; the package is empty otherwise, so machines without the CUDA
// headers build and test the rest of lukv. Against CUDA 13 headers gorgonia.org/cu needs
// the compatibility header in cudacompat/ first on the include path
// (CGO_CFLAGS=-I<repo>/backend/cuda/cudacompat; scripts/build-cuda.sh does this).
//
// Errors: backend.Backend's tensor operations have no error result, so a failed kernel
// launch or copy panics with an error value (wrapping backend.ErrOutOfMemory when the
// device is out of memory); Weight, Compact and Truncate return errors.
//
// Files, by concern (each one's doc comment says what it holds):
//
//	backend.go              Options, the Backend, New, Close, locking, device queries
//	registry.go             the kernel manifest and registry: loading, lookup, launch
//	memory.go               device allocation, the tensor pool, scratch buffers, OOM errors
//	tensor.go               Tensor, dtypes, Weight, Alloc, Free, views, Read
//	ops.go                  Embed, RMSNorm, HeadRMSNorm, Add, AddBias, SwiGLU, RoPE
//	matmul.go               MatMul: the decode GEMV and the tiled kernel
//	cublas.go               MatMul on the bf16 tensor cores through cuBLAS
//	fusion.go               decode ops held back and launched together
//	attention.go            Attention: the split-K decode and the float32 flash kernels
//	attention_tc.go         the tensor-core prefill attention
//	kvcache.go              the KV cache (per-head lengths, room, compaction)
//	kvcache_device_keep.go  selection and compaction on the device (Evict, SelectKeep)
//	score.go                device scoring for eviction: state, tables, ScoreLayer
//	score_expected.go       ExpectedAttention on the device
//	score_snapkv.go         SnapKV on the device
//	score_keys.go           KeyDiff and K-norm on the device
//	kerneltime.go           kernel times (Options.KernelTimes): GPU time per kernel
package cuda

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// WeightPolicy says how Weight stores a matrix on the device.
type WeightPolicy int

const (
	// WeightsExact stores a matrix as bfloat16 when every value is a bfloat16, else as
	// float16 when every value is a float16, else as float32: never rounds.
	WeightsExact WeightPolicy = iota
	// WeightsBF16 rounds every matrix to bfloat16 (round to nearest even).
	WeightsBF16
	// WeightsF32 stores every matrix as float32.
	WeightsF32
)

// Options configure a Backend.
type Options struct {
	// Device is the CUDA device ordinal.
	Device int
	// Weights is the storage policy for matrices (vectors are always float32).
	Weights WeightPolicy
	// KernelDir is the folder of compiled kernels; empty: LUKV_KERNELS, else the
	// default search (see FindKernels).
	KernelDir string
	// Sync makes every kernel launch wait for the kernel and check its result, so a
	// fault names the kernel that caused it (slower; tests use it). Also set by the
	// environment variable LUKV_CUDA_SYNC=1.
	Sync bool
	// PoolBytes caps the device memory that freed activation tensors keep for reuse
	// (0: 1 GiB). The KV cache never uses the pool: compaction returns its memory to
	// the driver.
	PoolBytes int64
	// TensorCores runs the compute-bound prefill ops (matmuls over more than a few rows,
	// attention over many queries) on bf16 tensor cores with float32 accumulation. The
	// inputs are rounded to bf16 (about 3 significant digits), so parity tests against
	// the float32 CPU reference leave it off; generation and benchmarks turn it on.
	TensorCores bool
	// KVBF16 stores the KV caches of NewKVCache in bfloat16: keys and values are rounded
	// to nearest even as they are appended (2^-9 relative), Keys and Values read them
	// back widened to float32, and Bytes and LiveBytes count 2 bytes per element. Half
	// the memory, and half the bytes a decode step's attention reads; the arithmetic
	// stays float32. Off by default, so the conformance suite reads back exactly what it
	// stored; lukv-run turns it on for generate and bench.
	KVBF16 bool
	// KernelTimes brackets every kernel launch with CUDA events so KernelTimes can say
	// where the GPU time went (kerneltime.go). Costs host time per launch. Also set by
	// the environment variable LUKV_CUDA_KERNEL_TIMES=1 (or, deprecated, the older name
	// LUKV_CUDA_PROFILE=1).
	KernelTimes bool
	// Unfused launches every operation when it is called. By default a few decode ops
	// are held back until the next operation and merged with it (ops.go: matmuls that
	// share their input, the q and k rotations and the cache append), which removes
	// launches but not work. Also set by LUKV_CUDA_FUSE=0.
	Unfused bool
}

// Backend runs the forward pass on one GPU. Its methods may be called from any
// goroutine; they are serialised by a mutex and bind the device's primary context to
// the calling OS thread for their duration.
//
// Its methods, by file: the device and its lifetime here; Weight, Alloc, Free, RowView,
// Rows, Read in tensor.go; Embed, RMSNorm, HeadRMSNorm, Add, AddBias, SwiGLU, RoPE in
// ops.go; MatMul in matmul.go (MatMulPath in cublas.go); Attention in attention.go
// (AttentionPath in attention_tc.go); NewKVCache in kvcache.go; NewScores, ScoreLayer,
// ReleaseScoring in score.go; KernelTimes in kerneltime.go.
type Backend struct {
	mu     sync.Mutex
	opt    Options
	dev    cu.Device
	ctx    cu.CUContext
	name   string
	sms    int // streaming multiprocessors
	closed bool

	kern   *kernelRegistry // every kernel, by name (registry.go)
	pool   *pool           // freed tensor memory kept for reuse (memory.go)
	ktimes *kernelTimer    // with Options.KernelTimes (kerneltime.go)

	// Small device buffers reused across calls (ops.go, fusion.go, attention.go,
	// kvcache.go).
	ids       devBuf // int32 token ids for Embed
	positions devBuf // int32 positions for RoPE
	posHost   []int32
	invFreq   devBuf // float32 RoPE inverse frequencies
	freqHost  []float32
	partO     devBuf // split-K attention partial outputs
	partML    devBuf // split-K attention partial (max, sum)
	decCount  devBuf // int32 split counters of the decode attention, kept zero
	pairs     devBuf // int32 (dst, src) row pairs for KV relayout

	pend   pending     // operations held back for fusion (fusion.go)
	blas   blasState   // the tensor-core matmul through cuBLAS (cublas.go)
	attnTC attnTCState // the tensor-core prefill attention (attention_tc.go)
	// score is the eviction scoring state, made on the first scoring or eviction call
	// (score.go). It used to live in a package-level map keyed by weak pointers to
	// backends, because the Backend was meant to hold the forward pass only; as a field
	// it is owned by its backend, freed by Close, and needs no map, lock or cleanup.
	score *scoreState
}

var _ backend.Backend = (*Backend)(nil)

// New opens device opt.Device, retains its primary context and loads the compiled
// kernels.
func New(opt Options) (*Backend, error) {
	if os.Getenv("LUKV_CUDA_SYNC") == "1" {
		opt.Sync = true
	}
	if os.Getenv("LUKV_CUDA_FUSE") == "0" {
		opt.Unfused = true
	}
	kernelTimesFromEnv(&opt)
	if opt.PoolBytes == 0 {
		opt.PoolBytes = 1 << 30
	}
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("cuda: counting devices: %w", err)
	}
	if opt.Device < 0 || opt.Device >= n {
		return nil, fmt.Errorf("cuda: device %d does not exist (%d visible)", opt.Device, n)
	}
	b := &Backend{opt: opt}
	if b.dev, err = cu.GetDevice(opt.Device); err != nil {
		return nil, fmt.Errorf("cuda: device %d: %w", opt.Device, err)
	}
	b.name, _ = b.dev.Name()
	if b.sms, err = b.dev.Attribute(cu.MultiprocessorCount); err != nil {
		return nil, fmt.Errorf("cuda: device %d: multiprocessor count: %w", opt.Device, err)
	}
	if b.ctx, err = b.dev.RetainPrimaryCtx(); err != nil {
		return nil, fmt.Errorf("cuda: device %d: primary context: %w", opt.Device, err)
	}
	b.pool = newPool(opt.PoolBytes)
	if opt.KernelTimes {
		b.ktimes = &kernelTimer{}
	}
	unlock := b.enter()
	defer unlock()
	dir, err := FindKernels(opt.KernelDir)
	if err != nil {
		b.dev.ReleasePrimaryCtx()
		return nil, err
	}
	if b.kern, err = loadRegistry(dir); err != nil {
		b.dev.ReleasePrimaryCtx()
		return nil, err
	}
	return b, nil
}

// enter locks the backend, makes its context current on this OS thread and launches any
// operation held back for fusion (so that whatever the caller does next sees its
// results); the returned function undoes the first two.
func (b *Backend) enter() func() {
	unlock := b.lock()
	if b.pend.any() {
		func() {
			defer func() {
				if r := recover(); r != nil {
					unlock()
					panic(r)
				}
			}()
			b.flush()
		}()
	}
	return unlock
}

// lock is enter without the flush, for the operations that may join a held-back one
// (MatMul, RoPE, Attention: ops.go).
func (b *Backend) lock() func() {
	b.mu.Lock()
	runtime.LockOSThread()
	if b.closed {
		runtime.UnlockOSThread()
		b.mu.Unlock()
		panic(errors.New("cuda: backend used after Close"))
	}
	if err := cu.SetCurrentContext(b.ctx); err != nil {
		runtime.UnlockOSThread()
		b.mu.Unlock()
		panic(fmt.Errorf("cuda: making the context current: %w", err))
	}
	b.pool.drain() // memory of tensors the garbage collector found unreachable
	return func() {
		runtime.UnlockOSThread()
		b.mu.Unlock()
	}
}

// Name is "cuda".
func (b *Backend) Name() string { return "cuda" }

// Device describes the GPU: its name, multiprocessor count and kernel folder.
func (b *Backend) Device() string {
	return fmt.Sprintf("%s (%d SMs), kernels from %s", b.name, b.sms, b.kern.dir)
}

// MemInfo returns the device's free and total memory in bytes (cuMemGetInfo).
func (b *Backend) MemInfo() (free, total uint64) {
	defer b.enter()()
	f, t, err := cu.MemInfo()
	if err != nil {
		panic(fmt.Errorf("cuda: cuMemGetInfo: %w", err))
	}
	return uint64(f), uint64(t)
}

// Synchronize waits for all queued device work and reports the first error.
func (b *Backend) Synchronize() error {
	defer b.enter()()
	return cu.Synchronize()
}

// Close frees the memory pool, unloads the kernels and releases the context. Tensors
// and caches still alive must not be used afterwards.
func (b *Backend) Close() error {
	b.ReleaseScoring() // takes the lock itself
	unlock := b.enter()
	err := cu.Synchronize()
	b.ktimes.destroy()
	for _, d := range []*devBuf{&b.ids, &b.positions, &b.invFreq, &b.partO, &b.partML, &b.pairs, &b.attnTC.kv, &b.decCount} {
		d.free()
	}
	if e := b.closeBLAS(); e != nil && err == nil {
		err = e
	}
	b.pool.release()
	if e := b.kern.unload(); e != nil && err == nil {
		err = e
	}
	b.closed = true
	unlock()
	if e := b.dev.ReleasePrimaryCtx(); e != nil && err == nil {
		err = e
	}
	return err
}
