package bench

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ConnectReport is the connect scenario's result: the JSON report, and the
// source of the Markdown summary.
type ConnectReport struct {
	Scenario   string           `json:"scenario"`
	StartedAt  time.Time        `json:"started_at"`
	Command    string           `json:"command,omitempty"`
	Machine    Machine          `json:"machine"`
	Config     ConnectSettings  `json:"config"`
	Sockets    SocketFigures    `json:"sockets"`
	Handshakes HandshakeFigures `json:"handshakes"`
	Server     ServerFigures    `json:"server"`
	Client     ClientFigures    `json:"client"`
	Errors     map[string]int64 `json:"errors"`
	CloseCodes map[uint16]int64 `json:"close_codes"`
	PerSecond  []uint64         `json:"handshakes_per_second"` // whole run, ramp and churn
	RSSSamples []RSSSample      `json:"server_rss_samples"`
	Targets    []TargetCheck    `json:"targets"`
	Notes      []string         `json:"notes,omitempty"`
}

// ConnectSettings is the configuration as run, without secrets.
type ConnectSettings struct {
	Server           string  `json:"server"`
	Sockets          int     `json:"sockets"`
	Procs            int     `json:"procs"`
	LoopsPerProc     int     `json:"loops_per_proc"`
	Rate             float64 `json:"rate"`
	Inflight         int     `json:"inflight"`
	HoldSeconds      float64 `json:"hold_seconds"`
	Churn            float64 `json:"churn_per_second"`
	Groups           int     `json:"groups"`
	SourceBase       string  `json:"source_base"`
	SourcesPerProc   int     `json:"sources_per_proc"`
	HandshakeTimeout string  `json:"handshake_timeout"`
}

// SocketFigures counts sockets.
type SocketFigures struct {
	Target        int   `json:"target"`
	RampOpened    int64 `json:"ramp_opened"`
	RampFailed    int64 `json:"ramp_failed"`
	HeldAfterRamp int64 `json:"held_after_ramp"`
	HeldAtEnd     int64 `json:"held_at_end"`
	Dropped       int64 `json:"dropped_by_server"`
	ChurnClosed   int64 `json:"churn_closed"`
	ChurnReopened int64 `json:"churn_reopened"`
	ChurnFailed   int64 `json:"churn_failed"`
}

// HandshakeFigures are the ramp's rates and latencies.
type HandshakeFigures struct {
	RampSeconds   float64 `json:"ramp_seconds"`
	PerSecond     float64 `json:"per_second"`         // ramp opened / ramp seconds
	PeakPerSecond float64 `json:"peak_per_second_1s"` // best sliding 1-s window of the ramp
	Latency       Latency `json:"latency_ramp"`
	LatencyAll    Latency `json:"latency_all"` // ramp and churn reconnects
}

// ServerFigures are read from /proc of the server process.
type ServerFigures struct {
	PID            int     `json:"pid,omitempty"`
	RSSBefore      int64   `json:"rss_before_bytes"`
	RSSHeld        int64   `json:"rss_held_bytes"`
	RSSEnd         int64   `json:"rss_end_bytes"`
	RSSPerSocket   float64 `json:"rss_per_socket_bytes"` // (held − before) / held sockets
	CPUSecondsRamp float64 `json:"cpu_seconds_ramp"`
	SysShareRamp   float64 `json:"sys_share_ramp"` // kernel share of CPUSecondsRamp
	CoresRamp      float64 `json:"cores_ramp"`
}

// ClientFigures say what the load generator cost and whether it limited
// the result.
type ClientFigures struct {
	InProcess bool           `json:"in_process,omitempty"`
	Workers   []WorkerFigure `json:"workers"`
	CoresRamp float64        `json:"cores_ramp"` // all workers
	// CPUPerHandshakeUs is the client's CPU per ramp handshake, kernel
	// included: what a target rate will cost the client
	// (rate × this = cores).
	CPUPerHandshakeUs float64 `json:"cpu_per_handshake_us"`
	MachineIdleRamp   float64 `json:"machine_idle_ramp"`
	// OtherCoresRamp is the machine's busy CPU during the ramp minus the
	// client's and the server's: other processes, and kernel work (softirq)
	// charged to no process. On a shared machine it explains a saturation
	// neither side caused.
	OtherCoresRamp float64 `json:"other_cores_ramp"`
	Saturated      bool    `json:"saturated"`
	MachineBusy    bool    `json:"machine_saturated"`
	Verdict        string  `json:"verdict"`
}

// WorkerFigure is one worker's cost.
type WorkerFigure struct {
	Sockets        int     `json:"sockets"`
	Loops          int     `json:"loops"`
	MintSeconds    float64 `json:"mint_seconds"`
	CPUSecondsRamp float64 `json:"cpu_seconds_ramp"`
	SysShareRamp   float64 `json:"sys_share_ramp"` // kernel share of CPUSecondsRamp
	CoresRamp      float64 `json:"cores_ramp"`
	CPUSecondsAll  float64 `json:"cpu_seconds_total"`
	Saturated      bool    `json:"saturated"`
}

