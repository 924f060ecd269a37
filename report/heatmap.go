// Package report renders lukv's results for people: PNG plots (gonum/plot) and
// Markdown tables.
package report

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// grid is an L x H matrix for plotter.HeatMap: columns are KV heads, rows layers.
type grid struct {
	rows, cols int
	v          []float64 // [rows*cols]
}

func (g grid) Dims() (c, r int)   { return g.cols, g.rows }
func (g grid) Z(c, r int) float64 { return g.v[r*g.cols+c] }
func (g grid) X(c int) float64    { return float64(c) }
func (g grid) Y(r int) float64    { return float64(r) }
func (g grid) Min() float64       { return 0 }
func (g grid) Max() float64       { return 1 }
func (g grid) String() string     { return fmt.Sprintf("%dx%d", g.rows, g.cols) }

// HeatPanel is one panel: a title and an L x H matrix of values in [0, 1].
type HeatPanel struct {
	Title        string
	Layers, Cols int
	Values       []float64 // [Layers*Cols]
}

// HeatMaps writes the panels side by side as a PNG: x is the KV head, y the layer, the
// colour the value (0 dark, 1 bright, on one fixed scale for every panel).
func HeatMaps(path, title string, panels []HeatPanel) error {
	if len(panels) == 0 {
		return fmt.Errorf("heat map %s: no panels", path)
	}
	pal := palette.Heat(32, 1)
	row := make([]*plot.Plot, len(panels))
	for i, p := range panels {
		if len(p.Values) != p.Layers*p.Cols {
			return fmt.Errorf("heat map %s: panel %q has %d values for %dx%d", path, p.Title, len(p.Values), p.Layers, p.Cols)
		}
		pl := plot.New()
		pl.Title.Text = p.Title
		pl.X.Label.Text = "KV head"
		pl.Y.Label.Text = "layer"
		hm := plotter.NewHeatMap(grid{rows: p.Layers, cols: p.Cols, v: p.Values}, pal)
		hm.Min, hm.Max = 0, 1
		pl.Add(hm)
		pl.X.Tick.Marker = intTicks{}
		pl.Y.Tick.Marker = intTicks{}
		pl.BackgroundColor = color.White
		row[i] = pl
	}
	width := vg.Length(len(panels)) * 3 * vg.Inch
	img := vgimg.New(width, 3.6*vg.Inch)
	dc := draw.New(img)
	top := dc
	top.Min.Y = top.Max.Y - 0.4*vg.Inch
	body := dc
	body.Max.Y -= 0.4 * vg.Inch
	titleStyle := draw.TextStyle{Color: color.Black, Font: plot.DefaultFont, Handler: plot.DefaultTextHandler, XAlign: draw.XCenter}
	titleStyle.Font.Size = 13
	top.FillText(titleStyle, vg.Point{X: (top.Min.X + top.Max.X) / 2, Y: top.Min.Y + 0.1*vg.Inch}, title)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 2, PadTop: vg.Millimeter, PadBottom: vg.Millimeter, PadLeft: vg.Millimeter, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, body)
	for i, pl := range row {
		pl.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	png := vgimg.PngCanvas{Canvas: img}
	if _, err := png.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// intTicks labels every integer (layers and heads are whole numbers).
type intTicks struct{}

func (intTicks) Ticks(min, max float64) []plot.Tick {
	var t []plot.Tick
	step := 1
	if max-min > 16 {
		step = int((max - min) / 8)
	}
	for v := int(math.Ceil(min)); float64(v) <= max; v += step {
		t = append(t, plot.Tick{Value: float64(v), Label: fmt.Sprint(v)})
	}
	return t
}
