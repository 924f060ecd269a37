package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// goldenDir holds <name>.tokenizer.json files with <name>.golden.json cases
// produced by the Python tokenizers library (scripts run by the integrator).
const goldenDir = "../tests/testdata/tokenizers"

type goldenCase struct {
	Text       string `json:"text"`
	IDs        []int  `json:"ids"`         // add_special_tokens=False
	IDsSpecial []int  `json:"ids_special"` // add_special_tokens=True
	Decoded    string `json:"decoded"`     // decode(ids, skip_special_tokens=False)
}

// TestGoldens checks Encode and Decode against the Python library on every
// tokenizer in goldenDir.
func TestGoldens(t *testing.T) {
	runGoldens(t, goldenDir)
}

func runGoldens(t *testing.T, dir string) {
	files, err := filepath.Glob(filepath.Join(dir, "*.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	pairs := 0
	for _, gf := range files {
		name := strings.TrimSuffix(filepath.Base(gf), ".golden.json")
		tf := filepath.Join(dir, name+".tokenizer.json")
		if _, err := os.Stat(tf); err != nil {
			continue
		}
		pairs++
		t.Run(name, func(t *testing.T) {
			tok, err := Load(tf)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(gf)
			if err != nil {
				t.Fatal(err)
			}
			var g struct {
				Cases []goldenCase `json:"cases"`
			}
			if err := json.Unmarshal(data, &g); err != nil {
				t.Fatalf("%s: %v", gf, err)
			}
			if len(g.Cases) == 0 {
				t.Fatalf("%s: no cases", gf)
			}
			for k, c := range g.Cases {
				if got := tok.Encode(c.Text, false); !slices.Equal(got, c.IDs) {
					t.Errorf("case %d %q: Encode = %v, want %v", k, c.Text, got, c.IDs)
				}
				if got := tok.Encode(c.Text, true); !slices.Equal(got, c.IDsSpecial) {
					t.Errorf("case %d %q: Encode(addSpecial) = %v, want %v", k, c.Text, got, c.IDsSpecial)
				}
				if got := tok.Decode(c.IDs, false); got != c.Decoded {
					t.Errorf("case %d: Decode = %q, want %q", k, got, c.Decoded)
				}
				var sb strings.Builder
				d := tok.NewStreamDecoder(false)
				for _, id := range c.IDs {
					sb.WriteString(d.Next(id))
				}
				sb.WriteString(d.Flush())
				if sb.String() != c.Decoded {
					t.Errorf("case %d: stream decode = %q, want %q", k, sb.String(), c.Decoded)
				}
			}
		})
	}
	if pairs == 0 {
		t.Fatalf("no <name>.tokenizer.json + <name>.golden.json pairs in %s", dir)
	}
}
