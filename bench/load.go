package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/dws-gateway/dws/internal/safego"
)

// LoadConfig is what every publishing scenario (fanout, slow, soak) shares:
// the sockets, the pods and the publisher.
type LoadConfig struct {
	// Connect holds the sockets' settings. Connect.Server is ignored when
	// Spawn is set (the bench's own pod A is used).
	Connect ConnectConfig
	// Spawn is a dws binary to start the pods with; empty = use
	// Connect.Server, NATSURL and Ops as given.
	Spawn string
	// Floor, when set, starts the floor server (StartFloorPod) as the one
	// pod instead of dws: the same sockets, publisher and tracking measure
	// the baseline. Spawn is then ignored.
	Floor *FloorPodOptions
	// NATSURL is the broker when not spawning (required then).
	NATSURL string
	// Ops is the ops listener of the server when not spawning (for
	// /metrics); empty = no scrape.
	Ops string
	// Pods is 1 or 2. With 2 (Spawn only), pod A holds every socket and
	// pod B consumes the events of half the groups and forwards them to
	// A over gRPC; both share Redis at RedisAddr.
	Pods int
	// RedisAddr is shared by two pods; default 127.0.0.1:6379.
	RedisAddr string
	// ServerSet are extra --set overrides for spawned pods.
	ServerSet []string
	// PayloadBytes pads each event to about this size; default 0 (about
	// 200 bytes).
	PayloadBytes int
	// DrainMax bounds the wait, after each step, for the frames still in
	// flight; default 30 s.
	DrainMax time.Duration
	// LogDir receives the pods' logs; default a temp dir.
	LogDir string
}

// podSet is the servers a run watches.
type podSet struct {
	pods []*Pod   // spawned by the bench (nil when given)
	pids []int    // to read RSS and CPU from
	ops  []string // to scrape
	nats []string // brokers: [0] pod A's events, [1] pod B's
	keep []*Pod   // stopped at the end
}

// loadRun drives workers and a publisher through a sequence of steps.
type loadRun struct {
	cfg     *LoadConfig
	r       *runner
	ps      podSet
	pub     *Publisher
	sizes   []int64 // sockets per group
	samples []TimeSample
	notes   []string
}

// TimeSample is one second of a run, for the plots.
type TimeSample struct {
	Seconds      float64 `json:"t"`
	RSS          int64   `json:"server_rss_bytes"`
	Sockets      int64   `json:"sockets"`
	FramesPerSec float64 `json:"frames_per_second"`
	Step         string  `json:"step,omitempty"`
}

func (c *LoadConfig) applyDefaults() error {
	if c.Pods <= 0 {
		c.Pods = 1
	}
	if c.Pods > 2 {
		return errors.New("load: --pods is 1 or 2")
	}
	if c.Pods == 2 && c.Spawn == "" {
		return errors.New("load: --pods 2 needs --spawn-server (the bench starts both pods)")
	}
	if c.Floor != nil && c.Pods != 1 {
		return errors.New("load: the floor server runs as one pod")
	}
	if !c.spawns() && c.NATSURL == "" {
		return errors.New("load: --nats is required without --spawn-server")
	}
	if c.RedisAddr == "" {
		c.RedisAddr = "127.0.0.1:6379"
	}
	if c.DrainMax <= 0 {
		c.DrainMax = 30 * time.Second
	}
	if c.spawns() {
		// A placeholder until pod A is up; applyDefaults checks the form.
		c.Connect.Server = mustLoopback(1)
	}
	return c.Connect.applyDefaults()
}

// spawns tells whether the bench starts the server itself.
func (c *LoadConfig) spawns() bool { return c.Spawn != "" || c.Floor != nil }

