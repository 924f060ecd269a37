//go:build cuda

package cuda

// The tensor-core matmul: with Options.TensorCores, MatMul of more than gemvMaxRows rows
// by a bfloat16 weight converts x to bfloat16 (kernels/convert.cu, round to nearest
// even) and calls cuBLAS's cublasGemmEx with bf16 operands, a float32 result and
// float32 accumulation (CUBLAS_COMPUTE_32F), which runs on the tensor cores.
//
// cuBLAS is not linked: it is loaded with dlopen at first use, so binaries without it
// still build and run (on the tiled kernel), and no cuBLAS header is needed to build.
// The few prototypes and enum values used are written below from cuBLAS's public
// headers (cublas_api.h, library_types.h), valid for cuBLAS 11, 12 and 13.
//
// Weights stored as float16 or float32 keep the tiled float32 kernel: converting
// activations to float16 risks overflow (|x| > 65504), and float32 weights have no exact
// 16-bit form.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// lukv_dlopen opens a shared library, writing dlerror's message into err on failure
// (in the same call: dlerror is per thread).
static uintptr_t lukv_dlopen(const char* path, int global, char* err, int errlen) {
	void* h = dlopen(path, RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL));
	if (!h) {
		const char* e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
	}
	return (uintptr_t)h;
}

static uintptr_t lukv_dlsym(uintptr_t lib, const char* name) {
	return (uintptr_t)dlsym((void*)lib, name);
}

// Prototypes of the cuBLAS entry points (cublas_api.h). Handles, streams and device
// pointers travel as uintptr_t; enums are C ints.
typedef int (*lukv_cublasCreate_t)(void** handle);                       // cublasCreate_v2
typedef int (*lukv_cublasDestroy_t)(void* handle);                       // cublasDestroy_v2
typedef int (*lukv_cublasSetStream_t)(void* handle, void* stream);       // cublasSetStream_v2
typedef int (*lukv_cublasSetMathMode_t)(void* handle, int mode);         // cublasSetMathMode
typedef int (*lukv_cublasGetVersion_t)(void* handle, int* version);      // cublasGetVersion_v2
typedef const char* (*lukv_cublasGetStatusString_t)(int status);         // cublasGetStatusString
typedef int (*lukv_cublasGemmEx_t)(void* handle, int transa, int transb, int m, int n, int k,
	const void* alpha, const void* A, int Atype, int lda, const void* B, int Btype, int ldb,
	const void* beta, void* C, int Ctype, int ldc, int computeType, int algo); // cublasGemmEx

