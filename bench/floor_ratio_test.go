package bench

import (
	"encoding/json"
	"math"
	"slices"
	"testing"
	"time"
)

func TestFloorRatios_DividesDWSByFloor_UnknownWhenTheFloorMeasuredNothing(t *testing.T) {
	floor := FloorFigures{P50Us: 1000, P99Us: 4000, P999Us: 10000, CPUUsPerFrame: 10, MaxRate: 400, HandshakesPerSec: 20000}
	dws := FloorFigures{P50Us: 2000, P99Us: 6000, P999Us: 40000, CPUUsPerFrame: 13, MaxRate: 300, HandshakesPerSec: 18000}
	got := floorRatios(dws, floor)
	want := FloorRatios{P50: 2, P99: 1.5, P999: 4, CPUPerFrame: 1.3, MaxRate: 0.75, Handshakes: 0.9}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"p50", got.P50, want.P50}, {"p99", got.P99, want.P99}, {"p99.9", got.P999, want.P999},
		{"cpu", got.CPUPerFrame, want.CPUPerFrame}, {"rate", got.MaxRate, want.MaxRate}, {"handshakes", got.Handshakes, want.Handshakes},
	} {
		if math.Abs(c.got-c.want) > 1e-12 {
			t.Errorf("%s ratio %g, want %g", c.name, c.got, c.want)
		}
	}
	// A floor that held no rate has no ratio: NaN, which meets no bound
	// and is written as null.
	none := floorRatios(dws, FloorFigures{P50Us: 1000, P99Us: 4000, P999Us: 10000, CPUUsPerFrame: 10, HandshakesPerSec: 1})
	if !math.IsNaN(none.MaxRate) {
		t.Errorf("rate ratio against a floor of 0: %g, want NaN", none.MaxRate)
	}
	b, err := json.Marshal(none)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil || back["max_rate"] != nil || back["p99"] != 1.5 {
		t.Errorf("JSON %s: want max_rate null and p99 1.5 (%v)", b, err)
	}
}

func TestFloorChecks_EachTargetMissesOnItsOwn(t *testing.T) {
	floor := FloorFigures{P50Us: 1000, P99Us: 4000, P999Us: 10000, CPUUsPerFrame: 10, MaxRate: 400, HandshakesPerSec: 20000, IdleSocketBytes: 350, Opened: 100, Target: 100}
	good := FloorFigures{P50Us: 1500, P99Us: 8000, P999Us: 30000, CPUUsPerFrame: 12, MaxRate: 360, HandshakesPerSec: 15000, IdleSocketBytes: 1536, Opened: 100, Target: 100}
	cases := []struct {
		name   string
		change func(d *FloorFigures, f *FloorFigures, tg *FloorTargets)
		missed []string
	}{
		{"every target met at its bound", func(*FloorFigures, *FloorFigures, *FloorTargets) {}, nil},
		{"p99 over 2x", func(d *FloorFigures, _ *FloorFigures, _ *FloorTargets) { d.P99Us = 8001 }, []string{"dws/floor p99"}},
		{"p99.9 over 3x", func(d *FloorFigures, _ *FloorFigures, _ *FloorTargets) { d.P999Us = 30001 }, []string{"dws/floor p99.9"}},
		{"CPU over 1.2x", func(d *FloorFigures, _ *FloorFigures, _ *FloorTargets) { d.CPUUsPerFrame = 12.1 }, []string{"dws/floor server CPU per frame"}},
		{"rate under 0.9x", func(d *FloorFigures, _ *FloorFigures, _ *FloorTargets) { d.MaxRate = 300 }, []string{"dws/floor highest rate held"}},
		{"handshakes under 0.75x", func(d *FloorFigures, _ *FloorFigures, _ *FloorTargets) { d.HandshakesPerSec = 14999 }, []string{"dws/floor handshakes/s"}},
		{"memory over 1.5 KiB", func(d *FloorFigures, _ *FloorFigures, _ *FloorTargets) { d.IdleSocketBytes = 1537 }, []string{"dws RSS per idle socket (bytes)"}},
		{"dws lost an event", func(d *FloorFigures, _ *FloorFigures, _ *FloorTargets) { d.Lost = 1 }, []string{"dws: events lost, duplicated or misrouted"}},
		{"the floor repeated one", func(_ *FloorFigures, f *FloorFigures, _ *FloorTargets) { f.Duplicates = 1 }, []string{"floor: events lost, duplicated or misrouted"}},
		{"a socket missing", func(d *FloorFigures, _ *FloorFigures, _ *FloorTargets) { d.Opened = 99 }, []string{"dws: sockets opened"}},
		{"a floor without a rate fails the rate ratio", func(_ *FloorFigures, f *FloorFigures, _ *FloorTargets) { f.MaxRate = 0 }, []string{"dws/floor highest rate held"}},
		{"a target <= 0 is reported only", func(d *FloorFigures, _ *FloorFigures, tg *FloorTargets) { d.P99Us, tg.MaxP99 = 1e9, 0 }, nil},
		{"p50 is never asserted", func(d *FloorFigures, _ *FloorFigures, _ *FloorTargets) { d.P50Us = 1e9 }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, f, tg := good, floor, DefaultFloorTargets
			tc.change(&d, &f, &tg)
			cs := floorChecks(tg, d, f, floorRatios(d, f))
			if got := missedChecks(cs); !slices.Equal(got, tc.missed) {
				t.Errorf("missed %v, want %v", got, tc.missed)
			}
			for _, c := range cs {
				if math.IsNaN(c.Value) {
					t.Errorf("check %q has a NaN value (JSON cannot hold it)", c.Name)
				}
			}
		})
	}
}

