package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dws-gateway/dws/internal/safego"
)

// ConnectConfig configures the connect scenario. Server, Sockets, TokenKey
// and APIKey are required.
type ConnectConfig struct {
	// Server is the dws WebSocket listener (IPv4).
	Server netip.AddrPort
	// Sockets is N, the number of sockets to ramp to and hold.
	Sockets int
	// Procs is the number of worker processes; 0 = as few as the file
	// limit allows.
	Procs int
	// Rate is the total dial rate per second during the ramp; 0 = as fast
	// as Inflight allows.
	Rate float64
	// Inflight bounds the handshakes in flight, in total over the workers;
	// default 1024.
	Inflight int
	// Hold is how long the sockets are held after the ramp.
	Hold time.Duration
	// Churn is the total closes+reconnects per second during Hold.
	Churn float64
	// Groups spreads sockets over (company, agent) pairs; default 100.
	Groups int
	// SourceBase is the first local source address; default 127.0.0.2.
	SourceBase netip.Addr
	// SourcesPerProc is how many consecutive source addresses each worker
	// uses; default 4 (4 × 28k ephemeral ports per worker).
	SourcesPerProc int
	// Loops is the epoll loops per worker; default max(1, CPUs/Procs).
	Loops int
	// HandshakeTimeout bounds connect → ready per socket; default 10 s.
	HandshakeTimeout time.Duration
	// Settle is the pause between the end of the ramp and the "held" RSS
	// reading, for the server to finish per-socket work; default 1 s.
	Settle time.Duration
	// ServerPID is the server process to watch; 0 = find it by the port.
	ServerPID int
	// TokenKey (64 hex) and APIKey authenticate every socket.
	TokenKey, APIKey string
	// TokenTTL is the minted tokens' lifetime; default 24 h.
	TokenTTL time.Duration
	// ProgressEvery is how often workers report; default 500 ms.
	ProgressEvery time.Duration
	// Command is the command line for the report, secrets already masked.
	Command string
	// Progress receives the live progress line; nil = silent.
	Progress io.Writer
	// Spawner starts the workers; default ExecSpawner{}.
	Spawner Spawner
}

