//go:build cuda

package cuda

// The kernel registry: the one way the backend finds and launches a kernel.
//
// kernelModules below is the manifest: for every kernels/<module>.cu (built by
// scripts/build-kernels.sh into <module>.cubin, .fatbin or .ptx), the kernels the backend
// launches from it. New loads every module of the manifest from the kernel folder
// (FindKernels) and looks every listed kernel up in its own module, so a missing file or
// a stale build fails at New with an error naming the file and the kernel. After that,
// Backend.launch takes a kernel by name; a name outside the manifest is a bug in the
// backend and panics saying so. Nothing else looks kernels up.
//
// This file also holds what every launch shares: the grid helpers, the argument
// packing, the opt-in to more than 48 KiB of dynamic shared memory, and i32.

/*
#cgo LDFLAGS: -lcuda
#cgo linux LDFLAGS: -L/usr/local/cuda/lib64
#cgo linux CFLAGS: -I/usr/local/cuda/include
#include <cuda.h>

static int lukv_set_max_dynamic_smem(CUfunction f, int bytes) {
	return (int)cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes);
}

static const char* lukv_cu_error_name(int code) {
	const char* s = 0;
	if (cuGetErrorName((CUresult)code, &s) != CUDA_SUCCESS || s == 0) return "unknown CUresult";
	return s;
}
*/
import "C"

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"gorgonia.org/cu"
)

// kernelModule is one compiled kernels/<module>.cu and the kernels taken from it.
type kernelModule struct {
	module string
	names  []string
}

// kernelModules is the manifest: every kernel the backend launches, by the module that
// defines it. Keep it in step with kernels/*.cu (a kernel moved to another .cu file
// moves here too) and scripts/build-kernels.sh (one module per .cu file).
var kernelModules = []kernelModule{
	// Tensor ops (ops.go, matmul.go, fusion.go).
	{"embed", []string{"embed_f32", "embed_bf16", "embed_f16"}},
	{"norm", []string{"rmsnorm", "head_rmsnorm"}},
	{"rope", []string{"rope"}},
	{"elementwise", []string{"add_inplace", "add_bias", "swiglu", "widen_bf16", "widen_f16"}},
	{"matmul", []string{
		"matmul_gemv_f32", "matmul_gemv_bf16", "matmul_gemv_f16",
		"matmul_tiled_f32", "matmul_tiled_bf16", "matmul_tiled_f16",
		"gemv_f32_n1", "gemv_f32_n2", "gemv_f32_n4", "gemv_f32_n8",
		"gemv_bf16_n1", "gemv_bf16_n2", "gemv_bf16_n4", "gemv_bf16_n8",
		"gemv_f16_n1", "gemv_f16_n2", "gemv_f16_n4", "gemv_f16_n8",
		"gemv_i8_n1", "gemv_i8_n2", "gemv_i8_n4", "gemv_i8_n8", "dequant_i8_f32", "dequant_i8_bf16",
	}},
	{"convert", []string{"f32_to_bf16"}}, // cublas.go
	// KV cache (kvcache.go, fusion.go).
	{"kvcache", []string{"kv_gather", "kv_rope_append_f32", "kv_rope_append_bf16"}},
	// Attention (attention.go, attention_tc.go).
	{"attention", []string{
		"attention_v1_d4", "attention_v2_d4", "attention_v4_d4", "attention_v1_d8", "attention_v2_d8",
		"attention_v1_d4_bf16", "attention_v2_d4_bf16", "attention_v4_d4_bf16", "attention_v1_d8_bf16", "attention_v2_d8_bf16",
		"attention_combine",
		"attention_decode_kv0_g1", "attention_decode_kv0_g2", "attention_decode_kv0_g4",
		"attention_decode_kv1_g1", "attention_decode_kv1_g2", "attention_decode_kv1_g4",
	}},
	{"decode_attention", []string{ // attention_decode.go
		"decode_attn_kv0_g1", "decode_attn_kv0_g2", "decode_attn_kv0_g4", "decode_attn_kv0_g8",
		"decode_attn_kv1_g1", "decode_attn_kv1_g2", "decode_attn_kv1_g4", "decode_attn_kv1_g8",
	}},
	{"attention_tc", []string{
		"kv_to_bf16", "kv_bf16_to_bf16",
		"attention_tc_d64_w4", "attention_tc_d128_w4", "attention_tc_d64_w8", "attention_tc_d128_w8",
	}},
	// Eviction scoring, selection and compaction (score*.go, kvcache_device_keep.go).
	{"score_expected", []string{
		"score_rope_table", "score_rope_mean", "ea_cov_partial", "ea_cov_reduce", "ea_cov_rotate",
		"ea_logits", "ea_softmax_stats", "ea_finish",
	}},
	{"score_expected_tc", []string{"ea_cov_tc", "ea_logits_tc"}},
	{"score_snapkv", []string{"snap_logits", "snap_stats", "snap_reduce", "snap_pool"}},
	{"score_keys", []string{"row_norms", "knorm_scores", "kd_anchor_partial", "kd_scores"}},
	{"score_protect", []string{"layer_protect"}},
	{"topk", []string{"select_topk", "kv_gather_keep"}},
	// The paged KV pool of the server (paged.go).
	{"paged_attention", []string{
		"paged_append_f32", "paged_append_bf16", "paged_combine", "paged_copy_rows",
		"paged_attention_f32_t1_g1", "paged_attention_f32_t1_g2", "paged_attention_f32_t1_g4", "paged_attention_f32_t1_g8",
		"paged_attention_f32_t2_g1", "paged_attention_f32_t2_g2", "paged_attention_f32_t2_g4", "paged_attention_f32_t2_g8",
		"paged_attention_bf16_t1_g1", "paged_attention_bf16_t1_g2", "paged_attention_bf16_t1_g4", "paged_attention_bf16_t1_g8",
		"paged_attention_bf16_t2_g1", "paged_attention_bf16_t2_g2", "paged_attention_bf16_t2_g4", "paged_attention_bf16_t2_g8",
	}},
}

