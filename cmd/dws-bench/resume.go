package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/dws-gateway/dws/bench"
)

func runResume(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("resume", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		spawn    = fs.String("spawn-server", "", "dws `binary` to start the pod with (embedded NATS JetStream; free loopback ports)")
		n        = fs.Int("n", 2000, "sockets (one process: up to its open-file limit)")
		groups   = fs.Int("groups", 20, "(company, agent) groups; one chats subject each")
		rate     = fs.Float64("rate", 100, "events/s over the groups, throughout (each socket gets rate/groups)")
		fraction = fs.Float64("fraction", 0.5, "share of every group's sockets that drop and resume (1 = all; then no untouched sockets)")
		warmup   = fs.Duration("warmup", time.Second, "publishing before the baseline")
		baseline = fs.Duration("baseline", 5*time.Second, "steady window measured before the drop")
		away     = fs.Duration("away", 10*time.Second, "how long the dropped sockets stay closed (events behind ≈ away × rate / groups)")
		catchup  = fs.Duration("catchup-max", 60*time.Second, "longest wait for every resumed socket to catch up")
		tail     = fs.Duration("tail", 2*time.Second, "publishing after the last catch-up")
		maxCU    = fs.Duration("max-catchup-p99", 10*time.Second, "asserted catch-up p99 (negative: report only)")
		maxRatio = fs.Float64("max-p99-ratio", 2, "asserted live p99 of the untouched sockets, storm / before (1-ms floor; negative: report only)")
		src      = fs.String("src", "127.0.0.2", "first client source `address`")
		srcN     = fs.Int("sources", 2, "client source addresses (~28k ephemeral ports each)")
		loops    = fs.Int("loops", 0, "client epoll loops (0: GOMAXPROCS)")
		inflight = fs.Int("inflight", 1000, "handshakes pending at most during the ramp")
		payload  = fs.Int("payload-bytes", 0, "pad each event payload to about this many bytes (0: ≈200)")
		tokenKey = fs.String("token-key", "", "user token AES-256 key, 64 `hex` (default $DWS_AUTH_TOKEN_AES_KEY; prefer the env)")
		apiKey   = fs.String("api-key", "", "API key (default $DWS_AUTH_API_KEY)")
		out      = fs.String("out", "", "report path `prefix`: PREFIX.json and PREFIX.md (default bench-out/resume-<date>)")
		logDir   = fs.String("log-dir", "", "where the pod writes its log (default: a temp dir)")
		quiet    = fs.Bool("quiet", false, "no progress line")
		set      multiFlag
	)
	fs.Var(&set, "server-set", "extra `key=value` for the pod (repeatable), e.g. resume.max_concurrent=64")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: dws-bench resume --spawn-server BINARY [flags]\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *spawn == "" {
		fmt.Fprintln(stderr, "dws-bench resume: --spawn-server (the dws binary) is required")
		return 2
	}
	base, err := netip.ParseAddr(*src)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench resume: --src:", err)
		return 2
	}
	if *tokenKey == "" {
		*tokenKey = os.Getenv("DWS_AUTH_TOKEN_AES_KEY")
	}
	if *apiKey == "" {
		*apiKey = os.Getenv("DWS_AUTH_API_KEY")
	}
	if *out == "" {
		*out = "bench-out/resume-" + time.Now().UTC().Format("20060102-150405")
	}
	cfg := bench.ResumeConfig{
		Spawn: *spawn, Sockets: *n, Groups: *groups, SourceBase: base, Sources: *srcN, Loops: *loops,
		TokenKey: *tokenKey, APIKey: *apiKey, ServerSet: set, LogDir: *logDir, Rate: *rate, Fraction: *fraction,
		Warmup: *warmup, Baseline: *baseline, Away: *away, CatchupMax: *catchup, Tail: *tail,
		MaxCatchupP99: *maxCU, MaxP99Ratio: *maxRatio, PayloadBytes: *payload, Inflight: *inflight,
		Command: redactedCommand(append([]string{"dws-bench", "resume"}, args...)),
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	rep, err := bench.RunResume(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench resume:", err)
		return 1
	}
	jsonPath, mdPath, err := rep.WriteFiles(*out)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench resume: write report:", err)
		return 1
	}
	fmt.Fprintf(stdout, "resumed %d (%.0f events behind), untouched %d: caught up %d, catch-up p50 %.0f ms p99 %.0f ms; lost %d, duplicated %d\n",
		rep.Resumed, rep.BehindMean, rep.Untouched, rep.Caught, float64(rep.Catchup.P50Us)/1000, float64(rep.Catchup.P99Us)/1000,
		rep.ResumedSeq.Lost, rep.ResumedSeq.Duplicated)
	fmt.Fprintf(stdout, "untouched live p99: before %.2f ms, storm %.2f ms (%.2f×); CPU µs/frame live %.2f, extra per replayed %.2f; RSS peak %.1f MiB\n",
		float64(rep.LiveBefore.P99Us)/1000, float64(rep.LiveStorm.P99Us)/1000, rep.P99Ratio,
		rep.CPU.LiveUsPerFrame, rep.CPU.ExtraUsPerReplay, float64(rep.RSSPeak)/(1<<20))
	return finishReport(stdout, rep.Checks, rep.Passed, jsonPath, mdPath)
}
