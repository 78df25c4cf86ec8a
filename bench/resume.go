package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dws-gateway/dws/bench/client"
	"github.com/dws-gateway/dws/internal/safego"
)

// ResumeConfig configures the resume scenario (issue 11, SPEC §5a): N
// sockets on one spawned pod, steady publishing over the groups; a share
// of the sockets closes, stays away, and reconnects at once with
// since={last seq seen}&epoch={E}; the rest stay connected.
//
// The sockets run in this process (one client engine, its loops bound to
// source addresses from SourceBase): unlike the worker-based scenarios,
// the scenario needs every socket's last server seq and its catch-up
// moment, which one in-process tracker sees directly. One process holds
// up to its open-file limit (≈20 000) of sockets.
type ResumeConfig struct {
	// Spawn is the dws binary; the bench starts one pod with its embedded
	// NATS JetStream.
	Spawn string
	// Sockets over Groups (socket i in group i mod Groups).
	Sockets, Groups int
	// SourceBase is the first client source address; Sources of them are
	// used (default 127.0.0.2, 2).
	SourceBase netip.Addr
	Sources    int
	// Loops is the client engine's epoll loops (default GOMAXPROCS).
	Loops int
	// TokenKey and APIKey are the server's.
	TokenKey, APIKey string
	// ServerSet are extra --set overrides for the pod.
	ServerSet []string
	LogDir    string
	// Rate is events/s over the groups, throughout.
	Rate float64
	// Fraction of every group's sockets is dropped (1 = all).
	Fraction float64
	// Warmup is publishing before the baseline (default 1 s); Baseline the
	// steady window measured before the drop (default 5 s); Away how long
	// the dropped sockets stay closed (default 10 s).
	Warmup, Baseline, Away time.Duration
	// CatchupMax bounds the wait for every resumed socket (default 60 s);
	// Tail is the publishing after the last catch-up (default 2 s).
	CatchupMax, Tail time.Duration
	// MaxCatchupP99 is the asserted catch-up p99 (default 10 s, the
	// issue's target; < 0 report only); MaxP99Ratio the asserted storm /
	// before live p99 of the untouched sockets (default 2; < 0 report).
	MaxCatchupP99 time.Duration
	MaxP99Ratio   float64
	// PayloadBytes pads each event (0: ≈200 bytes).
	PayloadBytes int
	// Inflight bounds the handshakes pending during the ramp (default
	// 1000); the reconnect is not bounded: it is the storm.
	Inflight int
	// Command is the command line for the report, secrets masked.
	Command string
	// Progress, when set, gets a status line each second.
	Progress io.Writer
}

func (c *ResumeConfig) applyDefaults() error {
	if c.Spawn == "" {
		return errors.New("resume: --spawn-server (the dws binary) is required")
	}
	if c.Sockets <= 0 || c.Groups <= 0 || c.Groups > c.Sockets {
		return errors.New("resume: want 0 < --groups ≤ -n")
	}
	if c.Rate <= 0 {
		return errors.New("resume: --rate must be > 0")
	}
	if c.Fraction <= 0 || c.Fraction > 1 {
		return errors.New("resume: --fraction must be in (0, 1]")
	}
	if c.TokenKey == "" || c.APIKey == "" {
		return errors.New("resume: a token key and an API key are required ($DWS_AUTH_TOKEN_AES_KEY, $DWS_AUTH_API_KEY)")
	}
	if !c.SourceBase.IsValid() {
		c.SourceBase = netip.AddrFrom4([4]byte{127, 0, 0, 2})
	}
	if c.Sources <= 0 {
		c.Sources = 2
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Warmup, time.Second)
	def(&c.Baseline, 5*time.Second)
	def(&c.Away, 10*time.Second)
	def(&c.CatchupMax, 60*time.Second)
	def(&c.Tail, 2*time.Second)
	if c.MaxCatchupP99 == 0 {
		c.MaxCatchupP99 = 10 * time.Second
	}
	if c.MaxP99Ratio == 0 {
		c.MaxP99Ratio = 2
	}
	if c.Inflight <= 0 {
		c.Inflight = 1000
	}
	lim, err := raiseFileLimit()
	if err == nil && uint64(c.Sockets)+200 > lim {
		return fmt.Errorf("resume: %d sockets need more than this process's open-file limit %d", c.Sockets, lim)
	}
	return nil
}

