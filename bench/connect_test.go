package bench

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dws-gateway/dws/bench/benchtest"
	"github.com/dws-gateway/dws/bench/client"
)

// workerEnv makes the test binary act as a worker process, so the exec path
// of the suite (re-executing a binary per worker) is tested for real.
const workerEnv = "DWS_BENCH_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := RunWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(floorEnv) == "1" {
		os.Exit(runFloorForTest(os.Args[2:]))
	}
	code := m.Run()
	cleanupDWS()
	os.Exit(code)
}

func startTestServer(t *testing.T, apiKey string) *benchtest.Server {
	t.Helper()
	key, _ := hex.DecodeString(testKeyHex)
	srv, err := benchtest.Start("127.0.0.1:0", benchtest.Options{APIKey: apiKey, TokenKey: key})
	if err != nil {
		t.Fatalf("start test server: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func TestRunConnect_InProcessWorkers_RampHoldChurnAndReport(t *testing.T) {
	const n = 300
	srv := startTestServer(t, "api-key")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	rep, err := RunConnect(ctx, ConnectConfig{
		Server: srv.Addr, Sockets: n, Procs: 2, Groups: 7,
		Hold: 1500 * time.Millisecond, Churn: 100, Settle: 200 * time.Millisecond,
		SourceBase: mustAddr(t, "127.0.0.20"), SourcesPerProc: 2,
		TokenKey: testKeyHex, APIKey: "api-key",
		Spawner: InProcessSpawner{}, ProgressEvery: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("RunConnect: %v", err)
	}
	s := rep.Sockets
	if s.RampOpened != n || s.RampFailed != 0 || s.HeldAfterRamp != n || s.HeldAtEnd != n || s.Dropped != 0 {
		t.Errorf("sockets %+v: want %d opened, held after the ramp and at the end, none failed or dropped", s, n)
	}
	if s.ChurnClosed == 0 || s.ChurnReopened == 0 || s.ChurnFailed != 0 {
		t.Errorf("churn closed/reopened/failed = %d/%d/%d, want some closed and reopened, none failed", s.ChurnClosed, s.ChurnReopened, s.ChurnFailed)
	}
	// A churn close issued in the last moment of the hold may still await
	// its echo when the report is taken: allow that one.
	if got := rep.CloseCodes[1000]; len(rep.Errors) != 0 || got > s.ChurnClosed || got < s.ChurnClosed-1 {
		t.Errorf("errors %v, close codes %v: want none, and one 1000 per churn close (%d)", rep.Errors, rep.CloseCodes, s.ChurnClosed)
	}
	h := rep.Handshakes
	if h.Latency.Count != n || h.LatencyAll.Count != n+s.ChurnReopened || h.PerSecond <= 0 || h.PeakPerSecond <= 0 || h.RampSeconds <= 0 {
		t.Errorf("handshakes %+v: want %d ramp latencies, %d in all, positive rates", h, n, n+s.ChurnReopened)
	}
	var perSecond uint64
	for _, v := range rep.PerSecond {
		perSecond += v
	}
	if perSecond != uint64(n+s.ChurnReopened) {
		t.Errorf("timeline holds %d handshakes, want %d", perSecond, n+s.ChurnReopened)
	}
	// The server runs in this process: it is found by its port.
	if rep.Server.PID != os.Getpid() || rep.Server.RSSBefore <= 0 || rep.Server.RSSHeld <= 0 || len(rep.RSSSamples) == 0 {
		t.Errorf("server figures %+v with %d RSS samples: want this pid and RSS readings", rep.Server, len(rep.RSSSamples))
	}
	if !rep.Client.InProcess || len(rep.Client.Workers) != 2 || rep.Client.Workers[0].Sockets != n/2 {
		t.Errorf("client figures %+v: want 2 in-process workers of %d sockets", rep.Client, n/2)
	}
	peers := srv.Peers()
	for _, a := range []string{"127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.23"} {
		if peers[mustAddr(t, a)] == 0 {
			t.Errorf("no connection from %s (peers %v): each worker must use its own source slice", a, peers)
		}
	}

	prefix := filepath.Join(t.TempDir(), "perf", "connect-test")
	jsonPath, mdPath, err := rep.WriteFiles(prefix)
	if err != nil {
		t.Fatal(err)
	}
	var back ConnectReport
	b, _ := os.ReadFile(jsonPath)
	if err := json.Unmarshal(b, &back); err != nil || back.Sockets != rep.Sockets || back.Scenario != "connect" {
		t.Errorf("JSON report does not read back (%v): %+v", err, back.Sockets)
	}
	if strings.Contains(string(b), testKeyHex) || strings.Contains(string(b), "api-key\"") {
		t.Error("the JSON report contains a secret")
	}
	md, _ := os.ReadFile(mdPath)
	for _, want := range []string{"# dws-bench connect", "handshakes/s over the ramp", "server RSS growth per socket", "**Client:**", "## Targets"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("Markdown summary lacks %q", want)
		}
	}
}

func TestRunConnect_WrongAPIKey_EverySocketFailsWith401(t *testing.T) {
	const n = 40
	srv := startTestServer(t, "right-key")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	rep, err := RunConnect(ctx, ConnectConfig{
		Server: srv.Addr, Sockets: n, Procs: 1, Settle: 100 * time.Millisecond,
		SourceBase: mustAddr(t, "127.0.0.30"), TokenKey: testKeyHex, APIKey: "wrong-key",
		Spawner: InProcessSpawner{},
	})
	if err != nil {
		t.Fatalf("RunConnect: %v", err)
	}
	if rep.Sockets.RampFailed != n || rep.Sockets.RampOpened != 0 || rep.Errors[client.ErrHTTPPrefix+"401"] != n {
		t.Errorf("sockets %+v, errors %v: want all %d failed with http_401", rep.Sockets, rep.Errors, n)
	}
	if met := rep.Targets[1]; met.Met {
		t.Errorf("target %q met with no socket held", met.Name)
	}
}

func TestRunConnect_ExecWorkers_SeparateProcessesReportTheirCPU(t *testing.T) {
	const n = 200
	srv := startTestServer(t, "api-key")
	t.Setenv(workerEnv, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	rep, err := RunConnect(ctx, ConnectConfig{
		Server: srv.Addr, Sockets: n, Procs: 2, Settle: 100 * time.Millisecond,
		SourceBase: mustAddr(t, "127.0.0.40"), SourcesPerProc: 1,
		TokenKey: testKeyHex, APIKey: "api-key",
		Spawner: ExecSpawner{Path: os.Args[0], Args: []string{"-test.run=^$"}},
	})
	if err != nil {
		t.Fatalf("RunConnect: %v", err)
	}
	if rep.Sockets.RampOpened != n || rep.Sockets.HeldAfterRamp != n || len(rep.Errors) != 0 {
		t.Errorf("sockets %+v, errors %v: want %d opened and held", rep.Sockets, rep.Errors, n)
	}
	if rep.Client.InProcess || len(rep.Client.Workers) != 2 {
		t.Fatalf("client %+v: want 2 separate worker processes", rep.Client)
	}
	for i, w := range rep.Client.Workers {
		if w.CPUSecondsAll <= 0 || w.Sockets != n/2 {
			t.Errorf("worker %d: %+v, want its own CPU time and %d sockets", i, w, n/2)
		}
	}
	if rep.Client.Verdict == "" {
		t.Error("no saturation verdict")
	}
}

func TestConnectConfig_Validation(t *testing.T) {
	base := func() ConnectConfig {
		return ConnectConfig{Server: mustAddrPort(t, "127.0.0.1:1"), Sockets: 10, TokenKey: testKeyHex, APIKey: "k"}
	}
	cases := []struct {
		name   string
		mutate func(*ConnectConfig)
		want   string
	}{
		{"no keys", func(c *ConnectConfig) { c.TokenKey, c.APIKey = "", "" }, "token key and an API key are required"},
		{"bad token key", func(c *ConnectConfig) { c.TokenKey = "abcd" }, "64 hex"},
		{"too many sockets per worker for the file limit", func(c *ConnectConfig) { c.Sockets, c.Procs = 100_000, 1 }, "open-file limit"},
		{"no sockets", func(c *ConnectConfig) { c.Sockets = 0 }, "sockets must be > 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			err := c.applyDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("applyDefaults = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	c := base()
	c.Sockets = 50_000
	if err := c.applyDefaults(); err != nil || c.Procs < 3 {
		t.Errorf("auto procs for 50k sockets: %d (%v), want ≥ 3 under a 20k file limit", c.Procs, err)
	}
}
