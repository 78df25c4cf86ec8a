package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// FloorConfig configures the floor scenario (issue 12): the same load runs
// back to back against the floor server (StartFloorPod) and against dws —
// the same sockets, groups, payload, clients, publisher, rates and
// durations — and the report gives dws/floor ratios, asserted against
// Targets. Ratios, not milliseconds: both sides see the same machine in the
// same minute, so the verdict is dws's, not the machine's mood.
//
// Each side is one run: start the server, ramp every socket (handshakes/s),
// settle (RSS per idle socket), one main step at Rate for Duration (p50,
// p99, p99.9, CPU per frame), then a sweep of higher rates for the highest
// rate held.
type FloorConfig struct {
	// Load holds the sockets and the publishing; Load.Spawn is the dws
	// binary (required); Load.Floor is set for the floor's side.
	Load LoadConfig
	// FloorPod starts the floor server; zero = "dws-bench floor-server"
	// from this executable.
	FloorPod FloorPodOptions
	// Rate is the main step's events/s; default 200.
	Rate float64
	// Duration is the main step's measured window; default 20 s.
	Duration time.Duration
	// Warmup is the untracked publishing before every step; default 1 s.
	Warmup time.Duration
	// Sweep are the rates tried after the main step, for the highest rate
	// held; rates ≤ Rate are dropped (the main step is the first rung).
	// Default 1.5, 2 and 3 × Rate. Empty after defaults (SkipSweep) = the
	// ladder is the main step alone.
	Sweep     []float64
	SkipSweep bool
	// SweepStep is each sweep rung's measured window; default 5 s.
	SweepStep time.Duration
	// HeldP99 is the p99 a rung must stay within to count as held;
	// default 50 ms.
	HeldP99 time.Duration
	// Targets are the asserted bounds; zero = DefaultFloorTargets.
	Targets *FloorTargets
	// Command is the command line for the report, secrets masked.
	Command string
}

// FloorReport is the floor scenario's result.
type FloorReport struct {
	Scenario  string       `json:"scenario"`
	StartedAt time.Time    `json:"started_at"`
	Command   string       `json:"command,omitempty"`
	Machine   Machine      `json:"machine"`
	Config    LoadSettings `json:"config"`
	// Rate and Seconds are the main step's; Ladder the rates tried for
	// the highest rate held, main step first; HeldP99Ms its p99 bound.
	Rate      float64       `json:"main_events_per_second"`
	Seconds   float64       `json:"main_seconds"`
	Ladder    []float64     `json:"ladder_events_per_second"`
	HeldP99Ms float64       `json:"held_p99_ms"`
	Floor     *FloorSide    `json:"floor"`
	DWS       *FloorSide    `json:"dws"`
	Ratio     FloorRatios   `json:"ratio_dws_over_floor"`
	Targets   FloorTargets  `json:"targets"`
	Checks    []TargetCheck `json:"checks"`
	Passed    bool          `json:"passed"`
	Missed    []string      `json:"missed,omitempty"`
	Notes     []string      `json:"notes,omitempty"`
}

// FloorSide is one server's run.
type FloorSide struct {
	Server           string        `json:"server"`
	Pod              PodInfo       `json:"pod"`
	Sockets          SocketFigures `json:"sockets"`
	HandshakesPerSec float64       `json:"handshakes_per_second"`
	RSSBefore        int64         `json:"rss_before_bytes"`
	RSSHeld          int64         `json:"rss_held_bytes"`
	// IdleSocketBytes is (RSS held − RSS before the ramp) / sockets held,
	// after the settle and before any event.
	IdleSocketBytes float64        `json:"rss_per_idle_socket_bytes"`
	Main            *StepFigures   `json:"main"`
	Sweep           []*StepFigures `json:"sweep,omitempty"`
	// MaxRate is the highest rung of the ladder held with every rung
	// below it held too (0 = not even the main step); Bracketed says a
	// higher rung was tried and not held, so MaxRate is the true ceiling
	// to the ladder's resolution rather than a lower bound.
	MaxRate    float64          `json:"max_rate_held"`
	Bracketed  bool             `json:"max_rate_bracketed"`
	Loss       LossFigures      `json:"loss"`
	Publish    PublishFigures   `json:"publish"`
	Errors     map[string]int64 `json:"errors"`
	CloseCodes map[uint16]int64 `json:"close_codes"`
	// Windows are the wall-clock edges of the side's ramp and of each
	// step's measured window, to line server-side logs and profiles up
	// with the steps.
	Windows []FloorWindow `json:"windows"`
	Notes   []string      `json:"notes,omitempty"`
}

