package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dws-gateway/dws/bench/client"
	"github.com/dws-gateway/dws/internal/safego"
)

// Socket states as the worker tracks them (the engine has its own finer
// ones). Only these transitions happen: idle → rampDial → open | failed;
// open → churnClose → churnDial → open | failed; open → dropped.
const (
	sIdle uint32 = iota
	sRampDial
	sOpen
	sFailed
	sChurnClose
	sChurnDial
	sDropped
)

// worker runs one share of a scenario's sockets on one engine.
type worker struct {
	cfg      WorkerConfig
	eng      *client.Engine
	state    []atomic.Uint32 // by id - cfg.From
	timeline *Timeline
	sem      chan struct{} // handshakes in flight during the ramp
	ramped   chan struct{}
	rampLeft atomic.Int64

	rampOpened, rampFailed                  atomic.Int64
	churnClosed, churnReopened, churnFailed atomic.Int64
	dropped                                 atomic.Int64
	churnInFlight                           atomic.Int64 // closed by churn, not yet reopened or failed

	tr         *tracker // nil unless cfg.Track; set before the first dial
	slowMu     sync.Mutex
	slowCodes  map[uint16]int64
	slowClosed int64
}

// IsSlow tells whether socket id is one of the share of sockets that stop
// reading in the slow scenario. A multiplicative hash spreads them evenly
// over groups and workers, so every group has healthy and slow members.
func IsSlow(id int, share float64) bool {
	if share <= 0 {
		return false
	}
	h := uint32(id) * 2654435761
	return float64(h>>8)/float64(1<<24) < share
}

// RunWorker is a worker process's main: it reads its WorkerConfig and
// commands from in and writes messages to out until the parent says stop or
// closes in. Errors are also reported to the parent as an error message.
func RunWorker(ctx context.Context, in io.Reader, out io.Writer) (err error) {
	lw := newLineWriter(out)
	defer func() {
		if err != nil {
			_ = lw.send(workerMsg{Type: msgError, Error: err.Error()})
		}
	}()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		return errors.New("worker: no config on stdin")
	}
	var cfg WorkerConfig
	if err := json.Unmarshal(sc.Bytes(), &cfg); err != nil {
		return fmt.Errorf("worker: config: %w", err)
	}
	if _, err := raiseFileLimit(); err != nil {
		return fmt.Errorf("worker: raise file limit: %w", err)
	}

	mintStart := time.Now()
	targets, err := buildTargets(cfg.From, cfg.To, cfg.Groups, cfg.TokenKey, cfg.APIKey, time.Now().Add(cfg.TokenTTL))
	if err != nil {
		return fmt.Errorf("worker %d: %w", cfg.Index, err)
	}
	mintSeconds := time.Since(mintStart).Seconds()

	w := &worker{
		cfg:       cfg,
		state:     make([]atomic.Uint32, cfg.To-cfg.From),
		sem:       make(chan struct{}, max(1, cfg.Inflight)),
		ramped:    make(chan struct{}),
		slowCodes: map[uint16]int64{},
	}
	w.rampLeft.Store(int64(cfg.To - cfg.From))
	srv, err := netip.ParseAddrPort(cfg.Server)
	if err != nil {
		return fmt.Errorf("worker: server address: %w", err)
	}
	var srcs []netip.Addr
	for _, s := range cfg.Sources {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("worker: source address: %w", err)
		}
		srcs = append(srcs, a)
	}
	ecfg := client.Config{
		Server:           srv,
		Sources:          srcs,
		Target:           func(id int) string { return targets[id-cfg.From] },
		Loops:            cfg.Loops,
		HandshakeTimeout: cfg.HandshakeTimeout,
		Handler:          w,
	}
	if cfg.SlowRecvBuf > 0 && cfg.SlowShare > 0 {
		ecfg.RecvBuffer = func(id int) int {
			if IsSlow(id, cfg.SlowShare) {
				return cfg.SlowRecvBuf
			}
			return 0
		}
	}
	w.eng, err = client.New(ecfg)
	if err != nil {
		return err
	}
	w.eng.Start()
	defer w.eng.Stop()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmds := make(chan parentCmd)
	safego.Go(ctx, "bench.worker.stdin", func(ctx context.Context) {
		defer close(cmds)
		for sc.Scan() {
			var c parentCmd
			if json.Unmarshal(sc.Bytes(), &c) != nil {
				continue
			}
			select {
			case cmds <- c:
			case <-ctx.Done():
				return
			}
		}
	})
	ready := workerMsg{Type: msgReady, Worker: cfg.Index, Progress: &Progress{CPUSeconds: selfCPU()}}
	if err := lw.send(ready); err != nil {
		return err
	}
	return w.serve(ctx, lw, cmds, mintSeconds)
}