// kernelExts are the file types tried for each module, in order: native code from
// `nvcc -cubin`, a fat binary, or PTX that the driver compiles at load.
var kernelExts = []string{".cubin", ".fatbin", ".ptx"}

// kfn is a loaded kernel and its name (for error messages and kernel times).
type kfn struct {
	name string
	fn   cu.Function
}

// kernelRegistry is the loaded manifest: the modules (unloaded by Close) and every
// kernel by name.
type kernelRegistry struct {
	dir  string
	mods []cu.Module
	fns  map[string]kfn
}

// loadRegistry loads every module of the manifest from dir and looks up its kernels.
// The caller has made the backend's context current. On error nothing stays loaded.
func loadRegistry(dir string) (*kernelRegistry, error) {
	r := &kernelRegistry{dir: dir, fns: map[string]kfn{}}
	for _, m := range kernelModules {
		path := moduleFile(dir, m.module)
		if path == "" {
			r.unload()
			return nil, fmt.Errorf("cuda: %s: no %s.cubin, .fatbin or .ptx (built from kernels/%s.cu; incomplete or old build? rerun scripts/build-kernels.sh)", dir, m.module, m.module)
		}
		mod, err := cu.Load(path)
		if err != nil {
			r.unload()
			return nil, fmt.Errorf("cuda: loading %s: %w (built for another GPU architecture? rebuild with scripts/build-kernels.sh on this machine)", path, err)
		}
		r.mods = append(r.mods, mod)
		for _, name := range m.names {
			fn, err := mod.Function(name)
			if err != nil {
				r.unload()
				return nil, fmt.Errorf("cuda: %s has no kernel %s (kernels/%s.cu): %w (stale build? rerun scripts/build-kernels.sh)", path, name, m.module, err)
			}
			r.fns[name] = kfn{name: name, fn: fn}
		}
	}
	return r, nil
}

// get returns the kernel called name. Every name the backend launches is in the
// manifest, which New checked against the build; any other name is a bug here.
func (r *kernelRegistry) get(name string) kfn {
	k, ok := r.fns[name]
	if !ok {
		panic(fmt.Sprintf("cuda: kernel %s is not in the kernel manifest (backend/cuda/registry.go kernelModules)", name))
	}
	return k
}

// unload unloads every module; the kernels must not be launched afterwards.
func (r *kernelRegistry) unload() error {
	var err error
	for _, m := range r.mods {
		if e := m.Unload(); e != nil && err == nil {
			err = e
		}
	}
	r.mods, r.fns = nil, nil
	return err
}