// startPods starts the pods (or records the given server) and the
// publisher.
func (l *loadRun) startPods(ctx context.Context) error {
	c := l.cfg
	if !c.spawns() {
		pid := c.Connect.ServerPID
		if pid == 0 {
			p, err := FindListenerPID(c.Connect.Server.Port())
			if err != nil {
				l.notes = append(l.notes, "server RSS and CPU not measured: "+err.Error())
			}
			pid = p
		}
		c.Connect.ServerPID = pid
		if pid > 0 {
			l.ps.pids = []int{pid}
		}
		if c.Ops != "" {
			l.ps.ops = []string{c.Ops}
		}
		l.ps.nats = []string{c.NATSURL}
	} else {
		logDir := c.LogDir
		if logDir == "" {
			d, err := os.MkdirTemp("", "dws-bench-pods-")
			if err != nil {
				return err
			}
			logDir = d
		}
		prefix := "bench" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
		redis := ""
		if c.Pods == 2 {
			redis = c.RedisAddr
		}
		for i := range c.Pods {
			// Each pod runs its own embedded NATS: pod A consumes the
			// local half of the groups, pod B the other half, which it
			// must forward to A. The split is exact, so both paths are
			// measured side by side under one load.
			var p *Pod
			var err error
			if c.Floor != nil {
				fo := *c.Floor
				if fo.LogDir == "" {
					fo.LogDir = logDir
				}
				p, err = StartFloorPod(ctx, fo)
			} else {
				set := c.ServerSet
				if i > 0 {
					// Its own stream name: the pods share Redis (routes) but
					// not NATS, so they must not share partition leases
					// either (leases are per partitioned stream).
					set = append(slices.Clone(set), "nats.stream=wa_stream_"+string(rune('a'+i)))
				}
				p, err = StartPod(ctx, PodOptions{
					Binary: c.Spawn, Name: "pod-" + string(rune('a'+i)),
					TokenKey: c.Connect.TokenKey, APIKey: c.Connect.APIKey,
					RedisAddr: redis, KeyPrefix: prefix, Set: set, LogDir: logDir,
				})
			}
			if err != nil {
				return err
			}
			l.ps.keep = append(l.ps.keep, p)
			l.ps.pods = append(l.ps.pods, p)
			l.ps.pids = append(l.ps.pids, p.PID)
			l.ps.ops = append(l.ps.ops, p.Ops)
			l.ps.nats = append(l.ps.nats, p.NATSURL)
		}
		c.Connect.Server = l.ps.pods[0].WS
		c.Connect.ServerPID = l.ps.pods[0].PID
	}
	crossFrom := l.crossFrom()
	pub, err := NewPublisher(PublisherOptions{
		URLs: l.ps.nats, Groups: c.Connect.Groups, PayloadBytes: c.PayloadBytes,
		Route: func(g int) int {
			if g >= crossFrom {
				return 1
			}
			return 0
		},
	})
	if err != nil {
		return err
	}
	l.pub = pub
	return nil
}

// crossFrom is the first group pod B consumes (Groups = none).
func (l *loadRun) crossFrom() int {
	g := l.cfg.Connect.Groups
	if l.cfg.Pods == 2 {
		return g / 2
	}
	return g
}

func (l *loadRun) stop() {
	if l.pub != nil {
		l.pub.Close()
	}
	for _, p := range l.ps.keep {
		p.Stop()
	}
}

// start spawns the workers, ramps every socket and lets the server settle;
// on failure it kills the workers it started, so callers only return.
func (l *loadRun) start(ctx context.Context, hook func(*WorkerConfig)) error {
	if err := l.ramp(ctx, hook); err != nil {
		if l.r != nil {
			l.r.killAll()
		}
		return err
	}
	return nil
}

// scrapeFirst reads pod A's /metrics; a failed scrape reads as empty (the
// checks built on it then report the missing figures).
func (l *loadRun) scrapeFirst() Metrics {
	var m Metrics
	if len(l.ps.ops) > 0 {
		m, _ = Scrape(l.ps.ops[0])
	}
	return m
}

// settings describes the load for a report.
func (c *LoadConfig) settings(rates []float64, step, warmup time.Duration) LoadSettings {
	k := &c.Connect
	return LoadSettings{
		Sockets: k.Sockets, Groups: k.Groups, Procs: k.Procs, LoopsPerProc: k.Loops,
		SourcesPerProc: k.SourcesPerProc, Pods: c.Pods, Spawned: c.spawns(),
		Rates: rates, StepSeconds: step.Seconds(), WarmupSeconds: warmup.Seconds(),
		PayloadBytes: c.PayloadBytes, ServerSet: c.ServerSet,
	}
}

