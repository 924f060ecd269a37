// Package models embeds lukv's default model, so `lukv-run` works on a fresh clone with
// no download, and unpacks it to a cache folder on first use.
package models

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// DefaultName is the embedded default model's folder name: lukv-tiny, lukv's own small
// Llama model trained for long-context retrieval (models/lukv-tiny/README.md).
const DefaultName = "lukv-tiny"

// Only what a checkpoint needs is embedded (not the training logs), plus the model's
// LU-KV budget curves (curves/<scorer>.npy and their .json metadata, ~30 KB each), so
// eviction with --allocator lukv works from the binary alone.
//
//go:embed lukv-tiny/config.json lukv-tiny/generation_config.json lukv-tiny/model.safetensors lukv-tiny/tokenizer.json lukv-tiny/tokenizer_config.json
var files embed.FS

//go:embed lukv-tiny/curves/*.npy lukv-tiny/curves/*.npy.json
var curveFiles embed.FS

// DefaultCurve is the path of the unpacked default model's LU-KV budget curve profiled
// with scorer (e.g. "expected-attention", "keydiff"), or an error listing the scorers
// that have one.
func DefaultCurve(scorer string) (string, error) {
	dir, err := DefaultDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "curves", scorer+".npy")
	if _, err := os.Stat(p); err != nil {
		entries, _ := fs.Glob(curveFiles, DefaultName+"/curves/*.npy")
		var have []string
		for _, e := range entries {
			have = append(have, strings.TrimSuffix(path.Base(e), ".npy"))
		}
		return "", fmt.Errorf("the default model %s has no LU-KV curve for scorer %q (it has %v; make one with lukv-run profile)", DefaultName, scorer, have)
	}
	return p, nil
}

// DefaultDir unpacks the embedded default model (once; later calls reuse the folder) and
// returns its path. The folder name carries a hash of the contents, so a new binary with
// a new model never reads a stale copy; and every file of a cached copy is checked
// against the sha256 of the embedded bytes (once per process), so a copy damaged on
// disk is unpacked again instead of being used as is.
func DefaultDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	base = filepath.Join(base, "lukv")
	checked.Lock()
	defer checked.Unlock()
	if dir := checked.dirs[base]; dir != "" {
		return dir, nil
	}
	dir, err := unpack(base)
	if err != nil {
		return "", err
	}
	if checked.dirs == nil {
		checked.dirs = map[string]string{}
	}
	checked.dirs[base] = dir
	return dir, nil
}

// checked remembers, per cache folder, the copy this process has verified.
var checked struct {
	sync.Mutex
	dirs map[string]string
}

// embedded is the default model's files (the weights and config at the top, the
// curves under curves/) with their sha256, read from the binary once.
var embedded = sync.OnceValues(func() (map[string][]byte, error) {
	contents := map[string][]byte{}
	for _, src := range []struct {
		fsys fs.FS
		dir  string
	}{{files, DefaultName}, {curveFiles, DefaultName + "/curves"}} {
		entries, err := fs.ReadDir(src.fsys, src.dir)
		if err != nil {
			return nil, fmt.Errorf("embedded model: %w", err)
		}
		for _, e := range entries {
			data, err := fs.ReadFile(src.fsys, path.Join(src.dir, e.Name()))
			if err != nil {
				return nil, fmt.Errorf("embedded model: %w", err)
			}
			contents[strings.TrimPrefix(path.Join(src.dir, e.Name()), DefaultName+"/")] = data
		}
	}
	return contents, nil
})

// sums are the sha256 of the embedded files by name, sorted, and the hash of them all
// (which names the cache folder).
func sums(contents map[string][]byte) (names []string, sum map[string]string, all string) {
	sum = map[string]string{}
	for name := range contents {
		names = append(names, name)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, name := range names {
		s := sha256.Sum256(contents[name])
		sum[name] = hex.EncodeToString(s[:])
		fmt.Fprintf(h, "%s  %s\n", sum[name], name)
	}
	return names, sum, hex.EncodeToString(h.Sum(nil))
}

// completeFile marks a finished unpack; it lists each file's sha256 (sha256sum's
// format: sha256sum -c .complete checks the folder by hand).
const completeFile = ".complete"

// unpack returns the verified copy of the default model under base, unpacking it
// (again) where it is missing, incomplete or damaged.
func unpack(base string) (string, error) {
	contents, err := embedded()
	if err != nil {
		return "", err
	}
	names, sum, all := sums(contents)
	dir := filepath.Join(base, DefaultName+"-"+all[:12])
	if _, err := os.Stat(filepath.Join(dir, completeFile)); err == nil {
		bad := verify(dir, names, sum)
		if bad == "" {
			return dir, nil
		}
		// Damaged: move it aside (another process may be reading it) and unpack anew.
		fmt.Fprintf(os.Stderr, "lukv: the cached default model in %s is damaged (%s); unpacking it again\n", dir, bad)
		aside, err := os.MkdirTemp(base, "damaged-")
		if err != nil {
			return "", fmt.Errorf("embedded model: %w", err)
		}
		if err := os.Rename(dir, filepath.Join(aside, "model")); err != nil {
			return "", fmt.Errorf("embedded model: moving the damaged copy %s aside: %w", dir, err)
		}
		defer os.RemoveAll(aside)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("embedded model: cannot create cache folder: %w", err)
	}
	tmp, err := os.MkdirTemp(base, "unpack-")
	if err != nil {
		return "", fmt.Errorf("embedded model: %w", err)
	}
	var manifest strings.Builder
	for _, name := range names {
		p := filepath.Join(tmp, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("embedded model: %w", err)
		}
		if err := os.WriteFile(p, contents[name], 0o644); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("embedded model: %w", err)
		}
		fmt.Fprintf(&manifest, "%s  %s\n", sum[name], name)
	}
	if err := os.WriteFile(filepath.Join(tmp, completeFile), []byte(manifest.String()), 0o644); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("embedded model: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another process unpacked it first: use theirs if it is whole.
		os.RemoveAll(tmp)
		if bad := verify(dir, names, sum); bad != "" {
			return "", fmt.Errorf("embedded model: %w (and the copy there is damaged: %s)", err, bad)
		}
	}
	return dir, nil
}

// verify checks dir's files against sum; it names the first file that is missing or
// differs ("" when all match).
func verify(dir string, names []string, sum map[string]string) string {
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			return name + " is missing"
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return name + ": " + err.Error()
		}
		if hex.EncodeToString(h.Sum(nil)) != sum[name] {
			return name + " has the wrong sha256"
		}
	}
	return ""
}
