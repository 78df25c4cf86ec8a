package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/safego"
	"golang.org/x/sys/unix"
)

// Config configures an Engine. Server and Target are required.
type Config struct {
	// Server is the IPv4 address of the WebSocket listener.
	Server netip.AddrPort
	// Host is the Host header; default Server.String().
	Host string
	// Sources are the local IPv4 addresses sockets bind to, socket id
	// using Sources[id % len(Sources)]. Each source has its own ~28k
	// ephemeral ports towards Server, so holding more sockets than that
	// takes several (any 127.0.0.x works on loopback). Empty: the kernel
	// chooses.
	Sources []netip.Addr
	// Target returns the request target (path and query) of socket id:
	// "/ws/{C}/{A}?user=...&token=...&x-api-key=...". It is called on a
	// loop goroutine for every dial, so it should return a precomputed
	// string; it must be safe for concurrent use.
	Target func(id int) string
	// Protocol is the sub-protocol offered and required in the 101;
	// default "json.v1". "-" offers none.
	Protocol string
	// Loops is the number of epoll loops; default GOMAXPROCS (one per
	// core the process may use).
	Loops int
	// HandshakeTimeout bounds connect() → {"type":"ready"}; default 10 s.
	HandshakeTimeout time.Duration
	// CloseTimeout bounds a client close waiting for its echo; default 3 s.
	CloseTimeout time.Duration
	// ReadBuffer is the initial size of each loop's shared read buffer;
	// default 64 KiB.
	ReadBuffer int
	// MaxFrame is the largest frame accepted; default 1 MiB.
	MaxFrame int
	// Handler, when set, is told about every open, event and close.
	Handler Handler
	// Text, when set, sees every text frame that is not an event or an
	// error: the ready frame (before OnOpen; it carries the stream's
	// "epoch" a resume needs, SPEC §5a) and frames such as
	// {"type":"resync"}. p aliases the read buffer: valid only during the
	// call, which runs on a loop goroutine like the Handler's. A resume
	// reconnects with Dial after a close, Target then returning the
	// target with since= and epoch= added.
	Text func(id int, p []byte)
	// RecvBuffer, when set, returns the SO_RCVBUF of socket id (0 = the
	// kernel's autotuned default). A slow-consumer scenario gives its
	// paused sockets a small one so the server's outbound ring, not the
	// kernel's buffers, absorbs the backlog within seconds.
	RecvBuffer func(id int) int
}

// Handler observes sockets. Its methods run on a loop goroutine while that
// loop's statistics are locked: they must be quick, must not block, and must
// not call Snapshot (Dial, Close and Connected are fine).
type Handler interface {
	// OnOpen: socket id received {"type":"ready"}, handshake after
	// connect() was called.
	OnOpen(id int, handshake time.Duration)
	// OnEvent: socket id received an event; ev is valid only during the
	// call.
	OnEvent(id int, ev *Event)
	// OnClose: socket id ended, before or after ready; it may be dialled
	// again.
	OnClose(id int, info CloseInfo)
}

// CloseInfo says how a socket ended.
type CloseInfo struct {
	// Code is the close code: from the server's close frame, 1005 for an
	// empty one, 1006 when an open socket dropped without one, 0 when the
	// socket never opened and got no close frame.
	Code uint16
	// Err is the error kind (Err* constants), "" for a clean close.
	Err string
	// Opened tells whether the socket had received ready.
	Opened bool
	// ByClient tells that Close started the end.
	ByClient bool
}

// Funcs adapts optional functions to Handler; nil fields are skipped.
type Funcs struct {
	Open  func(id int, handshake time.Duration)
	Event func(id int, ev *Event)
	Close func(id int, info CloseInfo)
}

// OnOpen implements Handler.
func (f Funcs) OnOpen(id int, d time.Duration) {
	if f.Open != nil {
		f.Open(id, d)
	}
}

// OnEvent implements Handler.
func (f Funcs) OnEvent(id int, ev *Event) {
	if f.Event != nil {
		f.Event(id, ev)
	}
}

// OnClose implements Handler.
func (f Funcs) OnClose(id int, info CloseInfo) {
	if f.Close != nil {
		f.Close(id, info)
	}
}

// Engine holds sockets on its loops. Dial, Close, Connected, Snapshot and
// Stop are safe for concurrent use.
type Engine struct {
	cfg       Config
	dst       unix.SockaddrInet4
	tail      []byte // request bytes after the target
	accept    string // the Sec-WebSocket-Accept every 101 must carry
	handler   Handler
	loops     []*loop
	nloops    int
	base      time.Time
	connected atomic.Int64

	startOnce, stopOnce sync.Once
}

