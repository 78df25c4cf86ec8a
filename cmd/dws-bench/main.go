// Command dws-bench is the dws load and soak client: scenarios that hold
// tens of thousands of json.v1 sockets from a few worker processes and
// report what the server did under them. See "dws-bench help".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dws-gateway/dws/bench"
)

// scenarios are the subcommands that run. A scenario not built yet is
// listed in planned and refused (exit 2) rather than stubbed.
var scenarios = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{
	"connect":  runConnect,
	"fanout":   runFanout,
	"slow":     runSlow,
	"soak":     runSoak,
	"cluster":  runCluster,
	"ab":       runAB,
	"floor":    runFloor,
	"resume":   runResume,
	"pipeline": runPipeline,
}

var planned []string

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: dws-bench <scenario> [flags]

scenarios:
  connect   ramp to N authenticated sockets, hold them (optionally churning),
            report handshakes/s, handshake latency and server RSS per socket
  fanout    N sockets over G groups; publish a sweep of rates to JetStream;
            saturation, publish→receive p50/p99/p99.9, loss, duplicates,
            server CPU per frame; a run at half saturation; --pods 2 adds the
            cross-pod hop beside the local path
  slow      a share of the sockets stop reading while events flow: the server
            must close them with 4408 within bounded memory, and the healthy
            sockets' p99 must hold
  soak      N sockets for a long time with churn and steady publishing: zero
            loss among sockets that stayed connected, RSS drift, goroutines,
            error counters from /metrics
  cluster   --pods P pods (default 3) on one NATS JetStream and Redis, the
            sockets spread evenly over them: per-pod sockets and deliveries,
            the cross-pod share of deliveries, p50/p99, loss and duplicates
  floor     the same load against a bare epoll writer (the floor) and then
            dws, back to back: dws/floor ratios of p50/p99/p99.9, server CPU
            per frame, highest rate held, handshakes/s, and RSS per idle
            socket, asserted against issue 12's targets (exit 1 on a miss)
  resume    N sockets, steady publishing; a share drops, stays away, and
            reconnects at once with since/epoch (SPEC §5a): catch-up p50/p99,
            lost/duplicated events, untouched sockets' live p99 in the storm
  pipeline  pod CPU per event with no socket attached (broker, consumer,
            dispatcher), one binary or two in alternation (--a, --b)
  ab        two dws binaries (--a, --b) in alternation on one fanout
            workload: per-binary medians of frames/s, p50, p99, server CPU
            per frame, and the B/A ratios

