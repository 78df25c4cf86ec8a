package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Plot colours, one per series in order.
var plotColors = []color.Color{
	color.RGBA{R: 31, G: 119, B: 180, A: 255},
	color.RGBA{R: 255, G: 127, B: 14, A: 255},
	color.RGBA{R: 44, G: 160, B: 44, A: 255},
	color.RGBA{R: 214, G: 39, B: 40, A: 255},
	color.RGBA{R: 148, G: 103, B: 189, A: 255},
	color.RGBA{R: 140, G: 86, B: 75, A: 255},
	color.RGBA{R: 127, G: 127, B: 127, A: 255},
}

// cdfSeries is one latency distribution to draw.
type cdfSeries struct {
	name string
	hdr  string
}

// PlotFanout writes PREFIX-latency-cdf.png (every step) and
// PREFIX-timeline.png (frames/s and server RSS over time) and returns the
// file names, relative to the report. A plot that fails is left out; the
// report's numbers do not depend on it.
func PlotFanout(rep *FanoutReport, prefix string) []string {
	var series []cdfSeries
	for _, st := range append(rep.Steps, rep.Half) {
		if st != nil && st.HDR != "" {
			series = append(series, cdfSeries{name: st.Name, hdr: st.HDR})
		}
	}
	return writePlotFiles(prefix, "fanout: publish → receive latency", series, rep.Samples)
}

// PlotSlow writes the slow scenario's plots next to prefix.
func PlotSlow(rep *SlowReport, prefix string) []string {
	var series []cdfSeries
	for _, st := range []*StepFigures{rep.Baseline, rep.Paused} {
		if st != nil && st.HDR != "" {
			series = append(series, cdfSeries{name: "healthy, " + st.Name, hdr: st.HDR})
		}
	}
	return writePlotFiles(prefix, "slow: healthy sockets' latency", series, rep.Samples)
}

func writePlotFiles(prefix, title string, series []cdfSeries, samples []TimeSample) []string {
	var out []string
	if len(series) > 0 {
		path := prefix + "-latency-cdf.png"
		if err := plotCDF(path, title, series); err == nil {
			out = append(out, filepath.Base(path))
		}
	}
	if len(samples) > 1 {
		path := prefix + "-timeline.png"
		if err := plotTimeline(path, samples); err == nil {
			out = append(out, filepath.Base(path))
		}
	}
	return out
}

// plotCDF draws each histogram's CDF on a log-latency axis: the tail is
// what matters, and a linear axis squeezes it into the last pixel.
func plotCDF(path, title string, series []cdfSeries) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "latency (ms, log)"
	p.Y.Label.Text = "fraction of frames ≤ latency"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	for i, s := range series {
		h, err := hdrhistogram.Decode([]byte(s.hdr))
		if err != nil || h.TotalCount() == 0 {
			continue
		}
		var pts plotter.XYs
		var cum int64
		total := float64(h.TotalCount())
		for _, b := range h.Distribution() {
			if b.Count == 0 {
				continue
			}
			cum += b.Count
			pts = append(pts, plotter.XY{X: math.Max(float64(b.To)/1000, 0.001), Y: float64(cum) / total})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = plotColors[i%len(plotColors)]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (p99 %.2f ms)", s.name, float64(h.ValueAtQuantile(99))/1000), l)
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// plotTimeline draws frames/s and the server's RSS (MiB) over the run, one
// panel each, aligned on time.
func plotTimeline(path string, samples []TimeSample) error {
	var fps, rss plotter.XYs
	for _, s := range samples {
		fps = append(fps, plotter.XY{X: s.Seconds, Y: s.FramesPerSec})
		rss = append(rss, plotter.XY{X: s.Seconds, Y: float64(s.RSS) / (1 << 20)})
	}
	top := plot.New()
	top.Title.Text = "frames received per second (all sockets)"
	top.X.Label.Text = "seconds since the ramp"
	if l, err := plotter.NewLine(fps); err == nil {
		l.Color = plotColors[0]
		top.Add(l)
	}
	bottom := plot.New()
	bottom.Title.Text = "server RSS (MiB, all pods)"
	bottom.X.Label.Text = "seconds since the ramp"
	bottom.Y.Min = 0
	if l, err := plotter.NewLine(rss); err == nil {
		l.Color = plotColors[1]
		bottom.Add(l)
	}
	const w, h = 8 * vg.Inch, 3 * vg.Inch
	img := vgimgCanvas(w, 2*h)
	top.Draw(subCanvas(img, 0, h, w, h))
	bottom.Draw(subCanvas(img, 0, 0, w, h))
	return savePNG(img, path)
}

func vgimgCanvas(w, h vg.Length) *vgimg.Canvas { return vgimg.New(w, h) }

// subCanvas is the rectangle (x, y, w, h) of c, for stacked panels.
func subCanvas(c *vgimg.Canvas, x, y, w, h vg.Length) draw.Canvas {
	dc := draw.New(c)
	dc.Rectangle = vg.Rectangle{Min: vg.Point{X: x, Y: y}, Max: vg.Point{X: x + w, Y: y + h}}
	return dc
}

func savePNG(c *vgimg.Canvas, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
