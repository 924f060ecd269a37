package eval

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// RunFile records, in an evaluation folder, what produced its cells: resuming with
// another model, seed, haystack or curve would silently mix two runs in one table (it
// nearly happened when lukv-tiny was retrained and an old shard folder was still there).
const RunFile = "run.json"

// RunIdentity is the identity of an evaluation run; every field must match to resume.
// Tasks, lengths, samples, methods and ratios are not part of it: a rerun may add cells.
type RunIdentity struct {
	Suite    string            `json:"suite"`
	Model    string            `json:"model"`              // FingerprintModel of the checkpoint folder
	Seed     uint64            `json:"seed,omitempty"`     // ruler
	Haystack string            `json:"haystack,omitempty"` // sha256 of the haystack lines (ruler)
	Words    string            `json:"words,omitempty"`    // sha256 of the word list (ruler)
	Curves   map[string]string `json:"curves,omitempty"`   // LU-KV curve file name -> sha256
	Chunk    int               `json:"chunk,omitempty"`    // chunked prefill with eviction (Runner.Chunk); 0: one-shot
}

// diff names the fields where r and o differ.
func (r RunIdentity) diff(o RunIdentity) []string {
	var d []string
	add := func(name, a, b string) {
		if a != b {
			d = append(d, fmt.Sprintf("%s %s vs %s", name, shortHash(a), shortHash(b)))
		}
	}
	add("suite", r.Suite, o.Suite)
	add("model", r.Model, o.Model)
	add("seed", fmt.Sprint(r.Seed), fmt.Sprint(o.Seed))
	add("haystack", r.Haystack, o.Haystack)
	add("chunk", fmt.Sprint(r.Chunk), fmt.Sprint(o.Chunk))
	add("words", r.Words, o.Words)
	names := make([]string, 0, len(r.Curves))
	for n := range r.Curves {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		// A curve only one run used is no conflict: a rerun may add a method.
		if b, ok := o.Curves[n]; ok {
			add("curve "+n, r.Curves[n], b)
		}
	}
	return d
}

func shortHash(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	if s == "" {
		return "(none)"
	}
	return s
}

// checkRunIdentity compares run with the folder's run.json. A folder without one is given
// it; one whose run.json differs is refused, naming what differs. Cells without a
// run.json (written before it existed) cannot be checked: refused unless unchecked.
func checkRunIdentity(dir string, run RunIdentity, haveCells int, unchecked bool, stderr io.Writer) error {
	prev, err := ReadRunIdentity(dir)
	if err != nil {
		return fmt.Errorf("%w (delete it to record this run)", err)
	}
	if prev != nil {
		if d := run.diff(*prev); len(d) > 0 {
			return fmt.Errorf("eval: %s holds cells of another run (%s): use a new --out folder, or delete that one", dir, strings.Join(d, "; "))
		}
		return nil
	}
	if haveCells > 0 && !unchecked {
		return fmt.Errorf("eval: %s has %d cells but no %s, so which model and settings made them cannot be checked: use a new --out folder, or --resume-unchecked if you know they are this run's", dir, haveCells, RunFile)
	}
	if haveCells > 0 {
		fmt.Fprintf(stderr, "eval: resuming %d unchecked cells in %s; recording this run in %s\n", haveCells, dir, RunFile)
	}
	return writeRunIdentity(dir, run)
}

// writeRunIdentity writes run as the folder's run.json.
func writeRunIdentity(dir string, run RunIdentity) error {
	out, err := json.MarshalIndent(run, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, RunFile), append(out, '\n'), 0o644)
}

// FingerprintModel identifies a checkpoint folder without reading all of its weights
// (an 8B model's 16 GB would take longer than a short evaluation): config.json and
// tokenizer.json whole, and of each *.safetensors its name, size, and first and last MiB
// (the header, which names every tensor and offset, and the end of the data).
func FingerprintModel(dir string) (string, error) {
	h := sha256.New()
	for _, name := range []string{"config.json", "tokenizer.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	shards, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		return "", err
	}
	sort.Strings(shards)
	const edge = 1 << 20
	for _, p := range shards {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(p), st.Size())
		buf := make([]byte, min(int64(edge), st.Size()))
		for _, off := range []int64{0, max(0, st.Size()-edge)} {
			if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
				f.Close()
				return "", fmt.Errorf("%s: %w", p, err)
			}
			h.Write(buf)
		}
		f.Close()
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// HashLines is the sha256 of lines joined by newlines.
func HashLines(lines []string) string {
	h := sha256.New()
	for _, l := range lines {
		io.WriteString(h, l)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// HashFile is the sha256 of a file's bytes.
func HashFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

// ReadRunIdentity reads a folder's run.json (nil when it has none).
func ReadRunIdentity(dir string) (*RunIdentity, error) {
	data, err := os.ReadFile(filepath.Join(dir, RunFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r RunIdentity
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, RunFile), err)
	}
	return &r, nil
}
