package report

import (
	"fmt"
	"image/color"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// EvalPoint is one scored evaluation cell (one sample of one task at one prompt length,
// answered by one method at one compression ratio). It mirrors eval.Cell without importing
// package eval, so report stays independent of the evaluation code.
type EvalPoint struct {
	Task   string
	Length int     // prompt length in tokens (any value; panels are made for those present)
	Method string  // "full" is the full-cache baseline, whatever its Ratio
	Ratio  float64 // compression ratio, the share of the KV cache evicted (0.5, 0.8, ...)
	Score  float64 // in [0, 1]
}

// fullMethod is the method name of the full-cache baseline.
const fullMethod = "full"

// meanAccuracy is the mean accuracy (%) of pts with equal weight per task, and within a
// task equal weight per length: scores are averaged per (task, length) first, those means
// per task, and the task means last. On one length this is RULER's summary number, where a
// task with 500 samples weighs no more than one with 50. ok is false when pts is empty.
func meanAccuracy(pts []EvalPoint) (pct float64, ok bool) {
	type cellKey struct {
		task   string
		length int
	}
	cells := map[cellKey][2]float64{} // sum of scores, count
	for _, p := range pts {
		k := cellKey{p.Task, p.Length}
		v := cells[k]
		cells[k] = [2]float64{v[0] + p.Score, v[1] + 1}
	}
	if len(cells) == 0 {
		return 0, false
	}
	// Sum in sorted key order so the result does not depend on map order.
	keys := make([]cellKey, 0, len(cells))
	for k := range cells {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].task != keys[j].task {
			return keys[i].task < keys[j].task
		}
		return keys[i].length < keys[j].length
	})
	var total float64
	var tasks int
	for i := 0; i < len(keys); {
		var sum float64
		n := 0
		j := i
		for ; j < len(keys) && keys[j].task == keys[i].task; j++ {
			v := cells[keys[j]]
			sum += v[0] / v[1]
			n++
		}
		total += sum / float64(n)
		tasks++
		i = j
	}
	return 100 * total / float64(tasks), true
}

// ratioKey buckets a compression ratio so that ratios equal to 1e-6 compare equal.
func ratioKey(r float64) int64 { return int64(math.Round(r * 1e6)) }

// filter returns the points for which keep is true.
func filter(pts []EvalPoint, keep func(EvalPoint) bool) []EvalPoint {
	var out []EvalPoint
	for _, p := range pts {
		if keep(p) {
			out = append(out, p)
		}
	}
	return out
}

// checkPoints rejects input the plots cannot show: no points, scores outside [0, 1],
// non-finite ratios, unnamed tasks or methods.
func checkPoints(path string, pts []EvalPoint) error {
	if len(pts) == 0 {
		return fmt.Errorf("plot %s: no evaluation points", path)
	}
	for i, p := range pts {
		switch {
		case p.Task == "" || p.Method == "":
			return fmt.Errorf("plot %s: point %d has an empty task or method (%+v)", path, i, p)
		case math.IsNaN(p.Score) || p.Score < 0 || p.Score > 1:
			return fmt.Errorf("plot %s: point %d (%s, length %d, %s, ratio %g) has score %g outside [0, 1]", path, i, p.Task, p.Length, p.Method, p.Ratio, p.Score)
		case math.IsNaN(p.Ratio) || math.IsInf(p.Ratio, 0):
			return fmt.Errorf("plot %s: point %d (%s, %s) has ratio %g", path, i, p.Task, p.Method, p.Ratio)
		}
	}
	return nil
}

// lengthName is a short panel label for a prompt length: 4096 -> "4K".
func lengthName(n int) string {
	switch {
	case n <= 0:
		return "unknown"
	case n%1024 == 0:
		return fmt.Sprintf("%dK", n/1024)
	}
	return fmt.Sprint(n)
}

// methodStyle gives method i of the sorted method list its colour and marker, the same in
// every panel and in the legend.
func methodStyle(i int) (*plotter.Line, *plotter.Scatter) {
	l := &plotter.Line{LineStyle: plotter.DefaultLineStyle}
	l.LineStyle.Color = plotutil.Color(i)
	l.LineStyle.Width = vg.Points(1.5)
	s := &plotter.Scatter{GlyphStyle: plotter.DefaultGlyphStyle}
	s.GlyphStyle.Color = plotutil.Color(i)
	s.GlyphStyle.Shape = plotutil.Shape(i)
	s.GlyphStyle.Radius = vg.Points(3.5)
	return l, s
}

