package report

import (
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/plotutil"
)

func TestMeanAccuracy(t *testing.T) {
	cases := []struct {
		name string
		pts  []EvalPoint
		want float64
	}{
		// Task a: mean 2/3 over 3 samples; task b: 0 over 1 sample. Equal weight per task gives
		// (2/3 + 0) / 2 = 1/3; weighting samples would give 2/4 = 50 %.
		{"equal weight per task", []EvalPoint{
			{Task: "a", Length: 1, Score: 1}, {Task: "a", Length: 1, Score: 1}, {Task: "a", Length: 1, Score: 0},
			{Task: "b", Length: 1, Score: 0},
		}, 100.0 / 3},
		// Task a: length 1 mean 1 (1 sample), length 2 mean 0 (3 samples) -> 0.5; task b: 0.25.
		// (0.5 + 0.25) / 2 = 0.375; sample-weighted would be 1.25/6.
		{"equal weight per length within a task", []EvalPoint{
			{Task: "a", Length: 1, Score: 1},
			{Task: "a", Length: 2, Score: 0}, {Task: "a", Length: 2, Score: 0}, {Task: "a", Length: 2, Score: 0},
			{Task: "b", Length: 1, Score: 0.5}, {Task: "b", Length: 1, Score: 0},
		}, 37.5},
		{"fractional scores", []EvalPoint{{Task: "x", Score: 0.25}, {Task: "x", Score: 0.75}, {Task: "y", Score: 0.5}}, 50},
	}
	for _, c := range cases {
		got, ok := meanAccuracy(c.pts)
		if !ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: meanAccuracy = %v, %v; want %v", c.name, got, ok, c.want)
		}
	}
	if _, ok := meanAccuracy(nil); ok {
		t.Error("meanAccuracy(nil) reported ok")
	}
}

// evalFixture is a small, incomplete evaluation: 3 tasks, lengths 4096 and 8192, full cache
// plus two methods at three ratios, with snapkv missing at ratio 0.9 and adakv missing task
// "cwe" at ratio 0.8.
func evalFixture() []EvalPoint {
	var pts []EvalPoint
	tasks := []string{"niah_single_1", "vt", "cwe"}
	for _, n := range []int{4096, 8192} {
		for ti, task := range tasks {
			for s := range 2 {
				score := float64((ti+s)%3) / 2
				pts = append(pts, EvalPoint{Task: task, Length: n, Method: "full", Score: math.Min(1, score+0.5)})
				for _, r := range []float64{0.5, 0.8, 0.9} {
					if r != 0.9 {
						pts = append(pts, EvalPoint{Task: task, Length: n, Method: "snapkv", Ratio: r, Score: score * (1 - r/2)})
					}
					if !(r == 0.8 && task == "cwe") {
						pts = append(pts, EvalPoint{Task: task, Length: n, Method: "adakv", Ratio: r, Score: score * (1 - r/3)})
					}
				}
			}
		}
	}
	return pts
}

// decodePNG checks that path is a PNG and returns its pixels.
func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, format, err := image.DecodeConfig(f)
	if err != nil || format != "png" {
		t.Fatalf("%s: DecodeConfig: format %q, err %v", path, format, err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != cfg.Width || b.Dy() != cfg.Height {
		t.Fatalf("%s: config %dx%d, image %v", path, cfg.Width, cfg.Height, b)
	}
	return img
}

// countColor counts the pixels of exactly colour c.
func countColor(img image.Image, c color.Color) int {
	r0, g0, b0, _ := c.RGBA()
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bb, _ := img.At(x, y).RGBA()
			if r == r0 && g == g0 && bb == b0 {
				n++
			}
		}
	}
	return n
}

