package bench

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// SoakConfig configures the soak scenario: N sockets for a long time with
// churn and steady publishing.
type SoakConfig struct {
	Load LoadConfig
	// Rate is the events/s throughout; default 100.
	Rate float64
	// Duration is the soak; default 30 min.
	Duration time.Duration
	// Churn is closes+reconnects per second (Load.Connect.Churn is
	// ignored); default 10.
	Churn float64
	// MaxRSSDrift bounds the server RSS growth from the end of the first
	// tenth of the run to the end, as a fraction (0.25 = 25 %; the
	// command line takes percent, --assert-rss-drift-pct); default 0.25.
	MaxRSSDrift float64
	// MaxGoroutineGrowth bounds go_goroutines growth over the run;
	// default 50.
	MaxGoroutineGrowth float64
	// Command is the command line for the report, secrets masked.
	Command string
}

// SoakReport is the soak scenario's result.
type SoakReport struct {
	Scenario   string             `json:"scenario"`
	StartedAt  time.Time          `json:"started_at"`
	Command    string             `json:"command,omitempty"`
	Machine    Machine            `json:"machine"`
	Config     LoadSettings       `json:"config"`
	Churn      float64            `json:"churn_per_second"`
	Pods       []PodInfo          `json:"pods"`
	Sockets    SocketFigures      `json:"sockets"`
	Step       *StepFigures       `json:"step"`
	RSSEarly   int64              `json:"rss_early_bytes"`
	RSSEnd     int64              `json:"rss_end_bytes"`
	RSSDrift   float64            `json:"rss_drift"`
	Goroutines [2]float64         `json:"goroutines_start_end"`
	Loss       LossFigures        `json:"loss"`
	Publish    PublishFigures     `json:"publish"`
	Errors     map[string]int64   `json:"errors"`
	CloseCodes map[uint16]int64   `json:"close_codes"`
	Metrics    map[string]float64 `json:"server_metrics,omitempty"`
	Samples    []TimeSample       `json:"samples"`
	Checks     []TargetCheck      `json:"checks"`
	Passed     bool               `json:"passed"`
	Notes      []string           `json:"notes,omitempty"`
	Plots      []string           `json:"plots,omitempty"`
}

func (c *SoakConfig) applyDefaults() error {
	if c.Rate <= 0 {
		c.Rate = 100
	}
	if c.Duration <= 0 {
		c.Duration = 30 * time.Minute
	}
	if c.Churn < 0 {
		c.Churn = 0
	} else if c.Churn == 0 {
		c.Churn = 10
	}
	if c.MaxRSSDrift <= 0 {
		c.MaxRSSDrift = 0.25
	}
	if c.MaxGoroutineGrowth <= 0 {
		c.MaxGoroutineGrowth = 50
	}
	c.Load.Connect.Churn = c.Churn
	return c.Load.applyDefaults()
}