"dws-bench <scenario> -h" lists a scenario's flags.
`)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches args (program name first) and returns the exit status: 0
// done, 1 the scenario failed, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		usage(stderr)
		return 2
	}
	name, rest := args[1], args[2:]
	switch name {
	case "worker":
		// Hidden: a worker process of a scenario, driven by its parent
		// over stdin/stdout (bench/protocol.go).
		if err := bench.RunWorker(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(stderr, "dws-bench worker:", err)
			return 1
		}
		return 0
	case "floor-server":
		// Hidden: the floor scenario's baseline server (bench/floor_*.go).
		return runFloorServer(ctx, rest, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	scenario, ok := scenarios[name]
	if !ok {
		if slices.Contains(planned, name) {
			fmt.Fprintf(stderr, "dws-bench: scenario %q is planned (issue 5) but not built yet\n\n", name)
		} else {
			fmt.Fprintf(stderr, "dws-bench: unknown scenario %q\n\n", name)
		}
		usage(stderr)
		return 2
	}
	return scenario(ctx, rest, stdout, stderr)
}

func runConnect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr      = fs.String("addr", "127.0.0.1:8080", "dws WebSocket listener `host:port` (IPv4)")
		n         = fs.Int("n", 15000, "sockets to ramp to and hold")
		procs     = fs.Int("procs", 0, "worker processes (0: as few as the open-file limit allows)")
		rate      = fs.Float64("rate", 0, "dials per second during the ramp, all workers (0: as fast as --inflight allows)")
		inflight  = fs.Int("inflight", 1024, "handshakes in flight at most, all workers")
		hold      = fs.Duration("hold", 10*time.Second, "how long to hold the sockets after the ramp")
		churn     = fs.Float64("churn", 0, "closes+reconnects per second during the hold, all workers")
		groups    = fs.Int("groups", 100, "(company, agent) groups the sockets are spread over")
		src       = fs.String("src", "127.0.0.2", "first local source `address`; workers take consecutive slices")
		srcPer    = fs.Int("src-per-proc", 4, "source addresses per worker (~28k ephemeral ports each)")
		loops     = fs.Int("loops", 0, "epoll loops per worker (0: CPUs / procs, at least 1)")
		hsTimeout = fs.Duration("handshake-timeout", 10*time.Second, "per-socket bound from connect() to {\"type\":\"ready\"}")
		settle    = fs.Duration("settle", time.Second, "pause after the ramp before reading the server's held RSS")
		pid       = fs.Int("server-pid", 0, "server process to watch (0: find the process listening on --addr's port)")
		tokenKey  = fs.String("token-key", "", "user token AES-256 key, 64 `hex` (default $DWS_AUTH_TOKEN_AES_KEY; prefer the env: flags show in ps)")
		apiKey    = fs.String("api-key", "", "API key (default $DWS_AUTH_API_KEY)")
		tokenTTL  = fs.Duration("token-ttl", 24*time.Hour, "lifetime of the minted tokens")
		out       = fs.String("out", "", "report path `prefix`: writes PREFIX.json and PREFIX.md (default bench-out/connect-<date>; bench-out/ is untracked: copy results worth keeping to perf/)")
		quiet     = fs.Bool("quiet", false, "no live progress line")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: dws-bench connect [flags]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dws-bench connect: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	server, err := netip.ParseAddrPort(*addr)
	if err != nil {
		fmt.Fprintf(stderr, "dws-bench connect: --addr: %v\n", err)
		return 2
	}
	base, err := netip.ParseAddr(*src)
	if err != nil {
		fmt.Fprintf(stderr, "dws-bench connect: --src: %v\n", err)
		return 2
	}
	if *tokenKey == "" {
		*tokenKey = os.Getenv("DWS_AUTH_TOKEN_AES_KEY")
	}
	if *apiKey == "" {
		*apiKey = os.Getenv("DWS_AUTH_API_KEY")
	}
	if *out == "" {
		*out = "bench-out/connect-" + time.Now().UTC().Format("20060102-150405")
	}
	cfg := bench.ConnectConfig{
		Server: server, Sockets: *n, Procs: *procs, Rate: *rate, Inflight: *inflight,
		Hold: *hold, Churn: *churn, Groups: *groups, SourceBase: base, SourcesPerProc: *srcPer,
		Loops: *loops, HandshakeTimeout: *hsTimeout, Settle: *settle, ServerPID: *pid,
		TokenKey: *tokenKey, APIKey: *apiKey, TokenTTL: *tokenTTL,
		Command: redactedCommand(append([]string{"dws-bench", "connect"}, args...)),
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	rep, err := bench.RunConnect(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench connect:", err)
		return 1
	}
	jsonPath, mdPath, err := rep.WriteFiles(*out)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench connect: write report:", err)
		return 1
	}
	h := rep.Handshakes
	fmt.Fprintf(stdout, "connect: %d/%d sockets in %.2fs: %.0f handshakes/s (peak 1 s: %.0f), p50 %.2f ms, p99 %.2f ms, errors %d\n",
		rep.Sockets.RampOpened, rep.Sockets.Target, h.RampSeconds, h.PerSecond, h.PeakPerSecond,
		float64(h.Latency.P50Us)/1000, float64(h.Latency.P99Us)/1000, sum(rep.Errors))
	if rep.Server.PID > 0 {
		fmt.Fprintf(stdout, "server pid %d: RSS %.1f → %.1f MiB, %.0f B per socket\n", rep.Server.PID,
			float64(rep.Server.RSSBefore)/(1<<20), float64(rep.Server.RSSHeld)/(1<<20), rep.Server.RSSPerSocket)
	}
	fmt.Fprintf(stdout, "client: %s\n", rep.Client.Verdict)
	fmt.Fprintf(stdout, "report: %s, %s\n", jsonPath, mdPath)
	return 0
}

// secretFlags are masked in the command line written to reports.
var secretFlags = map[string]bool{"token-key": true, "api-key": true}

// redactedCommand returns args as a shell line with secret flag values
// replaced by "***", in both the "-flag value" and "-flag=value" forms.
func redactedCommand(args []string) string {
	out := make([]string, 0, len(args))
	maskNext := false
	for i, a := range args {
		switch {
		case maskNext:
			out = append(out, "***")
			maskNext = false
			continue
		case i == 0:
			out = append(out, "dws-bench")
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && secretFlags[name] {
			if hasValue {
				a = a[:strings.Index(a, "=")+1] + "***"
			} else {
				maskNext = true
			}
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
