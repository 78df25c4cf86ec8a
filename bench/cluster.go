package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClusterConfig configures the cluster scenario: P pods started by the
// bench share Redis and one NATS JetStream (so one durable consumer is
// shared by every pod), the sockets are spread evenly over the pods and
// events are published at one rate over the groups. Every group has
// sockets on every pod, so whichever pod consumes an event must forward it
// to the others: the run measures that cross-pod share beside the latency
// and the loss.
type ClusterConfig struct {
	// Load holds the sockets, the dws binary (Spawn, required) and Redis.
	// Load.Pods is ignored (Pods below counts them).
	Load LoadConfig
	// Pods is how many pods to start; default 3.
	Pods int
	// Rate is the events/s published over the groups; default 100.
	Rate float64
	// Step is the measured window, Warmup the untracked publishing
	// before it; defaults 10 s and 1 s.
	Step, Warmup time.Duration
	// Command is the command line for the report, secrets masked.
	Command string
}

// ClusterReport is the cluster scenario's result.
type ClusterReport struct {
	Scenario   string             `json:"scenario"`
	StartedAt  time.Time          `json:"started_at"`
	Command    string             `json:"command,omitempty"`
	Machine    Machine            `json:"machine"`
	Config     LoadSettings       `json:"config"`
	NATSURL    string             `json:"nats_url"`
	Pods       []ClusterPod       `json:"pods"`
	Sockets    SocketFigures      `json:"sockets"`
	Step       *StepFigures       `json:"step"`
	Deliveries ClusterDeliveries  `json:"deliveries"`
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

// ClusterPod is one pod's share of the run: the sockets its workers held
// and the deliveries its /metrics counted over the step (warm-up, window
// and drain).
type ClusterPod struct {
	PodInfo
	Sockets   int64   `json:"sockets"`
	Local     float64 `json:"deliveries_local"`
	Forwarded float64 `json:"deliveries_forwarded"`
}

// ClusterDeliveries sums the pods' dws_deliveries_total by path.
type ClusterDeliveries struct {
	Local     float64 `json:"local"`
	Forwarded float64 `json:"forwarded"`
	// ForwardedShare is Forwarded / (Local + Forwarded): the frames that
	// crossed pods over gRPC before reaching their socket.
	ForwardedShare float64 `json:"forwarded_share"`
}

func (c *ClusterConfig) applyDefaults() error {
	if c.Pods <= 0 {
		c.Pods = 3
	}
	if c.Load.Spawn == "" {
		return errors.New("cluster: --spawn-server is required (the bench starts the pods)")
	}
	if c.Rate <= 0 {
		c.Rate = 100
	}
	if c.Step <= 0 {
		c.Step = 10 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = time.Second
	}
	// One worker process per pod at least, and the same number on each,
	// so the sockets split evenly.
	cc := &c.Load.Connect
	if cc.Procs <= 0 {
		cc.Procs = c.Pods
	}
	if cc.Procs%c.Pods != 0 {
		return fmt.Errorf("cluster: --procs %d is not a multiple of --pods %d (each pod gets the same number of workers)", cc.Procs, c.Pods)
	}
	if cc.Sockets%cc.Procs != 0 {
		return fmt.Errorf("cluster: -n %d is not a multiple of the %d workers (the sockets would not split evenly)", cc.Sockets, cc.Procs)
	}
	// The shared LoadConfig knows one or two pods; the cluster starts its
	// own, so it validates the rest as a one-pod load (no class split:
	// which pod consumes an event is the broker's choice, not the group's).
	c.Load.Pods = 1
	return c.Load.applyDefaults()
}

// RunCluster runs the cluster scenario. The report is returned even when
// assertions fail (Passed false); an error means the run itself failed.
func RunCluster(ctx context.Context, cfg ClusterConfig) (*ClusterReport, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	l := &loadRun{cfg: &cfg.Load}
	defer l.stop()
	if err := l.startCluster(ctx, cfg.Pods); err != nil {
		return nil, err
	}
	pods := l.ps.pods
	// Worker i dials pod i mod P: the workers hold equal shares.
	if err := l.start(ctx, func(wc *WorkerConfig) { wc.Server = pods[wc.Index%len(pods)].WS.String() }); err != nil {
		return nil, err
	}
	defer l.r.killAll()
	settings := cfg.Load.settings([]float64{cfg.Rate}, cfg.Step, cfg.Warmup)
	settings.Pods, settings.Spawned = cfg.Pods, true
	rep := &ClusterReport{
		Scenario: "cluster", StartedAt: l.r.rep.StartedAt, Command: cfg.Command, Machine: describeMachine(),
		NATSURL: l.ps.nats[0],
		Config:  settings,
	}
	m0 := scrapeAll(l.ps.ops)
	st, err := l.step(ctx, fmt.Sprintf("rate %g/s", cfg.Rate), 1, cfg.Rate, cfg.Warmup, cfg.Step, nil)
	if err != nil {
		return nil, err
	}
	m1 := scrapeAll(l.ps.ops)
	for i, p := range pods {
		cp := ClusterPod{PodInfo: PodInfo{Name: p.Name, PID: p.PID, WS: p.WS.String(), Log: p.LogPath}}
		for j, w := range l.r.workers {
			if j%len(pods) == i {
				cp.Sockets += w.latest.Connected
			}
		}
		if m0[i] != nil && m1[i] != nil {
			cp.Local = m1[i].Get("dws_deliveries_total", `path="local"`) - m0[i].Get("dws_deliveries_total", `path="local"`)
			cp.Forwarded = m1[i].Get("dws_deliveries_total", `path="forwarded"`) - m0[i].Get("dws_deliveries_total", `path="forwarded"`)
		} else {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: /metrics not scraped; its deliveries are missing", p.Name))
		}
		rep.Pods = append(rep.Pods, cp)
	}
	res, err := l.finish(ctx)
	if err != nil {
		return nil, err
	}
	res.fill(st, l.r.t0)
	rep.fill(&cfg, l, res, st, m0, m1)
	return rep, nil
}

// startCluster starts the pods: the first with its embedded NATS
// JetStream, every other one on that broker (nats.url), all on Redis under
// a fresh key prefix; then the publisher on the shared broker.
func (l *loadRun) startCluster(ctx context.Context, n int) error {
	c := l.cfg
	logDir := c.LogDir
	if logDir == "" {
		d, err := os.MkdirTemp("", "dws-bench-pods-")
		if err != nil {
			return err
		}
		logDir = d
	}
	prefix := "bench" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	natsURL := ""
	for i := range n {
		p, err := StartPod(ctx, PodOptions{
			Binary: c.Spawn, Name: "pod-" + strconv.Itoa(i), NATSURL: natsURL,
			TokenKey: c.Connect.TokenKey, APIKey: c.Connect.APIKey,
			RedisAddr: c.RedisAddr, KeyPrefix: prefix, Set: c.ServerSet, LogDir: logDir,
		})
		if err != nil {
			return err
		}
		if i == 0 {
			natsURL = p.NATSURL
		}
		// Stopped in reverse: pod-0 carries the broker the others use.
		l.ps.keep = append([]*Pod{p}, l.ps.keep...)
		l.ps.pods = append(l.ps.pods, p)
		l.ps.pids = append(l.ps.pids, p.PID)
		l.ps.ops = append(l.ps.ops, p.Ops)
	}
	l.ps.nats = []string{natsURL}
	c.Connect.Server = l.ps.pods[0].WS
	c.Connect.ServerPID = l.ps.pods[0].PID
	pub, err := NewPublisher(PublisherOptions{
		URLs: l.ps.nats, Groups: c.Connect.Groups, PayloadBytes: c.PayloadBytes,
		Route: func(int) int { return 0 },
	})
	if err != nil {
		return err
	}
	l.pub = pub
	return nil
}

// scrapeAll scrapes every ops address; a failed scrape is nil.
func scrapeAll(ops []string) []Metrics {
	out := make([]Metrics, len(ops))
	for i, o := range ops {
		out[i], _ = Scrape(o)
	}
	return out
}

func (rep *ClusterReport) fill(cfg *ClusterConfig, l *loadRun, res *loadResult, st *StepFigures, m0, m1 []Metrics) {
	cr := l.r.rep
	rep.Sockets = cr.Sockets
	rep.Errors, rep.CloseCodes = cr.Errors, cr.CloseCodes
	rep.Notes = append(append(append([]string(nil), l.notes...), rep.Notes...), cr.Notes...)
	rep.Step = st
	rep.Loss = res.loss
	rep.Publish = PublishFigures{Acked: res.acked, Failed: res.pubFailed, LastError: res.pubErr}
	rep.Samples = l.samples
	// Counters summed over the pods.
	rep.Metrics = map[string]float64{}
	for i := range m1 {
		if m0[i] == nil || m1[i] == nil {
			continue
		}
		for k, v := range metricDeltas(m0[i], m1[i]) {
			rep.Metrics[k] += v
		}
	}
	d := &rep.Deliveries
	for _, p := range rep.Pods {
		d.Local += p.Local
		d.Forwarded += p.Forwarded
	}
	if t := d.Local + d.Forwarded; t > 0 {
		d.ForwardedShare = d.Forwarded / t
	}

	add := func(name, target string, value float64, met, assert bool) {
		rep.Checks = append(rep.Checks, TargetCheck{Name: name, Target: target, Value: value, Met: met, Assert: assert})
	}
	s := rep.Sockets
	add("sockets opened", fmt.Sprintf("= %d", s.Target), float64(s.RampOpened), s.RampOpened == int64(s.Target), true)
	for _, p := range rep.Pods {
		want := int64(s.Target / max(1, len(rep.Pods)))
		add(p.Name+" sockets", fmt.Sprintf("= %d", want), float64(p.Sockets), p.Sockets == want, false)
	}
	add("sockets checked for loss", "> 0", float64(rep.Loss.Checked), rep.Loss.Checked > 0, true)
	add("events lost (sockets that stayed connected)", "= 0", float64(rep.Loss.Lost), rep.Loss.Lost == 0, true)
	add("duplicate events", "= 0", float64(rep.Loss.Duplicates), rep.Loss.Duplicates == 0, true)
	add("events on the wrong socket", "= 0", float64(rep.Loss.WrongSubject), rep.Loss.WrongSubject == 0, true)
	if cfg.Pods > 1 {
		add("cross-pod share of deliveries", "> 0", d.ForwardedShare, d.ForwardedShare > 0, true)
	}
	if rep.Publish.Failed > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d publishes failed (last: %s); they are not owed to anyone", rep.Publish.Failed, rep.Publish.LastError))
	}
	rep.Passed = checksPass(rep.Checks)
}

