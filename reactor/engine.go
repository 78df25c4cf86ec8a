// Package reactor is dws's epoll reactor: gnet event loops own every
// socket, parse HTTP upgrades and WebSocket frames in place and never block.
// Network work (tokens, locks, routes) runs on a bounded worker pool and
// completes back on the socket's loop; events arrive through Deliver.
package reactor

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/internal/safego"
	"github.com/dws-gateway/dws/session"
)

// Server is one pod's WebSocket listener. Its exported methods are safe for
// concurrent use unless they say otherwise.
type Server struct {
	gnet.BuiltinEventEngine

	opts  Options
	lim   atomic.Pointer[Limits]
	m     *metrics.Metrics
	mx    connMetrics
	index *index
	work  *workers
	pace  *pacer
	perIP atomic.Pointer[ipLimiter]

	loopsMu sync.Mutex
	loopMap map[gnet.EventLoop]*loop
	loops   atomic.Pointer[[]*loop]
	nLoops  int

	eng      gnet.Engine
	port     int
	draining atomic.Bool
	// conns counts TCP connections (any state); gnet's CountConnections
	// races with its own start-up, so dws keeps its own.
	conns    atomic.Int64
	booted   chan struct{}
	runErr   chan error
	stopTick chan struct{}
	epoch    time.Time
	// ready is the encoded ready frame naming the stream epoch (SPEC §5);
	// nil until SetStreamEpoch, then every handshake writes it.
	ready atomic.Pointer[[]byte]
	// resume runs replays (SPEC §5a); nil without Options.Replayer.
	resume *resumer
}

// SetStreamEpoch names the event stream's incarnation in every later
// ready frame ({"type":"ready","epoch":E}, SPEC §5); the bridge calls it
// once it has read the stream. Safe for concurrent use.
func (s *Server) SetStreamEpoch(epoch string) {
	f := codec.ReadyFrameEpoch(epoch)
	s.ready.Store(&f)
}

// SetStreamPosition is SetStreamEpoch with the stream's last sequence
// number: later ready frames read {"type":"ready","epoch":E,"seq":N}, so a
// client that drops before its first event resumes from N (SPEC §5a). The
// app calls it as the stream grows (a few times a second at most); a
// stale N is safe, it only replays more. Safe for concurrent use.
func (s *Server) SetStreamPosition(epoch string, seq uint64) {
	f := codec.ReadyFrameAt(epoch, seq)
	s.ready.Store(&f)
}

// readyFrame is the frame a handshake ends with.
func (s *Server) readyFrame() []byte {
	if f := s.ready.Load(); f != nil {
		return *f
	}
	return codec.ReadyFrame
}

// New checks opts and builds a Server; Start runs it.
func New(opts Options) (*Server, error) {
	if opts.Tokens == nil || opts.Locker == nil || opts.Routes == nil || opts.APIKeys == nil {
		return nil, errors.New("reactor: Tokens, Locker, Routes and APIKeys are required")
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Loops <= 0 {
		opts.Loops = runtime.NumCPU()
	}
	if opts.ReplayWorkers <= 0 {
		opts.ReplayWorkers = 64
	}
	if opts.Workers <= 0 {
		opts.Workers = 64
	}
	if opts.WorkerQueue <= 0 {
		opts.WorkerQueue = 4096
	}
	if opts.Limits.PingInterval == 0 && opts.Limits.MaxMessageBytes == 0 {
		opts.Limits = DefaultLimits()
	}
	s := &Server{
		opts:     opts,
		m:        opts.Metrics,
		index:    newIndex(opts.Loops),
		loopMap:  make(map[gnet.EventLoop]*loop),
		nLoops:   opts.Loops,
		booted:   make(chan struct{}),
		runErr:   make(chan error, 1),
		stopTick: make(chan struct{}),
		epoch:    time.Now(),
	}
	s.mx = newConnMetrics(s.m)
	s.SetLimits(opts.Limits)
	empty := []*loop{}
	s.loops.Store(&empty)
	return s, nil
}

// SetLimits applies new limits (SIGHUP); sockets pick them up on their next
// frame or tick.
func (s *Server) SetLimits(l Limits) {
	s.lim.Store(&l)
	s.perIP.Store(newIPLimiter(l.HandshakesPerIP, l.HandshakeBurst))
}

func (s *Server) limits() *Limits { return s.lim.Load() }

// mono is the server's monotonic clock, never 0: time since it was built.
func (s *Server) mono() time.Duration { return time.Since(s.epoch) + 1 }

// Start listens on opts.Addr and returns once the engine is accepting.
func (s *Server) Start() error {
	// sonic compiles its decoder on first use (~40 ms): pay it here, not on
	// the loop that gets the first client message.
	if err := codec.Pretouch(); err != nil {
		return fmt.Errorf("reactor: json warm-up: %w", err)
	}
	s.work = newWorkers(s.opts.Workers, s.opts.WorkerQueue)
	s.pace = newPacer(s)
	if s.opts.Replayer != nil {
		s.resume = newResumer(s, s.opts.ReplayWorkers)
	}
	safego.Go(context.Background(), "reactor.engine", func(context.Context) {
		err := gnet.Run(s, "tcp://"+s.opts.Addr,
			gnet.WithNumEventLoop(s.opts.Loops),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithReuseAddr(true),
			gnet.WithLogger(gnetLogger{}),
		)
		s.runErr <- err
	})
	select {
	case <-s.booted:
	case err := <-s.runErr:
		s.pace.stop()
		s.work.stop()
		return fmt.Errorf("reactor: listen %s: %w", s.opts.Addr, err)
	}
	safego.Go(context.Background(), "reactor.ticker", s.tickLoops)
	return nil
}

// OnBoot records the engine and the bound port (":0" in tests).
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	if fd, err := eng.Dup(); err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				s.port = a.Port
			case *unix.SockaddrInet6:
				s.port = a.Port
			}
		}
		_ = unix.Close(fd)
	}
	close(s.booted)
	return gnet.None
}

