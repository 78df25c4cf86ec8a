package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// FanoutConfig configures the fanout scenario: hold N sockets over G
// groups, publish a sweep of rates to find saturation, then run at half of
// it and check the latency target.
type FanoutConfig struct {
	Load LoadConfig
	// Rates are the events/s of the sweep, in order.
	Rates []float64
	// Step is each rate's measured window; Warmup the untracked
	// publishing before it. Defaults 8 s and 1 s.
	Step, Warmup time.Duration
	// Half is the duration of the run at half of saturation; 0 = skip.
	Half time.Duration
	// HalfRate overrides the half run's rate (0 = half the saturation
	// rate found, or half the highest rate when none saturated).
	HalfRate float64
	// SatP99 is the p99 beyond which a step counts as saturated; default
	// 100 ms.
	SatP99 time.Duration
	// MaxP99 is the asserted p99 at half saturation; default 5 ms, < 0 =
	// report only.
	MaxP99 time.Duration
	// MaxCrossAdded is the asserted p99 a cross-pod hop may add (two
	// pods); default 1 ms, < 0 = report only.
	MaxCrossAdded time.Duration
	// Command is the command line for the report, secrets masked.
	Command string
}

// FanoutReport is the fanout scenario's result.
type FanoutReport struct {
	Scenario   string             `json:"scenario"`
	StartedAt  time.Time          `json:"started_at"`
	Command    string             `json:"command,omitempty"`
	Machine    Machine            `json:"machine"`
	Config     LoadSettings       `json:"config"`
	Pods       []PodInfo          `json:"pods"`
	Sockets    SocketFigures      `json:"sockets"`
	Steps      []*StepFigures     `json:"steps"`
	Saturation Saturation         `json:"saturation"`
	Half       *StepFigures       `json:"half,omitempty"`
	CrossPod   *CrossPod          `json:"cross_pod,omitempty"`
	Loss       LossFigures        `json:"loss"`
	Publish    PublishFigures     `json:"publish"`
	Errors     map[string]int64   `json:"errors"`
	CloseCodes map[uint16]int64   `json:"close_codes"`
	Metrics    map[string]float64 `json:"server_metrics,omitempty"`
	Samples    []TimeSample       `json:"samples"`
	Checks     []TargetCheck      `json:"checks"`
	Passed     bool               `json:"passed"`
	Notes      []string           `json:"notes,omitempty"`
	Plots      []string           `json:"plots,omitempty"`
}

// LoadSettings is a publishing scenario's configuration, without secrets.
type LoadSettings struct {
	Sockets        int       `json:"sockets"`
	Groups         int       `json:"groups"`
	Procs          int       `json:"procs"`
	LoopsPerProc   int       `json:"loops_per_proc"`
	SourcesPerProc int       `json:"sources_per_proc"`
	Pods           int       `json:"pods"`
	Spawned        bool      `json:"spawned"`
	Rates          []float64 `json:"rates,omitempty"`
	StepSeconds    float64   `json:"step_seconds,omitempty"`
	WarmupSeconds  float64   `json:"warmup_seconds,omitempty"`
	PayloadBytes   int       `json:"payload_bytes"`
	ServerSet      []string  `json:"server_set,omitempty"`
}

// PodInfo names a server the run watched.
type PodInfo struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	WS   string `json:"ws,omitempty"`
	Log  string `json:"log,omitempty"`
}

// Saturation is what the sweep found.
type Saturation struct {
	// Found tells that a step saturated; Rate is then its events/s.
	Found bool    `json:"found"`
	Rate  float64 `json:"rate"`
	// PeakDeliveredPerSec is the highest delivered frames/s of any step.
	PeakDeliveredPerSec float64 `json:"peak_delivered_frames_per_second"`
	Note                string  `json:"note,omitempty"`
}