static int lukv_cublas_create(uintptr_t f, uintptr_t* handle) {
	void* h = 0;
	int st = ((lukv_cublasCreate_t)f)(&h);
	*handle = (uintptr_t)h;
	return st;
}
static int lukv_cublas_destroy(uintptr_t f, uintptr_t h) { return ((lukv_cublasDestroy_t)f)((void*)h); }
static int lukv_cublas_set_stream(uintptr_t f, uintptr_t h, uintptr_t stream) {
	return ((lukv_cublasSetStream_t)f)((void*)h, (void*)stream);
}
static int lukv_cublas_set_math_mode(uintptr_t f, uintptr_t h, int mode) {
	return ((lukv_cublasSetMathMode_t)f)((void*)h, mode);
}
static int lukv_cublas_get_version(uintptr_t f, uintptr_t h, int* version) {
	return ((lukv_cublasGetVersion_t)f)((void*)h, version);
}
static const char* lukv_cublas_status_string(uintptr_t f, int status) {
	return ((lukv_cublasGetStatusString_t)f)(status);
}
// alpha and beta are host scalars (the default CUBLAS_POINTER_MODE_HOST), float for
// CUBLAS_COMPUTE_32F.
static int lukv_cublas_gemm_ex(uintptr_t f, uintptr_t h, int transa, int transb, int m, int n, int k,
	float alpha, uintptr_t A, int Atype, int lda, uintptr_t B, int Btype, int ldb,
	float beta, uintptr_t C, int Ctype, int ldc, int computeType, int algo) {
	return ((lukv_cublasGemmEx_t)f)((void*)h, transa, transb, m, n, k, &alpha, (const void*)A, Atype, lda,
		(const void*)B, Btype, ldb, &beta, (void*)C, Ctype, ldc, computeType, algo);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// cuBLAS enum values, as cublas_api.h and library_types.h define them.
const (
	cublasOpN = 0 // CUBLAS_OP_N
	cublasOpT = 1 // CUBLAS_OP_T

	cudaR32F  = 0  // CUDA_R_32F (cudaDataType_t)
	cudaR16BF = 14 // CUDA_R_16BF

	cublasCompute32F   = 68 // CUBLAS_COMPUTE_32F: float32 accumulation
	cublasGemmDefault  = -1 // CUBLAS_GEMM_DEFAULT: cuBLAS's heuristics pick the kernel
	cublasDefaultMath  = 0  // CUBLAS_DEFAULT_MATH: tensor cores allowed for 16-bit inputs
	cublasStatusOK     = 0  // CUBLAS_STATUS_SUCCESS
	cublasArchMismatch = 8  // CUBLAS_STATUS_ARCH_MISMATCH
	cublasNotSupported = 15 // CUBLAS_STATUS_NOT_SUPPORTED
)

// cublasStatusNames are cublasStatus_t's names (cublas_api.h), for errors when the
// library has no cublasGetStatusString (before cuBLAS 11.4).
var cublasStatusNames = map[int]string{
	0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
	7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

// cublasLib is an opened libcublas: where it was found and its entry points.
type cublasLib struct {
	path                                                      string
	create, destroy, setStream, setMathMode, getVersion, gemm uintptr
	statusString                                              uintptr // 0 when absent
}

// status formats a cuBLAS status code with its name.
func (l *cublasLib) status(st C.int) string {
	name := cublasStatusNames[int(st)]
	if l.statusString != 0 {
		if s := C.lukv_cublas_status_string(C.uintptr_t(l.statusString), st); s != nil {
			name = C.GoString(s)
		}
	}
	if name == "" {
		name = "unknown cuBLAS status"
	}
	return fmt.Sprintf("%s (%d)", name, int(st))
}

// cublasLoads caches one load attempt per value of LUKV_CUBLAS: the library is opened
// once per process (every Backend shares it; handles are per backend).
var (
	cublasMu    sync.Mutex
	cublasLoads = map[string]cublasLoad{}
)

type cublasLoad struct {
	lib *cublasLib
	err error
}

// cublasNames are the library names tried, newest first (CUDA 13, 12, any).
var cublasNames = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so"}

// loadCublas opens cuBLAS (see cublasCandidates for where it looks) and looks up the
// entry points. The error lists every place tried and how to point lukv at a copy.
func loadCublas() (*cublasLib, error) {
	spec := os.Getenv("LUKV_CUBLAS")
	cublasMu.Lock()
	defer cublasMu.Unlock()
	if l, ok := cublasLoads[spec]; ok {
		return l.lib, l.err
	}
	lib, err := openCublas(spec)
	cublasLoads[spec] = cublasLoad{lib, err}
	return lib, err
}

// cublasCandidates lists the libraries to try: with spec (LUKV_CUBLAS) only that file,
// or the cuBLAS names in that folder; else the names through the dynamic loader's own
// search (LD_LIBRARY_PATH, the ld.so cache), then the names in the usual CUDA folders
// ($CUDA_HOME/lib64, $CUDA_PATH/lib64, /usr/local/cuda/lib64 and its targets folder,
// /usr/lib/x86_64-linux-gnu) and in the pip wheels of NVIDIA's libraries
// (site-packages/nvidia/*/lib, e.g. PyTorch's under /opt/torch/.venv). Folders are
// listed only with the files that exist there; missing ones go to skipped.
func cublasCandidates(spec string) (cands, skipped []string) {
	inDir := func(dir string) {
		found := false
		for _, n := range cublasNames {
			p := filepath.Join(dir, n)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				cands = append(cands, p)
				found = true
			}
		}
		if !found {
			skipped = append(skipped, dir)
		}
	}
	if spec != "" {
		if st, err := os.Stat(spec); err == nil && st.IsDir() {
			inDir(spec)
		} else {
			cands = append(cands, spec)
		}
		return cands, skipped
	}
	cands = append(cands, cublasNames...)
	var dirs []string
	for _, env := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if v := os.Getenv(env); v != "" {
			dirs = append(dirs, filepath.Join(v, "lib64"))
		}
	}
	dirs = append(dirs, "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu")
	for _, pattern := range []string{
		"/opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib",
		"/usr/local/lib/python3*/dist-packages/nvidia/*/lib",
		"/usr/local/lib/python3*/site-packages/nvidia/*/lib",
	} {
		m, _ := filepath.Glob(pattern)
		dirs = append(dirs, m...)
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		if !seen[d] {
			seen[d] = true
			inDir(d)
		}
	}
	return cands, skipped
}