// Markdown renders the cluster summary.
func (rep *ClusterReport) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# dws-bench cluster — %s\n\n", rep.StartedAt.Format("2006-01-02 15:04 UTC"))
	writeHeader(&b, rep.Command, rep.Machine, rep.Config, nil)
	p("%d pods started by the bench share Redis and one NATS JetStream (%s, embedded in pod-0): one durable consumer for all; each pod holds an equal share of the sockets.\n\n", len(rep.Pods), rep.NATSURL)
	p("**Result: %s.**\n\n", passText(rep.Passed))
	p("## Pods\n\n| pod | pid | ws | sockets | local deliveries | forwarded deliveries |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, pd := range rep.Pods {
		p("| %s | %d | %s | %d | %.0f | %.0f |\n", pd.Name, pd.PID, pd.WS, pd.Sockets, pd.Local, pd.Forwarded)
	}
	d := rep.Deliveries
	p("\nCross-pod share of deliveries: **%.1f %%** (%.0f forwarded of %.0f).\n\n", 100*d.ForwardedShare, d.Forwarded, d.Local+d.Forwarded)
	if st := rep.Step; st != nil {
		p("## Step\n\n")
		writeSteps(&b, []*StepFigures{st})
	}
	writeLossAndChecks(&b, rep.Loss, rep.Publish, rep.Checks, rep.Errors, rep.CloseCodes, rep.Metrics)
	writePlots(&b, rep.Plots)
	for _, n := range rep.Notes {
		p("Note: %s\n\n", n)
	}
	return b.String()
}

// WriteFiles writes prefix.json and prefix.md.
func (rep *ClusterReport) WriteFiles(prefix string) (string, string, error) {
	return writeReportFiles(prefix, rep, rep.Markdown())
}

// PlotCluster writes the cluster's plots next to prefix (latency CDF,
// frames/s and the pods' summed RSS over time).
func PlotCluster(rep *ClusterReport, prefix string) []string {
	var series []cdfSeries
	if rep.Step != nil && rep.Step.HDR != "" {
		series = append(series, cdfSeries{name: fmt.Sprintf("%d pods, %s", len(rep.Pods), rep.Step.Name), hdr: rep.Step.HDR})
	}
	return writePlotFiles(prefix, "cluster: publish → receive latency", series, rep.Samples)
}
