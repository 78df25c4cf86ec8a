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
		// Issue 10: a pod's death must not stall its partitions past
		// nats.failover.
		killPod     = fs.Int("kill-pod", 0, "SIGKILL pod `N` (1..pods-1; pod-0 carries the broker) during the window and measure the failover; 0 = no kill")
		killAfter   = fs.Duration("kill-after", 0, "when to kill, after the window starts (with --kill-pod; inside --step)")
		maxFailover = fs.Duration("max-failover", 0, "failover time asserted after the kill (0: nats.failover from --server-set, else 5s; negative: report only)")
		failWindow  = fs.Duration("failover-window", time.Second, "events published this close to the kill, before or after, count for the failover time")
		// Issue 10: the cross-pod hop must add <= 1 ms p99.
		maxHop = fs.Duration("assert-hop-p99", time.Millisecond, "asserted p99 the cross-pod hop adds (forwarded p99 - local p99, split by each partition's owner); negative: report only")
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
		KillPod: *killPod, KillAfter: *killAfter, MaxFailover: *maxFailover, FailoverWindow: *failWindow,
		MaxHopP99: *maxHop,
		Command:   redactedCommand(append([]string{"dws-bench", "cluster"}, args...)),
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
	fmt.Fprintf(stdout, "order: %d frames with a server seq, %d reordered; partitions owned %.0f of %d over %d live pods (largest gap to the share %.2f)\n",
		rep.Loss.Sequenced, rep.Loss.Reordered, rep.Partitions.Owned, rep.Partitions.Configured, rep.Partitions.Live, rep.Partitions.MaxOff)
	if h := rep.Hop; h != nil {
		if h.Error != "" {
			fmt.Fprintf(stdout, "hop: no split: %s\n", h.Error)
		} else {
			fmt.Fprintf(stdout, "hop: local p50 %.2f p99 %.2f p99.9 %.2f ms (%d frames); forwarded p50 %.2f p99 %.2f p99.9 %.2f ms (%d frames); added p50 %.2f ms, p99 %.2f ms; %d of %d partitions stable\n",
				ms(h.Local.P50Us), ms(h.Local.P99Us), ms(h.Local.P999Us), h.Local.Count,
				ms(h.Forwarded.P50Us), ms(h.Forwarded.P99Us), ms(h.Forwarded.P999Us), h.Forwarded.Count,
				ms(h.HopP50Us), ms(h.HopP99Us), h.Stable, h.Partitions)
		}
	}
	if f := rep.Failover; f != nil {
		fmt.Fprintf(stdout, "failover: %s killed %.2f s into the window, %d sockets excluded; failover %.2f s (found %v) %s\n",
			f.Pod, f.KilledAfter, f.Sockets, f.Seconds, f.Found, f.Error)
	}
	return finishReport(stdout, rep.Checks, rep.Passed, jsonPath, mdPath)
}

// ms is microseconds as milliseconds.
func ms(us int64) float64 { return float64(us) / 1000 }
