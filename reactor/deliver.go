package reactor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/session"
)

// Deliver is the delivery port the bridge uses: it encodes payload once as
// a json.v1 event frame (server frames are unmasked, so the same bytes serve
// every socket) and queues it to every local socket on r. For RouteAdmin,
// r.Company/r.Agent are matched against each admin's subscription. Safe for
// concurrent use; never blocks on a socket or a loop. Calls for one route
// keep their order.
//
// It returns the number of local sockets the frame was handed to: the open
// sockets on r (admins: whose subscription matches) on loops that took the
// event. Sockets of a loop that is gone are not counted and their frames are
// counted in dws_drops_total{reason="loop_closed"}. The rings are filled on
// the loops, after Deliver returns; a socket that turns out to be closing,
// or whose ring is full, drops the frame and counts it there
// (reason="socket_closing" or "slow_consumer"), so every frame Deliver
// reports is either written or counted as dropped.
func (s *Server) Deliver(r session.Route, payload []byte, m Meta) int {
	var scratch [8]loopCount
	per, total := s.index.socketsFor(r, scratch[:0])
	if total == 0 {
		return 0
	}
	frame := codec.EventFrameSeq(m.Seq, payload)
	loops := *s.loops.Load()
	for _, lc := range per {
		if lc.loop >= len(loops) {
			// The index never names a loop it has not seen; if it did, the
			// frames would vanish, so count them.
			s.mx.dropLoop.Add(float64(lc.n))
			total -= int(lc.n)
			continue
		}
		if !loops[lc.loop].post(task{route: r, frame: frame, meta: m, sockets: lc.n}) {
			total -= int(lc.n) // counted by post
		}
	}
	return total
}

// deliver queues one event to this loop's sockets on its route. Sockets
// Deliver counted that are closing, or have left the route since, drop the
// frame with reason socket_closing. On loop.
func (l *loop) deliver(t *task) {
	lim := l.srv.limits()
	n, seen, closing, dup := 0, 0, 0, 0
	var pair uint64
	if t.route.Kind == session.RouteAdmin {
		pair = pairHash(t.route.Company, t.route.Agent)
	}
	if set := l.members[memberKey(t.route)]; set != nil {
		for _, c := range set.conns {
			if !c.wants(t.route) {
				continue
			}
			seen++
			switch {
			case c.state != stOpen:
				closing++
			case c.ident.replay != nil:
				// Catching up: held, admitted when the replay ends.
				l.hold(c, t, pair, lim)
			case !c.admit(t.route.Kind, pair, t.meta.Seq):
				dup++
			case l.push(c, t.frame, lim):
				n++
			}
		}
	}
	if gone := int(t.sockets) - seen; gone > 0 {
		closing += gone
	}
	if closing > 0 {
		l.srv.mx.dropClosing.Add(float64(closing))
	}
	if dup > 0 {
		l.srv.mx.dropDup.Add(float64(dup))
	}
	if n > 0 {
		if t.meta.Forwarded {
			l.srv.mx.fwdDeliver.Add(float64(n))
		} else {
			l.srv.mx.localDeliver.Add(float64(n))
		}
		if !t.meta.PublishedAt.IsZero() {
			l.published = append(l.published, t.meta.PublishedAt)
		}
	}
}

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
	l.backlog[c] = struct{}{}
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
		l.backlog[c] = struct{}{}
		return
	}
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
	_, _ = c.gc.Writev(c.ring)
	l.ringBytes -= c.ringBytes
	c.ringBytes = 0
	l.putRing(c.ring)
	c.ring = nil
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

func (l *loop) putRing(r [][]byte) {
	clear(r)
	if len(l.freeRings) < ringPoolMax && cap(r) <= 64 {
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

// tick is the loop's housekeeping: retry backlogged sockets, close slow
// consumers past their grace, time out handshakes, run the ping wheel.
func (l *loop) tick(now time.Time) {
	s := l.srv
	lim := s.limits()
	for c := range l.backlog {
		if c.state != stOpen {
			delete(l.backlog, c)
			continue
		}
		l.flush(c)
		buffered := c.ringBytes + c.gc.OutboundBuffered()
		if len(c.ring) == 0 && buffered < lim.OutboundRingBytes/2 {
			c.slowSince = 0
			delete(l.backlog, c)
			continue
		}
		if c.slowSince != 0 && now.UnixNano()-c.slowSince > int64(lim.SlowConsumerGrace) {
			delete(l.backlog, c)
			l.dropRing(c)
			s.m.SlowConsumerCloses.Inc()
			s.closeAfter(c, codec.NewError(codec.CodeSlowConsumer, "slow consumer"),
				codec.CloseSlowConsumer, "slow-consumer")
		}
	}
	sec := s.seconds(now)
	if sec == l.wheel.now {
		l.flushDirty()
		return
	}
	l.trimRings()
	for c := range l.pending {
		if c.since(now) > lim.HandshakeTimeout {
			delete(l.pending, c)
			if c.state == stHandshake {
				s.reject(c, c.kind, codec.NewError(codec.CodeBadRequest, "handshake timeout"))
			} else {
				s.abort(c)
			}
		}
	}
	l.wheel.advance(sec, func(c *conn) {
		if c.state != stOpen {
			return
		}
		if int(c.missed) >= lim.MaxMissedPongs {
			s.closeWith(c, codec.CloseGoingAway, "ping timeout")
			return
		}
		c.missed++
		// Through the ring: a socket that reads nothing must not grow
		// gnet's buffer even by a ping per interval.
		l.pushControl(c, pingFrame, lim)
		l.wheel.add(c, sec+max(int64(lim.PingInterval/time.Second), 1))
	})
	l.flushDirty()
}

// pingFrame is the server's empty ping, encoded once.
var pingFrame = codec.AppendFrame(nil, 0x9, nil)