// FindKernels returns the folder holding the compiled kernels: dir when not empty, else
// $LUKV_KERNELS, else the first kernels/build found next to the executable, in the
// executable's parent folder, or in the working directory or any folder above it. The
// error names every place it looked and how to build the kernels. (A folder counts when
// it holds the manifest's first module; New then checks that it holds all of them.)
func FindKernels(dir string) (string, error) {
	var tried []string
	check := func(d string) bool {
		tried = append(tried, d)
		return moduleFile(d, kernelModules[0].module) != ""
	}
	if dir != "" {
		if check(dir) {
			return dir, nil
		}
		return "", missingKernels(tried, "Options.KernelDir")
	}
	if env := os.Getenv("LUKV_KERNELS"); env != "" {
		if check(env) {
			return env, nil
		}
		return "", missingKernels(tried, "LUKV_KERNELS")
	}
	var cands []string
	if exe, err := os.Executable(); err == nil {
		ed := filepath.Dir(exe)
		cands = append(cands, filepath.Join(ed, "kernels", "build"), filepath.Join(ed, "..", "kernels", "build"))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			cands = append(cands, filepath.Join(d, "kernels", "build"))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, c := range cands {
		if check(c) {
			return filepath.Clean(c), nil
		}
	}
	return "", missingKernels(tried, "")
}

func missingKernels(tried []string, from string) error {
	src := "searched"
	if from != "" {
		src = "set by " + from + ":"
	}
	return fmt.Errorf("cuda: compiled kernels (%s.cubin, .fatbin or .ptx) not found; %s %s. "+
		"Build them on a machine with nvcc: `bash scripts/build-kernels.sh` (writes kernels/build/), "+
		"or point LUKV_KERNELS at the folder", kernelModules[0].module, src, strings.Join(tried, ", "))
}

// moduleFile is the first existing file for module in dir, or "".
func moduleFile(dir, module string) string {
	for _, ext := range kernelExts {
		p := filepath.Join(dir, module+ext)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// dim3 is a grid or block shape.
type dim3 [3]int

// gridFor is the grid of a grid-stride kernel over count elements with 256-thread
// blocks: enough blocks to cover it, at most 32 per multiprocessor.
func gridFor(count int64, sms int) dim3 {
	blocks := (count + 255) / 256
	blocks = min(blocks, int64(max(sms, 1))*32)
	return dim3{int(max(blocks, 1)), 1, 1}
}

// launch runs the kernel called name (see the manifest). Arguments must have the
// kernel's C parameter types exactly: cu.DevicePtr for pointers, int32 for int, int64
// for long long, float32 for float. (gorgonia.org/cu's Launch copies 8 bytes from every
// argument; each one is widened into its own 8-byte slot, and the driver reads the
// parameter's size from the start of the slot, which on little-endian machines is the
// value itself.) With Options.Sync it waits for the kernel and names it in any fault.
func (b *Backend) launch(name string, grid, block dim3, smem int, args ...any) {
	k := b.kern.get(name)
	slots := make([]uint64, len(args))
	params := make([]unsafe.Pointer, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case cu.DevicePtr:
			slots[i] = uint64(v)
		case int32:
			slots[i] = uint64(uint32(v))
		case int64:
			slots[i] = uint64(v)
		case float32:
			slots[i] = uint64(math.Float32bits(v))
		default:
			panic(fmt.Sprintf("cuda: launch %s: argument %d has type %T (want cu.DevicePtr, int32, int64 or float32)", k.name, i, a))
		}
		params[i] = unsafe.Pointer(&slots[i])
	}
	for _, d := range append(grid[:], block[:]...) {
		if d <= 0 {
			panic(fmt.Sprintf("cuda: launch %s: grid %v block %v", k.name, grid, block))
		}
	}
	span := b.ktimes.begin(k.name)
	if err := k.fn.Launch(grid[0], grid[1], grid[2], block[0], block[1], block[2], smem, cu.NoStream, params); err != nil {
		panic(fmt.Errorf("cuda: launching %s (grid %v, block %v, %d B shared): %w", k.name, grid, block, smem, err))
	}
	b.ktimes.end(span)
	if b.opt.Sync {
		if err := cu.Synchronize(); err != nil {
			panic(fmt.Errorf("cuda: kernel %s (grid %v, block %v) failed: %w", k.name, grid, block, err))
		}
	}
}

// cu.Function is a struct holding only the driver's CUfunction handle; these two lines
// fail to compile if gorgonia.org/cu ever changes that, which cuFunction relies on.
var _ [unsafe.Sizeof(cu.Function{}) - unsafe.Sizeof(C.CUfunction(nil))]byte
var _ [unsafe.Sizeof(C.CUfunction(nil)) - unsafe.Sizeof(cu.Function{})]byte

// cuFunction is f's driver handle (gorgonia.org/cu keeps it unexported).
func cuFunction(f cu.Function) C.CUfunction { return *(*C.CUfunction)(unsafe.Pointer(&f)) }

// allowSharedMemory lets the kernel called name launch with up to bytes of dynamic
// shared memory (cuFuncSetAttribute MAX_DYNAMIC_SHARED_SIZE_BYTES; needed above 48 KiB;
// gorgonia.org/cu has no cuFuncSetAttribute, hence the cgo call).
func (b *Backend) allowSharedMemory(name string, bytes int) error {
	k := b.kern.get(name)
	if code := C.lukv_set_max_dynamic_smem(cuFunction(k.fn), C.int(bytes)); code != 0 {
		return fmt.Errorf("cuda: %s: allowing %d bytes of dynamic shared memory: %s (%d)", k.name, bytes, C.GoString(C.lukv_cu_error_name(code)), int(code))
	}
	return nil
}

// i32 converts a size or index to a kernel int, refusing values past int32.
func i32(v int, what string) int32 {
	if v < math.MinInt32 || v > math.MaxInt32 {
		panic(fmt.Sprintf("cuda: %s = %d does not fit a 32-bit kernel argument", what, v))
	}
	return int32(v)
}
