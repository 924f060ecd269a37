package cuda

// This test has no build tag: it reads the CUDA backend's source and kernels/*.cu as
// text, so it runs on every machine (no GPU, no CUDA headers, no nvcc), where a kernel
// renamed or moved between .cu files would otherwise only fail at New on the GPU.

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// manifestFromSource parses registry.go's kernelModules: module -> kernel names.
func manifestFromSource(t *testing.T) map[string][]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "registry.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "kernelModules" {
			return true
		}
		for _, e := range vs.Values[0].(*ast.CompositeLit).Elts {
			el := e.(*ast.CompositeLit).Elts
			module := unquote(t, el[0])
			for _, n := range el[1].(*ast.CompositeLit).Elts {
				out[module] = append(out[module], unquote(t, n))
			}
		}
		return false
	})
	if len(out) == 0 {
		t.Fatal("registry.go: no kernelModules found")
	}
	return out
}

func unquote(t *testing.T, e ast.Expr) string {
	t.Helper()
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		t.Fatalf("manifest entry %T is not a string literal", e)
	}
	s, err := strconv.Unquote(lit.Value)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// kernelDef matches a kernel definition after preprocessing, with or without
// __launch_bounds__ (whose arguments may hold one more level of parentheses).
var kernelDef = regexp.MustCompile(`extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)\s*)?(\w+)\s*\(`)

// definedKernels runs the C preprocessor over a .cu file (as C, so no C++ front end is
// needed; it expands the macros that stamp out kernel variants) and returns the kernels
// it defines. CUDA's own headers are replaced by empty ones: only the names matter here.
func definedKernels(t *testing.T, cpp []string, fake, path string) []string {
	t.Helper()
	args := append(slices.Clone(cpp[1:]), "-E", "-P", "-x", "c", "-I", fake, path)
	cmd := exec.Command(cpp[0], args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("preprocessing %s: %v\n%s", path, err, stderr.String())
	}
	var names []string
	for _, m := range kernelDef.FindAllSubmatch(out, -1) {
		names = append(names, string(m[1]))
	}
	return names
}

// launchedNames are the kernel names the backend's Go code spells out: first arguments
// of launch and allowSharedMemory, the values of the *Kernels name tables, and the
// names assigned to kern and conv before a launch.
func launchedNames(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{} // name -> where
	fset := token.NewFileSet()
	add := func(e ast.Expr) {
		if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if s, err := strconv.Unquote(lit.Value); err == nil && s != "" {
				names[s] = fset.Position(lit.Pos()).String()
			}
		}
	}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "launch" || sel.Sel.Name == "allowSharedMemory") && len(n.Args) > 0 {
					add(n.Args[0])
				}
			case *ast.ValueSpec:
				if len(n.Names) == 1 && strings.HasSuffix(n.Names[0].Name, "Kernels") {
					for _, v := range n.Values {
						ast.Inspect(v, func(m ast.Node) bool {
							if kv, ok := m.(*ast.KeyValueExpr); ok {
								ast.Inspect(kv.Value, func(x ast.Node) bool {
									if e, ok := x.(ast.Expr); ok {
										add(e)
									}
									return true
								})
								return false
							}
							if e, ok := m.(*ast.BasicLit); ok {
								add(e)
							}
							return true
						})
					}
				}
			case *ast.AssignStmt:
				if n.Tok != token.ASSIGN && n.Tok != token.DEFINE {
					return true // kern += "_bf16" names a variant, checked below
				}
				for i, l := range n.Lhs {
					if id, ok := l.(*ast.Ident); ok && (id.Name == "kern" || id.Name == "conv") && i < len(n.Rhs) {
						add(n.Rhs[i])
					}
				}
			}
			return true
		})
	}
	return names
}

// TestKernelManifest: the manifest and kernels/*.cu agree (every .cu file is a module,
// every kernel the manifest names is defined in that module, and every kernel defined
// is in the manifest), and every kernel name the Go code launches is in the manifest.
func TestKernelManifest(t *testing.T) {
	cc := strings.Fields(os.Getenv("CC"))
	if len(cc) == 0 {
		cc = []string{"cc"}
	}
	if _, err := exec.LookPath(cc[0]); err != nil {
		t.Skipf("no C preprocessor (%s) to expand kernels/*.cu: %v", cc[0], err)
	}
	fake := t.TempDir()
	for _, h := range []string{"cuda_fp16.h", "cuda_bf16.h", "cuda_runtime.h"} {
		if err := os.WriteFile(filepath.Join(fake, h), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	manifest := manifestFromSource(t)
	srcs, err := filepath.Glob(filepath.Join("..", "..", "kernels", "*.cu"))
	if err != nil || len(srcs) == 0 {
		t.Fatalf("no kernels/*.cu found (%v)", err)
	}
	inManifest := map[string]string{} // kernel -> module
	for module, names := range manifest {
		for _, n := range names {
			if m, dup := inManifest[n]; dup {
				t.Errorf("kernel %s is listed under both %s and %s", n, m, module)
			}
			inManifest[n] = module
		}
	}
	seen := map[string]bool{}
	for _, src := range srcs {
		module := strings.TrimSuffix(filepath.Base(src), ".cu")
		seen[module] = true
		listed, ok := manifest[module]
		if !ok {
			t.Errorf("kernels/%s.cu has no entry in registry.go's kernelModules: scripts/build-kernels.sh builds it, New would not load it", module)
			continue
		}
		defined := definedKernels(t, cc, fake, src)
		if len(defined) == 0 {
			t.Errorf("kernels/%s.cu: no kernel definitions found after preprocessing", module)
		}
		for _, n := range listed {
			if !slices.Contains(defined, n) {
				t.Errorf("the manifest takes %s from kernels/%s.cu, which does not define it (defines %v)", n, module, defined)
			}
		}
		for _, n := range defined {
			if !slices.Contains(listed, n) {
				t.Errorf("kernels/%s.cu defines %s, which the manifest does not list under %s", module, n, module)
			}
		}
	}
	for module := range manifest {
		if !seen[module] {
			t.Errorf("the manifest's module %s has no kernels/%s.cu", module, module)
		}
	}
	launched := launchedNames(t)
	if len(launched) < 20 {
		t.Fatalf("found only %d kernel names in the Go code: the test's source scan is broken", len(launched))
	}
	// Attention over a bf16 cache appends "_bf16" to attentionKernels' names.
	for name, where := range maps.Clone(launched) {
		if strings.HasPrefix(name, "attention_v") {
			launched[name+"_bf16"] = where + ` (+ "_bf16")`
		}
	}
	for name, where := range launched {
		if _, ok := inManifest[name]; !ok {
			t.Errorf("%s: kernel name %q is not in the manifest", where, name)
		}
	}
}
