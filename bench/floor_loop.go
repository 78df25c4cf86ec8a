package bench

import (
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/dws-gateway/dws/codec"
)

// floorPost is one event frame for the sockets of a group.
type floorPost struct {
	group int
	frame []byte
}

// floorConn is one socket of a floor loop; only its loop touches it.
type floorConn struct {
	fd    int
	in    []byte // request head, then unread client frame bytes
	out   []byte // bytes a full socket buffer refused; EPOLLOUT is armed
	open  bool   // upgraded and filed in its group
	dead  bool   // dropped: its descriptor may already be another socket's
	group int
	gi    int      // index in the loop's group slice
	iov   [][]byte // frames of the current drain, not yet written
}

// floorLoop is one epoll instance of the floor server and the sockets it
// accepted. The listener is in every loop's epoll set (EPOLLEXCLUSIVE), so
// the kernel spreads the accepts; posts arrive through an eventfd.
type floorLoop struct {
	s      *FloorServer
	epfd   int
	wakefd int
	conns  map[int]*floorConn
	groups [][]*floorConn
	buf    []byte
	scr    []byte
	dirty  []*floorConn // sockets with frames in iov this drain
	open   atomic.Int64

	mu    sync.Mutex
	posts []floorPost
	spare []floorPost
	woken atomic.Bool
}

func newFloorLoop(s *FloorServer) (*floorLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	l := &floorLoop{s: s, epfd: epfd, wakefd: wfd, conns: map[int]*floorConn{}, buf: make([]byte, 64<<10)}
	add := func(fd int, ev uint32) error {
		return unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: ev, Fd: int32(fd)})
	}
	if err := add(wfd, unix.EPOLLIN); err != nil {
		l.closeAll()
		return nil, err
	}
	if err := add(s.lnfd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE); err != nil {
		l.closeAll()
		return nil, err
	}
	return l, nil
}

// post queues p and wakes the loop unless a wake-up is already pending.
func (l *floorLoop) post(p floorPost) {
	l.mu.Lock()
	l.posts = append(l.posts, p)
	l.mu.Unlock()
	if !l.woken.Swap(true) {
		l.wake()
	}
}

func (l *floorLoop) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(l.wakefd, one[:])
}

func (l *floorLoop) run() {
	events := make([]unix.EpollEvent, 256)
	for !l.s.closed.Load() {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		for i := range n {
			ev := events[i]
			fd := int(ev.Fd)
			switch {
			case fd == l.wakefd:
				_, _ = unix.Read(l.wakefd, l.buf[:8])
				l.woken.Store(false)
				l.drain()
			case fd == l.s.lnfd:
				l.accept()
			default:
				c := l.conns[fd]
				if c == nil {
					continue
				}
				if ev.Events&unix.EPOLLOUT != 0 && !l.flush(c) {
					continue
				}
				if ev.Events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0 {
					l.read(c)
				}
			}
		}
	}
}

// drain writes every queued frame to the loop's sockets of its group: one
// writev per socket for all the frames queued for it since the last drain
// (the shared frames themselves, no copy), so a burst costs a syscall per
// socket, not per frame, and nothing waits for a batch to fill.
func (l *floorLoop) drain() {
	l.mu.Lock()
	posts := l.posts
	l.posts = l.spare[:0]
	l.mu.Unlock()
	for _, p := range posts {
		if p.group >= len(l.groups) {
			continue
		}
		for _, c := range l.groups[p.group] {
			if len(c.iov) == 0 {
				l.dirty = append(l.dirty, c)
			}
			c.iov = append(c.iov, p.frame)
		}
	}
	for _, c := range l.dirty {
		l.writev(c)
		clear(c.iov)
		c.iov = c.iov[:0]
	}
	clear(l.dirty)
	l.dirty = l.dirty[:0]
	clear(posts)
	l.spare = posts[:0]
}

// writev sends c.iov, keeping what the socket refused.
func (l *floorLoop) writev(c *floorConn) {
	if c.dead {
		return
	}
	if len(c.out) > 0 || len(c.iov) == 1 {
		for _, f := range c.iov {
			if !l.write(c, f) {
				return
			}
		}
		return
	}
	n, err := unix.Writev(c.fd, c.iov)
	if err != nil && err != unix.EAGAIN && err != unix.EINTR {
		l.drop(c)
		return
	}
	n = max(0, n)
	for _, f := range c.iov {
		if n >= len(f) {
			n -= len(f)
			continue
		}
		c.out = append(c.out, f[n:]...)
		n = 0
	}
	if len(c.out) > 0 {
		if len(c.out) > floorMaxOut {
			l.drop(c)
			return
		}
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLOUT, Fd: int32(c.fd)})
	}
}

func (l *floorLoop) accept() {
	for {
		fd, _, err := unix.Accept4(l.s.lnfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN: another loop took it, or the queue is empty
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}); err != nil {
			unix.Close(fd)
			continue
		}
		l.conns[fd] = &floorConn{fd: fd}
	}
}