// RunSoak runs the soak scenario.
func RunSoak(ctx context.Context, cfg SoakConfig) (*SoakReport, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	l := &loadRun{cfg: &cfg.Load}
	defer l.stop()
	if err := l.startPods(ctx); err != nil {
		return nil, err
	}
	if err := l.start(ctx, nil); err != nil {
		return nil, err
	}
	defer l.r.killAll()
	m0 := l.scrapeFirst()
	st, err := l.step(ctx, "soak", 1, cfg.Rate, time.Second, cfg.Duration, func() error {
		if cfg.Churn > 0 {
			return l.r.broadcast(parentCmd{Cmd: cmdChurn})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	m1 := l.scrapeFirst()
	res, err := l.finish(ctx)
	if err != nil {
		return nil, err
	}
	res.fill(st, l.r.t0)
	cr := l.r.rep
	rep := &SoakReport{
		Scenario: "soak", StartedAt: cr.StartedAt, Command: cfg.Command, Machine: describeMachine(),
		Config: cfg.Load.settings([]float64{cfg.Rate}, 0, 0),
		Churn:  cfg.Churn, Pods: podInfos(l), Sockets: cr.Sockets, Step: st, Loss: res.loss,
		Publish: PublishFigures{Acked: res.acked, Failed: res.pubFailed, LastError: res.pubErr},
		Errors:  cr.Errors, CloseCodes: cr.CloseCodes, Metrics: metricDeltas(m0, m1), Samples: l.samples,
		Notes: append(append([]string(nil), l.notes...), cr.Notes...),
	}
	// RSS drift: from the end of the first tenth of the soak (warm
	// caches, grown pools) to the end.
	early := st.from.Add(cfg.Duration / 10).Sub(l.r.t0).Seconds()
	for _, s := range l.samples {
		if s.Seconds >= early && rep.RSSEarly == 0 {
			rep.RSSEarly = s.RSS
		}
	}
	rep.RSSEnd = st.RSSEnd
	if rep.RSSEarly > 0 {
		rep.RSSDrift = float64(rep.RSSEnd-rep.RSSEarly) / float64(rep.RSSEarly)
	}
	if m0 != nil && m1 != nil {
		rep.Goroutines = [2]float64{m0["go_goroutines"], m1["go_goroutines"]}
	}

	add := func(name, target string, value float64, met, assert bool) {
		rep.Checks = append(rep.Checks, TargetCheck{Name: name, Target: target, Value: value, Met: met, Assert: assert})
	}
	s := rep.Sockets
	add("sockets opened", fmt.Sprintf("= %d", s.Target), float64(s.RampOpened), s.RampOpened == int64(s.Target), true)
	add("sockets checked for loss", "> 0", float64(rep.Loss.Checked), rep.Loss.Checked > 0, true)
	add("events lost (sockets that stayed connected)", "= 0", float64(rep.Loss.Lost), rep.Loss.Lost == 0, true)
	add("duplicate events", "= 0", float64(rep.Loss.Duplicates), rep.Loss.Duplicates == 0, true)
	add("sockets the server dropped", "= 0", float64(s.Dropped), s.Dropped == 0, true)
	add("churn reconnects failed", "= 0", float64(s.ChurnFailed), s.ChurnFailed == 0, true)
	add("server RSS drift (%)", fmt.Sprintf("<= %g", 100*cfg.MaxRSSDrift), 100*rep.RSSDrift, rep.RSSEarly == 0 || rep.RSSDrift <= cfg.MaxRSSDrift, rep.RSSEarly > 0)
	if rep.Metrics != nil {
		g := rep.Goroutines[1] - rep.Goroutines[0]
		add("goroutine growth", fmt.Sprintf("<= %g", cfg.MaxGoroutineGrowth), g, g <= cfg.MaxGoroutineGrowth, true)
		add("recovered panics", "= 0", rep.Metrics["dws_recovered_panics_total"], rep.Metrics["dws_recovered_panics_total"] == 0, true)
		bad := m1.Get("dws_drops_total", `reason="poison"`) - m0.Get("dws_drops_total", `reason="poison"`) +
			m1.Get("dws_drops_total", `reason="bad_subject"`) - m0.Get("dws_drops_total", `reason="bad_subject"`)
		add("poison or bad-subject drops", "= 0", bad, bad == 0, true)
		add("Redis errors", "= 0", rep.Metrics["dws_redis_errors_total"], rep.Metrics["dws_redis_errors_total"] == 0, true)
	} else {
		rep.Notes = append(rep.Notes, "no ops address: goroutines and error counters were not scraped")
	}
	rep.Passed = checksPass(rep.Checks)
	return rep, nil
}

// Markdown renders the soak summary.
func (rep *SoakReport) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# dws-bench soak — %s\n\n", rep.StartedAt.Format("2006-01-02 15:04 UTC"))
	writeHeader(&b, rep.Command, rep.Machine, rep.Config, rep.Pods)
	p("%g events/s for %.0f s with %g closes+reconnects/s.\n\n**Result: %s.**\n\n", rep.Config.Rates[0], rep.Step.Seconds, rep.Churn, passText(rep.Passed))
	writeSteps(&b, []*StepFigures{rep.Step})
	s := rep.Sockets
	p("| figure | value |\n| --- | --- |\n")
	p("| churn closed / reopened / failed | %d / %d / %d |\n", s.ChurnClosed, s.ChurnReopened, s.ChurnFailed)
	p("| server RSS early / end (drift) | %s / %s (%+.1f%%) |\n", mib(rep.RSSEarly), mib(rep.RSSEnd), 100*rep.RSSDrift)
	p("| goroutines start / end | %g / %g |\n\n", rep.Goroutines[0], rep.Goroutines[1])
	writeLossAndChecks(&b, rep.Loss, rep.Publish, rep.Checks, rep.Errors, rep.CloseCodes, rep.Metrics)
	writePlots(&b, rep.Plots)
	for _, n := range rep.Notes {
		p("Note: %s\n\n", n)
	}
	return b.String()
}

// WriteFiles writes prefix.json and prefix.md.
func (rep *SoakReport) WriteFiles(prefix string) (string, string, error) {
	return writeReportFiles(prefix, rep, rep.Markdown())
}

// PlotSoak writes the soak's plots next to prefix.
func PlotSoak(rep *SoakReport, prefix string) []string {
	var series []cdfSeries
	if rep.Step != nil && rep.Step.HDR != "" {
		series = append(series, cdfSeries{name: "soak", hdr: rep.Step.HDR})
	}
	return writePlotFiles(prefix, "soak: publish → receive latency", series, rep.Samples)
}
