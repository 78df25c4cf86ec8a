package bench

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runFloorForTest is the test binary acting as "dws-bench floor-server"
// (TestMain, floorEnv): the floor scenario's exec path runs for real.
func runFloorForTest(args []string) int {
	cfg, err := ParseFloorProcessArgs(args, os.Stderr)
	if err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := RunFloorProcess(ctx, cfg); err != nil {
		os.Stderr.WriteString("floor-server: " + err.Error() + "\n")
		return 1
	}
	return 0
}

// testFloorPod starts the floor from this test binary.
func testFloorPod(t *testing.T) FloorPodOptions {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return FloorPodOptions{Command: []string{exe, "floor-server"}, Env: []string{floorEnv + "=1"}}
}

func TestRunFloor_BothSidesMeasured_ImpossibleTargetFailsTheRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	rep, err := RunFloor(ctx, FloorConfig{
		Load: smallLoad(t, 200, 4, "127.0.1.80"), FloorPod: testFloorPod(t),
		Rate: 40, Duration: 1500 * time.Millisecond, Warmup: 300 * time.Millisecond,
		Sweep: []float64{80}, SweepStep: time.Second,
		// A loaded test machine: only the p99 ratio is asserted, and at a
		// bound no server can meet, so the run must fail on it alone.
		HeldP99: 5 * time.Second,
		Targets: &FloorTargets{MaxP99: 1e-6},
	})
	if err != nil {
		t.Fatalf("RunFloor: %v", err)
	}
	if rep.Passed || !slices.Equal(rep.Missed, []string{"dws/floor p99"}) {
		t.Errorf("passed %v, missed %v: want a FAIL on the impossible p99 ratio alone (checks %+v)", rep.Passed, rep.Missed, rep.Checks)
	}
	for _, side := range []*FloorSide{rep.Floor, rep.DWS} {
		m := side.Main
		if side.Sockets.RampOpened != 200 || side.Loss.Checked != 200 || side.Loss.Lost != 0 || side.Loss.Duplicates != 0 || side.Loss.WrongSubject != 0 {
			t.Errorf("%s: opened %d, loss %+v: want 200 sockets, all checked, nothing lost", side.Pod.Name, side.Sockets.RampOpened, side.Loss)
		}
		// 200 sockets over 4 groups: 50 per event; every frame arrives.
		if m.Fanout != 50 || m.Published == 0 || m.Frames != m.Published*50 || m.Latency.P99Us <= 0 || m.CPUUsPerFrame <= 0 {
			t.Errorf("%s main: fanout %g, published %d, frames %d, p99 %d µs, %.1f µs/frame: want all measured", side.Pod.Name, m.Fanout, m.Published, m.Frames, m.Latency.P99Us, m.CPUUsPerFrame)
		}
		if side.HandshakesPerSec <= 0 || side.RSSHeld <= 0 {
			t.Errorf("%s: %.0f handshakes/s, RSS %d: want both measured", side.Pod.Name, side.HandshakesPerSec, side.RSSHeld)
		}
		// Whether a loaded test machine holds 40 or 80 events/s is its
		// business; the ladder's bookkeeping is the test's.
		if len(side.Sweep) > 1 || (len(side.Sweep) == 1 && side.Sweep[0].Rate != 80) || !slices.Contains([]float64{0, 40, 80}, side.MaxRate) {
			t.Errorf("%s: sweep %d rungs, max rate %g: want at most the 80/s rung and a rate of the ladder", side.Pod.Name, len(side.Sweep), side.MaxRate)
		}
		for _, st := range append([]*StepFigures{m}, side.Sweep...) {
			if st.Saturated != (st.Why != "") {
				t.Errorf("%s %s: not held %v but why %q", side.Pod.Name, st.Name, st.Saturated, st.Why)
			}
		}
	}
	if rep.Floor.Pod.Name != "floor" || rep.DWS.Pod.Name == "floor" || rep.Floor.Pod.PID == rep.DWS.Pod.PID {
		t.Errorf("pods %+v, %+v: want the floor, then a dws pod", rep.Floor.Pod, rep.DWS.Pod)
	}
	r := rep.Ratio
	for name, v := range map[string]float64{"p50": r.P50, "p99": r.P99, "p99.9": r.P999, "cpu": r.CPUPerFrame, "rate": r.MaxRate, "handshakes": r.Handshakes} {
		if math.IsNaN(v) || v <= 0 || v > 1000 {
			t.Errorf("ratio %s = %g: want a finite positive dws/floor", name, v)
		}
	}
	if want := float64(rep.DWS.Main.Latency.P99Us) / float64(rep.Floor.Main.Latency.P99Us); r.P99 != want {
		t.Errorf("p99 ratio %g, want dws/floor %g", r.P99, want)
	}
	// The same run judged against report-only targets passes.
	rep.Targets = FloorTargets{}
	rep.Notes = nil
	rep.fill()
	if !rep.Passed {
		t.Errorf("report-only targets: missed %v", rep.Missed)
	}

	jsonPath, mdPath, err := rep.WriteFiles(filepath.Join(t.TempDir(), "floor"))
	if err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	var back map[string]any
	b, _ := os.ReadFile(jsonPath)
	if err := json.Unmarshal(b, &back); err != nil || back["scenario"] != "floor" || back["floor"] == nil || back["dws"] == nil || back["ratio_dws_over_floor"] == nil {
		t.Errorf("JSON report: %v, keys %v", err, back)
	}
	if strings.Contains(string(b), testKeyHex) {
		t.Error("the JSON report holds the token key")
	}
	md, _ := os.ReadFile(mdPath)
	for _, want := range []string{"# dws-bench floor", "## dws / floor", "## floor: steps", "## Checks"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

func TestFloorWindows_RampThenEachStep(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	main := &StepFigures{Name: "dws main 200/s", from: t0.Add(3 * time.Second), to: t0.Add(13 * time.Second)}
	sweep := &StepFigures{Name: "dws sweep 400/s", from: t0.Add(14 * time.Second), to: t0.Add(19 * time.Second)}
	got := floorWindows(t0, 0.25, []*StepFigures{main, sweep})
	want := []FloorWindow{
		{"ramp", t0, t0.Add(250 * time.Millisecond)},
		{"dws main 200/s", main.from, main.to},
		{"dws sweep 400/s", sweep.from, sweep.to},
	}
	if len(got) != len(want) {
		t.Fatalf("%d windows, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Name != want[i].Name || !got[i].Start.Equal(want[i].Start) || !got[i].End.Equal(want[i].End) {
			t.Fatalf("window %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
