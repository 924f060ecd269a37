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
)

// DefaultName is the embedded default model's folder name: lukv-tiny, lukv's own small
// Llama model trained for long-context retrieval (models/lukv-tiny/README.md).
const DefaultName = "lukv-tiny"

// Only what a checkpoint needs is embedded (not the training logs or curves).
//
//go:embed lukv-tiny/config.json lukv-tiny/generation_config.json lukv-tiny/model.safetensors lukv-tiny/tokenizer.json
var files embed.FS

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
	for name, data := range contents {
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
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
