package eval

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Merge reads the results.jsonl (or .jsonl.gz) of finished or sharded run folders,
// writes them merged into out (results.jsonl, and run.json when every folder has the
// same one) and returns the cells. Folders from different runs (run.json differs) are
// refused unless allowMixed; a cell in two folders is an error.
func Merge(dirs []string, out string, allowMixed bool) ([]Cell, error) {
	seen := map[string]string{}
	var cells []Cell
	var first *RunIdentity
	firstDir := ""
	sameRun := true // every folder has a run.json, and they agree
	for _, d := range dirs {
		r, err := ReadRunIdentity(d)
		if err != nil {
			return nil, err
		}
		switch {
		case r == nil:
			sameRun = false
		case first == nil:
			first, firstDir = r, d
		default:
			if diffs := r.diff(*first); len(diffs) > 0 {
				if !allowMixed {
					return nil, fmt.Errorf("--in %s and %s come from different runs (%s); --allow-mixed-runs merges them anyway", firstDir, d, strings.Join(diffs, "; "))
				}
				sameRun = false
			}
		}
		path := filepath.Join(d, "results.jsonl")
		if _, err := os.Stat(path); err != nil {
			// results/ keeps its cells compressed.
			if _, zerr := os.Stat(path + ".gz"); zerr != nil {
				return nil, fmt.Errorf("--in %s: %w", d, err)
			}
			path += ".gz"
		}
		cs, err := LoadCells(path)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			if prev, ok := seen[c.Key()]; ok {
				return nil, fmt.Errorf("cell %s is in both %s and %s", c.Key(), prev, path)
			}
			seen[c.Key()] = path
			cells = append(cells, c)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(out, "results.jsonl"))
	if err != nil {
		return nil, err
	}
	enc := json.NewEncoder(f)
	for _, c := range cells {
		if err := enc.Encode(c); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	// The merged folder keeps the runs' identity when they all share one; otherwise a
	// run.json left there by an earlier merge would misname its cells.
	if sameRun && first != nil {
		err = writeRunIdentity(out, *first)
	} else {
		err = os.Remove(filepath.Join(out, RunFile))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	}
	return cells, err
}
