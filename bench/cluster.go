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
//
// With issue 10 every event frame carries the stream's seq and the pods
// split the stream's partitions: the run also checks that no socket saw a
// seq out of order or twice, reports how the partitions ended up spread
// over the pods and, with KillPod, SIGKILLs one pod during the window and
// measures how long its partitions' events waited for a survivor.
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
	// KillPod, when > 0, is the index of the pod to SIGKILL during the
	// measured window (never pod-0: it carries the broker); KillAfter is
	// when, after the window starts (before Step ends).
	KillPod   int
	KillAfter time.Duration
	// FailoverWindow is the span either side of the kill whose events
	// the failover figure covers; default 1 s.
	FailoverWindow time.Duration
	// MaxFailover is the failover time asserted; default nats.failover
	// (from --server-set, else dws's 5 s). Negative: report only.
	MaxFailover time.Duration
	// MaxHopP99 is the p99 the cross-pod hop may add (forwarded p99 −
	// local p99); default 1 ms, negative: report only.
	MaxHopP99 time.Duration
	// Command is the command line for the report, secrets masked.
	Command string
}

// ClusterReport is the cluster scenario's result.
type ClusterReport struct {
	Scenario   string            `json:"scenario"`
	StartedAt  time.Time         `json:"started_at"`
	Command    string            `json:"command,omitempty"`
	Machine    Machine           `json:"machine"`
	Config     LoadSettings      `json:"config"`
	NATSURL    string            `json:"nats_url"`
	Pods       []ClusterPod      `json:"pods"`
	Sockets    SocketFigures     `json:"sockets"`
	Step       *StepFigures      `json:"step"`
	Deliveries ClusterDeliveries `json:"deliveries"`
	Loss       LossFigures       `json:"loss"`
	Partitions ClusterPartitions `json:"partitions"`
	Failover   *ClusterFailover  `json:"failover,omitempty"`
	// Hop splits the window's latency into local and forwarded deliveries.
	Hop *ClusterHop `json:"hop,omitempty"`
	// Drops is dws_drops_total by reason over the step, live pods only.
	Drops      map[string]float64 `json:"drops,omitempty"`
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
	// PartitionsOwned is dws_partitions_owned at the end; nil when the pod
	// was killed, not scraped or does not export it.
	PartitionsOwned *float64 `json:"partitions_owned,omitempty"`
	// Killed: the run SIGKILLed this pod.
	Killed bool `json:"killed,omitempty"`
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
	if c.KillPod < 0 || c.KillPod >= c.Pods {
		return fmt.Errorf("cluster: --kill-pod %d: want 1..%d (pod-0 carries the broker and is never killed)", c.KillPod, c.Pods-1)
	}
	if c.KillPod > 0 && (c.KillAfter <= 0 || c.KillAfter >= c.Step) {
		return fmt.Errorf("cluster: --kill-after %s: want a time inside the %s window", c.KillAfter, c.Step)
	}
	if c.FailoverWindow <= 0 {
		c.FailoverWindow = time.Second
	}
	if c.MaxFailover == 0 {
		c.MaxFailover = configuredFailover(c.Load.ServerSet)
	}
	if c.MaxHopP99 == 0 {
		c.MaxHopP99 = time.Millisecond
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
	// Worker i dials pod i mod P: the workers hold equal shares. Each
	// ships its latency per partition too, for the hop split.
	nParts := configuredPartitions(cfg.Load.ServerSet)
	partOf := groupPartitions(cfg.Load.Connect.Groups, nParts)
	if err := l.start(ctx, func(wc *WorkerConfig) {
		wc.Server = pods[wc.Index%len(pods)].WS.String()
		wc.Partitions = partOf
	}); err != nil {
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
	var kill *killer
	var windowStart time.Time
	var hopCut float64
	// The partitions' owners: read before the warm-up, every 500 ms, and
	// after the drain (cluster_hop.go).
	watch := newOwnershipWatch(l.ps.ops, nParts)
	watch.start(500 * time.Millisecond)
	during := func() error {
		windowStart = time.Now()
		if cfg.KillPod > 0 {
			kill = scheduleKill(pods[cfg.KillPod], cfg.KillAfter)
			// The hop split keeps to the events published before the
			// kill: after it, failover, not the hop, shapes the latency.
			hopCut = cfg.KillAfter.Seconds()
			return l.r.broadcast(parentCmd{Cmd: cmdHopCut, Cut: windowStart.Add(cfg.KillAfter).UnixNano()})
		}
		return nil
	}
	st, err := l.step(ctx, fmt.Sprintf("rate %g/s", cfg.Rate), 1, cfg.Rate, cfg.Warmup, cfg.Step, during)
	if err != nil {
		watch.finish()
		return nil, err
	}
	ownersAtStart, moved := watch.finish()
	var killedAt time.Time
	if kill != nil {
		rep.Failover = &ClusterFailover{Pod: pods[cfg.KillPod].Name, Window: cfg.FailoverWindow.Seconds()}
		at, err := kill.result(time.Second)
		if err != nil {
			rep.Failover.Error = err.Error()
		} else {
			killedAt = at
			rep.Failover.KilledAfter = at.Sub(windowStart).Seconds()
			l.notes = append(l.notes, "the drain counts frames owed to the killed pod's sockets too, so it ends by its 2-s quiet rule with those still owed; the loss check leaves them out")
		}
	}
	m1 := scrapeAll(l.ps.ops)
	for i, p := range pods {
		cp := ClusterPod{PodInfo: PodInfo{Name: p.Name, PID: p.PID, WS: p.WS.String(), Log: p.LogPath}}
		cp.Killed = kill != nil && i == cfg.KillPod && !killedAt.IsZero()
		for j, w := range l.r.workers {
			if j%len(pods) == i {
				cp.Sockets += w.latest.Connected
			}
		}
		if m0[i] != nil && m1[i] != nil {
			cp.Local = m1[i].Get("dws_deliveries_total", `path="local"`) - m0[i].Get("dws_deliveries_total", `path="local"`)
			cp.Forwarded = m1[i].Get("dws_deliveries_total", `path="forwarded"`) - m0[i].Get("dws_deliveries_total", `path="forwarded"`)
			if v, ok := m1[i][ownedGauge]; ok {
				cp.PartitionsOwned = &v
			}
		} else if cp.Killed {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s was killed: its deliveries and partitions are missing from the sums", p.Name))
		} else {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: /metrics not scraped; its deliveries are missing", p.Name))
		}
		rep.Pods = append(rep.Pods, cp)
	}
	rep.Partitions = partitionFigures(configuredPartitions(cfg.Load.ServerSet), m0, m1)
	rep.Drops = dropsByReason(m0, m1)
	res, err := l.finish(ctx)
	if err != nil {
		return nil, err
	}
	res.fill(st, l.r.t0)
	// The shared merge (load.go) sums the order check; the arrival
	// profiles come from the workers' results directly.
	var arrivals ArrivalProfile
	for _, w := range l.r.workers {
		if w.result == nil || w.result.Track == nil {
			continue
		}
		arrivals.merge(w.result.Track.Loss.Arrivals)
	}
	res.loss.Arrivals = nil
	if f := rep.Failover; f != nil && !killedAt.IsZero() {
		for j, w := range l.r.workers {
			if j%len(pods) == cfg.KillPod {
				f.Sockets += w.result.RampOpened
			}
		}
		wait, found := failoverTime(&arrivals, TimelineStep, killedAt.Sub(l.r.t0), cfg.FailoverWindow)
		f.Seconds, f.Found = wait.Seconds(), found
	}
	rep.Hop = clusterHop(l, len(pods), nParts, watch, ownersAtStart, moved, hopCut)
	rep.Hop.Push = pushFigures(m0, m1)
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

	if rep.Publish.Failed > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d publishes failed (last: %s); they are not owed to anyone", rep.Publish.Failed, rep.Publish.LastError))
	}
	rep.check(cfg)
}

// check derives the report's checks from its figures alone, and Passed.
func (rep *ClusterReport) check(cfg *ClusterConfig) {
	rep.Checks = nil
	add := func(name, target string, value float64, met, assert bool) {
		rep.Checks = append(rep.Checks, TargetCheck{Name: name, Target: target, Value: value, Met: met, Assert: assert})
	}
	s := rep.Sockets
	add("sockets opened", fmt.Sprintf("= %d", s.Target), float64(s.RampOpened), s.RampOpened == int64(s.Target), true)
	for _, p := range rep.Pods {
		if p.Killed {
			continue
		}
		want := int64(s.Target / max(1, len(rep.Pods)))
		add(p.Name+" sockets", fmt.Sprintf("= %d", want), float64(p.Sockets), p.Sockets == want, false)
	}
	add("sockets checked for loss", "> 0", float64(rep.Loss.Checked), rep.Loss.Checked > 0, true)
	add("events lost (sockets that stayed connected)", "= 0", float64(rep.Loss.Lost), rep.Loss.Lost == 0, true)
	add("duplicate events", "= 0", float64(rep.Loss.Duplicates), rep.Loss.Duplicates == 0, true)
	add("events on the wrong socket", "= 0", float64(rep.Loss.WrongSubject), rep.Loss.WrongSubject == 0, true)
	add("frames carrying the server's seq", "> 0", float64(rep.Loss.Sequenced), rep.Loss.Sequenced > 0, false)
	add("reordered deliveries (seq not above the socket's last)", "= 0", float64(rep.Loss.Reordered), rep.Loss.Reordered == 0, true)
	if rep.Loss.Sequenced == 0 {
		rep.Notes = append(rep.Notes, "no frame carried a server seq (a server from before issue 10): the order check saw nothing to check")
	}
	if cfg.Pods > 1 {
		add("cross-pod share of deliveries", "> 0", rep.Deliveries.ForwardedShare, rep.Deliveries.ForwardedShare > 0, true)
	}
	if pf := rep.Partitions; pf.Exposed && pf.Owned > 0 {
		add("partitions owned by the live pods", fmt.Sprintf("= %d", pf.Configured), pf.Owned, pf.Owned == float64(pf.Configured), true)
		add("largest gap of a live pod's partitions to its share", fmt.Sprintf("<= 1 (share %.2f)", pf.Share), pf.MaxOff, pf.MaxOff <= 1, true)
	} else if cfg.Pods > 1 {
		// The gauge exists before the partitions are wired, at 0: then
		// every pod shares one durable consumer and nobody owns anything.
		rep.Notes = append(rep.Notes, "no pod owns a partition (dws_partitions_owned absent or 0: a server from before issue 10): partition balance not checked")
	}
	if cfg.Pods > 1 {
		rep.Hop.checks(cfg.MaxHopP99, add)
	}
	if f := rep.Failover; f != nil {
		switch {
		case f.Error != "":
			add("pod killed", "yes", 0, false, true)
		case !f.Found:
			add("events around the kill received", "> 0", 0, false, true)
		default:
			add("failover: last event around the kill reached its sockets (s)", fmt.Sprintf("<= %g", cfg.MaxFailover.Seconds()),
				f.Seconds, cfg.MaxFailover < 0 || f.Seconds <= cfg.MaxFailover.Seconds(), cfg.MaxFailover > 0)
		}
	}
	rep.Passed = checksPass(rep.Checks)
}

// Markdown renders the cluster summary.
func (rep *ClusterReport) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# dws-bench cluster — %s\n\n", rep.StartedAt.Format("2006-01-02 15:04 UTC"))
	writeHeader(&b, rep.Command, rep.Machine, rep.Config, nil)
	p("%d pods started by the bench share Redis and one NATS JetStream (%s, embedded in pod-0); each pod holds an equal share of the sockets, and the stream's partitions (issue 10) are split among the live pods.\n\n", len(rep.Pods), rep.NATSURL)
	p("**Result: %s.**\n\n", passText(rep.Passed))
	p("## Pods\n\n| pod | pid | ws | sockets | local deliveries | forwarded deliveries | partitions owned |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, pd := range rep.Pods {
		owned := "—"
		switch {
		case pd.Killed:
			owned = "killed"
		case pd.PartitionsOwned != nil:
			owned = fmt.Sprintf("%.0f", *pd.PartitionsOwned)
		}
		p("| %s | %d | %s | %d | %.0f | %.0f | %s |\n", pd.Name, pd.PID, pd.WS, pd.Sockets, pd.Local, pd.Forwarded, owned)
	}
	d := rep.Deliveries
	p("\nCross-pod share of deliveries: **%.1f %%** (%.0f forwarded of %.0f).\n\n", 100*d.ForwardedShare, d.Forwarded, d.Local+d.Forwarded)
	writeClusterOrder(&b, rep)
	writeClusterHop(&b, rep.Hop)
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
	if h := rep.Hop; h != nil && h.Local.Count > 0 && h.Forwarded.Count > 0 {
		series = append(series, cdfSeries{name: "local", hdr: h.LocalHDR}, cdfSeries{name: "forwarded", hdr: h.ForwardedHDR})
	}
	return writePlotFiles(prefix, "cluster: publish → receive latency", series, rep.Samples)
}