// CrossPod compares the two paths of a two-pod run in the half step.
//
// The two pods each run their own embedded NATS (the layout from before
// partitions): pod A holds every socket and consumes half the groups, pod B
// consumes the other half from its own broker and forwards them to A over
// gRPC. /metrics of pod A (the report's server_metrics) shows no gRPC
// forwards, since A receives them: PodBForwards and ForwardedIntoA are the
// forwarding as the pods counted it. `dws-bench cluster` measures the hop
// as it is deployed (one broker, partitions, sockets on every pod).
type CrossPod struct {
	LocalP99Us int64 `json:"local_p99_us"`
	CrossP99Us int64 `json:"cross_p99_us"`
	AddedP99Us int64 `json:"added_p99_us"`
	LocalP50Us int64 `json:"local_p50_us"`
	CrossP50Us int64 `json:"cross_p50_us"`
	// PodBForwards is pod B's dws_grpc_forwards_total over the run (-1:
	// not scraped); ForwardedIntoA is pod A's
	// dws_deliveries_total{path="forwarded"}.
	PodBForwards   float64 `json:"pod_b_grpc_forwards"`
	ForwardedIntoA float64 `json:"pod_a_forwarded_deliveries"`
}

// PublishFigures are the publisher's totals.
type PublishFigures struct {
	Acked     int64  `json:"acked"`
	Failed    int64  `json:"failed"`
	LastError string `json:"last_error,omitempty"`
}

func (c *FanoutConfig) applyDefaults() error {
	if len(c.Rates) == 0 && c.HalfRate <= 0 {
		return errors.New("fanout: --rates (or --half-rate) is required")
	}
	if c.Step <= 0 {
		c.Step = 8 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = time.Second
	}
	if c.SatP99 <= 0 {
		c.SatP99 = 100 * time.Millisecond
	}
	if c.MaxP99 == 0 {
		c.MaxP99 = 5 * time.Millisecond
	}
	if c.MaxCrossAdded == 0 {
		c.MaxCrossAdded = time.Millisecond
	}
	return c.Load.applyDefaults()
}

// RunFanout runs the fanout scenario. The report is returned even when
// assertions fail (Passed false); an error means the run itself failed.
func RunFanout(ctx context.Context, cfg FanoutConfig) (*FanoutReport, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	l := &loadRun{cfg: &cfg.Load}
	defer l.stop()
	if err := l.startPods(ctx); err != nil {
		return nil, err
	}
	if err := l.start(ctx, nil); err != nil {
		return nil, err
	}
	defer l.r.killAll()
	rep := newFanoutReport(&cfg, l)
	m0 := l.scrapeFirst()
	b0 := l.scrapePodB()

	var steps []*StepFigures
	for i, rate := range cfg.Rates {
		st, err := l.step(ctx, fmt.Sprintf("rate %g/s", rate), i+1, rate, cfg.Warmup, cfg.Step, nil)
		if err != nil {
			return nil, err
		}
		steps = append(steps, st)
		// Once delivery falls behind, higher rates only pile up a
		// backlog (minutes of drain, and latency figures of the queue):
		// the sweep ends at the first step that fell behind.
		if st.liveDelivered < 0.9*st.OfferedPerSec {
			if i < len(cfg.Rates)-1 {
				rep.Notes = append(rep.Notes, fmt.Sprintf("sweep stopped after %g/s: delivery fell behind the offered rate", rate))
			}
			break
		}
	}
	halfRate := cfg.HalfRate
	var half *StepFigures
	if cfg.Half > 0 {
		if halfRate <= 0 {
			// Latency is only known after the workers report, so the
			// half rate is chosen from the throughput criterion here and
			// rechecked against p99 once the results are in.
			halfRate = provisionalSaturation(steps) / 2
		}
		st, err := l.step(ctx, fmt.Sprintf("half %g/s", halfRate), len(cfg.Rates)+1, halfRate, cfg.Warmup, cfg.Half, nil)
		if err != nil {
			return nil, err
		}
		half = st
	}
	m1 := l.scrapeFirst()
	b1 := l.scrapePodB()
	res, err := l.finish(ctx)
	if err != nil {
		return nil, err
	}
	for _, st := range steps {
		res.fill(st, l.r.t0)
	}
	if half != nil {
		res.fill(half, l.r.t0)
	}
	rep.fill(&cfg, l, res, steps, half, m0, m1)
	if c := rep.CrossPod; c != nil {
		// Pod B sends the forwards, pod A counts them as forwarded
		// deliveries: both are shown, and asserted, so a hop figure
		// without a single forward is never reported.
		c.PodBForwards = -1
		if b0 != nil && b1 != nil {
			c.PodBForwards = b1.Sum("dws_grpc_forwards_total") - b0.Sum("dws_grpc_forwards_total")
		}
		if m0 != nil && m1 != nil {
			c.ForwardedIntoA = m1.Get("dws_deliveries_total", `path="forwarded"`) - m0.Get("dws_deliveries_total", `path="forwarded"`)
		}
		rep.Checks = append(rep.Checks, TargetCheck{Name: "frames pod A got over gRPC from pod B", Target: "> 0",
			Value: c.ForwardedIntoA, Met: c.ForwardedIntoA > 0, Assert: true})
		rep.Passed = checksPass(rep.Checks)
		rep.Notes = append(rep.Notes, "--pods 2 gives each pod its own NATS (pod B consumes the cross groups and forwards them to pod A, which holds every socket); "+
			"server_metrics are pod A's, so its dws_grpc_forwards_total is 0 by design: see the cross-pod table for pod B's. "+
			"The hop as deployed (one broker, partitions, sockets on every pod) is dws-bench cluster's \"Cross-pod hop\"")
	}
	return rep, nil
}