// New validates cfg, applies defaults and creates the loops (not started).
func New(cfg Config) (*Engine, error) {
	if !cfg.Server.IsValid() || !cfg.Server.Addr().Is4() {
		return nil, errors.New("client: Server must be an IPv4 address and port")
	}
	if cfg.Target == nil {
		return nil, errors.New("client: Target is required")
	}
	for _, s := range cfg.Sources {
		if !s.Is4() {
			return nil, fmt.Errorf("client: source %s is not IPv4", s)
		}
	}
	if cfg.Host == "" {
		cfg.Host = cfg.Server.String()
	}
	switch cfg.Protocol {
	case "":
		cfg.Protocol = "json.v1"
	case "-":
		cfg.Protocol = ""
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = 3 * time.Second
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = 64 << 10
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = 1 << 20
	}
	// One random Sec-WebSocket-Key per engine rather than per socket: the
	// server cannot tell, and every 101 can then be checked against one
	// precomputed accept value instead of storing a key per socket.
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])

	e := &Engine{
		cfg:     cfg,
		dst:     unix.SockaddrInet4{Port: int(cfg.Server.Port()), Addr: cfg.Server.Addr().As4()},
		tail:    requestTail(cfg.Host, key, cfg.Protocol),
		accept:  codec.AcceptKey(key),
		handler: cfg.Handler,
		nloops:  cfg.Loops,
		base:    time.Now(),
	}
	if e.handler == nil {
		e.handler = Funcs{}
	}
	seed := binary.LittleEndian.Uint64(raw[:8])
	for i := range cfg.Loops {
		l, err := newLoop(e, seed+uint64(i)*0x9e3779b97f4a7c15)
		if err != nil {
			for _, l := range e.loops {
				unix.Close(l.epfd)
				unix.Close(l.wakefd)
			}
			return nil, fmt.Errorf("client: create loop: %w", err)
		}
		e.loops = append(e.loops, l)
	}
	return e, nil
}

// Start starts the loops (each on its own goroutine, for the life of the
// engine).
func (e *Engine) Start() {
	e.startOnce.Do(func() {
		for _, l := range e.loops {
			safego.Go(context.Background(), "bench.client.loop", func(context.Context) { l.run() })
		}
	})
}

// Dial queues a connect for socket id (≥ 0). Ids are the caller's: Target
// and Sources are indexed by them and Handler reports them. Dialling an id
// whose socket is still alive does nothing.
func (e *Engine) Dial(id int) { e.loops[id%e.nloops].push(command{id: int32(id), op: cmdDial}) }

// Close queues a client close of socket id: close frame 1000 and, when the
// server echoes it, the end of the socket (OnClose with ByClient). A socket
// still in its handshake is dropped at once.
func (e *Engine) Close(id int) { e.loops[id%e.nloops].push(command{id: int32(id), op: cmdClose}) }

// Pause stops reading socket id, as a browser tab whose page froze: bytes
// pile up in the kernel's buffers and then in the server's outbound ring.
// Pings go unanswered too. A paused socket's hang-up is seen on Resume.
func (e *Engine) Pause(id int) { e.loops[id%e.nloops].push(command{id: int32(id), op: cmdPause}) }

// Resume reads socket id again, starting with whatever queued meanwhile.
func (e *Engine) Resume(id int) { e.loops[id%e.nloops].push(command{id: int32(id), op: cmdResume}) }

// Connected returns the number of open sockets.
func (e *Engine) Connected() int64 { return e.connected.Load() }

// Loops returns the number of epoll loops.
func (e *Engine) Loops() int { return e.nloops }

// Snapshot returns a copy of the aggregates of every loop.
func (e *Engine) Snapshot() Stats {
	s := Stats{
		Errors:       make(map[string]int64),
		CloseCodes:   make(map[uint16]int64),
		Handshake:    NewHistogram(),
		EventLatency: NewHistogram(),
	}
	for _, l := range e.loops {
		l.mu.Lock()
		l.st.addTo(&s)
		l.mu.Unlock()
	}
	s.Connected = e.connected.Load()
	return s
}

// Stop closes every socket without a close frame (as a crashing client
// would) and waits for the loops to end. OnClose is not called for them.
// The engine cannot be restarted.
func (e *Engine) Stop() {
	e.stopOnce.Do(func() {
		e.Start() // a never-started engine still owes its fds a close
		for _, l := range e.loops {
			l.push(command{op: cmdStop})
		}
		for _, l := range e.loops {
			<-l.done
		}
	})
}

func (e *Engine) source(id int) netip.Addr {
	if len(e.cfg.Sources) == 0 {
		return netip.Addr{}
	}
	return e.cfg.Sources[id%len(e.cfg.Sources)]
}

// now is engine-monotonic nanoseconds: immune to wall-clock steps.
func (e *Engine) now() int64 { return int64(time.Since(e.base)) }

// wallNow is unix nanoseconds, comparable with the "ts" a publisher wrote.
func wallNow() int64 { return time.Now().UnixNano() }

func durationOf(ns int64) time.Duration { return time.Duration(ns) }
