package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smallLoad is a few-second load against pods the bench starts from a
// fresh dws build; workers run in-process.
func smallLoad(t *testing.T, n, groups int, src string) LoadConfig {
	t.Helper()
	return LoadConfig{
		Connect: ConnectConfig{
			Sockets: n, Procs: 2, Groups: groups, Settle: 200 * time.Millisecond,
			SourceBase: mustAddr(t, src), SourcesPerProc: 1,
			TokenKey: testKeyHex, APIKey: "bench-api-key",
			Spawner: InProcessSpawner{}, ProgressEvery: 100 * time.Millisecond,
		},
		Spawn: buildDWS(t), LogDir: t.TempDir(), DrainMax: 5 * time.Second,
	}
}

func TestRunFanout_OnePod_DeliversEverythingAndWritesTheReport(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	rep, err := RunFanout(ctx, FanoutConfig{
		Load:  smallLoad(t, 120, 6, "127.0.1.10"),
		Rates: []float64{40, 80}, Step: 1500 * time.Millisecond, Warmup: 300 * time.Millisecond,
		Half: time.Second,
		// A loaded CI machine: the target is 5 ms, the test asserts that
		// the check runs, not the machine's speed.
		MaxP99: 2 * time.Second,
	})
	if err != nil {
		t.Fatalf("RunFanout: %v", err)
	}
	if !rep.Passed {
		t.Errorf("passed = false, checks %+v", rep.Checks)
	}
	if rep.Loss.Checked != 120 || rep.Loss.Lost != 0 || rep.Loss.Duplicates != 0 || rep.Loss.WrongSubject != 0 {
		t.Errorf("loss %+v: want 120 sockets checked, nothing lost, repeated or misrouted", rep.Loss)
	}
	if len(rep.Steps) != 2 || rep.Half == nil {
		t.Fatalf("%d steps, half %v: want 2 steps and a half run", len(rep.Steps), rep.Half)
	}
	for _, st := range append(rep.Steps, rep.Half) {
		// 120 sockets over 6 groups: 20 sockets per event.
		if st.Fanout != 20 || st.Published == 0 || st.Frames != st.Published*20 || st.Complete != 1 {
			t.Errorf("%s: fanout %g, published %d, frames %d, complete %g: want every event on 20 sockets", st.Name, st.Fanout, st.Published, st.Frames, st.Complete)
		}
		if st.Latency.Count != st.Frames || st.Latency.P99Us <= 0 || st.DeliveredPerSec <= 0 || st.ServerCPUSeconds <= 0 || st.CPUUsPerFrame <= 0 {
			t.Errorf("%s: latency %+v, delivered %.0f/s, server CPU %.3fs (%.1f µs/frame): want all measured", st.Name, st.Latency, st.DeliveredPerSec, st.ServerCPUSeconds, st.CPUUsPerFrame)
		}
		if st.Cross != nil {
			t.Errorf("%s: a one-pod run has cross-pod latencies %+v", st.Name, st.Cross)
		}
	}
	// The half run takes half the first rung that delivered under 95 %
	// of its offer, or of the top rung (80) when none did. A 40-event/s
	// rung falling short measures a busy machine, not dws (failed a local
	// make test once: half rate 20), so the rule is asserted, not the
	// machine's mood; the loss checks above still hold every frame.
	if want := provisionalSaturation(rep.Steps) / 2; rep.Half.Rate != want || (want != 40 && want != 20) {
		t.Errorf("half rate %g: want half the first rung short of its offer, or of the top one (got %g)", rep.Half.Rate, want)
	} else if want != 40 {
		t.Logf("the 40/s rung fell short of its offer on this machine; half run at %g", want)
	}
	if rep.Metrics["dws_deliveries_total"] != float64(rep.Loss.Checked)*float64(rep.Publish.Acked)/6 {
		t.Errorf("server counted %g deliveries, want %d", rep.Metrics["dws_deliveries_total"], rep.Loss.Checked*rep.Publish.Acked/6)
	}
	prefix := filepath.Join(t.TempDir(), "fanout")
	jsonPath, mdPath, err := rep.WriteFiles(prefix)
	if err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	var back map[string]any
	b, _ := os.ReadFile(jsonPath)
	if err := json.Unmarshal(b, &back); err != nil || back["scenario"] != "fanout" || back["passed"] != true {
		t.Errorf("JSON report: %v, scenario %v, passed %v", err, back["scenario"], back["passed"])
	}
	if strings.Contains(string(b), testKeyHex) {
		t.Error("the JSON report holds the token key")
	}
	md, _ := os.ReadFile(mdPath)
	for _, want := range []string{"# dws-bench fanout", "## Steps", "## Half of saturation", "PASS"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

func TestRunFanout_UnmeetableP99_FailsTheRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	rep, err := RunFanout(ctx, FanoutConfig{
		Load:     smallLoad(t, 40, 4, "127.0.1.20"),
		HalfRate: 40, Half: time.Second, Warmup: 200 * time.Millisecond,
		MaxP99: time.Microsecond, // no server delivers in 1 µs
	})
	if err != nil {
		t.Fatalf("RunFanout: %v", err)
	}
	if rep.Passed {
		t.Fatal("passed = true with a 1-µs p99 assertion")
	}
	var missed []string
	for _, c := range rep.Checks {
		if c.Assert && !c.Met {
			missed = append(missed, c.Name)
		}
	}
	if len(missed) != 1 || !strings.Contains(missed[0], "p99 at half") {
		t.Errorf("missed asserted checks %v: want exactly the p99 one", missed)
	}
	if !strings.Contains(rep.Markdown(), "FAIL") {
		t.Error("the Markdown does not say FAIL")
	}
}

func TestRunFanout_TwoPods_MeasuresLocalAndCrossPathsSideBySide(t *testing.T) {
	t.Parallel()
	needRedis(t, "127.0.0.1:6379")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	load := smallLoad(t, 80, 4, "127.0.1.30")
	load.Pods = 2
	rep, err := RunFanout(ctx, FanoutConfig{
		Load: load, HalfRate: 40, Half: 1500 * time.Millisecond, Warmup: 300 * time.Millisecond,
		MaxP99: 2 * time.Second, MaxCrossAdded: -1,
	})
	if err != nil {
		t.Fatalf("RunFanout: %v", err)
	}
	if len(rep.Pods) != 2 || rep.CrossPod == nil {
		t.Fatalf("pods %+v, cross %+v: want two pods and a cross-pod comparison", rep.Pods, rep.CrossPod)
	}
	h := rep.Half
	// Groups 0–1 are consumed by pod A, 2–3 by pod B: about half the
	// frames each (round-robin publishing: within one event per group).
	if h.Local == nil || h.Cross == nil || h.Local.Count == 0 || h.Cross.Count == 0 ||
		h.Local.Count+h.Cross.Count != h.Frames || abs64(h.Local.Count-h.Cross.Count) > 2*20 {
		t.Errorf("local %+v, cross %+v of %d frames: want both paths, even shares", h.Local, h.Cross, h.Frames)
	}
	if rep.Loss.Lost != 0 || rep.Loss.Checked != 80 || rep.Loss.Duplicates != 0 {
		t.Errorf("loss %+v: want none over 80 sockets", rep.Loss)
	}
	if rep.Metrics["dws_deliveries_total"] <= 0 {
		t.Errorf("pod A counted no deliveries: %v", rep.Metrics)
	}
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
