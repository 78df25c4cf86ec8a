package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/dws-gateway/dws/bench"
)

func runFanout(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fanout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var lf loadFlags
	lf.register(fs, "fanout", 15000, 100)
	if f := fs.Lookup("pods"); f != nil {
		f.Usage = "pods to start (1 or 2; 2 needs --spawn-server and Redis): each with its own NATS, pod A holds the sockets, pod B consumes half the groups and forwards to A; the hop with one broker and partitions is dws-bench cluster's"
	}
	var (
		rates    = fs.String("rates", "250,500,1000,2000,4000", "events/s of the sweep, comma-separated, in order")
		step     = fs.Duration("step", 8*time.Second, "measured window of each rate")
		warmup   = fs.Duration("warmup", time.Second, "untracked publishing before each window")
		half     = fs.Duration("half", 20*time.Second, "run at half of saturation after the sweep (0: skip)")
		halfRate = fs.Float64("half-rate", 0, "events/s of the half run (0: half the saturation found)")
		satP99   = fs.Duration("sat-p99", 100*time.Millisecond, "a step whose p99 passes this counts as saturated")
		maxP99   = fs.Duration("assert-p99", 5*time.Millisecond, "asserted p99 at half saturation (negative: report only)")
		maxCross = fs.Duration("assert-cross-p99", time.Millisecond, "asserted p99 added by the cross-pod hop with --pods 2 (negative: report only)")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: dws-bench fanout [flags]\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	rs, err := parseRates(*rates)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench fanout: --rates:", err)
		return 2
	}
	lc, err := lf.config("fanout", args)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench fanout:", err)
		return 2
	}
	if !lf.quiet {
		lc.Connect.Progress = stderr
	}
	cfg := bench.FanoutConfig{
		Load: lc, Rates: rs, Step: *step, Warmup: *warmup, Half: *half, HalfRate: *halfRate,
		SatP99: *satP99, MaxP99: *maxP99, MaxCrossAdded: *maxCross,
		Command: redactedCommand(append([]string{"dws-bench", "fanout"}, args...)),
	}
	rep, err := bench.RunFanout(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench fanout:", err)
		return 1
	}
	rep.Plots = bench.PlotFanout(rep, lf.out)
	jsonPath, mdPath, err := rep.WriteFiles(lf.out)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench fanout: write report:", err)
		return 1
	}
	for _, st := range append(rep.Steps, rep.Half) {
		if st == nil {
			continue
		}
		fmt.Fprintf(stdout, "%-16s offered %8.0f/s delivered %8.0f/s  p50 %6.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  server %5.2f µs/frame  sat %v %s\n",
			st.Name, st.OfferedPerSec, st.DeliveredPerSec, float64(st.Latency.P50Us)/1000, float64(st.Latency.P99Us)/1000,
			float64(st.Latency.P999Us)/1000, st.CPUUsPerFrame, st.Saturated, st.Why)
	}
	if c := rep.CrossPod; c != nil {
		fmt.Fprintf(stdout, "cross-pod: local p99 %.2f ms, cross p99 %.2f ms, added %.2f ms; pod B made %.0f gRPC pushes, pod A delivered %.0f forwarded frames (two brokers: see dws-bench cluster for the hop with partitions)\n",
			float64(c.LocalP99Us)/1000, float64(c.CrossP99Us)/1000, float64(c.AddedP99Us)/1000, c.PodBForwards, c.ForwardedIntoA)
	}
	fmt.Fprintf(stdout, "loss: %d lost, %d duplicates over %d sockets\n", rep.Loss.Lost, rep.Loss.Duplicates, rep.Loss.Checked)
	return finishReport(stdout, rep.Checks, rep.Passed, jsonPath, mdPath)
}

// finishReport prints the missed checks and the report paths and returns
// the exit status: 1 when an asserted check missed.
func finishReport(stdout io.Writer, checks []bench.TargetCheck, passed bool, jsonPath, mdPath string) int {
	for _, c := range checks {
		if !c.Met {
			kind := "reported"
			if c.Assert {
				kind = "ASSERTED"
			}
			fmt.Fprintf(stdout, "missed (%s): %s: %g, want %s\n", kind, c.Name, c.Value, c.Target)
		}
	}
	fmt.Fprintf(stdout, "report: %s, %s\n", jsonPath, mdPath)
	if !passed {
		fmt.Fprintln(stdout, "FAIL")
		return 1
	}
	fmt.Fprintln(stdout, "PASS")
	return 0
}
