package eval

import (
	"fmt"
	"os"
	"strings"
)

// ReadLines reads the non-empty lines of a UTF-8 text file (a word list such as
// data/corpus/words_eval_*.txt, or a haystack such as eval_haystack_devil.txt split one
// sentence or paragraph per line), trimmed of surrounding spaces.
func ReadLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eval: read %s: %w", path, err)
	}
	var out []string
	for _, ln := range strings.Split(string(b), "\n") {
		if ln = strings.TrimSpace(ln); ln != "" {
			out = append(out, ln)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("eval: %s has no non-empty lines", path)
	}
	return out, nil
}
