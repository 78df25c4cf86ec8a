package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ABConfig configures the ab scenario: two dws binaries run in
// alternation (A, B, A, B, …) on the same fanout workload at one rate.
// Each round is a whole fanout run of one step (a fresh pod, a ramp, the
// step, the drain), so a round leaves nothing behind for the next; the
// alternation spreads the machine's drift (thermal, other processes) over
// both binaries instead of charging it to whichever ran second.
type ABConfig struct {
	// Load holds the sockets and the publishing; Load.Spawn is replaced
	// by A and B in turn, and a round runs one pod.
	Load LoadConfig
	// A and B are the dws binaries compared (B/A ratios).
	A, B string
	// Rounds per binary; default 2.
	Rounds int
	// Rate is the events/s of every round; default 200.
	Rate float64
	// Step is each round's measured window, Warmup the untracked
	// publishing before it; defaults 10 s and 1 s.
	Step, Warmup time.Duration
	// AssertRatio, when > 0, fails the run unless B's medians are within
	// this factor of A's: p99 and CPU per frame B/A ≤ AssertRatio, and
	// delivered frames/s B/A ≥ 1/AssertRatio.
	AssertRatio float64
	// Command is the command line for the report, secrets masked.
	Command string
}

// ABReport is the ab scenario's result.
type ABReport struct {
	Scenario  string        `json:"scenario"`
	StartedAt time.Time     `json:"started_at"`
	Command   string        `json:"command,omitempty"`
	Machine   Machine       `json:"machine"`
	Config    LoadSettings  `json:"config"`
	A         ABSide        `json:"a"`
	B         ABSide        `json:"b"`
	Ratio     ABRatios      `json:"ratio_b_over_a"`
	Rounds    []ABRound     `json:"rounds"`
	Checks    []TargetCheck `json:"checks"`
	Passed    bool          `json:"passed"`
	Notes     []string      `json:"notes,omitempty"`
}

// ABRound is one binary's run in the alternation.
type ABRound struct {
	Side            string  `json:"side"` // "A" or "B"
	Round           int     `json:"round"`
	DeliveredPerSec float64 `json:"delivered_frames_per_second"`
	P50Us           int64   `json:"p50_us"`
	P99Us           int64   `json:"p99_us"`
	CPUUsPerFrame   float64 `json:"server_cpu_us_per_frame"`
	Published       int64   `json:"published"`
	Lost            int64   `json:"lost"`
	Duplicates      int64   `json:"duplicates"`
}

// ABSide is one binary's medians over its rounds.
type ABSide struct {
	Binary          string  `json:"binary"`
	Rounds          int     `json:"rounds"`
	DeliveredPerSec float64 `json:"delivered_frames_per_second"`
	P50Us           float64 `json:"p50_us"`
	P99Us           float64 `json:"p99_us"`
	CPUUsPerFrame   float64 `json:"server_cpu_us_per_frame"`
}

// ABRatios are B's medians divided by A's (0 when A's is 0).
type ABRatios struct {
	DeliveredPerSec float64 `json:"delivered_frames_per_second"`
	P50             float64 `json:"p50"`
	P99             float64 `json:"p99"`
	CPUUsPerFrame   float64 `json:"server_cpu_us_per_frame"`
}

func (c *ABConfig) applyDefaults() error {
	if c.A == "" || c.B == "" {
		return errors.New("ab: --a and --b (two dws binaries) are required")
	}
	for _, b := range []string{c.A, c.B} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("ab: %w", err)
		}
	}
	if c.Rounds <= 0 {
		c.Rounds = 2
	}
	if c.Rate <= 0 {
		c.Rate = 200
	}
	if c.Step <= 0 {
		c.Step = 10 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = time.Second
	}
	if c.Load.Pods > 1 {
		return errors.New("ab: one pod per round (--pods 1)")
	}
	return nil
}

// RunAB runs the ab scenario: 2 × Rounds fanout runs, A first. The
// report is returned even when the ratio assertion fails (Passed false);
// an error means a round failed.
func RunAB(ctx context.Context, cfg ABConfig) (*ABReport, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	rep := &ABReport{Scenario: "ab", StartedAt: time.Now().UTC(), Command: cfg.Command, Machine: describeMachine()}
	for i := range 2 * cfg.Rounds {
		side, bin := "A", cfg.A
		if i%2 == 1 {
			side, bin = "B", cfg.B
		}
		round := i/2 + 1
		load := cfg.Load
		load.Spawn, load.Pods = bin, 1
		if load.LogDir != "" {
			load.LogDir = filepath.Join(cfg.Load.LogDir, fmt.Sprintf("%s%d", strings.ToLower(side), round))
		}
		// One step, no sweep and nothing asserted: the ratios are the
		// result, the fanout checks are the fanout scenario's business.
		fr, err := RunFanout(ctx, FanoutConfig{
			Load: load, HalfRate: cfg.Rate, Half: cfg.Step, Warmup: cfg.Warmup,
			MaxP99: -1, MaxCrossAdded: -1,
		})
		if err != nil {
			return nil, fmt.Errorf("ab: %s round %d (%s): %w", side, round, bin, err)
		}
		if i == 0 {
			rep.Config = fr.Config
			rep.Config.Spawned, rep.Config.Rates, rep.Config.StepSeconds = true, []float64{cfg.Rate}, cfg.Step.Seconds()
		}
		h := fr.Half
		rep.Rounds = append(rep.Rounds, ABRound{
			Side: side, Round: round, DeliveredPerSec: h.DeliveredPerSec, P50Us: h.Latency.P50Us, P99Us: h.Latency.P99Us,
			CPUUsPerFrame: h.CPUUsPerFrame, Published: h.Published, Lost: fr.Loss.Lost, Duplicates: fr.Loss.Duplicates,
		})
		for _, n := range fr.Notes {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s round %d: %s", side, round, n))
		}
	}
	rep.fill(&cfg)
	return rep, nil
}