// ramp is start without the clean-up.
func (l *loadRun) ramp(ctx context.Context, hook func(*WorkerConfig)) error {
	cfg := &l.cfg.Connect
	rep := newConnectReport(cfg)
	rep.Server.PID = cfg.ServerPID
	crossFrom := l.crossFrom()
	l.r = &runner{cfg: cfg, rep: rep, msgs: make(chan workerMsg, 64), done: make(chan struct{})}
	l.r.hook = func(wc *WorkerConfig) {
		wc.Track = true
		if crossFrom < cfg.Groups {
			wc.CrossFrom = crossFrom
		}
		if hook != nil {
			hook(wc)
		}
	}
	var lastEvents int64
	var lastAt time.Time
	l.r.onTick = func(now time.Time, agg *Progress, _ int64) {
		var rss int64
		for _, pid := range l.ps.pids {
			if v, err := ReadRSS(pid); err == nil {
				rss += v
			}
		}
		var fps float64
		if !lastAt.IsZero() {
			fps = float64(agg.Events-lastEvents) / now.Sub(lastAt).Seconds()
		}
		lastEvents, lastAt = agg.Events, now
		if !l.r.t0.IsZero() {
			l.samples = append(l.samples, TimeSample{Seconds: now.Sub(l.r.t0).Seconds(), RSS: rss,
				Sockets: agg.Connected, FramesPerSec: fps, Step: l.r.phase})
		}
	}
	if err := l.r.spawn(ctx); err != nil {
		return err
	}
	r := l.r
	r.phase = "minting tokens"
	if err := r.until(ctx, 5*time.Minute, func() bool { return r.all(func(w *workerState) bool { return w.ready }) }); err != nil {
		return err
	}
	r.phase = "ramp"
	rep.Server.RSSBefore = l.rss()
	r.t0 = time.Now().Add(100 * time.Millisecond)
	rep.StartedAt = r.t0.UTC()
	var cpu float64
	for _, w := range r.workers {
		cpu += w.latest.CPUSeconds
	}
	r.prog.start(r.t0, cpu)
	if err := r.broadcast(parentCmd{Cmd: cmdRamp, T0: r.t0.UnixNano()}); err != nil {
		return err
	}
	if err := r.until(ctx, 0, func() bool { return r.all(func(w *workerState) bool { return w.ramped }) }); err != nil {
		return err
	}
	rep.Handshakes.RampSeconds = time.Since(r.t0).Seconds()
	if err := l.wait(ctx, "settle", cfg.Settle); err != nil {
		return err
	}
	rep.Server.RSSHeld = l.rss()
	for _, w := range r.workers {
		rep.Sockets.HeldAfterRamp += w.latest.Connected
	}
	// Sockets per group: socket i is in group i mod Groups.
	l.sizes = make([]int64, cfg.Groups)
	for i := range cfg.Sockets {
		l.sizes[i%cfg.Groups]++
	}
	return nil
}

// wait keeps handling worker messages for d.
func (l *loadRun) wait(ctx context.Context, phase string, d time.Duration) error {
	l.r.phase = phase
	end := time.Now().Add(d)
	return l.r.until(ctx, 0, func() bool { return !time.Now().Before(end) })
}

// rss is the pods' summed RSS.
func (l *loadRun) rss() int64 {
	var s int64
	for _, pid := range l.ps.pids {
		if v, err := ReadRSS(pid); err == nil {
			s += v
		}
	}
	return s
}

// serverCPU is the pods' summed CPU seconds.
func (l *loadRun) serverCPU() float64 {
	var s float64
	for _, pid := range l.ps.pids {
		if v, err := ReadProcCPU(pid); err == nil {
			s += v
		}
	}
	return s
}

func (l *loadRun) clientCPU() float64 {
	var s float64
	for _, w := range l.r.workers {
		s += w.latest.CPUSeconds
	}
	return s
}

func (l *loadRun) events() int64 {
	var s int64
	for _, w := range l.r.workers {
		s += w.latest.Events
	}
	return s
}

