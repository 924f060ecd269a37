package eval

import (
	_ "embed"
	"fmt"
	"os"
	"strings"
)

// The default evaluation split (eval/corpus/README.md: sources, licences, checksums):
// RULER's "essay" haystack and the needles' key vocabulary, both never trained on.
var (
	//go:embed corpus/eval_haystack_devil.txt
	defaultHaystack string
	//go:embed corpus/words_eval_noun.txt
	defaultWords string
)

// DefaultHaystack is the embedded essay haystack (The Devil's Dictionary), one entry per line.
func DefaultHaystack() []string { return splitLines(defaultHaystack) }

// DefaultWords is the embedded key vocabulary (WordNet noun lemmas of the evaluation split).
func DefaultWords() []string { return splitLines(defaultWords) }

// ReadLines reads the non-empty lines of a UTF-8 text file (a word list such as
// data/corpus/words_eval_*.txt, or a haystack such as eval_haystack_devil.txt split one
// sentence or paragraph per line), trimmed of surrounding spaces.
func ReadLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eval: read %s: %w", path, err)
	}
	out := splitLines(string(b))
	if len(out) == 0 {
		return nil, fmt.Errorf("eval: %s has no non-empty lines", path)
	}
	return out, nil
}

// splitLines returns the non-empty lines of text, trimmed.
func splitLines(text string) []string {
	var out []string
	for _, ln := range strings.Split(text, "\n") {
		if ln = strings.TrimSpace(ln); ln != "" {
			out = append(out, ln)
		}
	}
	return out
}
