package formats

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// Filler is the text that surrounds the facts of a sample: a stream of paragraphs from real
// documents (not a repeated sentence). A sample takes consecutive paragraphs from a random
// start, wrapping around at the end.
type Filler interface {
	Len() int
	Paragraph(i int) string // 0 <= i < Len()
}

// Paragraphs is a Filler over a fixed list of paragraphs.
type Paragraphs []string

func (p Paragraphs) Len() int               { return len(p) }
func (p Paragraphs) Paragraph(i int) string { return p[i] }

// maxParagraph caps a paragraph's length (bytes): longer ones are cut at line ends, so that a
// sample's length can be fitted finely and a fact never sits inside a huge block.
const maxParagraph = 1500

// SplitDocuments cuts documents into paragraphs at blank lines; paragraphs longer than
// maxParagraph are cut at line ends (or hard, for a single long line). Whitespace-only
// paragraphs are dropped; text inside a paragraph is kept as is (code keeps its layout).
func SplitDocuments(docs []string) Paragraphs {
	var out Paragraphs
	for _, d := range docs {
		for _, p := range strings.Split(strings.ReplaceAll(d, "\r\n", "\n"), "\n\n") {
			p = strings.Trim(p, "\n")
			if strings.TrimSpace(p) == "" {
				continue
			}
			for len(p) > maxParagraph {
				cut := strings.LastIndexByte(p[:maxParagraph], '\n')
				if cut <= 0 {
					cut = strings.LastIndexByte(p[:maxParagraph], ' ')
				}
				if cut <= 0 {
					cut = maxParagraph
				}
				out = append(out, p[:cut])
				p = strings.TrimLeft(p[cut:], "\n ")
			}
			if strings.TrimSpace(p) != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// Document is one line of the corpus files that scripts/corpus/build_broad.py writes.
type Document struct {
	ID   string `json:"id"`
	Src  string `json:"src"`
	Kind string `json:"kind"`
	Text string `json:"text"`
}

// LoadDocuments reads a JSONL file of Documents (gzip-compressed when the name ends in .gz).
// keep, when not nil, selects documents (e.g. by Kind).
func LoadDocuments(path string, keep func(Document) bool) ([]Document, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		z, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer z.Close()
		r = z
	}
	var docs []Document
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		var d Document
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			return nil, fmt.Errorf("%s:%d: not a document object: %w", path, line, err)
		}
		if d.Text == "" {
			return nil, fmt.Errorf("%s:%d: document %q has no text", path, line, d.ID)
		}
		if keep == nil || keep(d) {
			docs = append(docs, d)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no documents", path)
	}
	return docs, nil
}

// Texts returns the texts of docs.
func Texts(docs []Document) []string {
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = d.Text
	}
	return out
}