// StepFigures is one publishing step of a run.
type StepFigures struct {
	Name  string  `json:"name"`
	Phase int     `json:"phase"`
	Rate  float64 `json:"target_events_per_second"`
	// Seconds is the measured window (after the warm-up).
	Seconds     float64 `json:"seconds"`
	Published   int64   `json:"published"`
	PublishRate float64 `json:"published_per_second"`
	// Fanout is the sockets per event (mean over the groups published).
	Fanout float64 `json:"fanout"`
	// OfferedPerSec is PublishRate × Fanout: the frames/s owed.
	OfferedPerSec float64 `json:"offered_frames_per_second"`
	// DeliveredPerSec is frames received during the window / Seconds.
	DeliveredPerSec float64 `json:"delivered_frames_per_second"`
	// Frames counts frames of this step received, whenever (drain
	// included); Complete = Frames / (Published × Fanout).
	Frames   int64   `json:"frames"`
	Complete float64 `json:"complete"`
	// Latency is publish → receive over every healthy socket; Local and
	// Cross split it by path (two pods), Slow is the slow sockets'.
	Latency Latency  `json:"latency"`
	Local   *Latency `json:"latency_local,omitempty"`
	Cross   *Latency `json:"latency_cross,omitempty"`
	Slow    *Latency `json:"latency_slow,omitempty"`
	// ServerCPUSeconds is the pods' CPU over the window (embedded NATS
	// included when spawned); CPUUsPerFrame divides it by the frames
	// delivered in the window.
	// ServerView is the pods' own latency over the window,
	// dws_fanout_latency_seconds (stored in the partition stream → socket
	// written): the part of Latency inside the pod, after NATS sourced the
	// event from nats.stream. Nil for a server
	// without it (the floor).
	ServerView       *HistFigures `json:"server_view,omitempty"`
	ServerCPUSeconds float64      `json:"server_cpu_seconds"`
	ServerCores      float64      `json:"server_cores"`
	CPUUsPerFrame    float64      `json:"server_cpu_us_per_frame"`
	ClientCores      float64      `json:"client_cores"`
	MachineIdle      float64      `json:"machine_idle"`
	// OtherCores is the machine's busy CPU minus the server's and the
	// client's: the publisher, other processes, unattributed kernel work.
	// On a shared machine it explains a latency neither side caused.
	OtherCores   float64 `json:"other_cores"`
	RSSEnd       int64   `json:"server_rss_end_bytes"`
	DrainSeconds float64 `json:"drain_seconds"`
	Saturated    bool    `json:"saturated"`
	Why          string  `json:"why,omitempty"`
	// HDR is the healthy sockets' latency histogram (HdrHistogram V2,
	// base64), for CDF plots and later merges.
	HDR string `json:"latency_hdr,omitempty"`

	from, to      time.Time // the measured window
	liveDelivered float64
	owedLeft      int64 // frames still owed when the drain ended
}

