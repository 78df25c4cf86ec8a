package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/dws-gateway/dws/bench"
)

func runSoak(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var lf loadFlags
	lf.register(fs, "soak", 15000, 100)
	var (
		rate     = fs.Float64("rate", 100, "events/s throughout")
		duration = fs.Duration("duration", 30*time.Minute, "how long to soak")
		churn    = fs.Float64("churn", 10, "closes+reconnects per second (negative: none)")
		driftPct = fs.Float64("assert-rss-drift-pct", 25, "asserted server RSS growth from the end of the first tenth of the run to its end, in `percent` (25 = RSS may grow by a quarter; must be > 0)")
		oldDrift = fs.String("assert-rss-drift", "", "removed: it took a fraction, so 1 meant 100 %; use --assert-rss-drift-pct")
		gor      = fs.Float64("assert-goroutine-growth", 50, "asserted go_goroutines growth over the run")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: dws-bench soak [flags]\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *oldDrift != "" {
		fmt.Fprintln(stderr, "dws-bench soak: --assert-rss-drift (a fraction: 1 meant 100 %) is replaced by --assert-rss-drift-pct (percent, default 25)")
		return 2
	}
	if *driftPct <= 0 {
		fmt.Fprintln(stderr, "dws-bench soak: --assert-rss-drift-pct must be > 0")
		return 2
	}
	lc, err := lf.config("soak", args)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench soak:", err)
		return 2
	}
	if !lf.quiet {
		lc.Connect.Progress = stderr
	}
	rep, err := bench.RunSoak(ctx, bench.SoakConfig{
		Load: lc, Rate: *rate, Duration: *duration, Churn: *churn, MaxRSSDrift: *driftPct / 100, MaxGoroutineGrowth: *gor,
		Command: redactedCommand(append([]string{"dws-bench", "soak"}, args...)),
	})
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench soak:", err)
		return 1
	}
	rep.Plots = bench.PlotSoak(rep, lf.out)
	jsonPath, mdPath, err := rep.WriteFiles(lf.out)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench soak: write report:", err)
		return 1
	}
	st := rep.Step
	fmt.Fprintf(stdout, "soak: %.0f s, %.0f frames/s, p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms; lost %d, duplicates %d over %d sockets; RSS drift %+.1f%%; goroutines %g → %g\n",
		st.Seconds, st.DeliveredPerSec, float64(st.Latency.P50Us)/1000, float64(st.Latency.P99Us)/1000, float64(st.Latency.P999Us)/1000,
		rep.Loss.Lost, rep.Loss.Duplicates, rep.Loss.Checked, 100*rep.RSSDrift, rep.Goroutines[0], rep.Goroutines[1])
	return finishReport(stdout, rep.Checks, rep.Passed, jsonPath, mdPath)
}
