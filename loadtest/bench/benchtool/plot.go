package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"os"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// PlotResult is what `benchtool plot` prints.
type PlotResult struct {
	In   string `json:"in"`
	Out  string `json:"out"`
	Rows int    `json:"rows"`
}

// scaleColumns are the columns of the scale CSV the plot reads, by header
// name, so that the script may add others.
var scaleColumns = []string{"live_envs", "cold_p50_ms", "cold_p99_ms", "rss_mib", "threads"}

// runPlot draws the scale scenario's curves from its CSV as an SVG: the
// cold-start TTFB p50 and p99, the gateway's RSS and its threads, each
// against the number of live envs, in panels stacked over one x axis.
func runPlot(args []string) (*PlotResult, error) {
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	in := fs.String("in", "", "scale CSV with a header row naming "+fmt.Sprint(scaleColumns))
	out := fs.String("out", "", "SVG file to write")
	title := fs.String("title", "envgate at scale", "title above the top panel")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *in == "" || *out == "" {
		return nil, errors.New("plot: -in and -out are required")
	}
	f, err := os.Open(*in)
	if err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	defer f.Close()
	cols, err := readColumns(f, scaleColumns)
	if err != nil {
		return nil, fmt.Errorf("plot: %s: %w", *in, err)
	}
	live := cols["live_envs"]

	lat := newPanel(*title, "cold-start TTFB (ms)")
	if err := addLine(lat, "p50", live, cols["cold_p50_ms"], 0); err != nil {
		return nil, err
	}
	if err := addLine(lat, "p99", live, cols["cold_p99_ms"], 1); err != nil {
		return nil, err
	}
	// The target: p50 at the most live envs at most twice the p50
	// at none (rows are sorted, so the first is the fewest envs).
	if p50 := cols["cold_p50_ms"]; len(p50) > 1 {
		target := plotter.XYs{{X: live[0], Y: 2 * p50[0]}, {X: live[len(live)-1], Y: 2 * p50[0]}}
		l, err := plotter.NewLine(target)
		if err != nil {
			return nil, fmt.Errorf("plot: target: %w", err)
		}
		l.Color = palette[0]
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		lat.Add(l)
		lat.Legend.Add("target: p50 ≤ 2 × p50 at "+strconv.FormatFloat(live[0], 'f', -1, 64), l)
	}
	rss := newPanel("", "gateway RSS (MiB)")
	if err := addLine(rss, "", live, cols["rss_mib"], 2); err != nil {
		return nil, err
	}
	thr := newPanel("", "gateway OS threads")
	thr.X.Label.Text = "live envs"
	if err := addLine(thr, "", live, cols["threads"], 3); err != nil {
		return nil, err
	}

	// One x range for every panel, so that the curves line up.
	panels := []*plot.Plot{lat, rss, thr}
	xmin, xmax := lat.X.Min, lat.X.Max
	for _, p := range panels {
		xmin, xmax = min(xmin, p.X.Min), max(xmax, p.X.Max)
	}
	ticks := make([]plot.Tick, len(live))
	for i, x := range live {
		ticks[i] = plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'f', -1, 64)}
	}
	for _, p := range panels {
		p.X.Min, p.X.Max = xmin, xmax
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.Y.Min = 0 // absolute scale: a doubling looks like one
	}

	c := vgsvg.New(16*vg.Centimeter, 20*vg.Centimeter)
	dc := draw.New(c)
	grid := [][]*plot.Plot{{lat}, {rss}, {thr}}
	tiles := draw.Tiles{Rows: len(grid), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	canvases := plot.Align(grid, tiles, dc)
	for i, row := range grid {
		row[0].Draw(canvases[i][0])
	}
	w, err := os.Create(*out)
	if err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	if _, err := c.WriteTo(w); err != nil {
		w.Close()
		return nil, fmt.Errorf("plot: write %s: %w", *out, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("plot: write %s: %w", *out, err)
	}
	return &PlotResult{In: *in, Out: *out, Rows: len(live)}, nil
}

func newPanel(title, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = 6 * vg.Millimeter
	return p
}

// palette holds the curves' colours, told apart without relying on hue
// alone: each curve has its own marker shape too.
var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

var glyphs = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.RingGlyph{}}

// addLine adds the curve ys over xs with points marked, in style i.
func addLine(p *plot.Plot, name string, xs, ys []float64, i int) error {
	pts := make(plotter.XYs, len(xs))
	for j := range xs {
		pts[j] = plotter.XY{X: xs[j], Y: ys[j]}
	}
	l, s, err := plotter.NewLinePoints(pts)
	if err != nil {
		return fmt.Errorf("plot: %s: %w", p.Y.Label.Text, err)
	}
	l.Color = palette[i%len(palette)]
	l.Width = vg.Points(1.5)
	s.Color = l.Color
	s.Shape = glyphs[i%len(glyphs)]
	s.Radius = vg.Points(3)
	p.Add(l, s)
	if name != "" {
		p.Legend.Add(name, l, s)
	}
	return nil
}

// readColumns reads a CSV with a header row and returns the named columns
// as numbers, rows sorted by the first name's column.
func readColumns(r io.Reader, names []string) (map[string][]float64, error) {
	recs, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) < 2 {
		return nil, errors.New("want a header row and at least one row of figures")
	}
	idx := map[string]int{}
	for i, h := range recs[0] {
		idx[h] = i
	}
	rows := make([][]float64, 0, len(recs)-1)
	for n, rec := range recs[1:] {
		row := make([]float64, len(names))
		for j, name := range names {
			i, ok := idx[name]
			if !ok {
				return nil, fmt.Errorf("no column %q in the header", name)
			}
			if row[j], err = strconv.ParseFloat(rec[i], 64); err != nil {
				return nil, fmt.Errorf("row %d, column %s: %w", n+2, name, err)
			}
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b []float64) int {
		switch {
		case a[0] < b[0]:
			return -1
		case a[0] > b[0]:
			return 1
		}
		return 0
	})
	cols := map[string][]float64{}
	for j, name := range names {
		for _, row := range rows {
			cols[name] = append(cols[name], row[j])
		}
	}
	return cols, nil
}