// step publishes at rate for warmup (untracked, phase 0) and then dur
// (tagged phase), then waits for the frames in flight. during, when set,
// runs once the measured window starts (the slow scenario pauses there).
func (l *loadRun) step(ctx context.Context, name string, phase int, rate float64, warmup, dur time.Duration, during func() error) (*StepFigures, error) {
	st := &StepFigures{Name: name, Phase: phase, Rate: rate}
	r := l.r
	var done atomic.Bool
	// The publisher's goroutine stamps the window's edges and reads the
	// server's and the machine's CPU at them: the parent's loop wakes only
	// on worker messages and would blur them by up to ProgressEvery.
	type edge struct {
		at  time.Time
		cpu float64
		m   MachineCPU
		pm  []Metrics // the pods' /metrics, for their own latency view
	}
	scrape := func() []Metrics {
		var ms []Metrics
		for _, ops := range l.ps.ops {
			m, _ := Scrape(ops)
			ms = append(ms, m)
		}
		return ms
	}
	var e0, e1 edge
	published := make(chan int64, 1)
	started := make(chan struct{})
	safego.Go(ctx, "bench.publish", func(ctx context.Context) {
		defer done.Store(true)
		l.pub.Run(ctx, rate, warmup, 0)
		e0.m, _ = ReadMachineCPU()
		e0.pm = scrape()
		e0.at, e0.cpu = time.Now(), l.serverCPU()
		close(started)
		n := l.pub.Run(ctx, rate, dur, phase)
		e1.at, e1.cpu = time.Now(), l.serverCPU()
		e1.m, _ = ReadMachineCPU()
		e1.pm = scrape()
		published <- n
	})
	r.phase = name + " warm-up"
	if err := r.until(ctx, 0, func() bool {
		select {
		case <-started:
			return true
		default:
			return false
		}
	}); err != nil {
		return nil, err
	}
	cli0, ev0, at0 := l.clientCPU(), l.events(), time.Now()
	r.phase = name
	if during != nil {
		if err := during(); err != nil {
			return nil, err
		}
	}
	if err := r.until(ctx, 0, done.Load); err != nil {
		return nil, err
	}
	cli1, ev1, at1 := l.clientCPU(), l.events(), time.Now()
	// Frames/s as the workers' progress saw it: known during the run,
	// unlike DeliveredPerSec, so the half rate can be chosen from it.
	st.liveDelivered = float64(ev1-ev0) / at1.Sub(at0).Seconds()
	st.Published = <-published // also orders e0 and e1 before these reads
	t0, t1 := e0.at, e1.at
	st.Seconds = t1.Sub(t0).Seconds()
	st.from, st.to = t0, t1
	st.PublishRate = float64(st.Published) / st.Seconds
	st.ServerCPUSeconds = e1.cpu - e0.cpu
	st.ServerCores = st.ServerCPUSeconds / st.Seconds
	if v := histFigures(fanoutHist, e0.pm, e1.pm); v.Calls > 0 {
		st.ServerView = &v
	}
	// Client CPU comes from the workers' progress messages, up to one
	// ProgressEvery stale at either end: good to a few percent.
	st.ClientCores = (cli1 - cli0) / st.Seconds
	st.MachineIdle = IdleShare(e0.m, e1.m)
	st.OtherCores = max(0, (1-st.MachineIdle)*float64(runtime.NumCPU())-st.ServerCores-st.ClientCores)
	var sum int64
	for _, n := range l.sizes {
		sum += n
	}
	st.Fanout = float64(sum) / float64(max(1, len(l.sizes)))
	st.OfferedPerSec = st.PublishRate * st.Fanout

	// Drain: until every frame owed has arrived, or nothing arrived for
	// 2 s (a lost frame never will), or DrainMax.
	l.pub.Wait(10 * time.Second)
	owed := l.owed()
	r.phase = name + " drain"
	drainStart := time.Now()
	last, lastChange := l.events(), time.Now()
	err := r.until(ctx, 0, func() bool {
		ev := l.events()
		if ev != last {
			last, lastChange = ev, time.Now()
		}
		return ev >= owed || time.Since(lastChange) > 2*time.Second || time.Since(drainStart) > l.cfg.DrainMax
	})
	if err != nil {
		return nil, err
	}
	st.DrainSeconds = time.Since(drainStart).Seconds()
	st.owedLeft = max(0, owed-l.events())
	if l.events() < owed {
		l.notes = append(l.notes, fmt.Sprintf("%s: the drain ended with %d frames still owed (lost, closed sockets, or longer than --drain)", name, owed-l.events()))
	}
	st.RSSEnd = l.rss()
	return st, nil
}

// owed is the frames every socket is owed for everything published so far
// (slow and closed sockets included: the drain then ends by the 2-s quiet
// rule instead).
func (l *loadRun) owed() int64 {
	next, failed := l.pub.Counts()
	var s int64
	for g := range next {
		s += (next[g] - failed[g]) * l.sizes[g]
	}
	return s
}