// Socket phases of the scenario.
const (
	rsLive     uint8 = iota // connected from the ramp on
	rsDropped               // closed by the bench, away
	rsResuming              // redialled with since/epoch, not caught up yet
	rsCaughtUp              // has every event up to the reconnect moment
)

// resumeSock is one socket's tracking; guarded by its shard's mutex.
type resumeSock struct {
	seq        seqState
	lastServer int64 // the envelope seq of the latest event
	group      int32
	phase      uint8
	resumed    bool
	closedByUs bool
	target     int64 // row_data seq to reach after the reconnect
	behind     int64
	caughtNs   int64 // reconnect start → caught up
}

// liveSample is one live event of an untouched socket: publish time and
// latency.
type liveSample struct {
	pubNs int64
	latUs int64
}

// resumeShard holds the sockets of one client loop (id mod loops), so a
// loop only ever takes its own shard's lock.
type resumeShard struct {
	mu      sync.Mutex
	samples []liveSample
	resyncs map[string]int64
	opened  int64
	closed  int64 // closes the bench asked for, completed
	unexp   int64
	caught  int64
}

// resumeRun is the scenario's state.
type resumeRun struct {
	cfg       *ResumeConfig
	socks     []resumeSock
	shards    []resumeShard
	queries   []atomic.Pointer[string] // since/epoch of a resumed socket
	targets   []string
	recording atomic.Bool
	epoch     atomic.Pointer[string]
	r0        atomic.Int64 // unix ns of the reconnect start
}

func (r *resumeRun) shard(id int) *resumeShard { return &r.shards[id%len(r.shards)] }

func (r *resumeRun) target(id int) string {
	if q := r.queries[id].Load(); q != nil {
		return r.targets[id] + *q
	}
	return r.targets[id]
}

func (r *resumeRun) onText(id int, p []byte) {
	if e := stringAfter(p, epochKey); e != "" && r.epoch.Load() == nil {
		r.epoch.Store(&e)
	}
	if reason := resyncReason(p); reason != "" {
		sh := r.shard(id)
		sh.mu.Lock()
		sh.resyncs[reason]++
		sh.mu.Unlock()
	}
}

func (r *resumeRun) onOpen(id int, _ time.Duration) {
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.opened++
	s := &r.socks[id]
	if s.phase == rsResuming && s.seq.next > s.target {
		r.caught(sh, s) // nothing was missed
	}
}

func (r *resumeRun) caught(sh *resumeShard, s *resumeSock) {
	s.phase = rsCaughtUp
	s.caughtNs = time.Now().UnixNano() - r.r0.Load()
	sh.caught++
}

func (r *resumeRun) onEvent(id int, ev *client.Event) {
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := &r.socks[id]
	if ev.Seq < 0 {
		return // not one of the bench's events
	}
	s.seq.observe(ev.Seq)
	if ev.ServerSeq > 0 {
		s.lastServer = ev.ServerSeq
	}
	if s.phase == rsResuming && s.seq.next > s.target {
		r.caught(sh, s)
	}
	if !s.resumed && ev.TS > 0 && r.recording.Load() {
		sh.samples = append(sh.samples, liveSample{pubNs: ev.TS, latUs: ev.Latency.Microseconds()})
	}
}

func (r *resumeRun) onClose(id int, info client.CloseInfo) {
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := &r.socks[id]
	if s.closedByUs && s.phase == rsDropped {
		sh.closed++
		return
	}
	sh.unexp++
}

// sum adds f over the shards under their locks.
func (r *resumeRun) sum(f func(*resumeShard) int64) int64 {
	var n int64
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += f(sh)
		sh.mu.Unlock()
	}
	return n
}

// publisherLoop publishes at rate round-robin over the groups from one
// goroutine, so it alone touches the Publisher's sequences and can answer
// snapshot requests (the per-group counts at the reconnect moment)
// between two events.
type publisherLoop struct {
	pub   *Publisher
	rate  float64
	snap  chan chan []int64
	stop  chan struct{}
	done  chan struct{}
	final []int64 // per-group counts after stop
}