// scrapePodB reads pod B's /metrics with two pods (nil otherwise, or when
// the scrape fails).
func (l *loadRun) scrapePodB() Metrics {
	if len(l.ps.ops) < 2 {
		return nil
	}
	m, _ := Scrape(l.ps.ops[1])
	return m
}

// provisionalSaturation is the first rate whose delivery fell behind the
// offered rate, or the highest rate swept when none did.
func provisionalSaturation(steps []*StepFigures) float64 {
	for _, st := range steps {
		if st.liveDelivered < 0.95*st.OfferedPerSec {
			return st.Rate
		}
	}
	if len(steps) == 0 {
		return 0
	}
	return steps[len(steps)-1].Rate
}

func newFanoutReport(cfg *FanoutConfig, l *loadRun) *FanoutReport {
	rep := &FanoutReport{
		Scenario: "fanout", StartedAt: l.r.rep.StartedAt, Command: cfg.Command, Machine: describeMachine(),
		Config: cfg.Load.settings(cfg.Rates, cfg.Step, cfg.Warmup),
	}
	rep.Pods = podInfos(l)
	return rep
}

func podInfos(l *loadRun) []PodInfo {
	var out []PodInfo
	for _, p := range l.ps.pods {
		out = append(out, PodInfo{Name: p.Name, PID: p.PID, WS: p.WS.String(), Log: p.LogPath})
	}
	if len(out) == 0 && len(l.ps.pids) > 0 {
		out = append(out, PodInfo{Name: "server", PID: l.ps.pids[0], WS: l.cfg.Connect.Server.String()})
	}
	return out
}

// serverMetricsOfInterest are the counters a report keeps (deltas over the
// run) and soak checks.
var serverMetricsOfInterest = []string{
	"dws_deliveries_total", "dws_drops_total", "dws_nats_messages_received_total",
	"dws_slow_consumer_closes_total", "dws_recovered_panics_total", "dws_redis_errors_total",
	"dws_grpc_forwards_total", "dws_nats_acks_total",
}

func metricDeltas(m0, m1 Metrics) map[string]float64 {
	if m1 == nil {
		return nil
	}
	out := map[string]float64{}
	for _, name := range serverMetricsOfInterest {
		out[name] = m1.Sum(name) - m0.Sum(name)
	}
	out["go_goroutines"] = m1["go_goroutines"]
	return out
}