// fullStyle is the dashed grey line of the full-cache baseline.
func fullStyle() draw.LineStyle {
	return draw.LineStyle{Color: color.Gray{Y: 70}, Width: vg.Points(1.2), Dashes: []vg.Length{vg.Points(5), vg.Points(3)}}
}

// AccuracyVsCompression writes one PNG with a panel per prompt length (plus an "all lengths"
// panel when there are several): x is the compression ratio, y the mean accuracy (%) over
// tasks (meanAccuracy: each task weighs the same), one line with markers per method, and the
// full cache's mean as a dashed horizontal line labelled "full". One legend serves every
// panel. A method missing at some ratio simply has no point there; a task missing for a
// method at a ratio is left out of that point's mean.
func AccuracyVsCompression(path string, pts []EvalPoint, title string) error {
	if err := checkPoints(path, pts); err != nil {
		return err
	}
	lengthSet := map[int]bool{}
	methodSet := map[string]bool{}
	ratioSet := map[int64]float64{}
	for _, p := range pts {
		lengthSet[p.Length] = true
		if p.Method != fullMethod {
			methodSet[p.Method] = true
			ratioSet[ratioKey(p.Ratio)] = p.Ratio
		}
	}
	lengths := slices.Sorted(maps.Keys(lengthSet))
	methods := slices.Sorted(maps.Keys(methodSet))
	var ratios []float64
	for _, r := range ratioSet {
		ratios = append(ratios, r)
	}
	sort.Float64s(ratios)
	xmin, xmax := 0.0, 1.0
	if len(ratios) > 0 {
		pad := math.Max(0.05, 0.08*(ratios[len(ratios)-1]-ratios[0]))
		xmin, xmax = ratios[0]-pad, ratios[len(ratios)-1]+pad
	}

	type panel struct {
		name string
		pts  []EvalPoint
	}
	var panels []panel
	for _, n := range lengths {
		n := n
		panels = append(panels, panel{"length " + lengthName(n), filter(pts, func(p EvalPoint) bool { return p.Length == n })})
	}
	if len(lengths) > 1 {
		panels = append(panels, panel{"all lengths", pts})
	}

	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	legend.TextStyle.Font.Size = vg.Points(10)
	legend.Padding = vg.Points(3)
	full := &plotter.Line{LineStyle: fullStyle()}
	if len(filter(pts, func(p EvalPoint) bool { return p.Method == fullMethod })) > 0 {
		legend.Add("full cache", full)
	}
	for i, m := range methods {
		l, s := methodStyle(i)
		legend.Add(m, l, s)
	}

	plots := make([]*plot.Plot, len(panels))
	for pi, pn := range panels {
		pl := plot.New()
		pl.Title.Text = pn.name
		pl.X.Label.Text = "compression ratio"
		pl.Y.Label.Text = "accuracy (%)"
		pl.BackgroundColor = color.White
		pl.X.Min, pl.X.Max = xmin, xmax
		pl.Y.Min, pl.Y.Max = 0, 105
		pl.X.Tick.Marker = valueTicks(ratios, "%g")
		pl.Y.Tick.Marker = valueTicks([]float64{0, 20, 40, 60, 80, 100}, "%g")
		grid := plotter.NewGrid()
		grid.Vertical.Color = color.Gray{Y: 225}
		grid.Horizontal.Color = color.Gray{Y: 225}
		pl.Add(grid)
		if f, ok := meanAccuracy(filter(pn.pts, func(p EvalPoint) bool { return p.Method == fullMethod })); ok {
			line := &plotter.Line{XYs: plotter.XYs{{X: xmin, Y: f}, {X: xmax, Y: f}}, LineStyle: fullStyle()}
			lab, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: xmin, Y: f}}, Labels: []string{fmt.Sprintf(" full %.1f", f)}})
			if err != nil {
				return fmt.Errorf("plot %s: %w", path, err)
			}
			lab.Offset = vg.Point{Y: vg.Points(2)}
			lab.TextStyle[0].Color = color.Gray{Y: 70}
			lab.TextStyle[0].Font.Size = vg.Points(9)
			pl.Add(line, lab)
		}
		for i, m := range methods {
			var xy plotter.XYs
			for _, r := range ratios {
				rk := ratioKey(r)
				sel := filter(pn.pts, func(p EvalPoint) bool { return p.Method == m && ratioKey(p.Ratio) == rk })
				if v, ok := meanAccuracy(sel); ok {
					xy = append(xy, plotter.XY{X: r, Y: v})
				}
			}
			if len(xy) == 0 {
				continue
			}
			l, s := methodStyle(i)
			l.XYs, s.XYs = xy, xy
			pl.Add(l, s)
		}
		plots[pi] = pl
	}

	// Lay the panels out in rows of at most 4, the legend in a column on the right.
	cols := min(len(plots), 4)
	rows := (len(plots) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for r := range grid {
		grid[r] = make([]*plot.Plot, cols)
		for c := range cols {
			if i := r*cols + c; i < len(plots) {
				grid[r][c] = plots[i]
			}
		}
	}
	lr := legend.Rectangle(draw.Canvas{})
	legendW := lr.Max.X - lr.Min.X + 0.3*vg.Inch
	titleH := 0.45 * vg.Inch
	width := vg.Length(cols)*3.2*vg.Inch + legendW
	height := vg.Length(rows)*3*vg.Inch + titleH
	img := vgimg.New(width, height)
	dc := draw.New(img)
	drawTitle(dc, titleH, title, "accuracy vs compression (mean over tasks)")
	body := dc
	body.Max.Y -= titleH
	body.Max.X -= legendW
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4, PadTop: vg.Millimeter, PadBottom: vg.Millimeter, PadLeft: vg.Millimeter, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(grid, tiles, body)
	for r := range grid {
		for c, pl := range grid[r] {
			if pl != nil {
				pl.Draw(canvases[r][c])
			}
		}
	}
	lc := dc
	lc.Min.X = body.Max.X + 0.1*vg.Inch
	lc.Max.Y = body.Max.Y - 0.3*vg.Inch
	legend.Draw(lc)
	return writePNG(path, img)
}

