package client

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/dws-gateway/dws/codec"
	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

const (
	// wakeSlot marks the eventfd in epoll data; real slots are ≥ 0.
	wakeSlot = -1
	// maxEvents per epoll_wait: enough to amortise the syscall, small
	// enough that commands and deadlines are not starved.
	maxEvents = 512
	// maxCmdsPerTurn bounds the dials run between two epoll_waits so a
	// burst of Dial calls does not delay reads of sockets already open.
	maxCmdsPerTurn = 512
	// minRead is the least free space offered to read(); below it the
	// loop buffer grows (a frame larger than the buffer is being received).
	minRead = 4 << 10
	// idleWaitMs is the epoll timeout with nothing queued: the resolution
	// of handshake and close deadlines.
	idleWaitMs = 20
)

type cmdOp uint8

const (
	cmdDial cmdOp = iota
	cmdClose
	cmdStop
	cmdPause
	cmdResume
)

type command struct {
	id int32
	op cmdOp
}

// loop is one epoll instance and the sockets it owns. Everything but the
// command queue and the stats mutex is touched by the loop goroutine only.
type loop struct {
	e      *Engine
	epfd   int
	wakefd int
	conns  []conn
	free   []int32
	idSlot []int32 // id / nloops → slot+1; 0 = not dialled
	hsq    deadlineQueue
	closeq deadlineQueue
	buf    []byte // the read buffer every socket of the loop shares
	out    []byte // scratch for frames we write
	events []unix.EpollEvent
	rng    uint64 // xorshift state for masking keys
	srcSa  unix.SockaddrInet4
	dstSa  unix.SockaddrInet4
	ev     Event

	cmdMu   sync.Mutex
	cmds    []command
	pending []command // commands taken but not yet run (over maxCmdsPerTurn)
	woken   atomic.Bool

	// mu guards st. The loop holds it while it handles one epoll batch, so
	// Snapshot sees whole batches and the loop pays one lock per batch.
	mu sync.Mutex
	st loopStats

	done chan struct{}
}

func newLoop(e *Engine, seed uint64) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, err
	}
	return &loop{
		e:      e,
		epfd:   epfd,
		wakefd: wfd,
		dstSa:  e.dst,
		buf:    make([]byte, e.cfg.ReadBuffer),
		events: make([]unix.EpollEvent, maxEvents),
		rng:    seed | 1,
		st:     newLoopStats(),
		done:   make(chan struct{}),
	}, nil
}

// push queues a command for the loop. Safe for concurrent use.
func (l *loop) push(c command) {
	l.cmdMu.Lock()
	l.cmds = append(l.cmds, c)
	l.cmdMu.Unlock()
	// One eventfd write per burst: later pushes see woken and rely on the
	// loop draining the whole queue after it resets the flag.
	if l.woken.CompareAndSwap(false, true) {
		var one = [8]byte{1}
		_, _ = unix.Write(l.wakefd, one[:])
	}
}

func (l *loop) run() {
	defer close(l.done)
	for {
		wait := idleWaitMs
		if len(l.pending) > 0 {
			wait = 0
		}
		n, err := unix.EpollWait(l.epfd, l.events, wait)
		if err != nil && !errors.Is(err, unix.EINTR) {
			n = 0
		}
		if l.turn(n) {
			l.shutdown()
			return
		}
	}
}

// turn handles n epoll events, runs queued commands and expires deadlines,
// all under the stats lock (released by defer, so a panicking Handler does
// not leave Snapshot blocked). It reports whether the loop must stop.
func (l *loop) turn(n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range n {
		ev := &l.events[i]
		if ev.Fd == wakeSlot {
			var b [8]byte
			_, _ = unix.Read(l.wakefd, b[:])
			l.woken.Store(false)
			continue
		}
		l.handle(ev.Fd, uint32(ev.Pad), ev.Events)
	}
	stop := l.runCommands()
	l.expire(l.e.now())
	return stop
}