// openCublas tries every candidate in turn and binds the first that opens and has
// every entry point.
func openCublas(spec string) (*cublasLib, error) {
	cands, skipped := cublasCandidates(spec)
	var tried []string
	errBuf := (*C.char)(C.malloc(512))
	defer C.free(unsafe.Pointer(errBuf))
	for _, cand := range cands {
		if strings.Contains(cand, "/") {
			// cuBLAS needs cuBLASLt of the same release; open it from the same folder
			// first so the loader finds it even when that folder is on no search path.
			lt := filepath.Join(filepath.Dir(cand), strings.Replace(filepath.Base(cand), "libcublas", "libcublasLt", 1))
			if _, err := os.Stat(lt); err == nil {
				cs := C.CString(lt)
				C.lukv_dlopen(cs, 1, errBuf, 512)
				C.free(unsafe.Pointer(cs))
			}
		}
		cs := C.CString(cand)
		h := C.lukv_dlopen(cs, 0, errBuf, 512)
		C.free(unsafe.Pointer(cs))
		if h == 0 {
			tried = append(tried, fmt.Sprintf("%s (%s)", cand, C.GoString(errBuf)))
			continue
		}
		lib := &cublasLib{path: cand}
		var missing []string
		for _, s := range []struct {
			name     string
			dst      *uintptr
			optional bool
		}{
			{"cublasCreate_v2", &lib.create, false}, {"cublasDestroy_v2", &lib.destroy, false},
			{"cublasSetStream_v2", &lib.setStream, false}, {"cublasSetMathMode", &lib.setMathMode, false},
			{"cublasGetVersion_v2", &lib.getVersion, false}, {"cublasGemmEx", &lib.gemm, false},
			{"cublasGetStatusString", &lib.statusString, true},
		} {
			cn := C.CString(s.name)
			*s.dst = uintptr(C.lukv_dlsym(h, cn))
			C.free(unsafe.Pointer(cn))
			if *s.dst == 0 && !s.optional {
				missing = append(missing, s.name)
			}
		}
		if len(missing) > 0 {
			tried = append(tried, fmt.Sprintf("%s (opened, but lacks %s)", cand, strings.Join(missing, ", ")))
			continue
		}
		if !strings.Contains(cand, "/") {
			lib.path = cand + " (found by the dynamic loader)"
		}
		return lib, nil
	}
	msg := "tried " + strings.Join(tried, "; ")
	if len(skipped) > 0 {
		msg += "; no libcublas in " + strings.Join(skipped, ", ")
	}
	if spec != "" {
		return nil, fmt.Errorf("cuda: cuBLAS (for Options.TensorCores) not loaded from LUKV_CUBLAS=%s: %s. Point LUKV_CUBLAS at libcublas.so.12/.13 or its folder, or unset it to search the usual places", spec, msg)
	}
	return nil, fmt.Errorf("cuda: cuBLAS (for Options.TensorCores) not found: %s. Install cuBLAS 12 or 13 (the CUDA toolkit, or pip's nvidia-cublas) and set LUKV_CUBLAS to libcublas.so.N or its folder", msg)
}

// blasState is a Backend's tensor-core path: its cuBLAS handle (bound to the backend's
// context, on the legacy default stream the kernels use) and the bf16 scratch copy
// of x. err says why the path is off, once it was tried.
type blasState struct {
	tried   bool
	err     error
	lib     *cublasLib
	handle  uintptr
	version int
	scratch devBuf // bfloat16 x [n, in]
	calls   int64  // GEMMs run on the tensor cores (tests check the path was taken)
}

// blasReady reports whether the tensor-core path is usable, setting it up on first use.
// The caller holds the backend (enter).
func (b *Backend) blasReady() bool {
	s := &b.blas
	if !s.tried {
		s.tried = true
		s.err = b.initBLAS()
	}
	return s.err == nil
}

// initBLAS loads cuBLAS and creates the handle. cuBLAS
// binds a handle to the context current at creation: enter made the backend's primary
// context current on this OS thread.
func (b *Backend) initBLAS() error {
	s := &b.blas
	lib, err := loadCublas()
	if err != nil {
		return err
	}
	var h C.uintptr_t
	if st := C.lukv_cublas_create(C.uintptr_t(lib.create), &h); st != cublasStatusOK {
		return fmt.Errorf("cuda: cublasCreate_v2 (%s): %s", lib.path, lib.status(st))
	}
	fail := func(what string, st C.int) error {
		C.lukv_cublas_destroy(C.uintptr_t(lib.destroy), h)
		return fmt.Errorf("cuda: %s (%s): %s", what, lib.path, lib.status(st))
	}
	// The backend launches everything on the legacy default stream (cu.NoStream), as does
	// a new handle; setting it says so and keeps cuBLAS's default workspace.
	if st := C.lukv_cublas_set_stream(C.uintptr_t(lib.setStream), h, 0); st != cublasStatusOK {
		return fail("cublasSetStream_v2", st)
	}
	if st := C.lukv_cublas_set_math_mode(C.uintptr_t(lib.setMathMode), h, cublasDefaultMath); st != cublasStatusOK {
		return fail("cublasSetMathMode", st)
	}
	var v C.int
	if st := C.lukv_cublas_get_version(C.uintptr_t(lib.getVersion), h, &v); st != cublasStatusOK {
		return fail("cublasGetVersion_v2", st)
	}
	s.lib, s.handle, s.version = lib, uintptr(h), int(v)
	return nil
}

