package reactor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The outbound ring of a socket (DESIGN invariant 2): frames shared with
// other sockets, queued by reference until the kernel takes them, within
// the per-socket caps; the slow-consumer clock; the loop's pool of rings.

// fits reports whether a frame of size bytes fits c's outbound budget: the
// ring's message and byte caps, counting what gnet still holds for c (its
// buffer grows without limit otherwise; DESIGN pitfalls).
func fits(c *conn, size int, lim *Limits) bool {
	return len(c.ring) < lim.OutboundRingMessages &&
		c.ringBytes+c.gc.OutboundBuffered()+size <= lim.OutboundRingBytes
}

// push appends an event frame to c's ring unless the ring is over its
// caps, in which case c is a slow consumer: the frame is dropped for c and
// counted (SPEC §6), and the grace clock starts. On loop.
func (l *loop) push(c *conn, frame []byte, lim *Limits) bool {
	return l.pushCounted(c, frame, lim, l.srv.mx.dropSlow)
}

// pushControl queues a pong, ping or error frame for c. They share the
// events' budget (SPEC §6): a client that makes the server answer without
// reading the answers fills its ring and is a slow consumer like any other,
// and server memory stays within the per-socket caps. A frame over the
// budget is dropped and counted as control_frame. The caller (or the end of
// the loop turn) flushes. On loop.
func (l *loop) pushControl(c *conn, frame []byte, lim *Limits) bool {
	return l.pushCounted(c, frame, lim, l.srv.mx.dropControl)
}

// pushCounted is push with the drop counter of the frame's kind.
func (l *loop) pushCounted(c *conn, frame []byte, lim *Limits, dropped prometheus.Counter) bool {
	if !fits(c, len(frame), lim) {
		dropped.Inc()
		l.overflow(c)
		return false
	}
	l.enqueue(c, frame)
	return true
}

// overflow marks c a slow consumer: the grace clock starts on the first
// overflow and the backlog tick watches it. On loop.
func (l *loop) overflow(c *conn) {
	if c.slowSince == 0 {
		c.slowSince = time.Now().UnixNano()
	}
	l.toBacklog(c)
}

// toBacklog lists c for the backlog tick, which then runs every
// backlogTick. On loop.
func (l *loop) toBacklog(c *conn) {
	l.backlog[c] = struct{}{}
	l.backlogged.Store(true)
}

// enqueue appends frame to c's ring by reference and marks c dirty. On loop.
func (l *loop) enqueue(c *conn, frame []byte) {
	if len(c.ring) == 0 {
		if c.ring == nil {
			c.ring = l.getRing()
		}
		l.dirty = append(l.dirty, c)
	}
	c.ring = append(c.ring, frame)
	c.ringBytes += len(frame)
	l.ringBytes += len(frame)
}

// flushDirty writes every socket that got frames this turn, one writev
// each, then records fan-out latency once per event per loop.
func (l *loop) flushDirty() {
	for i, c := range l.dirty {
		l.flush(c)
		l.dirty[i] = nil
	}
	l.dirty = l.dirty[:0]
	if len(l.published) > 0 {
		now := time.Now()
		for i, p := range l.published {
			l.srv.mx.fanoutLatency.Observe(now.Sub(p).Seconds())
			l.published[i] = time.Time{}
		}
		l.published = l.published[:0]
	}
	if d := l.ringBytes - l.ringReported; d != 0 {
		l.srv.mx.ringBytes.Add(float64(d))
		l.ringReported = l.ringBytes
	}
}

// flush hands c's ring to the kernel with one writev, unless gnet still
// holds unwritten bytes for c: then the frames wait in the ring by
// reference (no copy per socket) and the backlog tick retries. On loop.
func (l *loop) flush(c *conn) {
	if len(c.ring) == 0 || c.state != stOpen {
		return
	}
	if c.gc.OutboundBuffered() > 0 {
		l.toBacklog(c)
		return
	}
	l.writeRing(c)
}

// writeRing hands c's whole ring to gnet with one writev and recycles it.
// On loop.
func (l *loop) writeRing(c *conn) {
	_, _ = c.gc.Writev(c.ring)
	l.ringBytes -= c.ringBytes
	c.ringBytes = 0
	l.putRing(c.ring)
	c.ring = nil
}

// flushFinal hands c's queued frames to gnet before a graceful close, even
// while gnet still holds unwritten bytes for c (its buffer keeps the
// order). Without it flushDirty, which skips sockets no longer open, would
// drop events already counted as delivered and acked. On loop.
func (l *loop) flushFinal(c *conn) {
	if len(c.ring) == 0 || c.state != stOpen {
		return
	}
	l.writeRing(c)
	delete(l.backlog, c)
}

// dropRing forgets c's queued frames (socket closing) and counts them as
// dropped with reason socket_closing. On loop.
func (l *loop) dropRing(c *conn) {
	if c.ring == nil {
		return
	}
	if len(c.ring) > 0 {
		l.srv.mx.dropClosing.Add(float64(len(c.ring)))
	}
	l.ringBytes -= c.ringBytes
	c.ringBytes = 0
	l.putRing(c.ring)
	c.ring = nil
}

// ringPoolMax bounds the loop's spare rings so a fan-out to every socket of
// a loop reuses its slices; the tick halves an idle pool (trimRings), so
// idle sockets hold no ring memory.
const ringPoolMax = 1 << 16

// ringPoolCap is the largest ring the pool keeps: a replay batch's 64
// frames (bigger ones are rare and left to the GC).
const ringPoolCap = 64

// getRing takes a spare ring; rings exist only while frames wait, so an
// idle socket holds none (DESIGN invariant 2).
func (l *loop) getRing() [][]byte {
	if n := len(l.freeRings); n > 0 {
		r := l.freeRings[n-1]
		l.freeRings = l.freeRings[:n-1]
		return r
	}
	return make([][]byte, 0, 4)
}

// reserveRing makes room in c's ring for n more frames with at most one
// allocation: a replay batch pushes up to 64 frames at once, and append's
// doubling from a spare ring of 4 cost four (38 MB in a 15 000-socket
// storm). On loop.
func (l *loop) reserveRing(c *conn, n int) {
	if n <= 0 {
		return
	}
	if c.ring == nil {
		c.ring = l.getRing()
	}
	if need := len(c.ring) + n; cap(c.ring) < need {
		// Exactly ringPoolCap when it fits, so the ring goes back to
		// the pool after its writev (append would round it past).
		grown := make([][]byte, len(c.ring), max(need, ringPoolCap))
		copy(grown, c.ring)
		clear(c.ring)
		l.putRing(c.ring)
		c.ring = grown
	}
}

// releaseEmptyRing gives back a ring reserveRing took that nothing was
// queued in (every frame a duplicate), so an idle socket holds none. On
// loop.
func (l *loop) releaseEmptyRing(c *conn) {
	if c.ring != nil && len(c.ring) == 0 {
		l.putRing(c.ring)
		c.ring = nil
	}
}

func (l *loop) putRing(r [][]byte) {
	clear(r)
	if len(l.freeRings) < ringPoolMax && cap(r) <= ringPoolCap {
		l.freeRings = append(l.freeRings, r[:0])
	}
}

// trimRings releases half of the spare rings once a second beyond a small
// reserve, so memory follows the recent fan-out width.
func (l *loop) trimRings() {
	const reserve = 256
	if n := len(l.freeRings); n > reserve {
		keep := reserve + (n-reserve)/2
		clear(l.freeRings[keep:])
		l.freeRings = l.freeRings[:keep]
	}
}
