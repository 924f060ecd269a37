// Package models embeds lukv's default model, so `lukv-run` works on a fresh clone with
// no download, and unpacks it to a cache folder on first use.
package models

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
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
// a new model never reads a stale copy.
func DefaultDir() (string, error) {
	entries, err := fs.ReadDir(files, DefaultName)
	if err != nil {
		return "", fmt.Errorf("embedded model: %w", err)
	}
	h := sha256.New()
	contents := map[string][]byte{}
	for _, e := range entries {
		data, err := files.ReadFile(path.Join(DefaultName, e.Name()))
		if err != nil {
			return "", fmt.Errorf("embedded model: %w", err)
		}
		contents[e.Name()] = data
		h.Write([]byte(e.Name()))
		h.Write(data)
	}
	curves, err := fs.ReadDir(curveFiles, DefaultName+"/curves")
	if err != nil {
		return "", fmt.Errorf("embedded model curves: %w", err)
	}
	for _, e := range curves {
		name := path.Join("curves", e.Name())
		data, err := curveFiles.ReadFile(path.Join(DefaultName, name))
		if err != nil {
			return "", fmt.Errorf("embedded model: %w", err)
		}
		contents[name] = data
		h.Write([]byte(name))
		h.Write(data)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "lukv", DefaultName+"-"+hex.EncodeToString(h.Sum(nil))[:12])
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "unpack-")
	if err != nil {
		if err = os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return "", fmt.Errorf("embedded model: cannot create cache folder: %w", err)
		}
		if tmp, err = os.MkdirTemp(filepath.Dir(dir), "unpack-"); err != nil {
			return "", fmt.Errorf("embedded model: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(tmp, "curves"), 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("embedded model: %w", err)
	}
	for name, data := range contents {
		if err := os.WriteFile(filepath.Join(tmp, filepath.FromSlash(name)), data, 0o644); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("embedded model: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("embedded model: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another process unpacked it first: use theirs.
		os.RemoveAll(tmp)
		if _, serr := os.Stat(filepath.Join(dir, ".complete")); serr != nil {
			return "", fmt.Errorf("embedded model: %w", err)
		}
	}
	return dir, nil
}
