package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/dws-gateway/dws/bench"
)

// runFloorServer is the hidden "floor-server" subcommand: the floor
// scenario starts it as the baseline server (bench.StartFloorPod).
func runFloorServer(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := bench.ParseFloorProcessArgs(args, stderr)
	if err != nil {
		return 2
	}
	if err := bench.RunFloorProcess(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "dws-bench floor-server:", err)
		return 1
	}
	return 0
}

func runFloor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var lf loadFlags
	lf.register(fs, "floor", 5000, 50)
	d := bench.DefaultFloorTargets
	var (
		rate      = fs.Float64("rate", 200, "events/s of the main step")
		duration  = fs.Duration("duration", 20*time.Second, "measured window of the main step")
		warmup    = fs.Duration("warmup", time.Second, "untracked publishing before every step")
		sweep     = fs.String("sweep", "", "events/s tried after the main step for the highest rate held, comma-separated (default 1.5, 2 and 3 × --rate; \"none\" = main step only)")
		sweepStep = fs.Duration("sweep-step", 5*time.Second, "measured window of each sweep rung")
		heldP99   = fs.Duration("held-p99", 50*time.Millisecond, "p99 a rung must stay within to count as held")
		floorLoop = fs.Int("floor-loops", 0, "epoll loops of the floor server (0: one per CPU, as dws)")
		maxP99    = fs.Float64("max-p99-ratio", d.MaxP99, "asserted dws/floor p99 of the main step (<= 0: report only)")
		maxP999   = fs.Float64("max-p999-ratio", d.MaxP999, "asserted dws/floor p99.9 of the main step (<= 0: report only)")
		maxCPU    = fs.Float64("max-cpu-ratio", d.MaxCPU, "asserted dws/floor server CPU per delivered frame (<= 0: report only)")
		minRate   = fs.Float64("min-rate-ratio", d.MinRate, "asserted dws/floor highest rate held (<= 0: report only)")
		minHS     = fs.Float64("min-handshake-ratio", d.MinHandshakes, "asserted dws/floor handshakes/s over the ramp (<= 0: report only)")
		maxIdle   = fs.Float64("max-idle-socket-bytes", d.MaxIdleSocketBytes, "asserted dws RSS per idle socket, bytes (<= 0: report only)")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: dws-bench floor --spawn-server BINARY [flags]\n\nRuns the same load against a bare epoll writer (the floor) and then dws, and asserts dws/floor ratios.\n(--addr, --nats, --ops and --pods are ignored: each side starts one server)\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if lf.spawn == "" {
		fmt.Fprintln(stderr, "dws-bench floor: --spawn-server (the dws binary) is required")
		return 2
	}
	cfg := bench.FloorConfig{
		FloorPod: bench.FloorPodOptions{Loops: *floorLoop},
		Rate:     *rate, Duration: *duration, Warmup: *warmup, SweepStep: *sweepStep, HeldP99: *heldP99,
		Targets: &bench.FloorTargets{MaxP99: *maxP99, MaxP999: *maxP999, MaxCPU: *maxCPU, MinRate: *minRate,
			MinHandshakes: *minHS, MaxIdleSocketBytes: *maxIdle},
		Command: redactedCommand(append([]string{"dws-bench", "floor"}, args...)),
	}
	switch *sweep {
	case "":
	case "none":
		cfg.SkipSweep = true
	default:
		rates, err := parseRates(*sweep)
		if err != nil {
			fmt.Fprintln(stderr, "dws-bench floor: --sweep:", err)
			return 2
		}
		cfg.Sweep = rates
	}
	lf.pods = 1
	lc, err := lf.config("floor", args)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench floor:", err)
		return 2
	}
	if !lf.quiet {
		lc.Connect.Progress = stderr
	}
	cfg.Load = lc
	rep, err := bench.RunFloor(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench floor:", err)
		return 1
	}
	jsonPath, mdPath, err := rep.WriteFiles(lf.out)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench floor: write report:", err)
		return 1
	}
	for _, s := range []*bench.FloorSide{rep.Floor, rep.DWS} {
		m := s.Main.Latency
		fmt.Fprintf(stdout, "%-5s  p50 %6.2f  p99 %7.2f  p99.9 %7.2f ms  CPU %5.2f µs/frame  max rate %6g/s  handshakes %6.0f/s  idle socket %5.0f B  lost %d\n",
			s.Pod.Name, float64(m.P50Us)/1000, float64(m.P99Us)/1000, float64(m.P999Us)/1000, s.Main.CPUUsPerFrame,
			s.MaxRate, s.HandshakesPerSec, s.IdleSocketBytes, s.Loss.Lost+s.Loss.Duplicates+s.Loss.WrongSubject)
	}
	r := rep.Ratio
	fmt.Fprintf(stdout, "dws/floor: p50 %.2f  p99 %.2f  p99.9 %.2f  CPU/frame %.2f  max rate %.2f  handshakes %.2f\n",
		r.P50, r.P99, r.P999, r.CPUPerFrame, r.MaxRate, r.Handshakes)
	return finishReport(stdout, rep.Checks, rep.Passed, jsonPath, mdPath)
}