func (c *ConnectConfig) applyDefaults() error {
	if !c.Server.IsValid() || !c.Server.Addr().Is4() {
		return errors.New("connect: server must be an IPv4 host:port")
	}
	if c.Sockets <= 0 {
		return errors.New("connect: sockets must be > 0")
	}
	if c.TokenKey == "" || c.APIKey == "" {
		return errors.New("connect: a token key and an API key are required (--token-key/DWS_AUTH_TOKEN_AES_KEY, --api-key/DWS_AUTH_API_KEY)")
	}
	if _, err := newTokenMinter(c.TokenKey); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if c.Groups <= 0 {
		c.Groups = 100
	}
	if c.Inflight <= 0 {
		c.Inflight = 1024
	}
	if !c.SourceBase.IsValid() {
		c.SourceBase = netip.AddrFrom4([4]byte{127, 0, 0, 2})
	}
	if c.SourcesPerProc <= 0 {
		c.SourcesPerProc = 4
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Settle <= 0 {
		c.Settle = time.Second
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = 24 * time.Hour
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = 500 * time.Millisecond
	}
	if c.Spawner == nil {
		c.Spawner = ExecSpawner{}
	}
	// Each socket is a file; keep room for the worker's own (pipes, epoll,
	// eventfds, runtime).
	perProc := 20000 - 256
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Max < math.MaxInt32 {
		perProc = int(lim.Max) - 256
	}
	if c.Procs <= 0 {
		c.Procs = (c.Sockets + perProc - 1) / perProc
	}
	if per := (c.Sockets + c.Procs - 1) / c.Procs; per > perProc {
		return fmt.Errorf("connect: %d sockets per worker exceed the open-file limit (%d usable); use --procs %d or more",
			per, perProc, (c.Sockets+perProc-1)/perProc)
	}
	if lo, hi := portRange(); hi > lo {
		// Per source address and server address:port, a socket needs its
		// own ephemeral port; keep 10 % for TIME_WAIT left by churn.
		capacity := c.SourcesPerProc * (hi - lo + 1) * 9 / 10
		if per := (c.Sockets + c.Procs - 1) / c.Procs; per > capacity {
			return fmt.Errorf("connect: %d sockets per worker need more than %d source addresses (%d ephemeral ports each); raise --src-per-proc",
				per, c.SourcesPerProc, hi-lo+1)
		}
	}
	if c.Loops <= 0 {
		c.Loops = max(1, runtime.NumCPU()/c.Procs)
	}
	return nil
}

// workerSources returns the source addresses of worker i.
func (c *ConnectConfig) workerSources(i int) ([]string, error) {
	a := c.SourceBase
	for range i * c.SourcesPerProc {
		a = a.Next()
	}
	var out []string
	for range c.SourcesPerProc {
		if !a.IsLoopback() {
			return nil, fmt.Errorf("connect: source address %s is past 127.255.255.255; lower --procs or --src-per-proc", a)
		}
		out = append(out, a.String())
		a = a.Next()
	}
	return out, nil
}

// RunConnect runs the connect scenario: spawn the workers (they mint their
// tokens), read the server's RSS, ramp to N sockets, let the server settle,
// read its RSS again, hold (with churn when set), read it a third time,
// stop, and aggregate what the workers measured.
func RunConnect(ctx context.Context, cfg ConnectConfig) (*ConnectReport, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	rep := newConnectReport(&cfg)
	if cfg.ServerPID == 0 {
		pid, err := FindListenerPID(cfg.Server.Port())
		if err != nil {
			rep.Notes = append(rep.Notes, "server RSS not measured: "+err.Error())
		}
		cfg.ServerPID = pid
	}
	rep.Server.PID = cfg.ServerPID

	r := &runner{cfg: &cfg, rep: rep, msgs: make(chan workerMsg, 64), done: make(chan struct{})}
	defer r.killAll()
	if err := r.spawn(ctx); err != nil {
		return nil, err
	}
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	r.aggregate()
	return rep, nil
}

// workerState is the parent's view of one worker.
type workerState struct {
	proc                  *WorkerProc
	lw                    *lineWriter
	ready, ramped, exited bool
	latest                Progress
	rampedAt              Progress
	result                *WorkerResult
}

type runner struct {
	cfg     *ConnectConfig
	rep     *ConnectReport
	workers []*workerState
	msgs    chan workerMsg
	done    chan struct{} // closed when the run ends: readers stop forwarding
	t0      time.Time
	phase   string
	prog    progressLine
	// hook adjusts each worker's config (scenarios beyond connect).
	hook func(*WorkerConfig)
	// onTick, when set, runs each second after the RSS sample (the
	// scenarios that publish record more series there).
	onTick func(now time.Time, agg *Progress, rss int64)
}

const msgExited = "exited" // synthetic: a worker's stdout ended

func (r *runner) spawn(ctx context.Context) error {
	n := r.cfg.Sockets
	per := (n + r.cfg.Procs - 1) / r.cfg.Procs
	for i := range r.cfg.Procs {
		from, to := min(i*per, n), min((i+1)*per, n)
		srcs, err := r.cfg.workerSources(i)
		if err != nil {
			return err
		}
		proc, err := r.cfg.Spawner.Spawn(ctx, i)
		if err != nil {
			return fmt.Errorf("connect: start worker %d: %w", i, err)
		}
		ws := &workerState{proc: proc, lw: newLineWriter(proc.In)}
		r.workers = append(r.workers, ws)
		safego.Go(ctx, "bench.connect.read", func(context.Context) { r.read(i, proc.Out) })
		wc := WorkerConfig{
			Index: i, Server: r.cfg.Server.String(), Sources: srcs, From: from, To: to,
			Groups: r.cfg.Groups, Rate: r.cfg.Rate / float64(r.cfg.Procs),
			Inflight: max(1, r.cfg.Inflight/r.cfg.Procs), Churn: r.cfg.Churn / float64(r.cfg.Procs),
			Loops: r.cfg.Loops, HandshakeTimeout: r.cfg.HandshakeTimeout, TokenTTL: r.cfg.TokenTTL,
			ProgressEvery: r.cfg.ProgressEvery, TokenKey: r.cfg.TokenKey, APIKey: r.cfg.APIKey,
		}
		if r.hook != nil {
			r.hook(&wc)
		}
		if err := ws.lw.send(wc); err != nil {
			return fmt.Errorf("connect: configure worker %d: %w", i, err)
		}
	}
	return nil
}

// read forwards worker i's lines to r.msgs, then a msgExited.
func (r *runner) read(i int, out io.Reader) {
	dec := newLineReader(out)
	for {
		var m workerMsg
		err := dec.next(&m)
		if err != nil {
			m = workerMsg{Type: msgExited}
		}
		m.Worker = i
		select {
		case r.msgs <- m:
		case <-r.done:
			// Nobody listens any more; keep draining so the worker
			// never blocks writing to a full pipe.
			_, _ = io.Copy(io.Discard, out)
			return
		}
		if err != nil {
			return
		}
	}
}

func (r *runner) broadcast(c parentCmd) error {
	for i, w := range r.workers {
		if err := w.lw.send(c); err != nil {
			return fmt.Errorf("connect: command worker %d: %w", i, err)
		}
	}
	return nil
}

func (r *runner) killAll() {
	close(r.done)
	for _, w := range r.workers {
		w.proc.In.Close()
		if !w.exited {
			w.proc.Kill()
		}
		_ = w.proc.Wait()
	}
}

func (r *runner) all(f func(*workerState) bool) bool {
	for _, w := range r.workers {
		if !f(w) {
			return false
		}
	}
	return true
}

// until processes worker messages, printing progress every second, until
// done holds, the timeout passes (0 = none) or something fails.
func (r *runner) until(ctx context.Context, timeout time.Duration, done func() bool) error {
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("connect: %s: timed out after %s", r.phase, timeout)
		case now := <-tick.C:
			r.tick(now)
		case m := <-r.msgs:
			w := r.workers[m.Worker]
			switch m.Type {
			case msgError:
				return fmt.Errorf("connect: worker %d: %s", m.Worker, m.Error)
			case msgExited:
				w.exited = true
				if w.result == nil {
					return fmt.Errorf("connect: worker %d exited during %s (see its stderr)", m.Worker, r.phase)
				}
			case msgReady:
				w.ready = true
				if m.Progress != nil {
					w.latest = *m.Progress
				}
			case msgProgress:
				w.latest = *m.Progress
			case msgRamped:
				w.ramped, w.latest, w.rampedAt = true, *m.Progress, *m.Progress
			case msgResult:
				w.result = m.Result
			}
		}
	}
	return nil
}