// runCommands runs queued commands, at most maxCmdsPerTurn, and reports
// whether the loop must stop.
func (l *loop) runCommands() bool {
	if len(l.pending) == 0 {
		l.cmdMu.Lock()
		l.pending, l.cmds = l.cmds, l.pending[:0]
		l.cmdMu.Unlock()
	}
	n := min(len(l.pending), maxCmdsPerTurn)
	for _, c := range l.pending[:n] {
		switch c.op {
		case cmdDial:
			l.dial(c.id)
		case cmdClose:
			l.closeByClient(c.id)
		case cmdPause:
			if slot := l.lookup(c.id); slot >= 0 {
				l.conns[slot].paused = true
			}
		case cmdResume:
			if slot := l.lookup(c.id); slot >= 0 && l.conns[slot].paused {
				l.conns[slot].paused = false
				// Edge-triggered: the edges that came while paused are
				// spent, so drain now rather than wait for the next one.
				if l.conns[slot].state >= stUpgrading {
					l.readable(slot, false)
				}
			}
		case cmdStop:
			return true
		}
	}
	rest := copy(l.pending, l.pending[n:])
	l.pending = l.pending[:rest]
	return false
}

func (l *loop) shutdown() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.conns {
		c := &l.conns[i]
		if c.state == stFree {
			continue
		}
		if c.state >= stOpen {
			l.e.connected.Add(-1)
		}
		l.release(int32(i))
	}
	unix.Close(l.epfd)
	unix.Close(l.wakefd)
}

func (l *loop) dial(id int32) {
	if l.lookup(id) >= 0 {
		return // already dialled: one socket per id
	}
	l.st.dials++
	start := l.e.now()
	rcv := 0
	if l.e.cfg.RecvBuffer != nil {
		rcv = l.e.cfg.RecvBuffer(int(id))
	}
	fd, kind := openSocket(l.e.source(int(id)), &l.srcSa, &l.dstSa, rcv)
	if kind != "" {
		l.st.failed++
		l.st.errors[kind]++
		l.e.handler.OnClose(int(id), CloseInfo{Err: kind})
		return
	}
	slot := l.allocSlot()
	c := &l.conns[slot]
	c.fd, c.id, c.start, c.state = int32(fd), id, start, stConnecting
	l.setID(id, slot)
	// Edge-triggered: one registration serves the whole life (no
	// EPOLL_CTL_MOD after connect); EPOLLOUT fires once when the connect
	// completes and then only if the send buffer ever fills and drains.
	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
		Fd:     slot,
		Pad:    int32(c.gen),
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.fail(slot, ErrConnect)
		return
	}
	l.hsq.push(deadline{at: start + int64(l.e.cfg.HandshakeTimeout), slot: slot, gen: c.gen})
}

