package client

// Socket states. A slot whose state is stFree is on the loop's free list.
const (
	stFree       uint8 = iota
	stConnecting       // connect() in progress
	stUpgrading        // request sent, reading the 101 head
	stWaitReady        // 101 parsed, waiting for {"type":"ready"}
	stOpen             // ready received
	stClosing          // client close frame sent, waiting for the echo
)

// conn is one socket's whole client-side state: 48 bytes, so 20 000 sockets
// cost under 1 MiB of Go heap. The read buffer is the loop's; pend holds only
// the tail of a head or frame split across reads, and is nil otherwise.
type conn struct {
	pend  []byte // unconsumed bytes carried to the next read
	start int64  // engine-monotonic ns when connect() was called
	id    int32  // the caller's socket id
	fd    int32
	gen   uint32 // bumped when the slot is freed: stale epoll events and deadlines miss
	state uint8
	// paused: Pause was called; reads wait for Resume (fits the padding,
	// the struct stays 48 bytes).
	paused bool
}

// slot returns a free slot index, growing the slab when none is free.
func (l *loop) allocSlot() int32 {
	if n := len(l.free); n > 0 {
		s := l.free[n-1]
		l.free = l.free[:n-1]
		return s
	}
	l.conns = append(l.conns, conn{})
	return int32(len(l.conns) - 1)
}

// release closes the socket and frees its slot.
func (l *loop) release(slot int32) {
	c := &l.conns[slot]
	if c.fd >= 0 {
		// close() also removes the fd from the epoll set (it is never dup'ed).
		_ = closeFD(int(c.fd))
	}
	l.setID(c.id, -1)
	// Keep a small pend buffer's capacity for the next socket of this slot;
	// drop a large one so one big frame does not pin memory.
	if cap(c.pend) > 4<<10 {
		c.pend = nil
	}
	*c = conn{pend: c.pend[:0], fd: -1, gen: c.gen + 1, state: stFree}
	l.free = append(l.free, slot)
}

// lookup returns the slot of socket id, or -1.
func (l *loop) lookup(id int32) int32 {
	i := int(id) / l.e.nloops
	if i >= len(l.idSlot) {
		return -1
	}
	return l.idSlot[i] - 1
}

// setID records that socket id lives in slot (-1: nowhere).
func (l *loop) setID(id int32, slot int32) {
	i := int(id) / l.e.nloops
	for i >= len(l.idSlot) {
		l.idSlot = append(l.idSlot, 0)
	}
	l.idSlot[i] = slot + 1
}