func (rep *FanoutReport) fill(cfg *FanoutConfig, l *loadRun, res *loadResult, steps []*StepFigures, half *StepFigures, m0, m1 Metrics) {
	cr := l.r.rep
	rep.Sockets = cr.Sockets
	rep.Errors, rep.CloseCodes = cr.Errors, cr.CloseCodes
	rep.Notes = append(append(append([]string(nil), l.notes...), rep.Notes...), cr.Notes...)
	rep.Steps, rep.Half = steps, half
	rep.Loss = res.loss
	rep.Publish = PublishFigures{Acked: res.acked, Failed: res.pubFailed, LastError: res.pubErr}
	rep.Samples = l.samples
	rep.Metrics = metricDeltas(m0, m1)

	// Saturation: the first step that delivered under 95 % of what it
	// owed within its window, or whose p99 passed SatP99.
	for _, st := range steps {
		rep.Saturation.PeakDeliveredPerSec = max(rep.Saturation.PeakDeliveredPerSec, st.DeliveredPerSec)
		switch {
		case st.DeliveredPerSec < 0.95*st.OfferedPerSec:
			st.Saturated, st.Why = true, fmt.Sprintf("delivered %.0f/s of %.0f/s offered", st.DeliveredPerSec, st.OfferedPerSec)
		case st.Latency.P99Us > cfg.SatP99.Microseconds():
			st.Saturated, st.Why = true, fmt.Sprintf("p99 %s > %s", ms(st.Latency.P99Us), cfg.SatP99)
		case st.PublishRate < 0.95*st.Rate:
			st.Why = fmt.Sprintf("publisher reached only %.0f/s", st.PublishRate)
		}
		if st.Saturated && !rep.Saturation.Found {
			rep.Saturation.Found, rep.Saturation.Rate = true, st.Rate
		}
	}
	if !rep.Saturation.Found && len(steps) > 0 {
		rep.Saturation.Rate = steps[len(steps)-1].Rate
		rep.Saturation.Note = "no step saturated: the saturation rate is above the highest rate swept"
	}
	if half != nil && cfg.HalfRate <= 0 && rep.Saturation.Found && half.Rate > rep.Saturation.Rate/2*1.01 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the half run used %g/s (throughput criterion); with the latency criterion saturation is %g/s", half.Rate, rep.Saturation.Rate))
	}
	if half != nil && half.Local != nil && half.Cross != nil {
		rep.CrossPod = &CrossPod{
			LocalP99Us: half.Local.P99Us, CrossP99Us: half.Cross.P99Us, AddedP99Us: half.Cross.P99Us - half.Local.P99Us,
			LocalP50Us: half.Local.P50Us, CrossP50Us: half.Cross.P50Us,
		}
	}

	add := func(name, target string, value float64, met, assert bool) {
		rep.Checks = append(rep.Checks, TargetCheck{Name: name, Target: target, Value: value, Met: met, Assert: assert})
	}
	s := rep.Sockets
	add("sockets opened", fmt.Sprintf("= %d", s.Target), float64(s.RampOpened), s.RampOpened == int64(s.Target), true)
	add("sockets checked for loss", "> 0", float64(rep.Loss.Checked), rep.Loss.Checked > 0, true)
	add("events lost (sockets that stayed connected)", "= 0", float64(rep.Loss.Lost), rep.Loss.Lost == 0, true)
	add("duplicate events", "= 0", float64(rep.Loss.Duplicates), rep.Loss.Duplicates == 0, true)
	add("events on the wrong socket", "= 0", float64(rep.Loss.WrongSubject), rep.Loss.WrongSubject == 0, true)
	if rep.Loss.Sequenced > 0 { // a server that sends seq (SPEC §5)
		add("reordered deliveries (seq not above the socket's last)", "= 0", float64(rep.Loss.Reordered), rep.Loss.Reordered == 0, true)
	}
	if half != nil {
		add("p99 at half saturation (ms)", fmt.Sprintf("<= %g", float64(cfg.MaxP99.Microseconds())/1000),
			float64(half.Latency.P99Us)/1000, cfg.MaxP99 < 0 || half.Latency.P99Us <= cfg.MaxP99.Microseconds(), cfg.MaxP99 > 0)
	}
	if rep.CrossPod != nil {
		add("p99 added by the cross-pod hop (ms)", fmt.Sprintf("<= %g", float64(cfg.MaxCrossAdded.Microseconds())/1000),
			float64(rep.CrossPod.AddedP99Us)/1000, cfg.MaxCrossAdded < 0 || rep.CrossPod.AddedP99Us <= cfg.MaxCrossAdded.Microseconds(), cfg.MaxCrossAdded > 0)
	}
	if rep.Publish.Failed > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d publishes failed (last: %s); they are not owed to anyone", rep.Publish.Failed, rep.Publish.LastError))
	}
	rep.Passed = checksPass(rep.Checks)
}