// handle processes one epoll event of slot.
func (l *loop) handle(slot int32, gen uint32, events uint32) {
	if int(slot) >= len(l.conns) {
		return
	}
	c := &l.conns[slot]
	if c.gen != gen || c.state == stFree {
		return // the socket this event was for is gone
	}
	if c.state == stConnecting {
		if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		if !l.connected(slot, events&(unix.EPOLLERR|unix.EPOLLHUP) != 0) {
			return
		}
	}
	if c.paused && c.state >= stOpen {
		return // read on Resume
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		l.readable(slot, events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
	}
}

// connected completes a non-blocking connect and sends the upgrade request.
// Only a failed connect raises EPOLLERR/EPOLLHUP, so SO_ERROR (one more
// syscall per socket) is read only then.
func (l *loop) connected(slot int32, failed bool) bool {
	c := &l.conns[slot]
	if failed {
		errno, err := unix.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil {
			err = unix.Errno(errno)
			if errno == 0 {
				err = unix.ECONNRESET // hung up with no error recorded
			}
		}
		l.fail(slot, connectKind(err))
		return false
	}
	l.out = appendRequest(l.out[:0], l.e.cfg.Target(int(c.id)), l.e.tail)
	c.state = stUpgrading
	return l.write(slot, l.out)
}

// readable reads everything the socket has and consumes it. hup tells that
// the peer shut down or errored, so a short read does not mean drained.
func (l *loop) readable(slot int32, hup bool) {
	c := &l.conns[slot]
	have := 0
	if len(c.pend) > 0 {
		l.ensure(len(c.pend) + minRead)
		have = copy(l.buf, c.pend)
		c.pend = c.pend[:0]
	}
	for {
		if len(l.buf)-have < minRead {
			l.ensure(2 * len(l.buf))
		}
		space := len(l.buf) - have
		n, err := unix.Read(int(c.fd), l.buf[have:])
		if n > 0 {
			l.st.bytesIn += int64(n)
			have += n
			used, alive := l.consume(slot, l.buf[:have])
			if !alive {
				return
			}
			c = &l.conns[slot]
			have = copy(l.buf, l.buf[used:have])
			// epoll(7): for a stream socket a short read means the
			// buffer was drained, so an edge-triggered wait is safe
			// without the extra read that returns EAGAIN, unless the
			// peer also shut down (that needs the read returning 0).
			if n < space && !hup {
				break
			}
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err == nil { // n == 0: end of stream
			l.fail(slot, l.eofKind(c.state))
		} else {
			l.fail(slot, readKind(err))
		}
		return
	}
	if have > 0 {
		c.pend = append(c.pend[:0], l.buf[:have]...)
	}
}

// ensure grows the read buffer to at least n bytes, keeping its content.
func (l *loop) ensure(n int) {
	if len(l.buf) >= n {
		return
	}
	b := make([]byte, max(n, 2*len(l.buf)))
	copy(b, l.buf)
	l.buf = b
}

func (l *loop) eofKind(state uint8) string {
	if state < stOpen {
		return ErrEOFHandshake
	}
	return ErrEOF
}

// consume parses the head (while upgrading) and then whole frames from b. It
// returns how many bytes it used and false when the socket was closed.
func (l *loop) consume(slot int32, b []byte) (int, bool) {
	c := &l.conns[slot]
	off := 0
	if c.state == stUpgrading {
		n, kind := parseResponseHead(b, l.e.accept, l.e.cfg.Protocol)
		if kind != "" {
			l.fail(slot, kind)
			return 0, false
		}
		if n == 0 {
			return 0, true
		}
		c.state = stWaitReady
		off = n
	}
	for off < len(b) {
		h, n, err := codec.DecodeHeader(b[off:])
		if err != nil || (n > 0 && (h.Masked || h.Rsv != 0)) {
			// RFC 6455 §5.1: a client MUST close on a masked server frame.
			l.fail(slot, ErrProtocol)
			return 0, false
		}
		if n == 0 {
			break
		}
		if h.Length > int64(l.e.cfg.MaxFrame) {
			l.fail(slot, ErrFrameTooBig)
			return 0, false
		}
		end := off + n + int(h.Length)
		if end > len(b) {
			break
		}
		if !l.frame(slot, h, b[off+n:end]) {
			return 0, false
		}
		off = end
	}
	return off, true
}

// frame handles one whole server frame; false when the socket was closed.
func (l *loop) frame(slot int32, h ws.Header, p []byte) bool {
	c := &l.conns[slot]
	l.st.framesIn++
	switch h.OpCode {
	case ws.OpPing:
		l.st.pings++
		// RFC 6455 §5.5.3: the pong echoes the ping's application data.
		l.out = codec.AppendClientFrame(l.out[:0], ws.OpPong, true, l.mask(), p)
		if !l.write(slot, l.out) {
			return false
		}
		l.st.pongs++
	case ws.OpPong:
	case ws.OpClose:
		code, _, err := codec.ParseClosePayload(p)
		if err != nil {
			code = codec.CloseProtocolError
		}
		if c.state != stClosing {
			// RFC 6455 §5.5.1: answer a close with a close carrying the
			// same status; the server then closes the TCP connection.
			body := p
			if len(body) > 2 {
				body = body[:2]
			}
			l.out = codec.AppendClientFrame(l.out[:0], ws.OpClose, true, l.mask(), body)
			_, _ = unix.Write(int(c.fd), l.out)
		}
		if c.state < stOpen {
			// A close before ready: the server refused the socket
			// after the 101 (SPEC §7 close codes).
			l.st.closeCodes[code]++
			l.st.errors[ErrClosedHandshake]++
			l.st.failed++
			l.end(slot, CloseInfo{Code: code, Err: ErrClosedHandshake})
			return false
		}
		l.finish(slot, code, "")
		return false
	case ws.OpText:
		if !h.Fin {
			l.st.errors[ErrFragmented]++
			return true
		}
		if c.state == stWaitReady {
			if !isReady(p) {
				l.fail(slot, ErrNotReady)
				return false
			}
			if l.e.cfg.Text != nil {
				l.e.cfg.Text(int(c.id), p)
			}
			l.open(slot)
			return true
		}
		l.text(c.id, p)
	case ws.OpContinuation:
		l.st.errors[ErrFragmented]++
	case ws.OpBinary:
		l.st.other++
	default:
		l.fail(slot, ErrProtocol)
		return false
	}
	return true
}

func (l *loop) open(slot int32) {
	c := &l.conns[slot]
	c.state = stOpen
	d := l.e.now() - c.start
	recordUs(l.st.handshake, d)
	l.st.opened++
	l.e.connected.Add(1)
	l.e.handler.OnOpen(int(c.id), durationOf(d))
}

func (l *loop) text(id int32, p []byte) {
	switch {
	case isEvent(p):
		l.st.events++
		ev := &l.ev
		scanEvent(p, ev)
		ev.Latency = 0
		if ev.TS > 0 {
			d := wallNow() - ev.TS
			recordUs(l.st.eventLatency, d)
			ev.Latency = durationOf(d)
		}
		l.e.handler.OnEvent(int(id), ev)
		l.ev = Event{}
	case isError(p):
		l.st.errFrames++
	default:
		l.st.other++
		if l.e.cfg.Text != nil {
			l.e.cfg.Text(int(id), p)
		}
	}
}

// closeByClient starts a client close of socket id: close frame 1000, then
// wait for the echo. A socket still in its handshake is simply dropped.
func (l *loop) closeByClient(id int32) {
	slot := l.lookup(id)
	if slot < 0 {
		return
	}
	c := &l.conns[slot]
	switch c.state {
	case stOpen:
		var body [2]byte
		body[0], body[1] = byte(codec.CloseNormal>>8), byte(codec.CloseNormal&0xff)
		l.out = codec.AppendClientFrame(l.out[:0], ws.OpClose, true, l.mask(), body[:])
		if !l.write(slot, l.out) {
			return
		}
		c.state = stClosing
		l.closeq.push(deadline{at: l.e.now() + int64(l.e.cfg.CloseTimeout), slot: slot, gen: c.gen})
	case stClosing:
	default:
		// Not open yet: drop it. Not a failure of the server, so it
		// counts in neither Failed nor Errors.
		l.end(slot, CloseInfo{ByClient: true})
	}
}

// expire fails sockets whose handshake or close deadline passed.
func (l *loop) expire(now int64) {
	for {
		d, ok := l.hsq.popExpired(now)
		if !ok {
			break
		}
		c := &l.conns[d.slot]
		if c.gen != d.gen {
			continue
		}
		switch c.state {
		case stConnecting:
			l.fail(d.slot, ErrTimeoutConnect)
		case stUpgrading:
			l.fail(d.slot, ErrTimeoutUpgrade)
		case stWaitReady:
			l.fail(d.slot, ErrTimeoutReady)
		}
	}
	for {
		d, ok := l.closeq.popExpired(now)
		if !ok {
			break
		}
		if c := &l.conns[d.slot]; c.gen == d.gen && c.state == stClosing {
			l.st.errors[ErrCloseTimeout]++
			l.finish(d.slot, 0, ErrCloseTimeout)
		}
	}
}

// write sends b whole or fails the socket.
func (l *loop) write(slot int32, b []byte) bool {
	n, err := unix.Write(int(l.conns[slot].fd), b)
	if err != nil || n != len(b) {
		if err == nil || errors.Is(err, unix.EAGAIN) {
			l.fail(slot, ErrWrite)
		} else {
			l.fail(slot, readKind(err))
		}
		return false
	}
	return true
}

// fail ends a socket on an error of the given kind.
func (l *loop) fail(slot int32, kind string) {
	c := &l.conns[slot]
	l.st.errors[kind]++
	if c.state < stOpen {
		l.st.failed++
		l.end(slot, CloseInfo{Err: kind})
		return
	}
	l.finish(slot, codec.CloseAbnormal, kind)
}

// finish ends an open (or closing) socket with code.
func (l *loop) finish(slot int32, code uint16, kind string) {
	c := &l.conns[slot]
	info := CloseInfo{Code: code, Err: kind, Opened: true, ByClient: c.state == stClosing}
	if code != 0 {
		l.st.closeCodes[code]++
	}
	l.st.closed++
	l.e.connected.Add(-1)
	l.end(slot, info)
}

func (l *loop) end(slot int32, info CloseInfo) {
	id := l.conns[slot].id
	l.release(slot)
	l.e.handler.OnClose(int(id), info)
}

// mask returns a fresh masking key (RFC 6455 §5.3). xorshift64 is enough:
// the key only has to vary, the bench has no adversary to hide from.
func (l *loop) mask() [4]byte {
	x := l.rng
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	l.rng = x
	return [4]byte{byte(x), byte(x >> 8), byte(x >> 16), byte(x >> 24)}
}

func closeFD(fd int) error { return unix.Close(fd) }
