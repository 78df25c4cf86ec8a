package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/dws-gateway/dws/bench"
)

func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var lf loadFlags
	lf.register(fs, "cluster", 3000, 100)
	// The shared --pods means "1 or 2, pod A holds the sockets" for the
	// other scenarios; here it counts the pods that share the load.
	lf.pods = 3
	if f := fs.Lookup("pods"); f != nil {
		f.DefValue = "3"
		f.Usage = "pods to start (needs --spawn-server and Redis): one NATS JetStream (embedded in pod-0) and one durable consumer shared by all, the sockets spread evenly"
	}
	var (
		rate   = fs.Float64("rate", 100, "events/s published over the groups")
		step   = fs.Duration("step", 10*time.Second, "measured window")
		warmup = fs.Duration("warmup", time.Second, "untracked publishing before the window")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: dws-bench cluster --spawn-server BINARY [flags]\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if lf.spawn == "" {
		fmt.Fprintln(stderr, "dws-bench cluster: --spawn-server is required (the bench starts the pods)")
		return 2
	}
	lc, err := lf.config("cluster", args)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench cluster:", err)
		return 2
	}
	if !lf.quiet {
		lc.Connect.Progress = stderr
	}
	rep, err := bench.RunCluster(ctx, bench.ClusterConfig{
		Load: lc, Pods: lf.pods, Rate: *rate, Step: *step, Warmup: *warmup,
		Command: redactedCommand(append([]string{"dws-bench", "cluster"}, args...)),
	})
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench cluster:", err)
		return 1
	}
	rep.Plots = bench.PlotCluster(rep, lf.out)
	jsonPath, mdPath, err := rep.WriteFiles(lf.out)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench cluster: write report:", err)
		return 1
	}
	for _, p := range rep.Pods {
		fmt.Fprintf(stdout, "%-6s sockets %6d  deliveries local %9.0f forwarded %9.0f\n", p.Name, p.Sockets, p.Local, p.Forwarded)
	}
	st := rep.Step
	fmt.Fprintf(stdout, "cluster: %d pods, cross-pod share %.1f%%, %.0f frames/s, p50 %.2f ms, p99 %.2f ms; lost %d, duplicates %d over %d sockets\n",
		len(rep.Pods), 100*rep.Deliveries.ForwardedShare, st.DeliveredPerSec, float64(st.Latency.P50Us)/1000, float64(st.Latency.P99Us)/1000,
		rep.Loss.Lost, rep.Loss.Duplicates, rep.Loss.Checked)
	return finishReport(stdout, rep.Checks, rep.Passed, jsonPath, mdPath)
}