// checksPass is false when an asserted check missed.
func checksPass(cs []TargetCheck) bool {
	for _, c := range cs {
		if c.Assert && !c.Met {
			return false
		}
	}
	return true
}

// Markdown renders the fanout summary.
func (rep *FanoutReport) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# dws-bench fanout — %s\n\n", rep.StartedAt.Format("2006-01-02 15:04 UTC"))
	writeHeader(&b, rep.Command, rep.Machine, rep.Config, rep.Pods)
	p("**Result: %s.**\n\n", passText(rep.Passed))
	sat := rep.Saturation
	if sat.Found {
		p("Saturation: **%g events/s** (first step that fell behind or passed the p99 bound); peak delivered %.0f frames/s.\n\n", sat.Rate, sat.PeakDeliveredPerSec)
	} else {
		p("Saturation: not reached; above %g events/s (peak delivered %.0f frames/s). %s\n\n", sat.Rate, sat.PeakDeliveredPerSec, sat.Note)
	}
	p("## Steps\n\n")
	writeSteps(&b, append(slices.Clone(rep.Steps), rep.Half))
	if h := rep.Half; h != nil {
		p("## Half of saturation (%g events/s, %.0f s)\n\n", h.Rate, h.Seconds)
		p("| figure | value |\n| --- | --- |\n")
		p("| delivered frames/s | %.0f (offered %.0f) |\n", h.DeliveredPerSec, h.OfferedPerSec)
		p("| latency p50 / p99 / p99.9 / max | %s / %s / %s / %s |\n", ms(h.Latency.P50Us), ms(h.Latency.P99Us), ms(h.Latency.P999Us), ms(h.Latency.MaxUs))
		p("| server CPU per delivered frame | %.2f µs (%.2f cores) |\n", h.CPUUsPerFrame, h.ServerCores)
		p("| client CPU | %.2f cores |\n| other processes and kernel | %.2f cores |\n| machine idle | %.0f%% |\n\n", h.ClientCores, h.OtherCores, 100*h.MachineIdle)
	}
	if c := rep.CrossPod; c != nil {
		p("## Cross-pod hop (same run, half step)\n\n| path | p50 | p99 |\n| --- | --- | --- |\n")
		p("| local (pod A consumed) | %s | %s |\n| cross (pod B consumed, gRPC to A) | %s | %s |\n\n", ms(c.LocalP50Us), ms(c.LocalP99Us), ms(c.CrossP50Us), ms(c.CrossP99Us))
		p("Added p99: **%s**. Pod B forwarded %.0f batches over gRPC (PushStream sends or unary Push calls); pod A delivered %.0f frames that came in them (two brokers, the layout from before partitions: `dws-bench cluster` measures the hop as deployed).\n\n",
			ms(c.AddedP99Us), c.PodBForwards, c.ForwardedIntoA)
	}
	writeLossAndChecks(&b, rep.Loss, rep.Publish, rep.Checks, rep.Errors, rep.CloseCodes, rep.Metrics)
	writePlots(&b, rep.Plots)
	for _, n := range rep.Notes {
		p("Note: %s\n\n", n)
	}
	return b.String()
}