func TestAccuracyVsCompression(t *testing.T) {
	dir := t.TempDir()
	pts := evalFixture()
	// Two lengths -> 3 panels (4K, 8K, all lengths) of 3.2 x 3 inches at 96 dpi plus a legend.
	path := filepath.Join(dir, "acc.png")
	if err := AccuracyVsCompression(path, pts, "test"); err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, path)
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	if fw, fh := float64(w), float64(h); fw < 3*3.2*96 || fw > 3*3.2*96+300 || fh < 3*96 || fh > 3.6*96 {
		t.Errorf("3-panel figure is %dx%d px", w, h)
	}
	// Both methods are drawn in their own colours (method 0 = adakv, 1 = snapkv); no third.
	for i, want := range []bool{true, true, false} {
		if n := countColor(img, plotutil.Color(i)); (n > 100) != want {
			t.Errorf("colour of method %d: %d pixels, want drawn=%v", i, n, want)
		}
	}

	// One length -> one panel: narrower, same height.
	one := filepath.Join(dir, "one.png")
	if err := AccuracyVsCompression(one, filter(pts, func(p EvalPoint) bool { return p.Length == 4096 }), ""); err != nil {
		t.Fatal(err)
	}
	if w1 := decodePNG(t, one).Bounds().Dx(); w1 >= w-2*3*96 {
		t.Errorf("one-panel figure %d px wide, three-panel %d", w1, w)
	}

	// Five lengths (one of them unknown, 0) -> 6 panels in two rows; a method present only at
	// one length and one ratio; no full cache at all.
	var many []EvalPoint
	for _, n := range []int{0, 1000, 2048, 4096, 16384} {
		many = append(many, EvalPoint{Task: "t", Length: n, Method: "m", Ratio: 0.5, Score: 0.5})
	}
	many = append(many, EvalPoint{Task: "t", Length: 2048, Method: "lonely", Ratio: 0.7, Score: 1})
	mp := filepath.Join(dir, "many.png")
	if err := AccuracyVsCompression(mp, many, "many"); err != nil {
		t.Fatal(err)
	}
	if h2 := decodePNG(t, mp).Bounds().Dy(); h2 < 2*3*96 {
		t.Errorf("6-panel figure is %d px high, want two rows", h2)
	}

	// Only the full cache: still a figure (the baseline line, no method lines).
	if err := AccuracyVsCompression(filepath.Join(dir, "full.png"), filter(pts, func(p EvalPoint) bool { return p.Method == "full" }), ""); err != nil {
		t.Fatal(err)
	}
}

func TestPerTaskBreakdown(t *testing.T) {
	dir := t.TempDir()
	pts := evalFixture()
	grey := color.Gray{Y: 215} // the colour of a missing cell
	// At 0.5 every (task, method) cell exists: 3 tasks + mean = 4 columns, 3 rows.
	path := filepath.Join(dir, "r05.png")
	if err := PerTaskBreakdown(path, pts, 0.5, ""); err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, path)
	wantW := (1.8 + 4*0.75) * 96
	if w := float64(img.Bounds().Dx()); math.Abs(w-wantW) > 2 {
		t.Errorf("width %v px, want %v", w, wantW)
	}
	if n := countColor(img, grey); n > 200 {
		t.Errorf("complete table has %d missing-cell pixels", n)
	}
	// At 0.8 adakv lacks cwe: one grey cell (0.75 x 0.42 in, ~2900 px).
	path = filepath.Join(dir, "r08.png")
	if err := PerTaskBreakdown(path, pts, 0.8, "at 0.8"); err != nil {
		t.Fatal(err)
	}
	if n := countColor(decodePNG(t, path), grey); n < 1000 {
		t.Errorf("missing cell not drawn: %d grey pixels", n)
	}
	// At 0.9 snapkv has no points at all: it gets no row (2 rows instead of 3).
	path = filepath.Join(dir, "r09.png")
	if err := PerTaskBreakdown(path, pts, 0.9, ""); err != nil {
		t.Fatal(err)
	}
	h3 := float64(img.Bounds().Dy())
	if h2 := float64(decodePNG(t, path).Bounds().Dy()); math.Abs(h3-h2-0.42*96) > 2 {
		t.Errorf("heights %v (3 rows) and %v (2 rows) differ by %v, want one row of %v", h3, h2, h3-h2, 0.42*96)
	}
}

func TestEvalPlotErrors(t *testing.T) {
	dir := t.TempDir()
	pts := evalFixture()
	bad := filepath.Join(dir, "no-such-dir", "x.png")
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"empty acc", AccuracyVsCompression(filepath.Join(dir, "a.png"), nil, ""), "no evaluation points"},
		{"empty task", PerTaskBreakdown(filepath.Join(dir, "b.png"), nil, 0.5, ""), "no evaluation points"},
		{"unwritable acc", AccuracyVsCompression(bad, pts, ""), "no-such-dir"},
		{"unwritable task", PerTaskBreakdown(bad, pts, 0.5, ""), "no-such-dir"},
		{"score > 1", AccuracyVsCompression(filepath.Join(dir, "c.png"), []EvalPoint{{Task: "t", Method: "full", Score: 1.5}}, ""), "outside [0, 1]"},
		{"NaN score", PerTaskBreakdown(filepath.Join(dir, "d.png"), []EvalPoint{{Task: "t", Method: "m", Ratio: 0.5, Score: math.NaN()}}, 0.5, ""), "outside [0, 1]"},
		{"no method", AccuracyVsCompression(filepath.Join(dir, "e.png"), []EvalPoint{{Task: "t", Score: 1}}, ""), "empty task or method"},
		{"absent ratio", PerTaskBreakdown(filepath.Join(dir, "f.png"), pts, 0.7, ""), "ratios present"},
		{"only full", PerTaskBreakdown(filepath.Join(dir, "g.png"), filter(pts, func(p EvalPoint) bool { return p.Method == "full" }), 0.5, ""), "no compressed method"},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, c.err, c.want)
		}
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a file appeared under a missing directory")
	}
}