// serve runs the command loop: ramp, then churn, then stop.
func (w *worker) serve(ctx context.Context, lw *lineWriter, cmds <-chan parentCmd, mintSeconds float64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		rampCPU0, rampCPU   float64
		rampSys0, rampSys   float64
		rampEnd             int64
		rampHist            string
		rampStarted         bool
		rampedCh            <-chan struct{} // nil until the ramp starts
		tick                = time.NewTicker(w.cfg.ProgressEvery)
		churnCtx, stopChurn = context.WithCancel(ctx)
	)
	defer stopChurn()
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c, ok := <-cmds:
			if !ok || c.Cmd == cmdStop {
				stopChurn()
				w.settleChurn()
				res := w.result(mintSeconds, rampHist, rampEnd, rampCPU, rampSys)
				if w.tr != nil {
					tr, err := w.trackResult(c.Published, c.Failed)
					if err != nil {
						return err
					}
					res.Track = tr
				}
				return lw.send(workerMsg{Type: msgResult, Worker: w.cfg.Index, Result: res})
			}
			switch c.Cmd {
			case cmdRamp:
				if rampStarted {
					continue
				}
				rampStarted = true
				t0 := time.Unix(0, c.T0)
				w.timeline = NewTimeline(t0)
				if w.cfg.Track {
					var slow func(int) bool
					if w.cfg.SlowShare > 0 {
						slow = func(id int) bool { return IsSlow(id, w.cfg.SlowShare) }
					}
					w.tr = newTracker(w.cfg.From, w.cfg.To, w.cfg.Groups, w.cfg.CrossFrom, w.eng.Loops(), slow, t0)
					if w.cfg.Partitions != nil {
						w.tr.splitByPartition(w.cfg.Partitions)
					}
				}
				u, sys := selfCPUSplit()
				rampCPU0, rampSys0 = u+sys, sys
				rampedCh = w.ramped
				safego.Go(ctx, "bench.worker.ramp", func(ctx context.Context) { w.ramp(ctx, t0) })
			case cmdHopCut:
				if w.tr != nil {
					w.tr.setCut(c.Cut)
				}
			case cmdChurn:
				if w.cfg.Churn > 0 {
					safego.Go(churnCtx, "bench.worker.churn", w.churn)
				}
			case cmdPause, cmdResume:
				for id := w.cfg.From; id < w.cfg.To; id++ {
					if !IsSlow(id, w.cfg.SlowShare) {
						continue
					}
					if c.Cmd == cmdPause {
						w.eng.Pause(id)
					} else {
						w.eng.Resume(id)
					}
				}
			}
		case <-rampedCh:
			rampedCh = nil
			rampEnd = time.Now().UnixNano()
			u, sys := selfCPUSplit()
			rampCPU, rampSys = u+sys-rampCPU0, sys-rampSys0
			st := w.eng.Snapshot()
			var err error
			if rampHist, err = EncodeHistogram(st.Handshake); err != nil {
				return err
			}
			if err := lw.send(workerMsg{Type: msgRamped, Worker: w.cfg.Index, Progress: progressOf(&st)}); err != nil {
				return err
			}
		case <-tick.C:
			st := w.eng.Snapshot()
			if err := lw.send(workerMsg{Type: msgProgress, Worker: w.cfg.Index, Progress: progressOf(&st)}); err != nil {
				return err
			}
		}
	}
}

func progressOf(st *client.Stats) *Progress {
	return &Progress{
		Dials: st.Dials, Opened: st.Opened, Failed: st.Failed, Connected: st.Connected,
		Errors: st.ErrorTotal(), HandshakeP99Us: st.Handshake.ValueAtQuantile(99),
		CPUSeconds: selfCPU(), Events: st.Events, EventP99Us: st.EventLatency.ValueAtQuantile(99),
	}
}

// ramp dials every socket of the worker, paced to cfg.Rate from t0 (0 =
// unpaced), never more than cfg.Inflight handshakes at once: an unbounded
// burst would overflow the server's SYN and accept queues and measure SYN
// retransmission timers instead of the server.
func (w *worker) ramp(ctx context.Context, t0 time.Time) {
	if d := time.Until(t0); d > 0 {
		time.Sleep(d)
	}
	n := w.cfg.To - w.cfg.From
	if n == 0 {
		close(w.ramped)
		return
	}
	for k := range n {
		if w.cfg.Rate > 0 {
			// Dial in small batches: sleep only when ahead of schedule,
			// so timer granularity does not cap the rate.
			for float64(k) >= time.Since(t0).Seconds()*w.cfg.Rate {
				time.Sleep(time.Millisecond)
			}
		}
		select {
		case w.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		id := w.cfg.From + k
		w.state[k].Store(sRampDial)
		w.eng.Dial(id)
	}
}

// rampResolved counts one ramp socket as opened or failed.
func (w *worker) rampResolved() {
	<-w.sem
	if w.rampLeft.Add(-1) == 0 {
		close(w.ramped)
	}
}

// churn closes random open sockets at cfg.Churn per second; OnClose dials
// them again, so the socket count stays level while the server sees a
// steady storm of closes and handshakes.
func (w *worker) churn(ctx context.Context) {
	const step = 10 * time.Millisecond
	t := time.NewTicker(step)
	defer t.Stop()
	start := time.Now()
	var done float64
	n := len(w.state)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due := now.Sub(start).Seconds() * w.cfg.Churn
			// A bounded number of probes per tick: when few sockets are
			// open, do not spin looking for one.
			for probes := 0; done+1 <= due && probes < 4*n; probes++ {
				k := rand.IntN(n)
				if w.state[k].CompareAndSwap(sOpen, sChurnClose) {
					w.churnClosed.Add(1)
					w.churnInFlight.Add(1)
					w.eng.Close(w.cfg.From + k)
					done++
				}
			}
			if done+1 <= due {
				done = due // could not keep up: do not accumulate a burst
			}
		}
	}
}