func passText(ok bool) string {
	if ok {
		return "PASS (every asserted check met)"
	}
	return "FAIL (an asserted check missed; exit status 1)"
}

func writeHeader(b *strings.Builder, cmd string, m Machine, c LoadSettings, pods []PodInfo) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	if cmd != "" {
		p("```\n%s\n```\n\n", cmd)
	}
	p("Machine: %d CPUs (%s), %d MiB, kernel %s, %s. Client, server(s) and broker share it.\n\n",
		m.CPUs, m.CPUModel, m.MemTotalMB, m.Kernel, m.GoVersion)
	where := "a server given by address"
	if c.Spawned {
		where = fmt.Sprintf("%d pod(s) started by the bench, each with its embedded NATS JetStream", c.Pods)
	}
	p("Workload: %d sockets over %d groups (%.0f sockets per event), %d worker process(es) × %d loop(s), %d source addresses each; %s; payload ≈ %d B.\n\n",
		c.Sockets, c.Groups, float64(c.Sockets)/float64(max(1, c.Groups)), c.Procs, c.LoopsPerProc, c.SourcesPerProc, where, max(200, c.PayloadBytes))
	for _, pd := range pods {
		p("- %s: pid %d, ws %s\n", pd.Name, pd.PID, pd.WS)
	}
	if len(pods) > 0 {
		p("\n")
	}
}

func writeSteps(b *strings.Builder, steps []*StepFigures) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("| step | events/s | offered frames/s | delivered frames/s | p50 | p99 | p99.9 | server cores | server µs/frame | client cores | other cores | idle | saturated |\n")
	p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, st := range steps {
		if st == nil {
			continue
		}
		sat := ""
		if st.Saturated {
			sat = "yes: " + st.Why
		} else if st.Why != "" {
			sat = st.Why
		}
		p("| %s | %.0f | %.0f | %.0f | %s | %s | %s | %.2f | %.2f | %.2f | %.2f | %.0f%% | %s |\n",
			st.Name, st.PublishRate, st.OfferedPerSec, st.DeliveredPerSec, ms(st.Latency.P50Us), ms(st.Latency.P99Us),
			ms(st.Latency.P999Us), st.ServerCores, st.CPUUsPerFrame, st.ClientCores, st.OtherCores, 100*st.MachineIdle, sat)
	}
	p("\n")
}

func writeLossAndChecks(b *strings.Builder, loss LossFigures, pub PublishFigures, checks []TargetCheck, errs map[string]int64, codes map[uint16]int64, metrics map[string]float64) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("## Delivery\n\n")
	p("Published %d events (%d failed). Checked %d sockets that stayed connected (%d excluded): %d events lost on %d sockets, %d duplicates, %d on a wrong socket.\n\n",
		pub.Acked, pub.Failed, loss.Checked, loss.Excluded, loss.Lost, loss.SocketsWithLoss, loss.Duplicates, loss.WrongSubject)
	p("## Checks\n\n| check | target | value | | |\n| --- | --- | --- | --- | --- |\n")
	for _, c := range checks {
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
	if len(errs) > 0 || len(codes) > 0 {
		p("## Client errors and close codes\n\n")
		for _, k := range slices.Sorted(maps.Keys(errs)) {
			p("- %s: %d\n", k, errs[k])
		}
		for _, k := range slices.Sorted(maps.Keys(codes)) {
			p("- close %d: %d\n", k, codes[k])
		}
		p("\n")
	}
	if len(metrics) > 0 {
		p("## Server counters over the run (/metrics)\n\n")
		for _, k := range slices.Sorted(maps.Keys(metrics)) {
			p("- %s: %g\n", k, metrics[k])
		}
		p("\n")
	}
}

func writePlots(b *strings.Builder, plots []string) {
	for _, pl := range plots {
		fmt.Fprintf(b, "![%s](%s)\n\n", pl, pl)
	}
}