// FloorWindow is one phase of a side, by wall clock.
type FloorWindow struct {
	Name  string    `json:"name"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

func (c *FloorConfig) applyDefaults() error {
	if c.Load.Spawn == "" {
		return errors.New("floor: --spawn-server (the dws binary) is required")
	}
	if c.Load.Pods > 1 {
		return errors.New("floor: one pod per side (--pods 1)")
	}
	if c.Rate <= 0 {
		c.Rate = 200
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = time.Second
	}
	if c.SweepStep <= 0 {
		c.SweepStep = 5 * time.Second
	}
	if c.HeldP99 <= 0 {
		c.HeldP99 = 50 * time.Millisecond
	}
	if len(c.Sweep) == 0 && !c.SkipSweep {
		c.Sweep = []float64{1.5 * c.Rate, 2 * c.Rate, 3 * c.Rate}
	}
	var sweep []float64
	for _, r := range slices.Sorted(slices.Values(c.Sweep)) {
		if r > c.Rate && !slices.Contains(sweep, r) {
			sweep = append(sweep, r)
		}
	}
	c.Sweep = sweep
	if c.Targets == nil {
		t := DefaultFloorTargets
		c.Targets = &t
	}
	return c.Load.applyDefaults()
}

// RunFloor runs the floor side, then the dws side, and compares them. The
// report is returned even when a target is missed (Passed false); an error
// means a side could not be run.
func RunFloor(ctx context.Context, cfg FloorConfig) (*FloorReport, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	rep := &FloorReport{
		Scenario: "floor", StartedAt: time.Now().UTC(), Command: cfg.Command, Machine: describeMachine(),
		Rate: cfg.Rate, Seconds: cfg.Duration.Seconds(), Ladder: append([]float64{cfg.Rate}, cfg.Sweep...),
		HeldP99Ms: float64(cfg.HeldP99.Microseconds()) / 1000, Targets: *cfg.Targets,
	}
	var err error
	if rep.Floor, err = runFloorSide(ctx, &cfg, true); err != nil {
		return nil, fmt.Errorf("floor side: %w", err)
	}
	if rep.DWS, err = runFloorSide(ctx, &cfg, false); err != nil {
		return nil, fmt.Errorf("dws side: %w", err)
	}
	rep.Config = cfg.Load.settings(rep.Ladder, cfg.SweepStep, cfg.Warmup)
	rep.Config.Spawned = true
	rep.fill()
	return rep, nil
}

// runFloorSide runs one server through the ramp, the main step and the
// sweep.
func runFloorSide(ctx context.Context, cfg *FloorConfig, floor bool) (*FloorSide, error) {
	load := cfg.Load
	side := &FloorSide{Server: load.Spawn}
	if floor {
		fo := cfg.FloorPod
		load.Floor, side.Server = &fo, "floor (dws-bench floor-server)"
	}
	l := &loadRun{cfg: &load}
	defer l.stop()
	if err := l.startPods(ctx); err != nil {
		return nil, err
	}
	if err := l.start(ctx, nil); err != nil {
		return nil, err
	}
	defer l.r.killAll()
	if pi := podInfos(l); len(pi) > 0 {
		side.Pod = pi[0]
	}
	name := "dws"
	if floor {
		name = "floor"
	}
	main, err := l.step(ctx, fmt.Sprintf("%s main %g/s", name, cfg.Rate), 1, cfg.Rate, cfg.Warmup, cfg.Duration, nil)
	if err != nil {
		return nil, err
	}
	side.Main = main
	// Past the first rung that fell behind, a backlog is all a higher
	// rate measures: the sweep stops there.
	behind := fellBehind(main, cfg.Duration)
	for i, rate := range cfg.Sweep {
		if behind {
			break
		}
		st, err := l.step(ctx, fmt.Sprintf("%s sweep %g/s", name, rate), i+2, rate, cfg.Warmup, cfg.SweepStep, nil)
		if err != nil {
			return nil, err
		}
		side.Sweep = append(side.Sweep, st)
		behind = fellBehind(st, cfg.SweepStep)
	}
	res, err := l.finish(ctx)
	if err != nil {
		return nil, err
	}
	for _, st := range append([]*StepFigures{main}, side.Sweep...) {
		res.fill(st, l.r.t0)
		held, why := heldStep(st, cfg.HeldP99)
		st.Saturated, st.Why = !held, why
	}
	side.MaxRate, side.Bracketed = maxRateHeld(append([]*StepFigures{main}, side.Sweep...))
	cr := l.r.rep
	side.Sockets = cr.Sockets
	side.HandshakesPerSec = cr.Handshakes.PerSecond
	side.RSSBefore, side.RSSHeld, side.IdleSocketBytes = cr.Server.RSSBefore, cr.Server.RSSHeld, cr.Server.RSSPerSocket
	side.Loss = res.loss
	side.Publish = PublishFigures{Acked: res.acked, Failed: res.pubFailed, LastError: res.pubErr}
	side.Errors, side.CloseCodes = cr.Errors, cr.CloseCodes
	side.Windows = floorWindows(l.r.t0, cr.Handshakes.RampSeconds, append([]*StepFigures{main}, side.Sweep...))
	side.Notes = append(append([]string(nil), l.notes...), cr.Notes...)
	return side, nil
}

// floorWindows lists a side's phases by wall clock: the ramp from t0, then
// each step's measured window.
func floorWindows(t0 time.Time, rampSeconds float64, steps []*StepFigures) []FloorWindow {
	rampEnd := t0.Add(time.Duration(rampSeconds * float64(time.Second)))
	ws := []FloorWindow{{Name: "ramp", Start: t0.UTC(), End: rampEnd.UTC()}}
	for _, st := range steps {
		ws = append(ws, FloorWindow{Name: st.Name, Start: st.from.UTC(), End: st.to.UTC()})
	}
	return ws
}

// fellBehind tells, before the latency figures exist, that a step left a
// backlog: its drain (the wait for the frames still owed once publishing
// stopped) took longer than a fifth of its window, at least a second, or
// ended with frames missing. The workers' progress counts are up to half a
// second stale at either end of a window, too coarse to judge a short
// step's throughput; a backlog shows in the drain whatever the window.
func fellBehind(st *StepFigures, window time.Duration) bool {
	return st.owedLeft > 0 || st.DrainSeconds > max(1, window.Seconds()/5)
}

// heldStep tells whether a rung held, and if not why: every frame it owed
// arrived (complete), delivery kept up with the offered rate inside the
// window, the publisher reached the rate, and p99 stayed within bound.
func heldStep(st *StepFigures, p99 time.Duration) (bool, string) {
	switch {
	case st.PublishRate < 0.95*st.Rate:
		return false, fmt.Sprintf("publisher reached only %.0f/s", st.PublishRate)
	case st.Complete < 0.999:
		return false, fmt.Sprintf("%.2f%% of the frames owed arrived", 100*st.Complete)
	case st.DeliveredPerSec < 0.95*st.OfferedPerSec:
		return false, fmt.Sprintf("delivered %.0f/s of %.0f/s offered", st.DeliveredPerSec, st.OfferedPerSec)
	case st.Latency.P99Us > p99.Microseconds():
		return false, fmt.Sprintf("p99 %s > %s", ms(st.Latency.P99Us), p99)
	}
	return true, ""
}

// maxRateHeld is the rate of the last rung of the unbroken run of held
// rungs from the bottom of the ladder (steps in ladder order, Saturated
// meaning not held), and whether a rung above it was tried and missed.
func maxRateHeld(steps []*StepFigures) (rate float64, bracketed bool) {
	for _, st := range steps {
		if st.Saturated {
			return rate, true
		}
		rate = st.Rate
	}
	return rate, false
}

// figures extracts what the ratios need.
func (s *FloorSide) figures() FloorFigures {
	f := FloorFigures{
		CPUUsPerFrame: s.Main.CPUUsPerFrame, MaxRate: s.MaxRate, HandshakesPerSec: s.HandshakesPerSec,
		IdleSocketBytes: s.IdleSocketBytes, Lost: s.Loss.Lost, Duplicates: s.Loss.Duplicates, Wrong: s.Loss.WrongSubject,
		Opened: s.Sockets.RampOpened, Target: int64(s.Sockets.Target),
		P50Us: s.Main.Latency.P50Us, P99Us: s.Main.Latency.P99Us, P999Us: s.Main.Latency.P999Us,
	}
	return f
}

func (rep *FloorReport) fill() {
	fl, dw := rep.Floor.figures(), rep.DWS.figures()
	rep.Ratio = floorRatios(dw, fl)
	rep.Checks = floorChecks(rep.Targets, dw, fl, rep.Ratio)
	if !rep.Floor.Bracketed || !rep.DWS.Bracketed {
		rep.Notes = append(rep.Notes, "the highest rate held was not bracketed on every side (the top rung held): its ratio compares lower bounds; sweep higher (--sweep) for a real ceiling")
	}
	for _, side := range []*FloorSide{rep.Floor, rep.DWS} {
		if side.Publish.Failed > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %d publishes failed (last: %s); they are not owed to anyone", side.Pod.Name, side.Publish.Failed, side.Publish.LastError))
		}
		for _, n := range side.Notes {
			rep.Notes = append(rep.Notes, side.Pod.Name+": "+n)
		}
	}
	rep.Missed = missedChecks(rep.Checks)
	rep.Passed = len(rep.Missed) == 0
}

// WriteFiles writes prefix.json and prefix.md.
func (rep *FloorReport) WriteFiles(prefix string) (string, string, error) {
	return writeReportFiles(prefix, rep, rep.Markdown())
}