// RSSSample is the server's RSS at a moment of the run.
type RSSSample struct {
	Seconds float64 `json:"t"`
	Bytes   int64   `json:"rss_bytes"`
	Sockets int64   `json:"sockets"`
}

// TargetCheck compares a figure with a target of the issue tracker.
type TargetCheck struct {
	Name   string  `json:"name"`
	Target string  `json:"target"`
	Value  float64 `json:"value"`
	Met    bool    `json:"met"`
	// Assert: a miss fails the scenario (exit status 1); otherwise the
	// check is reported only.
	Assert bool `json:"assert,omitempty"`
}

// Saturation thresholds: a worker using 90 % of the cores its loops may run
// on is the bottleneck; a machine under 5 % idle has no CPU left for either
// side, so the server's figure is a lower bound.
const (
	workerSaturation = 0.9
	machineBusyIdle  = 0.05
)

func newConnectReport(c *ConnectConfig) *ConnectReport {
	_, inProc := c.Spawner.(InProcessSpawner)
	return &ConnectReport{
		Scenario: "connect",
		Command:  c.Command,
		Machine:  describeMachine(),
		Config: ConnectSettings{
			Server: c.Server.String(), Sockets: c.Sockets, Procs: c.Procs, LoopsPerProc: c.Loops,
			Rate: c.Rate, Inflight: c.Inflight, HoldSeconds: c.Hold.Seconds(), Churn: c.Churn,
			Groups: c.Groups, SourceBase: c.SourceBase.String(), SourcesPerProc: c.SourcesPerProc,
			HandshakeTimeout: c.HandshakeTimeout.String(),
		},
		Sockets:    SocketFigures{Target: c.Sockets},
		Errors:     map[string]int64{},
		CloseCodes: map[uint16]int64{},
		Client:     ClientFigures{InProcess: inProc},
	}
}

// aggregate merges the workers' results into the report.
func (r *runner) aggregate() {
	rep := r.rep
	rampHist, allHist := newHistogram(), newHistogram()
	var timeline []uint32
	var rampEnd int64
	for i, w := range r.workers {
		res := w.result
		rep.Sockets.RampOpened += res.RampOpened
		rep.Sockets.RampFailed += res.RampFailed
		rep.Sockets.HeldAtEnd += res.Connected
		rep.Sockets.Dropped += res.Dropped
		rep.Sockets.ChurnClosed += res.ChurnClosed
		rep.Sockets.ChurnReopened += res.ChurnReopened
		rep.Sockets.ChurnFailed += res.ChurnFailed
		for k, v := range res.Errors {
			rep.Errors[k] += v
		}
		for k, v := range res.CloseCodes {
			rep.CloseCodes[k] += v
		}
		if err := MergeEncoded(rampHist, res.HandshakeRamp); err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("worker %d: %v", i, err))
		}
		if err := MergeEncoded(allHist, res.HandshakeAll); err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("worker %d: %v", i, err))
		}
		timeline = MergeCounts(timeline, res.Timeline)
		rampEnd = max(rampEnd, res.RampEnd)

		wf := WorkerFigure{
			Sockets: res.Sockets, Loops: res.Loops, MintSeconds: res.MintSeconds,
			CPUSecondsRamp: res.RampCPU, CPUSecondsAll: res.TotalCPU,
		}
		if res.RampCPU > 0 {
			wf.SysShareRamp = res.RampSysCPU / res.RampCPU
		}
		if d := time.Duration(res.RampEnd - r.t0.UnixNano()).Seconds(); d > 0 {
			wf.CoresRamp = res.RampCPU / d
		}
		wf.Saturated = !rep.Client.InProcess && wf.CoresRamp >= workerSaturation*float64(res.Loops)
		rep.Client.Workers = append(rep.Client.Workers, wf)
		rep.Client.CoresRamp += wf.CoresRamp
	}
	var rampCPU float64
	for _, w := range rep.Client.Workers {
		rampCPU += w.CPUSecondsRamp
	}
	if rep.Client.InProcess && len(r.workers) > 0 {
		// Every in-process worker measured the same process.
		rep.Client.CoresRamp /= float64(len(r.workers))
		rampCPU /= float64(len(r.workers))
	}
	if rep.Sockets.RampOpened > 0 {
		rep.Client.CPUPerHandshakeUs = rampCPU / float64(rep.Sockets.RampOpened) * 1e6
	}

	h := &rep.Handshakes
	h.Latency, h.LatencyAll = Summarize(rampHist), Summarize(allHist)
	if h.RampSeconds > 0 {
		h.PerSecond = float64(rep.Sockets.RampOpened) / h.RampSeconds
	}
	// The peak is taken over the ramp's buckets only: churn reconnects
	// during the hold are another workload.
	rampBuckets := min(len(timeline), int(time.Duration(rampEnd-r.t0.UnixNano())/TimelineStep)+1)
	h.PeakPerSecond = PeakRate(timeline[:max(0, rampBuckets)], time.Second)
	rep.PerSecond = PerSecond(timeline)

	s := &rep.Server
	if s.RSSHeld > 0 && s.RSSBefore > 0 && rep.Sockets.HeldAfterRamp > 0 {
		s.RSSPerSocket = float64(s.RSSHeld-s.RSSBefore) / float64(rep.Sockets.HeldAfterRamp)
	}
	r.verdict()
	r.targets()
}

