package bench

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/safego"
)

// FloorServer is the bench's baseline: the least a WebSocket fan-out server
// must do, so dws can be measured against it on the same machine in the
// same run (issue 12). It accepts the upgrade exactly as dws answers the
// bench's clients (101 with Sec-WebSocket-Protocol json.v1, then
// {"type":"ready"}) without checking the token or the API key, files each
// socket under the chats subject of its /ws/{C}/{A} path, and for every
// event encodes {"type":"event","payload":…} once and write()s that one
// frame to each socket of the group. Nothing else: no sessions, no pings,
// no rings, no coalescing.
//
// It runs Loops epoll loops (default one per CPU, as dws's reactor). Each
// loop owns its sockets; Publish posts the frame to every loop and wakes
// it through an eventfd, and the loop writes it to its sockets of the
// group: the same handoff dws makes from its dispatcher to its loops, with
// nothing on either side of it.
type FloorServer struct {
	addr  netip.AddrPort
	lnfd  int
	loops []*floorLoop
	wg    sync.WaitGroup

	mu     sync.RWMutex
	groups map[string]int // chats subject → group index

	closed atomic.Bool
}

// FloorOptions configures StartFloorServer.
type FloorOptions struct {
	// Addr is the IPv4 listener, "127.0.0.1:0" for any port.
	Addr string
	// Loops is the number of epoll loops; 0 = one per CPU.
	Loops int
}

// floorMaxHead bounds an upgrade request head (dws: 8 KiB by default).
const floorMaxHead = 8 << 10

// floorMaxOut bounds what a socket that stopped reading may owe; beyond it
// the floor closes the socket, as any bounded server must.
const floorMaxOut = 4 << 20

// StartFloorServer listens on o.Addr and serves until Close.
func StartFloorServer(o FloorOptions) (*FloorServer, error) {
	ap, err := netip.ParseAddrPort(o.Addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("floor: listen address %q: want IPv4 host:port", o.Addr)
	}
	if o.Loops <= 0 {
		o.Loops = runtime.NumCPU()
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("floor: socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("floor: bind %s: %w", o.Addr, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("floor: listen: %w", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	s := &FloorServer{lnfd: fd, groups: map[string]int{}}
	s.addr = netip.AddrPortFrom(ap.Addr(), uint16(got.(*unix.SockaddrInet4).Port))
	for range o.Loops {
		l, err := newFloorLoop(s)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.loops = append(s.loops, l)
	}
	for _, l := range s.loops {
		s.wg.Add(1)
		safego.Go(context.Background(), "bench.floor.loop", func(context.Context) { defer s.wg.Done(); l.run() })
	}
	return s, nil
}

// Addr is where the server listens.
func (s *FloorServer) Addr() netip.AddrPort { return s.addr }

// Sockets is the number of upgraded sockets held.
func (s *FloorServer) Sockets() int {
	n := 0
	for _, l := range s.loops {
		n += int(l.open.Load())
	}
	return n
}

// group returns the index of a chats subject, registering it when create.
func (s *FloorServer) group(subject string, create bool) (int, bool) {
	s.mu.RLock()
	g, ok := s.groups[subject]
	s.mu.RUnlock()
	if ok || !create {
		return g, ok
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok = s.groups[subject]; !ok {
		g = len(s.groups)
		s.groups[subject] = g
	}
	return g, true
}

// Publish delivers payload to every socket whose chats subject is subject:
// one frame, encoded once, handed to each loop. It returns false when no
// socket ever joined that subject. Safe from any goroutine.
func (s *FloorServer) Publish(subject string, payload []byte) bool {
	g, ok := s.group(subject, false)
	if !ok {
		return false
	}
	frame := codec.EventFrame(payload)
	for _, l := range s.loops {
		l.post(floorPost{group: g, frame: frame})
	}
	return true
}

// Close stops the loops and closes every socket and the listener.
func (s *FloorServer) Close() {
	if s.closed.Swap(true) {
		return
	}
	for _, l := range s.loops {
		l.wake()
	}
	s.wg.Wait()
	for _, l := range s.loops {
		l.closeAll()
	}
	unix.Close(s.lnfd)
}