// settleChurn waits, after the churn stopped, for the sockets it closed to
// reopen or fail, so the result's counts add up. Each is bounded by the
// close and handshake timeouts; the wait is bounded by their sum.
func (w *worker) settleChurn() {
	deadline := time.Now().Add(w.cfg.HandshakeTimeout + 3*time.Second)
	for w.churnInFlight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// OnOpen implements client.Handler.
func (w *worker) OnOpen(id int, _ time.Duration) {
	w.timeline.Add(time.Now())
	switch w.state[id-w.cfg.From].Swap(sOpen) {
	case sRampDial:
		w.rampOpened.Add(1)
		w.rampResolved()
	case sChurnDial:
		w.churnReopened.Add(1)
		w.churnInFlight.Add(-1)
	}
}

// OnEvent implements client.Handler: tracked when the scenario publishes.
func (w *worker) OnEvent(id int, ev *client.Event) {
	if w.tr != nil {
		w.tr.event(id, ev)
	}
}

// OnClose implements client.Handler.
func (w *worker) OnClose(id int, info client.CloseInfo) {
	if w.tr != nil {
		w.tr.interrupt(id)
		if info.Opened && IsSlow(id, w.cfg.SlowShare) {
			w.slowMu.Lock()
			w.slowCodes[info.Code]++
			w.slowClosed++
			w.slowMu.Unlock()
		}
	}
	s := &w.state[id-w.cfg.From]
	switch s.Load() {
	case sRampDial:
		s.Store(sFailed)
		w.rampFailed.Add(1)
		w.rampResolved()
	case sChurnClose:
		// Ours (or the server's, racing ours): reconnect either way.
		s.Store(sChurnDial)
		w.eng.Dial(id)
	case sChurnDial:
		s.Store(sFailed)
		w.churnFailed.Add(1)
		w.churnInFlight.Add(-1)
	case sOpen:
		s.Store(sDropped)
		w.dropped.Add(1)
	}
}

func (w *worker) result(mintSeconds float64, rampHist string, rampEnd int64, rampCPU, rampSys float64) *WorkerResult {
	st := w.eng.Snapshot()
	all, _ := EncodeHistogram(st.Handshake)
	var tl []uint32
	if w.timeline != nil {
		tl = w.timeline.Counts()
	}
	return &WorkerResult{
		Sockets: len(w.state), Loops: w.eng.Loops(), MintSeconds: mintSeconds,
		Dials: st.Dials, Opened: st.Opened, Failed: st.Failed, Closed: st.Closed, Connected: st.Connected,
		RampOpened: w.rampOpened.Load(), RampFailed: w.rampFailed.Load(),
		FramesIn: st.FramesIn, Events: st.Events, Pings: st.Pings, PongsSent: st.PongsSent,
		Errors: st.Errors, CloseCodes: st.CloseCodes,
		HandshakeRamp: rampHist, HandshakeAll: all,
		Timeline: tl, RampEnd: rampEnd, RampCPU: rampCPU, RampSysCPU: rampSys, TotalCPU: selfCPU(),
		ChurnClosed: w.churnClosed.Load(), ChurnReopened: w.churnReopened.Load(),
		ChurnFailed: w.churnFailed.Load(), Dropped: w.dropped.Load(),
	}
}

// trackResult is the tracker's figures, with the loss check against the
// parent's published counts.
func (w *worker) trackResult(published, failed []int64) (*TrackResult, error) {
	phases, tl, err := w.tr.snapshot()
	if err != nil {
		return nil, err
	}
	loss := w.tr.loss(published, failed, func(id int) bool { return w.state[id-w.cfg.From].Load() == sOpen })
	parts, err := w.tr.partitionHists()
	if err != nil {
		return nil, err
	}
	tr := &TrackResult{Phases: phases, Timeline: tl, Loss: loss, Partitions: parts}
	for id := w.cfg.From; id < w.cfg.To; id++ {
		if IsSlow(id, w.cfg.SlowShare) {
			tr.SlowSockets++
		}
	}
	w.slowMu.Lock()
	tr.SlowCloseCodes, tr.SlowClosed = maps.Clone(w.slowCodes), w.slowClosed
	w.slowMu.Unlock()
	return tr, nil
}

var _ client.Handler = (*worker)(nil)
