package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/dws-gateway/dws/bench"
)

func runSlow(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("slow", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var lf loadFlags
	lf.register(fs, "slow", 500, 5)
	var (
		share    = fs.Float64("share", 0.1, "fraction of the sockets that stop reading")
		rate     = fs.Float64("rate", 100, "events/s throughout")
		baseline = fs.Duration("baseline", 8*time.Second, "window before the slow sockets stop reading")
		hold     = fs.Duration("hold", 20*time.Second, "window with the slow sockets paused (longer than the server's slow_consumer_grace plus the time to fill a ring)")
		rcvbuf   = fs.Int("slow-rcvbuf", 4096, "SO_RCVBUF of the slow sockets, so the server's ring fills quickly")
		ring     = fs.Int("ring-bytes", 512<<10, "the server's websocket.outbound_ring_bytes (set on spawned pods; the RSS bound uses it)")
		ratio    = fs.Float64("assert-p99-ratio", 2, "asserted bound of healthy p99 while paused over the baseline's (1-ms floor)")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: dws-bench slow [flags]\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if lf.payload == 0 {
		// A paused socket must fill the kernel's buffers (a few MiB
		// between both ends) and its ring within the hold.
		lf.payload = 32 << 10
	}
	lc, err := lf.config("slow", args)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench slow:", err)
		return 2
	}
	if !lf.quiet {
		lc.Connect.Progress = stderr
	}
	cfg := bench.SlowConfig{
		Load: lc, Share: *share, Rate: *rate, Baseline: *baseline, Hold: *hold, RecvBuf: *rcvbuf,
		RingBytes: *ring, MaxP99Ratio: *ratio,
		Command: redactedCommand(append([]string{"dws-bench", "slow"}, args...)),
	}
	rep, err := bench.RunSlow(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench slow:", err)
		return 1
	}
	rep.Plots = bench.PlotSlow(rep, lf.out)
	jsonPath, mdPath, err := rep.WriteFiles(lf.out)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench slow: write report:", err)
		return 1
	}
	b, p := rep.Baseline, rep.Paused
	fmt.Fprintf(stdout, "healthy p99: baseline %.2f ms, paused %.2f ms; slow sockets %d, server 4408 closes %g, client saw %d ended %v\n",
		float64(b.Latency.P99Us)/1000, float64(p.Latency.P99Us)/1000, rep.Slow.Sockets, rep.Slow.ServerCloses4408, rep.Slow.ClosedSeen, rep.Slow.CloseCodes)
	fmt.Fprintf(stdout, "server RSS: base %.1f MiB, peak %.1f MiB, bound %.1f MiB\n",
		float64(rep.Slow.RSSBase)/(1<<20), float64(rep.Slow.RSSPeak)/(1<<20), float64(rep.Slow.RSSBound)/(1<<20))
	return finishReport(stdout, rep.Checks, rep.Passed, jsonPath, mdPath)
}