func (r *runner) verdict() {
	c := &r.rep.Client
	c.MachineBusy = c.MachineIdleRamp < machineBusyIdle
	busiest, bi := 0.0, 0
	for i, w := range c.Workers {
		if w.Saturated {
			c.Saturated = true
		}
		if share := w.CoresRamp / float64(max(1, w.Loops)); share > busiest {
			busiest, bi = share, i
		}
	}
	srv := r.rep.Server.CoresRamp
	busy := (1 - c.MachineIdleRamp) * float64(r.rep.Machine.CPUs)
	c.OtherCoresRamp = max(0, busy-c.CoresRamp-srv)
	switch {
	case c.InProcess:
		c.Verdict = "in-process workers (test mode): client CPU is process-wide and not judged"
	case c.Saturated:
		w := c.Workers[bi]
		c.Verdict = fmt.Sprintf("CLIENT SATURATED: worker %d used %.2f cores for its %d loop(s) during the ramp; "+
			"the handshake rate measures the client, not the server (add --procs or --loops, or a machine)",
			bi, w.CoresRamp, w.Loops)
	case c.MachineBusy:
		c.Verdict = fmt.Sprintf("MACHINE SATURATED: %.0f%% idle during the ramp; client used %.2f cores, server %.2f, "+
			"other processes and kernel %.2f, of %d: they compete for CPU, so the handshake rate is a lower bound for the server alone",
			100*c.MachineIdleRamp, c.CoresRamp, srv, c.OtherCoresRamp, r.rep.Machine.CPUs)
	default:
		c.Verdict = fmt.Sprintf("client not saturated: busiest worker at %.0f%% of its loops' cores; machine %.0f%% idle during the ramp",
			100*busiest, 100*c.MachineIdleRamp)
	}
}

// targets compares with issue 2's performance targets.
func (r *runner) targets() {
	rep := r.rep
	rep.Targets = append(rep.Targets, TargetCheck{
		Name: "handshakes per second (ramp)", Target: ">= 20000", Value: rep.Handshakes.PerSecond,
		Met: rep.Handshakes.PerSecond >= 20000,
	}, TargetCheck{
		Name: "sockets held", Target: ">= 15000", Value: float64(rep.Sockets.HeldAfterRamp),
		Met: rep.Sockets.HeldAfterRamp >= 15000,
	})
	if rep.Server.RSSPerSocket > 0 {
		rep.Targets = append(rep.Targets, TargetCheck{
			Name: "server RSS per idle socket (bytes)", Target: "<= 2048", Value: rep.Server.RSSPerSocket,
			Met: rep.Server.RSSPerSocket <= 2048,
		})
	}
}

// WriteFiles writes prefix.json and prefix.md, creating the directory.
func (rep *ConnectReport) WriteFiles(prefix string) (jsonPath, mdPath string, err error) {
	if err := os.MkdirAll(filepath.Dir(prefix), 0o755); err != nil {
		return "", "", err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", "", err
	}
	jsonPath, mdPath = prefix+".json", prefix+".md"
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(mdPath, []byte(rep.Markdown()), 0o644); err != nil {
		return "", "", err
	}
	return jsonPath, mdPath, nil
}