func (p *publisherLoop) run() {
	defer close(p.done)
	start := time.Now()
	var sent int64
	for {
		select {
		case <-p.stop:
			p.final, _ = p.pub.Counts()
			return
		case reply := <-p.snap:
			next, _ := p.pub.Counts()
			reply <- next
		default:
		}
		due := int64(time.Since(start).Seconds() * p.rate)
		for ; sent < due; sent++ {
			p.pub.publish(int(sent%int64(p.pub.groups)), 1)
		}
		time.Sleep(time.Millisecond)
	}
}

func (p *publisherLoop) counts() []int64 {
	reply := make(chan []int64, 1)
	p.snap <- reply
	return <-reply
}

// RunResume runs the resume scenario. The report is returned even when
// assertions fail (Passed false); an error means the run itself failed.
func RunResume(ctx context.Context, cfg ResumeConfig) (*ResumeReport, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	pod, err := StartPod(ctx, PodOptions{Binary: cfg.Spawn, Name: "pod-a", TokenKey: cfg.TokenKey,
		APIKey: cfg.APIKey, Set: cfg.ServerSet, LogDir: cfg.LogDir})
	if err != nil {
		return nil, err
	}
	defer pod.Stop()
	pub, err := NewPublisher(PublisherOptions{URLs: []string{pod.NATSURL}, Groups: cfg.Groups, PayloadBytes: cfg.PayloadBytes})
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	targets, err := buildTargets(0, cfg.Sockets, cfg.Groups, cfg.TokenKey, cfg.APIKey, time.Now().Add(24*time.Hour))
	if err != nil {
		return nil, err
	}
	loops := cfg.Loops
	if loops <= 0 {
		loops = runtime.GOMAXPROCS(0) // the engine's default, which the shards must match
	}

	r := &resumeRun{cfg: &cfg, socks: make([]resumeSock, cfg.Sockets), shards: make([]resumeShard, loops),
		queries: make([]atomic.Pointer[string], cfg.Sockets), targets: targets}
	for i := range r.shards {
		r.shards[i].resyncs = map[string]int64{}
	}
	sizes := make([]int64, cfg.Groups)
	for i := range cfg.Sockets {
		sizes[i%cfg.Groups]++
		r.socks[i].group = int32(i % cfg.Groups)
	}
	var srcs []netip.Addr
	a := cfg.SourceBase
	for range cfg.Sources {
		srcs = append(srcs, a)
		a = a.Next()
	}
	// The untouched sockets get an engine of their own: on the resumed
	// sockets' loops, their live frames would wait behind the 100 replayed
	// frames each resumed socket reads in the storm — the bench's own
	// head-of-line blocking, not the server's. Both engines share the
	// process and its CPUs.
	newEngine := func(loops int) (*client.Engine, error) {
		return client.New(client.Config{
			Server: pod.WS, Sources: srcs, Target: r.target, Loops: loops, Text: r.onText,
			Handler: client.Funcs{Open: r.onOpen, Event: r.onEvent, Close: r.onClose},
		})
	}
	eng, err := newEngine(loops)
	if err != nil {
		return nil, err
	}
	liveEng, err := newEngine(1)
	if err != nil {
		eng.Stop()
		return nil, err
	}
	eng.Start()
	defer eng.Stop()
	liveEng.Start()
	defer liveEng.Stop()
	engOf := func(id int) *client.Engine {
		if dropsNow(id, cfg.Groups, cfg.Fraction, sizes[id%cfg.Groups]) {
			return eng
		}
		return liveEng
	}

	rep := &ResumeReport{Scenario: "resume", StartedAt: time.Now().UTC(), Command: cfg.Command, Machine: describeMachine(),
		Config: ResumeSettings{Sockets: cfg.Sockets, Groups: cfg.Groups, Rate: cfg.Rate, Fraction: cfg.Fraction,
			BaselineSeconds: cfg.Baseline.Seconds(), AwaySeconds: cfg.Away.Seconds(), Loops: loops,
			PayloadBytes: cfg.PayloadBytes, ServerSet: cfg.ServerSet},
		Pod: PodInfo{Name: pod.Name, PID: pod.PID, WS: pod.WS.String(), Log: pod.LogPath}}

	// RSS every 100 ms for the peak; progress each second.
	var rssPeak atomic.Int64
	phase := atomic.Pointer[string]{}
	setPhase := func(s string) { phase.Store(&s) }
	setPhase("ramp")
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	safego.Go(watchCtx, "bench.resume.watch", func(ctx context.Context) {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if v, err := ReadRSS(pod.PID); err == nil && v > rssPeak.Load() {
				rssPeak.Store(v)
			}
			if cfg.Progress != nil && i%10 == 9 {
				fmt.Fprintf(cfg.Progress, "resume: %-10s open %d, caught up %d, resyncs %d, server closes %d\n", *phase.Load(),
					eng.Connected()+liveEng.Connected(), r.sum(func(s *resumeShard) int64 { return s.caught }),
					r.sum(func(s *resumeShard) int64 {
						var n int64
						for _, v := range s.resyncs {
							n += v
						}
						return n
					}), r.sum(func(s *resumeShard) int64 { return s.unexp }))
			}
		}
	})

	// Ramp, at most Inflight handshakes pending.
	opened := func() int64 { return r.sum(func(s *resumeShard) int64 { return s.opened + s.unexp }) }
	for i := range cfg.Sockets {
		for int64(i)-opened() >= int64(cfg.Inflight) {
			if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
				return nil, err
			}
		}
		engOf(i).Dial(i)
	}
	if err := waitUntil(ctx, 60*time.Second, func() bool { return opened() >= int64(cfg.Sockets) }); err != nil {
		rep.Notes = append(rep.Notes, "ramp: not every socket opened within 60 s")
	}
	rep.Opened = r.sum(func(s *resumeShard) int64 { return s.opened })
	if ep := r.epoch.Load(); ep != nil {
		rep.Epoch = *ep
	} else {
		rep.Notes = append(rep.Notes, "the ready frame named no epoch: the resumes go without one")
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}

	// Steady publishing: warm-up, then the measured baseline.
	pl := &publisherLoop{pub: pub, rate: cfg.Rate, snap: make(chan chan []int64), stop: make(chan struct{}), done: make(chan struct{})}
	safego.Go(ctx, "bench.resume.publish", func(context.Context) { pl.run() })
	stopPub := sync.OnceFunc(func() { close(pl.stop); <-pl.done })
	defer stopPub()
	setPhase("warm-up")
	if err := sleepCtx(ctx, cfg.Warmup); err != nil {
		return nil, err
	}
	setPhase("baseline")
	m0, _ := Scrape(pod.Ops)
	cpu0, _ := ReadProcCPU(pod.PID)
	self0, _ := ReadProcCPU(os.Getpid())
	mc0, _ := ReadMachineCPU()
	base0 := time.Now().UnixNano()
	r.recording.Store(true)
	if err := sleepCtx(ctx, cfg.Baseline); err != nil {
		return nil, err
	}
	base1 := time.Now().UnixNano()
	cpu1, _ := ReadProcCPU(pod.PID)
	self1, _ := ReadProcCPU(os.Getpid())
	mc1, _ := ReadMachineCPU()
	m1, _ := Scrape(pod.Ops)
	rep.RSSBaseline, _ = ReadRSS(pod.PID)

	// The drop: the chosen share of every group closes (close frame 1000).
	setPhase("away")
	var resumed []int
	for i := range cfg.Sockets {
		if dropsNow(i, cfg.Groups, cfg.Fraction, sizes[i%cfg.Groups]) {
			resumed = append(resumed, i)
			sh := r.shard(i)
			sh.mu.Lock()
			s := &r.socks[i]
			s.resumed, s.closedByUs, s.phase = true, true, rsDropped
			sh.mu.Unlock()
		}
	}
	rep.Resumed, rep.Untouched = int64(len(resumed)), int64(cfg.Sockets-len(resumed))
	awayStart := time.Now()
	for _, i := range resumed {
		eng.Close(i)
	}
	closed := func() int64 { return r.sum(func(s *resumeShard) int64 { return s.closed }) }
	if err := waitUntil(ctx, 15*time.Second, func() bool { return closed() >= int64(len(resumed)) }); err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("drop: %d of %d closes completed within 15 s", closed(), len(resumed)))
	}
	if err := sleepCtx(ctx, cfg.Away-time.Since(awayStart)); err != nil {
		return nil, err
	}

	// The reconnect moment: every resumed socket must get its group's
	// events up to the counts published now.
	setPhase("storm")
	snap := pl.counts()
	m2, _ := Scrape(pod.Ops)
	cpu2, _ := ReadProcCPU(pod.PID)
	self2, _ := ReadProcCPU(os.Getpid())
	mc2, _ := ReadMachineCPU()
	r0 := time.Now()
	r.r0.Store(r0.UnixNano())
	epoch := ""
	if ep := r.epoch.Load(); ep != nil {
		epoch = *ep
	}
	var behind int64
	for _, i := range resumed {
		sh := r.shard(i)
		sh.mu.Lock()
		s := &r.socks[i]
		s.target = snap[s.group] - 1
		s.behind = max(0, s.target+1-s.seq.next)
		behind += s.behind
		s.phase = rsResuming
		q := "&since=" + strconv.FormatInt(s.lastServer, 10)
		if epoch != "" {
			q += "&epoch=" + epoch
		}
		sh.mu.Unlock()
		r.queries[i].Store(&q)
	}
	if len(resumed) > 0 {
		rep.BehindMean = float64(behind) / float64(len(resumed))
	}
	for _, i := range resumed {
		eng.Dial(i)
	}
	caught := func() int64 { return r.sum(func(s *resumeShard) int64 { return s.caught }) }
	stormCtx, stopStorm := context.WithCancel(ctx)
	var peakWaiting atomic.Uint64
	safego.Go(stormCtx, "bench.resume.waiting", func(ctx context.Context) {
		for ctx.Err() == nil {
			if m, err := Scrape(pod.Ops); err == nil {
				if v := uint64(m.Get("dws_resume_waiting", "")); v > peakWaiting.Load() {
					peakWaiting.Store(v)
				}
			}
			_ = sleepCtx(ctx, 500*time.Millisecond)
		}
	})
	err = waitUntil(ctx, cfg.CatchupMax, func() bool { return caught() >= int64(len(resumed)) })
	stormEnd := time.Now()
	cpu3, _ := ReadProcCPU(pod.PID)
	self3, _ := ReadProcCPU(os.Getpid())
	mc3, _ := ReadMachineCPU()
	stopStorm()
	m3, _ := Scrape(pod.Ops)
	if err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("storm: %d of %d resumed sockets caught up within %s", caught(), len(resumed), cfg.CatchupMax))
	}
	rep.StormSeconds = stormEnd.Sub(r0).Seconds()
	rep.PeakWaiting = float64(peakWaiting.Load())

	// Tail: live publishing goes on past the hand-over, then the drain.
	setPhase("tail")
	if err := sleepCtx(ctx, cfg.Tail); err != nil {
		return nil, err
	}
	r.recording.Store(false)
	stopPub()
	pub.Wait(10 * time.Second)
	final := pl.final
	_, failed := pub.Counts()
	setPhase("drain")
	owedDone := func() bool {
		for i := range r.shards {
			sh := &r.shards[i]
			sh.mu.Lock()
			for id := i; id < cfg.Sockets; id += len(r.shards) {
				if r.socks[id].seq.next < final[r.socks[id].group] {
					sh.mu.Unlock()
					return false
				}
			}
			sh.mu.Unlock()
		}
		return true
	}
	if err := waitUntil(ctx, 15*time.Second, owedDone); err != nil {
		rep.Notes = append(rep.Notes, "drain: some sockets still owed events after 15 s")
	}
	m4, _ := Scrape(pod.Ops)

	// Figures.
	catch := newHistogram()
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for id := i; id < cfg.Sockets; id += len(r.shards) {
			s := &r.socks[id]
			s.seq.finish(final[s.group])
			if s.resumed {
				rep.ResumedSeq.addSeq(s.seq)
				if s.phase == rsCaughtUp {
					_ = catch.RecordValue(max(1, s.caughtNs/1000))
				}
			} else {
				rep.UntouchedSeq.addSeq(s.seq)
			}
		}
		for k, v := range sh.resyncs {
			if rep.Resyncs == nil {
				rep.Resyncs = map[string]int64{}
			}
			rep.Resyncs[k] += v
		}
		rep.UnexpectedCloses += sh.unexp
		rep.Caught += sh.caught
		sh.mu.Unlock()
	}
	rep.Catchup = Summarize(catch)
	before, storm := newHistogram(), newHistogram()
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for _, sm := range sh.samples {
			switch {
			case sm.pubNs >= base0 && sm.pubNs < base1:
				_ = before.RecordValue(max(1, sm.latUs))
			case sm.pubNs >= r0.UnixNano() && sm.pubNs < stormEnd.UnixNano():
				_ = storm.RecordValue(max(1, sm.latUs))
			}
		}
		sh.mu.Unlock()
	}
	rep.LiveBefore, rep.LiveStorm = Summarize(before), Summarize(storm)
	rep.P99Ratio = p99Ratio(rep.LiveBefore, rep.LiveStorm)
	rep.ServerLiveBefore = histFigures(fanoutHist, []Metrics{m0}, []Metrics{m1})
	rep.ServerLiveStorm = histFigures(fanoutHist, []Metrics{m2}, []Metrics{m3})
	live := func(m Metrics) float64 {
		return m.Get("dws_deliveries_total", `path="local"`) + m.Get("dws_deliveries_total", `path="forwarded"`)
	}
	replayedDelta := m3.Get("dws_deliveries_total", `path="replayed"`) - m2.Get("dws_deliveries_total", `path="replayed"`)
	rep.CPU = resumeCPU(cpu1-cpu0, live(m1)-live(m0), cpu3-cpu2, live(m3)-live(m2), replayedDelta)
	if d := float64(base1-base0) / 1e9; d > 0 {
		rep.CPU.ServerCoresBaseline, rep.CPU.ClientCoresBaseline = (cpu1-cpu0)/d, (self1-self0)/d
	}
	if d := rep.StormSeconds; d > 0 {
		rep.CPU.ServerCoresStorm, rep.CPU.ClientCoresStorm = (cpu3-cpu2)/d, (self3-self2)/d
	}
	rep.CPU.IdleBaseline, rep.CPU.IdleStorm = IdleShare(mc0, mc1), IdleShare(mc2, mc3)
	rep.RSSPeak = rssPeak.Load()
	acked, pf := pub.Totals()
	rep.Publish = PublishFigures{Acked: acked, Failed: pf, LastError: pub.LastError()}
	var failedSum int64
	for _, f := range failed {
		failedSum += f
	}
	if failedSum > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d publishes failed: their sequences count as lost on every socket of the group", failedSum))
	}
	rep.Metrics = map[string]float64{}
	for _, k := range []string{
		`dws_resumes_total{result="replayed"}`, `dws_resumes_total{result="too_old"}`, `dws_resumes_total{result="too_many"}`,
		`dws_resumes_total{result="epoch_changed"}`, `dws_resumes_total{result="failed"}`, "dws_resume_events_total",
		`dws_deliveries_total{path="replayed"}`, "dws_resume_duration_seconds_sum", "dws_resume_duration_seconds_count",
		`dws_drops_total{reason="duplicate"}`, `dws_drops_total{reason="slow_consumer"}`,
	} {
		if v, ok := m4[k]; ok {
			rep.Metrics[k] = v - m0[k]
		}
	}
	rep.Notes = append(rep.Notes,
		"catch-up is timed from one reconnect start for every resumed socket (the Dial calls), so a socket's time includes its handshake and its wait for a replay slot (resume.max_concurrent)",
		"NATS requests per resume are not measured (the pod's embedded NATS exposes no monitor here); by bridge/replay.go a resume costs a stream info, an ordered consumer create, one pull per batch and a consumer delete",
		"the client engine runs in the bench process on the same machine as the pod: both share its CPUs")
	rep.Checks = resumeChecks(rep, cfg.Sockets, cfg.MaxCatchupP99, cfg.MaxP99Ratio)
	rep.verdict()
	return rep, nil
}

// sleepCtx sleeps d (≤ 0: not at all) unless ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitUntil polls cond every 10 ms until it holds, d passes (an error) or
// ctx ends.
func waitUntil(ctx context.Context, d time.Duration, cond func() bool) error {
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			return fmt.Errorf("not within %s", d)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}