// PerTaskBreakdown writes a PNG heat map of accuracy (%) at one compression ratio: a column
// per task (in order of first appearance in pts) plus a "mean" column (each task weighs the
// same), a row per method with the full cache on top, the number written in each cell.
// Each cell averages over the lengths present (equal weight per length); missing cells are
// grey. It fails when no compressed method has points at ratio.
func PerTaskBreakdown(path string, pts []EvalPoint, ratio float64, title string) error {
	if err := checkPoints(path, pts); err != nil {
		return err
	}
	rk := ratioKey(ratio)
	sel := filter(pts, func(p EvalPoint) bool { return p.Method == fullMethod || ratioKey(p.Ratio) == rk })
	var tasks []string
	seenTask := map[string]bool{}
	methodSet := map[string]bool{}
	hasFull := false
	for _, p := range sel {
		if !seenTask[p.Task] {
			seenTask[p.Task] = true
			tasks = append(tasks, p.Task)
		}
		if p.Method == fullMethod {
			hasFull = true
		} else {
			methodSet[p.Method] = true
		}
	}
	if len(methodSet) == 0 {
		var have []string
		seen := map[int64]bool{}
		for _, p := range pts {
			if p.Method != fullMethod && !seen[ratioKey(p.Ratio)] {
				seen[ratioKey(p.Ratio)] = true
				have = append(have, fmt.Sprint(p.Ratio))
			}
		}
		return fmt.Errorf("plot %s: no compressed method has points at ratio %g (ratios present: [%s])", path, ratio, strings.Join(have, " "))
	}
	methods := slices.Sorted(maps.Keys(methodSet))
	if hasFull {
		methods = append([]string{fullMethod}, methods...)
	}

	// Row 0 of the grid is drawn at the bottom, so method i goes to row len-1-i.
	nr, nc := len(methods), len(tasks)+1
	g := numGrid{rows: nr, cols: nc, v: make([]float64, nr*nc)}
	var labXY plotter.XYs
	var labText []string
	for i, m := range methods {
		r := nr - 1 - i
		ofMethod := filter(sel, func(p EvalPoint) bool { return p.Method == m })
		for c := range nc {
			cell := ofMethod
			if c < len(tasks) {
				t := tasks[c]
				cell = filter(ofMethod, func(p EvalPoint) bool { return p.Task == t })
			}
			v, ok := meanAccuracy(cell)
			text := "-"
			if ok {
				text = fmt.Sprintf("%.1f", v)
			} else {
				v = math.NaN()
			}
			g.v[r*nc+c] = v
			labXY = append(labXY, plotter.XY{X: float64(c), Y: float64(r)})
			labText = append(labText, text)
		}
	}

	pl := plot.New()
	if title == "" {
		title = fmt.Sprintf("accuracy (%%) by task at compression %g, mean over lengths", ratio)
	}
	pl.Title.Text = title
	pl.BackgroundColor = color.White
	hm := plotter.NewHeatMap(g, accuracyPalette{})
	hm.Min, hm.Max = 0, 100
	hm.NaN = color.Gray{Y: 215}
	pl.Add(hm)
	// A rule between the task columns and the mean column.
	sep := &plotter.Line{XYs: plotter.XYs{{X: float64(nc) - 1.5, Y: -0.5}, {X: float64(nc) - 1.5, Y: float64(nr) - 0.5}}, LineStyle: draw.LineStyle{Color: color.Black, Width: vg.Points(1.5)}}
	pl.Add(sep)
	lab, err := plotter.NewLabels(plotter.XYLabels{XYs: labXY, Labels: labText})
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	for i := range lab.TextStyle {
		lab.TextStyle[i].XAlign = draw.XCenter
		lab.TextStyle[i].YAlign = draw.YCenter
		lab.TextStyle[i].Font.Size = vg.Points(10)
	}
	pl.Add(lab)
	xt := make([]plot.Tick, nc)
	for c, t := range append(append([]string(nil), tasks...), "mean") {
		xt[c] = plot.Tick{Value: float64(c), Label: t}
	}
	yt := make([]plot.Tick, nr)
	for i, m := range methods {
		yt[i] = plot.Tick{Value: float64(nr - 1 - i), Label: m}
	}
	pl.X.Tick.Marker = plot.ConstantTicks(xt)
	pl.Y.Tick.Marker = plot.ConstantTicks(yt)
	pl.X.Tick.Label.Rotation = math.Pi / 4
	pl.X.Tick.Label.XAlign = draw.XRight
	pl.X.Tick.Label.YAlign = draw.YTop
	// The cells are their own frame: no axis lines or tick marks.
	pl.X.Tick.Length, pl.Y.Tick.Length = 0, 0
	pl.X.LineStyle.Width, pl.Y.LineStyle.Width = 0, 0
	pl.Title.Padding = vg.Points(6)
	pl.X.Min, pl.X.Max = -0.5, float64(nc)-0.5
	pl.Y.Min, pl.Y.Max = -0.5, float64(nr)-0.5

	width := 1.8*vg.Inch + vg.Length(nc)*0.75*vg.Inch
	height := 2*vg.Inch + vg.Length(nr)*0.42*vg.Inch
	img := vgimg.New(width, height)
	pl.Draw(draw.New(img))
	return writePNG(path, img)
}