func TestMaxRateHeld_TopOfTheUnbrokenHeldRun(t *testing.T) {
	st := func(rate float64, held bool) *StepFigures { return &StepFigures{Rate: rate, Saturated: !held} }
	cases := []struct {
		name      string
		steps     []*StepFigures
		rate      float64
		bracketed bool
	}{
		{"all held: a lower bound", []*StepFigures{st(100, true), st(200, true)}, 200, false},
		{"ceiling found", []*StepFigures{st(100, true), st(200, true), st(300, false)}, 200, true},
		{"a held rung above a missed one does not count", []*StepFigures{st(100, true), st(200, false), st(300, true)}, 100, true},
		{"main step missed", []*StepFigures{st(100, false)}, 0, true},
	}
	for _, tc := range cases {
		rate, br := maxRateHeld(tc.steps)
		if rate != tc.rate || br != tc.bracketed {
			t.Errorf("%s: rate %g bracketed %v, want %g %v", tc.name, rate, br, tc.rate, tc.bracketed)
		}
	}
}

func TestHeldStep_Criteria(t *testing.T) {
	ok := StepFigures{Rate: 100, PublishRate: 99, Complete: 1, OfferedPerSec: 5000, DeliveredPerSec: 4900, Latency: Latency{P99Us: 50000}}
	cases := []struct {
		name   string
		change func(*StepFigures)
		held   bool
	}{
		{"held at the bounds", func(*StepFigures) {}, true},
		{"p99 over the bound", func(s *StepFigures) { s.Latency.P99Us = 50001 }, false},
		{"frames missing", func(s *StepFigures) { s.Complete = 0.99 }, false},
		{"delivery behind in the window", func(s *StepFigures) { s.DeliveredPerSec = 4700 }, false},
		{"publisher short of the rate", func(s *StepFigures) { s.PublishRate = 90 }, false},
	}
	for _, tc := range cases {
		s := ok
		tc.change(&s)
		held, why := heldStep(&s, 50*time.Millisecond)
		if held != tc.held || (held == (why != "")) {
			t.Errorf("%s: held %v (%q), want %v", tc.name, held, why, tc.held)
		}
	}
}

func TestFellBehind_JudgesTheDrain(t *testing.T) {
	cases := []struct {
		drain  float64
		left   int64
		window time.Duration
		want   bool
	}{
		{0.6, 0, 5 * time.Second, false},
		{1.1, 0, 5 * time.Second, true},
		{3.9, 0, 20 * time.Second, false},
		{4.1, 0, 20 * time.Second, true},
		{0.1, 5, 20 * time.Second, true},
	}
	for _, tc := range cases {
		if got := fellBehind(&StepFigures{DrainSeconds: tc.drain, owedLeft: tc.left}, tc.window); got != tc.want {
			t.Errorf("drain %gs, %d left, window %s: fell behind %v, want %v", tc.drain, tc.left, tc.window, got, tc.want)
		}
	}
}