// Port returns the bound TCP port.
func (s *Server) Port() int { return s.port }

// Open returns the number of open WebSocket sessions on this pod.
func (s *Server) Open() int { return s.index.size() }

// loopOf returns dws's state for el, creating it on first sight. Runs on el.
func (s *Server) loopOf(el gnet.EventLoop) *loop {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	if l, ok := s.loopMap[el]; ok {
		return l
	}
	old := *s.loops.Load()
	l := newLoop(s, el, len(old))
	if l.idx >= s.nLoops {
		// gnet made more loops than asked; never happens, but an index
		// out of range would be worse than a log line.
		logx.L().Error("reactor: more event loops than configured", "loops", l.idx+1)
		l.idx = s.nLoops - 1
	}
	s.loopMap[el] = l
	next := append(append([]*loop(nil), old...), l)
	s.loops.Store(&next)
	return l
}

// OnOpen starts a socket in the handshake state.
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	l := s.loopOf(gc.EventLoop())
	c := &conn{gc: gc, lp: l, wheel: -1, started: time.Now().UnixNano()}
	gc.SetContext(c)
	l.pending[c] = struct{}{}
	s.conns.Add(1)
	return nil, gnet.None
}

// OnTraffic parses the handshake or frames from the inbound buffer.
func (s *Server) OnTraffic(gc gnet.Conn) gnet.Action {
	c, _ := gc.Context().(*conn)
	if c == nil {
		return gnet.Close
	}
	action := gnet.None
	ok := safego.Run(context.Background(), "reactor.traffic", func() {
		switch c.state {
		case stHandshake:
			s.onHandshakeBytes(c)
		case stAuthenticating:
			// Bytes wait in gnet's buffer until the worker answers, but
			// only up to a bound (DESIGN invariant 2).
			if gc.InboundBuffered() > s.limits().MaxHandshakeBytes+s.limits().MaxMessageBytes {
				c.abort()
			}
		case stOpen:
			s.readFrames(c)
		default:
			_, _ = gc.Discard(-1)
		}
	})
	if !ok {
		// The panic is counted; the socket is in an unknown state (an
		// open one may still hold the frame that panicked), so end it.
		s.guard("reactor.traffic", func() { c.failed() })
	}
	if c.state == stClosed {
		action = gnet.Close
	}
	return action
}

// OnClose releases everything the socket held.
func (s *Server) OnClose(gc gnet.Conn, _ error) gnet.Action {
	c, _ := gc.Context().(*conn)
	if c == nil {
		return gnet.None
	}
	s.conns.Add(-1)
	s.guard("reactor.close", func() { c.cleanup() })
	return gnet.None
}

// guard runs fn with panic recovery, counting under where.
func (s *Server) guard(where string, fn func()) {
	safego.Run(context.Background(), where, fn)
}

// backlogTick is how often sockets whose kernel buffer was full are retried:
// short enough not to add visible latency to a briefly slow reader; a tick
// touches only the backlogged sockets.
const backlogTick = 10 * time.Millisecond

// Drain makes the listener refuse new upgrades with 503 "draining" (SPEC §6
// shutdown step 1); open sockets are untouched.
func (s *Server) Drain() { s.draining.Store(true) }

// CloseAll sends close code to every open socket, waits up to grace for
// them to go, then drops the rest (SPEC §6 shutdown steps 3–4).
func (s *Server) CloseAll(ctx context.Context, code uint16, reason string, grace time.Duration) {
	for _, l := range *s.loops.Load() {
		l := l
		l.exec(func() {
			// Every open socket sits on exactly one chats or admin route.
			var open []*conn
			for r, set := range l.members {
				if slot(r) == 0 {
					open = append(open, set.conns...)
				}
			}
			for _, c := range open {
				// Events already accepted for c leave before its close
				// frame (SPEC §6: in-flight events, then 1001).
				l.flushFinal(c)
				c.closeWith(code, reason)
			}
			for c := range l.pending {
				c.abort()
			}
		})
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && s.conns.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop stops the engine (closing any socket left) and the workers.
func (s *Server) Stop(ctx context.Context) error {
	select {
	case <-s.stopTick:
	default:
		close(s.stopTick)
	}
	err := s.eng.Stop(ctx)
	if s.pace != nil {
		s.pace.stop()
	}
	if s.work != nil {
		s.work.stop()
	}
	if s.resume != nil {
		s.resume.stop()
	}
	return err
}

// Evict closes this pod's socket for a session key with SessionConflict and
// 4402 because another pod took the session over (session.Evictor). The
// lock is not released: it belongs to the newcomer now.
func (s *Server) Evict(key string) {
	c := s.index.owner(key)
	if c == nil {
		return
	}
	c.lp.exec(func() {
		if !s.index.release(key, c) {
			return
		}
		c.replaced()
	})
}

var _ session.Evictor = (*Server)(nil)