// connected is the workers' open sockets as last reported.
func (r *runner) connected() int64 {
	var n int64
	for _, w := range r.workers {
		n += w.latest.Connected
	}
	return n
}

// tick prints the progress line and samples the server's RSS.
func (r *runner) tick(now time.Time) {
	var p Progress
	var p99 int64
	for _, w := range r.workers {
		p.Opened += w.latest.Opened
		p.Failed += w.latest.Failed
		p.Connected += w.latest.Connected
		p.Errors += w.latest.Errors
		p.CPUSeconds += w.latest.CPUSeconds
		p.Events += w.latest.Events
		p.EventP99Us = max(p.EventP99Us, w.latest.EventP99Us)
		p99 = max(p99, w.latest.HandshakeP99Us)
	}
	p.HandshakeP99Us = p99
	var rss int64
	if r.cfg.ServerPID > 0 {
		if v, err := ReadRSS(r.cfg.ServerPID); err == nil {
			rss = v
			if !r.t0.IsZero() {
				r.rep.RSSSamples = append(r.rep.RSSSamples, RSSSample{
					Seconds: now.Sub(r.t0).Seconds(), Bytes: rss, Sockets: p.Connected})
			}
		}
	}
	if r.onTick != nil {
		r.onTick(now, &p, rss)
	}
	if r.cfg.Progress != nil {
		r.prog.print(r.cfg.Progress, now, r.t0, r.phase, r.cfg.Sockets, &p, rss)
	}
}

// run drives the phases.
func (r *runner) run(ctx context.Context) error {
	cfg, rep := r.cfg, r.rep

	r.phase = "minting tokens"
	if err := r.until(ctx, 5*time.Minute, func() bool { return r.all(func(w *workerState) bool { return w.ready }) }); err != nil {
		return err
	}

	r.phase = "ramp"
	rep.Server.RSSBefore = r.rss()
	m0, _ := ReadMachineCPU()
	s0 := r.serverCPU()
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
	rampEnd := time.Now()
	m1, _ := ReadMachineCPU()
	rep.Handshakes.RampSeconds = rampEnd.Sub(r.t0).Seconds()
	rep.Client.MachineIdleRamp = IdleShare(m0, m1)
	if s1 := r.serverCPU(); s0 >= 0 && s1 >= 0 {
		rep.Server.CPUSecondsRamp = s1 - s0
		rep.Server.CoresRamp = (s1 - s0) / rep.Handshakes.RampSeconds
	}

	r.phase = "settle"
	settleEnd := time.Now().Add(cfg.Settle)
	if err := r.until(ctx, 0, func() bool { return !time.Now().Before(settleEnd) }); err != nil {
		return err
	}
	rep.Server.RSSHeld = r.rss()
	for _, w := range r.workers {
		rep.Sockets.HeldAfterRamp += w.latest.Connected
	}

	r.phase = "hold"
	if cfg.Churn > 0 {
		r.phase = "hold+churn"
		if err := r.broadcast(parentCmd{Cmd: cmdChurn}); err != nil {
			return err
		}
	}
	holdEnd := time.Now().Add(cfg.Hold)
	if err := r.until(ctx, 0, func() bool { return !time.Now().Before(holdEnd) }); err != nil {
		return err
	}
	rep.Server.RSSEnd = r.rss()

	r.phase = "stop"
	if err := r.broadcast(parentCmd{Cmd: cmdStop}); err != nil {
		return err
	}
	if err := r.until(ctx, 2*time.Minute, func() bool { return r.all(func(w *workerState) bool { return w.result != nil }) }); err != nil {
		return err
	}
	if cfg.Progress != nil {
		r.prog.finish(cfg.Progress)
	}
	return nil
}

func (r *runner) rss() int64 {
	if r.cfg.ServerPID <= 0 {
		return 0
	}
	v, err := ReadRSS(r.cfg.ServerPID)
	if err != nil {
		r.rep.Notes = append(r.rep.Notes, "server RSS read failed: "+err.Error())
		return 0
	}
	return v
}

// serverCPU returns the server's CPU seconds, or -1.
func (r *runner) serverCPU() float64 {
	if r.cfg.ServerPID <= 0 {
		return -1
	}
	v, err := ReadProcCPU(r.cfg.ServerPID)
	if err != nil {
		return -1
	}
	return v
}