// numGrid is an r x c matrix for plotter.HeatMap with cell (c, r) centred on (c, r).
type numGrid struct {
	rows, cols int
	v          []float64 // [rows*cols]
}

func (g numGrid) Dims() (c, r int)   { return g.cols, g.rows }
func (g numGrid) Z(c, r int) float64 { return g.v[r*g.cols+c] }
func (g numGrid) X(c int) float64    { return float64(c) }
func (g numGrid) Y(r int) float64    { return float64(r) }

// accuracyPalette runs from soft red (0 %) through yellow (50 %) to green (100 %), light
// enough everywhere for black numbers to stay readable.
type accuracyPalette struct{}

func (accuracyPalette) Colors() []color.Color {
	anchors := [3][3]float64{{230, 124, 115}, {255, 214, 102}, {110, 196, 140}}
	const n = 64
	cs := make([]color.Color, n)
	for i := range cs {
		t := 2 * float64(i) / float64(n-1)
		a, b := anchors[0], anchors[1]
		if t > 1 {
			a, b, t = anchors[1], anchors[2], t-1
		}
		cs[i] = color.RGBA{R: uint8(a[0] + t*(b[0]-a[0])), G: uint8(a[1] + t*(b[1]-a[1])), B: uint8(a[2] + t*(b[2]-a[2])), A: 255}
	}
	return cs
}

// valueTicks labels exactly the given values.
func valueTicks(vs []float64, format string) plot.ConstantTicks {
	t := make([]plot.Tick, len(vs))
	for i, v := range vs {
		t[i] = plot.Tick{Value: v, Label: fmt.Sprintf(format, v)}
	}
	return t
}

// drawTitle writes title (or def when title is empty) centred in the top h of dc.
func drawTitle(dc draw.Canvas, h vg.Length, title, def string) {
	if title == "" {
		title = def
	}
	top := dc
	top.Min.Y = top.Max.Y - h
	sty := draw.TextStyle{Color: color.Black, Font: plot.DefaultFont, Handler: plot.DefaultTextHandler, XAlign: draw.XCenter}
	sty.Font.Size = 13
	top.FillText(sty, vg.Point{X: (top.Min.X + top.Max.X) / 2, Y: top.Min.Y + 0.12*vg.Inch}, title)
}

// writePNG encodes img as a PNG file at path.
func writePNG(path string, img *vgimg.Canvas) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}
