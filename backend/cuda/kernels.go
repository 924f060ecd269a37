//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"gorgonia.org/cu"
)

// kernelModules lists, per kernels/<module>.cu, the kernels the backend launches.
var kernelModules = []struct {
	module string
	names  []string
}{
	{"embed", []string{"embed_f32", "embed_bf16", "embed_f16"}},
	{"norm", []string{"rmsnorm", "head_rmsnorm"}},
	{"rope", []string{"rope"}},
	{"elementwise", []string{"add_inplace", "add_bias", "swiglu", "widen_bf16", "widen_f16"}},
	{"matmul", []string{"matmul_gemv_f32", "matmul_gemv_bf16", "matmul_gemv_f16", "matmul_tiled_f32", "matmul_tiled_bf16", "matmul_tiled_f16"}},
	{"attention", []string{"attention_v1_d4", "attention_v2_d4", "attention_v4_d4", "attention_v1_d8", "attention_v2_d8", "attention_combine"}},
	{"kvcache", []string{"kv_gather"}},
	{"convert", []string{"f32_to_bf16"}}, // looked up by cublas.go's initBLAS
	{"attention_tc", attentionTCKernels}, // looked up by attention_tc.go's initAttentionTC
	{"score", scoreKernelNames},          // looked up by score.go's initScoring
	{"topk", topkKernelNames},            // looked up by score.go's initScoring
}

// kernelExts are the file types tried for each module, in order: native code from
// `nvcc -cubin`, a fat binary, or PTX that the driver compiles at load.
var kernelExts = []string{".cubin", ".fatbin", ".ptx"}

// kfn is a loaded kernel and its name (for error messages).
type kfn struct {
	name string
	fn   cu.Function
}

// kernels are the backend's loaded kernels.
type kernels struct {
	embed       [3]kfn // by dtype
	widen       [3]kfn // by source dtype (index f32 unused)
	rmsnorm     kfn
	headRMSNorm kfn
	rope        kfn
	add         kfn
	addBias     kfn
	swiglu      kfn
	gemv        [3]kfn
	tiled       [3]kfn
	attention   map[[2]int]kfn // by (query vectors per warp, dims per lane)
	combine     kfn
	kvGather    kfn
}

// FindKernels returns the folder holding the compiled kernels: dir when not empty, else
// $LUKV_KERNELS, else the first kernels/build found next to the executable, in the
// executable's parent folder, or in the working directory or any folder above it. The
// error names every place it looked and how to build the kernels.
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

// loadKernels loads every module from b.kdir and looks up its kernels.
func (b *Backend) loadKernels() error {
	found := map[string]kfn{}
	for _, m := range kernelModules {
		path := moduleFile(b.kdir, m.module)
		if path == "" {
			return fmt.Errorf("cuda: %s: no %s.cubin, .fatbin or .ptx (incomplete build? rerun scripts/build-kernels.sh)", b.kdir, m.module)
		}
		mod, err := cu.Load(path)
		if err != nil {
			return fmt.Errorf("cuda: loading %s: %w (built for another GPU architecture? rebuild with scripts/build-kernels.sh on this machine)", path, err)
		}
		b.mods = append(b.mods, mod)
		for _, name := range m.names {
			fn, err := mod.Function(name)
			if err != nil {
				return fmt.Errorf("cuda: %s has no kernel %s: %w (stale build? rerun scripts/build-kernels.sh)", path, name, err)
			}
			found[name] = kfn{name: name, fn: fn}
		}
	}
	k := &b.k
	k.embed = [3]kfn{found["embed_f32"], found["embed_bf16"], found["embed_f16"]}
	k.widen = [3]kfn{{}, found["widen_bf16"], found["widen_f16"]}
	k.rmsnorm, k.headRMSNorm, k.rope = found["rmsnorm"], found["head_rmsnorm"], found["rope"]
	k.add, k.addBias, k.swiglu = found["add_inplace"], found["add_bias"], found["swiglu"]
	k.gemv = [3]kfn{found["matmul_gemv_f32"], found["matmul_gemv_bf16"], found["matmul_gemv_f16"]}
	k.tiled = [3]kfn{found["matmul_tiled_f32"], found["matmul_tiled_bf16"], found["matmul_tiled_f16"]}
	k.attention = map[[2]int]kfn{}
	for _, vd := range [][2]int{{1, 4}, {2, 4}, {4, 4}, {1, 8}, {2, 8}} {
		k.attention[vd] = found[fmt.Sprintf("attention_v%d_d%d", vd[0], vd[1])]
	}
	k.combine = found["attention_combine"]
	k.kvGather = found["kv_gather"]
	return nil
}

// findKernel looks name up in every loaded module (kernels not listed in
// kernelModules: the decode, tensor-core, conversion and scoring families); source
// names the .cu file for the error of a stale build.
func (b *Backend) findKernel(name, source string) (kfn, error) {
	for _, m := range b.mods {
		if fn, err := m.Function(name); err == nil {
			return kfn{name: name, fn: fn}, nil
		}
	}
	return kfn{}, fmt.Errorf("cuda: the kernels in %s have no %s (%s): stale build? rerun scripts/build-kernels.sh", b.kdir, name, source)
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

// launch runs kernel k. Arguments must have the kernel's C parameter types exactly:
// cu.DevicePtr for pointers, int32 for int, int64 for long long, float32 for float.
// (gorgonia.org/cu's Launch copies 8 bytes from every argument; each one is widened
// into its own 8-byte slot, and the driver reads the parameter's size from the start
// of the slot, which on little-endian machines is the value itself.)
// With Options.Sync it waits for the kernel and names it in any fault.
func (b *Backend) launch(k kfn, grid, block dim3, smem int, args ...any) {
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
	span := b.prof.begin(k.name)
	if err := k.fn.Launch(grid[0], grid[1], grid[2], block[0], block[1], block[2], smem, cu.NoStream, params); err != nil {
		panic(fmt.Errorf("cuda: launching %s (grid %v, block %v, %d B shared): %w", k.name, grid, block, smem, err))
	}
	b.prof.end(span)
	if b.opt.Sync {
		if err := cu.Synchronize(); err != nil {
			panic(fmt.Errorf("cuda: kernel %s (grid %v, block %v) failed: %w", k.name, grid, block, err))
		}
	}
}

// i32 converts a size or index to a kernel int, refusing values past int32.
func i32(v int, what string) int32 {
	if v < math.MinInt32 || v > math.MaxInt32 {
		panic(fmt.Sprintf("cuda: %s = %d does not fit a 32-bit kernel argument", what, v))
	}
	return int32(v)
}