// matmulTensorCores computes out [n, N] = x [n, K] @ w [N, K]^T with w bfloat16 on the
// tensor cores, reporting false (nothing done) when the path is unavailable.
//
// cuBLAS is column-major: a row-major [r, c] matrix is a column-major [c, r] one with
// leading dimension c. So out^T [N, n] (column-major, ld N) = w [N, K] (stored as
// column-major [K, N], ld K, hence op T) times x^T [K, n] (x as stored: column-major
// [K, n], ld K, op N): cublasGemmEx(T, N, m=N, n=n, k=K, A=w, lda=K, B=x, ldb=K, C=out,
// ldc=N). beta = 0, so out's old contents are never read.
func (b *Backend) matmulTensorCores(o, xm, wm *Tensor) bool {
	if !b.blasReady() {
		return false
	}
	s := &b.blas
	n, k, nout := xm.rows, xm.cols, wm.rows
	count := int64(n) * int64(k)
	if err := s.scratch.ensure(count*2, fmt.Sprintf("MatMul bf16 copy of x [%d, %d]", n, k)); err != nil {
		panic(err)
	}
	b.launch("f32_to_bf16", gridFor(count/4+1, b.sms), dim3{256, 1, 1}, 0, s.scratch.ptr, xm.ptr, count)
	span := b.ktimes.begin("cublasGemmEx")
	st := C.lukv_cublas_gemm_ex(C.uintptr_t(s.lib.gemm), C.uintptr_t(s.handle), cublasOpT, cublasOpN,
		C.int(i32(nout, "MatMul out")), C.int(i32(n, "MatMul rows")), C.int(i32(k, "MatMul in")),
		1, C.uintptr_t(wm.ptr), cudaR16BF, C.int(k), C.uintptr_t(s.scratch.ptr), cudaR16BF, C.int(k),
		0, C.uintptr_t(o.ptr), cudaR32F, C.int(nout), cublasCompute32F, cublasGemmDefault)
	b.ktimes.end(span)
	what := fmt.Sprintf("cublasGemmEx (out [%d, %d] float32 = x [%d, %d] bf16 @ w^T, w [%d, %d] bf16)", n, nout, n, k, nout, k)
	switch st {
	case cublasStatusOK:
	case cublasNotSupported, cublasArchMismatch:
		// This GPU or library cannot do it: say so once and use the tiled kernel from now on.
		s.err = fmt.Errorf("cuda: %s: %s", what, s.lib.status(st))
		return false
	default:
		panic(fmt.Errorf("cuda: %s: %s", what, s.lib.status(st)))
	}
	if b.opt.Sync {
		if err := cu.Synchronize(); err != nil {
			panic(fmt.Errorf("cuda: %s failed: %w", what, err))
		}
	}
	s.calls++
	return true
}

// MatMulPath describes how MatMul multiplies more than a few rows (prefill), for
// benchmarks and logs: cuBLAS on the bf16 tensor cores, or the tiled float32 kernel and
// why (TensorCores off, or cuBLAS unavailable: the error says what was tried). With
// TensorCores on, it loads cuBLAS if no matmul has yet.
func (b *Backend) MatMulPath() string {
	defer b.enter()()
	const tiled = "tiled float32 kernel on CUDA cores"
	if !b.opt.TensorCores {
		return tiled + " (Options.TensorCores off)"
	}
	if !b.blasReady() {
		return tiled + "; tensor cores requested but unavailable: " + b.blas.err.Error()
	}
	v := b.blas.version
	return fmt.Sprintf("cuBLAS %d.%d.%d GemmEx on bf16 tensor cores, float32 accumulation, for bf16 weights (%s); %s for float16/float32 weights",
		v/10000, v/100%100, v%100, b.blas.lib.path, tiled)
}

// closeBLAS frees the scratch buffer and destroys the handle; the caller holds the
// backend, whose context is still alive.
func (b *Backend) closeBLAS() error {
	s := &b.blas
	s.scratch.free()
	var err error
	if s.handle != 0 {
		if st := C.lukv_cublas_destroy(C.uintptr_t(s.lib.destroy), C.uintptr_t(s.handle)); st != cublasStatusOK {
			err = fmt.Errorf("cuda: cublasDestroy_v2: %s", s.lib.status(st))
		}
		s.handle = 0
	}
	s.tried, s.err, s.lib = true, errors.New("cuda: backend closed"), nil
	return err
}