// read takes what the socket has and acts on it: the upgrade request
// before the 101, then client frames (close and ping answered, the rest
// dropped).
func (l *floorLoop) read(c *floorConn) {
	for {
		n, err := unix.Read(c.fd, l.buf)
		if n > 0 {
			c.in = append(c.in, l.buf[:n]...)
			var ok bool
			if c.open {
				ok = l.frames(c)
			} else {
				ok = l.upgrade(c)
			}
			if !ok {
				return
			}
			if n < len(l.buf) {
				return
			}
			continue
		}
		if err == unix.EAGAIN || err == unix.EINTR {
			return
		}
		l.drop(c) // EOF or error
		return
	}
}

// upgrade answers a complete request head with the 101 and ready.
func (l *floorLoop) upgrade(c *floorConn) bool {
	req, n, err := codec.ParseRequest(c.in, floorMaxHead)
	if n == 0 && err == nil {
		return true
	}
	company, agent, okPath := floorPath(req.Path)
	if err != nil || req.SecKey == "" || !okPath {
		_, _ = unix.Write(c.fd, []byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
		l.drop(c)
		return false
	}
	proto := ""
	for _, p := range req.Protocols {
		if p == "json.v1" {
			proto = p
		}
	}
	c.in = c.in[:copy(c.in, c.in[n:])]
	l.scr = codec.AppendUpgradeResponse(l.scr[:0], req.SecKey, proto)
	l.scr = append(l.scr, codec.ReadyFrame...)
	g, _ := l.s.group("websocket."+company+"."+agent+".chats", true)
	for g >= len(l.groups) {
		l.groups = append(l.groups, nil)
	}
	c.open, c.group, c.gi = true, g, len(l.groups[g])
	l.groups[g] = append(l.groups[g], c)
	l.open.Add(1)
	if !l.write(c, l.scr) {
		return false
	}
	if len(c.in) > 0 {
		return l.frames(c)
	}
	return true
}

// floorPath splits "/ws/{C}/{A}".
func floorPath(p string) (company, agent string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/ws/")
	if !ok {
		return "", "", false
	}
	company, agent, ok = strings.Cut(rest, "/")
	return company, agent, ok && company != "" && agent != "" && !strings.Contains(agent, "/")
}

// frames handles the complete client frames in c.in.
func (l *floorLoop) frames(c *floorConn) bool {
	b := c.in
	for {
		h, n, err := codec.DecodeHeader(b)
		if err != nil {
			l.drop(c)
			return false
		}
		if n == 0 || int64(len(b)-n) < h.Length {
			break
		}
		payload := b[n : n+int(h.Length)]
		b = b[n+int(h.Length):]
		if h.Masked {
			codec.Unmask(payload, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpClose:
			var code uint16
			if len(payload) >= 2 {
				code = binary.BigEndian.Uint16(payload)
			}
			l.scr = codec.AppendCloseFrame(l.scr[:0], code, "")
			_, _ = unix.Write(c.fd, l.scr)
			l.drop(c)
			return false
		case ws.OpPing:
			l.scr = codec.AppendFrame(l.scr[:0], ws.OpPong, payload)
			if !l.write(c, l.scr) {
				return false
			}
		}
	}
	c.in = c.in[:copy(c.in, b)]
	return true
}

// write sends frame, or keeps what the socket refused and arms EPOLLOUT.
// It returns false when the socket was dropped.
func (l *floorLoop) write(c *floorConn, frame []byte) bool {
	if c.dead {
		return false
	}
	if len(c.out) > 0 {
		if len(c.out)+len(frame) > floorMaxOut {
			l.drop(c)
			return false
		}
		c.out = append(c.out, frame...)
		return true
	}
	n, err := unix.Write(c.fd, frame)
	if n == len(frame) {
		return true
	}
	if err != nil && err != unix.EAGAIN && err != unix.EINTR {
		l.drop(c)
		return false
	}
	c.out = append(c.out, frame[max(0, n):]...)
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLOUT, Fd: int32(c.fd)})
	return true
}

// flush writes c.out once the socket takes it; false when dropped.
func (l *floorLoop) flush(c *floorConn) bool {
	n, err := unix.Write(c.fd, c.out)
	if n > 0 {
		c.out = c.out[:copy(c.out, c.out[n:])]
	}
	if len(c.out) == 0 {
		c.out = nil
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)})
		return true
	}
	if err != nil && err != unix.EAGAIN && err != unix.EINTR {
		l.drop(c)
		return false
	}
	return true
}

// drop closes c and takes it out of its group.
func (l *floorLoop) drop(c *floorConn) {
	if c.dead {
		return
	}
	c.dead = true
	delete(l.conns, c.fd)
	if c.open {
		gs := l.groups[c.group]
		last := gs[len(gs)-1]
		gs[c.gi], last.gi = last, c.gi
		l.groups[c.group] = gs[:len(gs)-1]
		l.open.Add(-1)
	}
	unix.Close(c.fd)
}

// closeAll closes every socket and the loop's descriptors; the loop has
// stopped.
func (l *floorLoop) closeAll() {
	for _, c := range l.conns {
		unix.Close(c.fd)
	}
	l.conns = nil
	unix.Close(l.wakefd)
	unix.Close(l.epfd)
}
