package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/dws-gateway/dws/bench"
)

func runAB(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var lf loadFlags
	lf.register(fs, "ab", 5000, 100)
	var (
		a      = fs.String("a", "", "dws `binary` A (the baseline of the ratios)")
		b      = fs.String("b", "", "dws `binary` B (ratios are B/A)")
		rounds = fs.Int("rounds", 2, "rounds per binary, run alternately A, B, A, B, …")
		rate   = fs.Float64("rate", 200, "events/s of every round")
		step   = fs.Duration("step", 10*time.Second, "measured window of each round")
		warmup = fs.Duration("warmup", time.Second, "untracked publishing before each window")
		ratio  = fs.Float64("assert-ratio", 0, "fail unless B/A of p99 and of CPU per frame are <= this and B/A of frames/s >= its inverse (0: report only)")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: dws-bench ab --a BINARY --b BINARY [flags]\n\n(--spawn-server, --addr, --nats and --ops are ignored: each round starts one pod from --a or --b)\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *a == "" || *b == "" {
		fmt.Fprintln(stderr, "dws-bench ab: --a and --b (two dws binaries) are required")
		return 2
	}
	lf.spawn = *a // replaced per round; satisfies the shared flag check
	lc, err := lf.config("ab", args)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench ab:", err)
		return 2
	}
	if !lf.quiet {
		lc.Connect.Progress = stderr
	}
	rep, err := bench.RunAB(ctx, bench.ABConfig{
		Load: lc, A: *a, B: *b, Rounds: *rounds, Rate: *rate, Step: *step, Warmup: *warmup, AssertRatio: *ratio,
		Command: redactedCommand(append([]string{"dws-bench", "ab"}, args...)),
	})
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench ab:", err)
		return 1
	}
	jsonPath, mdPath, err := rep.WriteFiles(lf.out)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench ab: write report:", err)
		return 1
	}
	for _, rd := range rep.Rounds {
		fmt.Fprintf(stdout, "%s%d  delivered %8.0f/s  p50 %6.2f ms  p99 %7.2f ms  server %5.2f µs/frame\n",
			rd.Side, rd.Round, rd.DeliveredPerSec, float64(rd.P50Us)/1000, float64(rd.P99Us)/1000, rd.CPUUsPerFrame)
	}
	for i, s := range []bench.ABSide{rep.A, rep.B} {
		fmt.Fprintf(stdout, "median %s: delivered %8.0f/s  p50 %6.2f ms  p99 %7.2f ms  server %5.2f µs/frame  (%s)\n",
			[]string{"A", "B"}[i], s.DeliveredPerSec, s.P50Us/1000, s.P99Us/1000, s.CPUUsPerFrame, s.Binary)
	}
	r := rep.Ratio
	fmt.Fprintf(stdout, "B/A: delivered %.3f  p50 %.3f  p99 %.3f  CPU/frame %.3f\n", r.DeliveredPerSec, r.P50, r.P99, r.CPUUsPerFrame)
	return finishReport(stdout, rep.Checks, rep.Passed, jsonPath, mdPath)
}