func (rep *ABReport) fill(cfg *ABConfig) {
	rep.A = sideMedians("A", cfg.A, rep.Rounds)
	rep.B = sideMedians("B", cfg.B, rep.Rounds)
	a, b := rep.A, rep.B
	rep.Ratio = ABRatios{
		DeliveredPerSec: ratio(b.DeliveredPerSec, a.DeliveredPerSec),
		P50:             ratio(b.P50Us, a.P50Us),
		P99:             ratio(b.P99Us, a.P99Us),
		CPUUsPerFrame:   ratio(b.CPUUsPerFrame, a.CPUUsPerFrame),
	}
	add := func(name, target string, value float64, met, assert bool) {
		rep.Checks = append(rep.Checks, TargetCheck{Name: name, Target: target, Value: value, Met: met, Assert: assert})
	}
	add("rounds completed", fmt.Sprintf("= %d", 2*cfg.Rounds), float64(len(rep.Rounds)), len(rep.Rounds) == 2*cfg.Rounds, true)
	var lost, dup int64
	for _, r := range rep.Rounds {
		lost += r.Lost
		dup += r.Duplicates
	}
	add("events lost, all rounds", "= 0", float64(lost), lost == 0, false)
	add("duplicate events, all rounds", "= 0", float64(dup), dup == 0, false)
	if r := cfg.AssertRatio; r > 0 {
		add("B/A p99", fmt.Sprintf("<= %g", r), rep.Ratio.P99, rep.Ratio.P99 <= r, true)
		add("B/A server CPU per frame", fmt.Sprintf("<= %g", r), rep.Ratio.CPUUsPerFrame, rep.Ratio.CPUUsPerFrame <= r, true)
		add("B/A delivered frames/s", fmt.Sprintf(">= %.3g", 1/r), rep.Ratio.DeliveredPerSec, rep.Ratio.DeliveredPerSec >= 1/r, true)
	}
	rep.Passed = checksPass(rep.Checks)
}

// sideMedians is the medians of one side's rounds.
func sideMedians(side, bin string, rounds []ABRound) ABSide {
	var dl, p50, p99, cpu []float64
	for _, r := range rounds {
		if r.Side != side {
			continue
		}
		dl = append(dl, r.DeliveredPerSec)
		p50 = append(p50, float64(r.P50Us))
		p99 = append(p99, float64(r.P99Us))
		cpu = append(cpu, r.CPUUsPerFrame)
	}
	return ABSide{Binary: bin, Rounds: len(dl), DeliveredPerSec: median(dl), P50Us: median(p50), P99Us: median(p99), CPUUsPerFrame: median(cpu)}
}

// median of vs (the mean of the middle two for an even count); 0 when
// empty.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ratio(b, a float64) float64 {
	if a == 0 {
		return 0
	}
	return b / a
}

// Markdown renders the ab summary.
func (rep *ABReport) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# dws-bench ab — %s\n\n", rep.StartedAt.Format("2006-01-02 15:04 UTC"))
	writeHeader(&b, rep.Command, rep.Machine, rep.Config, nil)
	p("A = `%s`, B = `%s`; %d round(s) each, alternating A, B, …; each round is a fresh pod, a ramp and one step at %g events/s.\n\n",
		rep.A.Binary, rep.B.Binary, rep.A.Rounds, firstRate(rep.Config.Rates))
	p("**Result: %s.**\n\n", passText(rep.Passed))
	p("## Medians\n\n| | delivered frames/s | p50 | p99 | server CPU µs/frame |\n| --- | --- | --- | --- | --- |\n")
	for i, s := range []ABSide{rep.A, rep.B} {
		p("| %s | %.0f | %.2f ms | %.2f ms | %.2f |\n", []string{"A", "B"}[i], s.DeliveredPerSec, s.P50Us/1000, s.P99Us/1000, s.CPUUsPerFrame)
	}
	r := rep.Ratio
	p("| **B/A** | **%.3f** | **%.3f** | **%.3f** | **%.3f** |\n\n", r.DeliveredPerSec, r.P50, r.P99, r.CPUUsPerFrame)
	p("## Rounds\n\n| order | side | delivered frames/s | p50 | p99 | server CPU µs/frame | published | lost | duplicates |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for i, rd := range rep.Rounds {
		p("| %d | %s%d | %.0f | %s | %s | %.2f | %d | %d | %d |\n", i+1, rd.Side, rd.Round, rd.DeliveredPerSec, ms(rd.P50Us), ms(rd.P99Us), rd.CPUUsPerFrame, rd.Published, rd.Lost, rd.Duplicates)
	}
	p("\n## Checks\n\n| check | target | value | | |\n| --- | --- | --- | --- | --- |\n")
	for _, c := range rep.Checks {
		mark, kind := "met", "reported"
		if !c.Met {
			mark = "**missed**"
		}
		if c.Assert {
			kind = "asserted"
		}
		p("| %s | %s | %g | %s | %s |\n", c.Name, c.Target, c.Value, mark, kind)
	}
	p("\n")
	for _, n := range rep.Notes {
		p("Note: %s\n\n", n)
	}
	return b.String()
}

func firstRate(rs []float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	return rs[0]
}

// WriteFiles writes prefix.json and prefix.md.
func (rep *ABReport) WriteFiles(prefix string) (string, string, error) {
	return writeReportFiles(prefix, rep, rep.Markdown())
}