// finish stops the workers, handing them the published counts, and merges
// their results.
func (l *loadRun) finish(ctx context.Context) (*loadResult, error) {
	r := l.r
	r.phase = "stop"
	l.pub.Wait(10 * time.Second)
	next, failed := l.pub.Counts()
	if err := r.broadcast(parentCmd{Cmd: cmdStop, Published: next, Failed: failed}); err != nil {
		return nil, err
	}
	if err := r.until(ctx, 2*time.Minute, func() bool { return r.all(func(w *workerState) bool { return w.result != nil }) }); err != nil {
		return nil, err
	}
	if l.cfg.Connect.Progress != nil {
		r.prog.finish(l.cfg.Connect.Progress)
	}
	r.aggregate()
	res := &loadResult{hists: map[[2]int64]*histAcc{}}
	for i, w := range r.workers {
		tr := w.result.Track
		if tr == nil {
			return nil, fmt.Errorf("worker %d sent no tracking result", i)
		}
		res.timeline = MergeCounts(res.timeline, tr.Timeline)
		lf := &res.loss
		lf.Checked += tr.Loss.Checked
		lf.Excluded += tr.Loss.Excluded
		lf.Lost += tr.Loss.Lost
		lf.SocketsWithLoss += tr.Loss.SocketsWithLoss
		lf.Duplicates += tr.Loss.Duplicates
		lf.WrongSubject += tr.Loss.WrongSubject
		lf.Sequenced += tr.Loss.Sequenced
		lf.Reordered += tr.Loss.Reordered
		res.slowSockets += tr.SlowSockets
		res.slowClosed += tr.SlowClosed
		for k, v := range tr.SlowCloseCodes {
			if res.slowCodes == nil {
				res.slowCodes = map[uint16]int64{}
			}
			res.slowCodes[k] += v
		}
		for _, ph := range tr.Phases {
			key := [2]int64{ph.Phase, int64(ph.Class)}
			a := res.hists[key]
			if a == nil {
				a = &histAcc{h: newHistogram()}
				res.hists[key] = a
			}
			a.frames += ph.Frames
			if err := MergeEncoded(a.h, ph.Hist); err != nil {
				return nil, fmt.Errorf("worker %d: %w", i, err)
			}
		}
	}
	acked, pf := l.pub.Totals()
	res.acked, res.pubFailed, res.pubErr = acked, pf, l.pub.LastError()
	return res, nil
}

// loadResult is the merged tracking of every worker.
type loadResult struct {
	hists                   map[[2]int64]*histAcc // (phase, class)
	timeline                []uint32
	loss                    LossFigures
	slowSockets, slowClosed int64
	slowCodes               map[uint16]int64
	acked, pubFailed        int64
	pubErr                  string
}

type histAcc struct {
	frames int64
	h      *hdrhistogram.Histogram
}

// fill completes st's latency and delivery figures from the results.
func (res *loadResult) fill(st *StepFigures, t0 time.Time) {
	all := newHistogram()
	var frames int64
	for class := range numClasses {
		a := res.hists[[2]int64{int64(st.Phase), int64(class)}]
		if a == nil {
			continue
		}
		lat := Summarize(a.h)
		switch class {
		case ClassLocal:
			st.Local = &lat
		case ClassCross:
			st.Cross = &lat
		case ClassSlow:
			st.Slow = &lat
			continue // not healthy: kept out of the step's latency
		}
		all.Merge(a.h)
		frames += a.frames
	}
	st.Latency = Summarize(all)
	st.HDR, _ = EncodeHistogram(all)
	st.Frames = frames
	if owed := float64(st.Published) * st.Fanout; owed > 0 {
		st.Complete = float64(frames) / owed
	}
	// Frames received in the window, from the 100-ms timeline: whole
	// buckets inside [from, to].
	a := int(st.from.Sub(t0)/TimelineStep) + 1
	b := int(st.to.Sub(t0) / TimelineStep)
	var n uint64
	for i := a; i < b && i < len(res.timeline); i++ {
		n += uint64(res.timeline[i])
	}
	if secs := float64(b-a) * TimelineStep.Seconds(); secs > 0 {
		st.DeliveredPerSec = float64(n) / secs
	}
	if st.DeliveredPerSec > 0 {
		st.CPUUsPerFrame = st.ServerCPUSeconds / (st.DeliveredPerSec * st.Seconds) * 1e6
	}
}

// mustLoopback is 127.0.0.1:port, for placeholders.
func mustLoopback(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)
}
