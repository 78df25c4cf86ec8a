package bench

import (
	"fmt"
	"math"
	"strings"
)

// Markdown renders the floor summary: the ratios first, then each side.
func (rep *FloorReport) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# dws-bench floor — %s\n\n", rep.StartedAt.Format("2006-01-02 15:04 UTC"))
	writeHeader(&b, rep.Command, rep.Machine, rep.Config, []PodInfo{rep.Floor.Pod, rep.DWS.Pod})
	p("The floor is `dws-bench floor-server`: epoll loops that answer the upgrade (no token check), and for each event from the same embedded JetStream consumer write one prebuilt frame per socket of the group. Same clients, sockets, publisher, rates and durations; floor first, then dws. ")
	p("Main step: %g events/s for %.0f s. Highest rate held: the top of the unbroken run of held rungs of the ladder %s events/s (held = every frame arrived, delivered ≥ 95%% of offered in the window, publisher at rate, p99 ≤ %g ms).\n\n",
		rep.Rate, rep.Seconds, joinRates(rep.Ladder), rep.HeldP99Ms)
	p("**Result: %s.**", passText(rep.Passed))
	if len(rep.Missed) > 0 {
		p(" Missed: %s.", strings.Join(rep.Missed, "; "))
	}
	p("\n\n## dws / floor\n\n| figure | floor | dws | dws/floor | target |\n| --- | --- | --- | --- | --- |\n")
	f, d, r, t := rep.Floor, rep.DWS, rep.Ratio, rep.Targets
	lat := func(name string, fv, dv int64, ratio float64, target string) {
		p("| %s | %s | %s | %s | %s |\n", name, ms(fv), ms(dv), ratioText(ratio), target)
	}
	lat("p50 publish → receive", f.Main.Latency.P50Us, d.Main.Latency.P50Us, r.P50, "reported")
	lat("p99", f.Main.Latency.P99Us, d.Main.Latency.P99Us, r.P99, boundText("≤", t.MaxP99, "×"))
	lat("p99.9", f.Main.Latency.P999Us, d.Main.Latency.P999Us, r.P999, boundText("≤", t.MaxP999, "×"))
	p("| server CPU per delivered frame | %.2f µs | %.2f µs | %s | %s |\n", f.Main.CPUUsPerFrame, d.Main.CPUUsPerFrame, ratioText(r.CPUPerFrame), boundText("≤", t.MaxCPU, "×"))
	p("| highest rate held (events/s) | %s | %s | %s | %s |\n", heldRateText(f), heldRateText(d), ratioText(r.MaxRate), boundText("≥", t.MinRate, "×"))
	p("| handshakes/s over the ramp | %.0f | %.0f | %s | %s |\n", f.HandshakesPerSec, d.HandshakesPerSec, ratioText(r.Handshakes), boundText("≥", t.MinHandshakes, "×"))
	p("| RSS per idle socket | %.0f B | %.0f B | %s | dws %s |\n", f.IdleSocketBytes, d.IdleSocketBytes, ratioText(d.IdleSocketBytes/f.IdleSocketBytes), boundText("≤", t.MaxIdleSocketBytes, " B"))
	p("| events lost / duplicated / misrouted | %d / %d / %d | %d / %d / %d | | 0 |\n\n",
		f.Loss.Lost, f.Loss.Duplicates, f.Loss.WrongSubject, d.Loss.Lost, d.Loss.Duplicates, d.Loss.WrongSubject)
	if v := d.Main.ServerView; v != nil {
		p("dws's own view of the main step (`dws_fanout_latency_seconds`, stored in the partition stream → socket written: the sourcing hop from `nats.stream` is not in it; bucket upper bounds): p50 ≤ %.2f ms, p99 ≤ %.2f ms over %.0f events × loops; the rest of its p99 above is the kernel's and the clients'.\n\n",
			v.P50Ms, v.P99Ms, v.Calls)
	}
	for _, side := range []*FloorSide{f, d} {
		p("## %s: steps\n\n", side.Pod.Name)
		writeSteps(&b, append([]*StepFigures{side.Main}, side.Sweep...))
	}
	p("## Checks\n\n| check | target | value | | |\n| --- | --- | --- | --- | --- |\n")
	for _, c := range rep.Checks {
		mark, kind := "met", "reported"
		if !c.Met {
			mark = "**missed**"
		}
		if c.Assert {
			kind = "asserted"
		}
		p("| %s | %s | %.4g | %s | %s |\n", c.Name, c.Target, c.Value, mark, kind)
	}
	p("\n")
	for _, n := range rep.Notes {
		p("Note: %s\n\n", n)
	}
	return b.String()
}

func ratioText(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("**%.2f×**", v)
}

func boundText(op string, v float64, unit string) string {
	if v <= 0 {
		return "reported"
	}
	return fmt.Sprintf("%s %g%s", op, v, unit)
}

func heldRateText(s *FloorSide) string {
	if s.Bracketed {
		return fmt.Sprintf("%g", s.MaxRate)
	}
	return fmt.Sprintf("≥ %g", s.MaxRate)
}

func joinRates(rs []float64) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%g", r)
	}
	return strings.Join(parts, ", ")
}
