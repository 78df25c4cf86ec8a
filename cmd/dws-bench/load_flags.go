package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dws-gateway/dws/bench"
)

// loadFlags are the flags every publishing scenario (fanout, slow, soak)
// shares: the sockets, the pods, the broker.
type loadFlags struct {
	addr, nats, ops, spawn, redis, src, tokenKey, apiKey, out, logDir string
	n, procs, groups, srcPer, loops, inflight, pods, payload, pid     int
	rate                                                              float64
	hsTimeout, settle, drain                                          time.Duration
	set                                                               multiFlag
	quiet                                                             bool
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (f *loadFlags) register(fs *flag.FlagSet, scenario string, defN, defGroups int) {
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "dws WebSocket listener `host:port` (IPv4), when not --spawn-server")
	fs.StringVar(&f.nats, "nats", "", "NATS `url` the server consumes from, when not --spawn-server")
	fs.StringVar(&f.ops, "ops", "", "the server's ops `host:port` for /metrics, when not --spawn-server")
	fs.StringVar(&f.spawn, "spawn-server", "", "dws `binary` to start the pod(s) with (embedded NATS each; free loopback ports)")
	fs.IntVar(&f.pods, "pods", 1, "pods to start (1 or 2; 2 needs --spawn-server and Redis): pod A holds the sockets, pod B consumes half the groups and forwards to A")
	fs.StringVar(&f.redis, "redis", "127.0.0.1:6379", "Redis `host:port` shared by two pods (keys under a fresh prefix)")
	fs.Var(&f.set, "server-set", "extra `key=value` for spawned pods (repeatable)")
	fs.IntVar(&f.n, "n", defN, "sockets")
	fs.IntVar(&f.groups, "groups", defGroups, "(company, agent) groups the sockets are spread over; one chats subject each")
	fs.IntVar(&f.procs, "procs", 0, "worker processes (0: as few as the open-file limit allows)")
	fs.IntVar(&f.loops, "loops", 0, "epoll loops per worker (0: CPUs / procs, at least 1)")
	fs.IntVar(&f.inflight, "inflight", 1024, "handshakes in flight at most during the ramp, all workers")
	fs.Float64Var(&f.rate, "ramp-rate", 0, "dials per second during the ramp (0: as fast as --inflight allows)")
	fs.StringVar(&f.src, "src", "127.0.0.2", "first local source `address`; workers take consecutive slices")
	fs.IntVar(&f.srcPer, "src-per-proc", 2, "source addresses per worker (~28k ephemeral ports each)")
	fs.IntVar(&f.payload, "payload-bytes", 0, "pad each event payload to about this many bytes (0: ≈200)")
	fs.DurationVar(&f.hsTimeout, "handshake-timeout", 10*time.Second, "per-socket bound from connect() to ready")
	fs.DurationVar(&f.settle, "settle", time.Second, "pause after the ramp")
	fs.DurationVar(&f.drain, "drain", 30*time.Second, "longest wait for frames in flight after each step")
	fs.IntVar(&f.pid, "server-pid", 0, "server process to watch when not spawned (0: found by --addr's port)")
	fs.StringVar(&f.tokenKey, "token-key", "", "user token AES-256 key, 64 `hex` (default $DWS_AUTH_TOKEN_AES_KEY; prefer the env)")
	fs.StringVar(&f.apiKey, "api-key", "", "API key (default $DWS_AUTH_API_KEY)")
	fs.StringVar(&f.out, "out", "", "report path `prefix`: PREFIX.json, PREFIX.md and PREFIX-*.png (default bench-out/"+scenario+"-<date>; bench-out/ is untracked: copy results worth keeping to perf/)")
	fs.StringVar(&f.logDir, "log-dir", "", "where spawned pods write their logs (default: a temp dir)")
	fs.BoolVar(&f.quiet, "quiet", false, "no live progress line")
}

// config turns the flags into a LoadConfig.
func (f *loadFlags) config(scenario string, args []string) (bench.LoadConfig, error) {
	server, err := netip.ParseAddrPort(f.addr)
	if err != nil {
		return bench.LoadConfig{}, fmt.Errorf("--addr: %w", err)
	}
	base, err := netip.ParseAddr(f.src)
	if err != nil {
		return bench.LoadConfig{}, fmt.Errorf("--src: %w", err)
	}
	if f.tokenKey == "" {
		f.tokenKey = os.Getenv("DWS_AUTH_TOKEN_AES_KEY")
	}
	if f.apiKey == "" {
		f.apiKey = os.Getenv("DWS_AUTH_API_KEY")
	}
	if f.out == "" {
		f.out = "bench-out/" + scenario + "-" + time.Now().UTC().Format("20060102-150405")
	}
	if f.spawn == "" && f.nats == "" {
		return bench.LoadConfig{}, errors.New("--nats (or --spawn-server) is required")
	}
	c := bench.LoadConfig{
		Connect: bench.ConnectConfig{
			Server: server, Sockets: f.n, Procs: f.procs, Rate: f.rate, Inflight: f.inflight,
			Groups: f.groups, SourceBase: base, SourcesPerProc: f.srcPer, Loops: f.loops,
			HandshakeTimeout: f.hsTimeout, Settle: f.settle, ServerPID: f.pid,
			TokenKey: f.tokenKey, APIKey: f.apiKey,
		},
		Spawn: f.spawn, NATSURL: f.nats, Ops: f.ops, Pods: f.pods, RedisAddr: f.redis,
		ServerSet: f.set, PayloadBytes: f.payload, DrainMax: f.drain, LogDir: f.logDir,
	}
	return c, nil
}

// parseRates reads "500,1000,2000".
func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := strconv.ParseFloat(part, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("rate %q: want a positive number", part)
		}
		out = append(out, v)
	}
	return out, nil
}

// parseFlags parses args, mapping -h to exit 0 and errors to exit 2.
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "dws-bench %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}