// Markdown renders the summary people read.
func (rep *ConnectReport) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	m := rep.Machine
	p("# dws-bench connect — %s\n\n", rep.StartedAt.Format("2006-01-02 15:04 UTC"))
	if rep.Command != "" {
		p("```\n%s\n```\n\n", rep.Command)
	}
	p("Machine: %d CPUs (%s), %d MiB, kernel %s, %s, file limit %d, ephemeral ports %s.\n\n",
		m.CPUs, m.CPUModel, m.MemTotalMB, m.Kernel, m.GoVersion, m.FileLimit, m.PortRange)
	c := rep.Config
	p("Workload: %d sockets to %s from %d worker process(es) × %d loop(s), %d source addresses each from %s, %d groups, rate %s, in flight ≤ %d, hold %gs, churn %g/s.\n\n",
		c.Sockets, c.Server, c.Procs, c.LoopsPerProc, c.SourcesPerProc, c.SourceBase, c.Groups,
		rateText(c.Rate), c.Inflight, c.HoldSeconds, c.Churn)

	p("## Results\n\n| figure | value |\n| --- | --- |\n")
	s, h, sv := rep.Sockets, rep.Handshakes, rep.Server
	p("| sockets opened in the ramp | %d of %d (%d failed) |\n", s.RampOpened, s.Target, s.RampFailed)
	p("| sockets held after the ramp / at the end | %d / %d |\n", s.HeldAfterRamp, s.HeldAtEnd)
	p("| ramp duration | %.2f s |\n", h.RampSeconds)
	p("| handshakes/s over the ramp | %.0f |\n", h.PerSecond)
	p("| handshakes/s, peak 1-s window | %.0f |\n", h.PeakPerSecond)
	p("| handshake latency p50 / p99 / p99.9 / max | %s / %s / %s / %s |\n",
		ms(h.Latency.P50Us), ms(h.Latency.P99Us), ms(h.Latency.P999Us), ms(h.Latency.MaxUs))
	if s.ChurnClosed > 0 {
		p("| churn: closed / reopened / failed | %d / %d / %d |\n", s.ChurnClosed, s.ChurnReopened, s.ChurnFailed)
		p("| handshake latency incl. churn p50 / p99 | %s / %s |\n", ms(h.LatencyAll.P50Us), ms(h.LatencyAll.P99Us))
	}
	p("| sockets dropped by the server | %d |\n", s.Dropped)
	if sv.PID > 0 {
		p("| server RSS before / held / end | %s / %s / %s |\n", mib(sv.RSSBefore), mib(sv.RSSHeld), mib(sv.RSSEnd))
		p("| server RSS growth per socket | %.0f B |\n", sv.RSSPerSocket)
		p("| server CPU during the ramp | %.2f cores |\n", sv.CoresRamp)
	}
	cl := rep.Client
	sys := 0.0
	for _, w := range cl.Workers {
		sys += w.SysShareRamp / float64(len(cl.Workers))
	}
	p("| client CPU during the ramp | %.2f cores (%.0f µs per handshake, %.0f%% in the kernel) |\n", cl.CoresRamp, cl.CPUPerHandshakeUs, 100*sys)
	p("| other processes and kernel during the ramp | %.2f cores |\n", cl.OtherCoresRamp)
	p("| machine idle during the ramp | %.0f%% |\n\n", 100*cl.MachineIdleRamp)
	p("**Client:** %s\n\n", cl.Verdict)

	if len(rep.Targets) > 0 {
		p("## Targets (issue 2)\n\n| figure | target | value | |\n| --- | --- | --- | --- |\n")
		for _, t := range rep.Targets {
			mark := "missed"
			if t.Met {
				mark = "met"
			}
			p("| %s | %s | %.0f | %s |\n", t.Name, t.Target, t.Value, mark)
		}
		p("\n")
	}
	if len(rep.Errors) > 0 || len(rep.CloseCodes) > 0 {
		p("## Errors and close codes\n\n")
		for _, k := range slices.Sorted(maps.Keys(rep.Errors)) {
			p("- %s: %d\n", k, rep.Errors[k])
		}
		for _, k := range slices.Sorted(maps.Keys(rep.CloseCodes)) {
			p("- close %d: %d\n", k, rep.CloseCodes[k])
		}
		p("\n")
	}
	if len(cl.Workers) > 1 {
		p("## Workers\n\n| # | sockets | loops | mint s | ramp CPU s | kernel | cores | saturated |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for i, w := range cl.Workers {
			p("| %d | %d | %d | %.2f | %.2f | %.0f%% | %.2f | %v |\n", i, w.Sockets, w.Loops, w.MintSeconds, w.CPUSecondsRamp, 100*w.SysShareRamp, w.CoresRamp, w.Saturated)
		}
		p("\n")
	}
	if len(rep.PerSecond) > 0 {
		p("## Handshakes per second\n\n")
		parts := make([]string, len(rep.PerSecond))
		for i, v := range rep.PerSecond {
			parts[i] = strconv.FormatUint(v, 10)
		}
		p("%s\n\n", strings.Join(parts, " "))
	}
	for _, n := range rep.Notes {
		p("Note: %s\n\n", n)
	}
	return b.String()
}

func rateText(r float64) string {
	if r <= 0 {
		return "unpaced"
	}
	return strconv.FormatFloat(r, 'f', -1, 64) + "/s"
}

func ms(us int64) string { return strconv.FormatFloat(float64(us)/1000, 'f', 2, 64) + " ms" }

func mib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB" }
