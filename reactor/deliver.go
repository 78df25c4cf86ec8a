package reactor

import (
	"time"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/session"
)

// Deliver is the delivery port the bridge uses: it encodes payload once as
// a json.v1 event frame (server frames are unmasked, so the same bytes serve
// every socket) and queues it to every local socket on r. For RouteAdmin,
// r.Company/r.Agent are matched against each admin's subscription. It
// returns how many local sockets sit on the route. Safe for concurrent use;
// never blocks on a socket. Calls for one route keep their order.
func (s *Server) Deliver(r session.Route, payload []byte, m Meta) int {
	key := r
	if r.Kind == session.RouteAdmin {
		key = session.Route{Kind: session.RouteAdmin}
	}
	var scratch [8]int
	idx, total := s.index.loopsFor(key, scratch[:0])
	if total == 0 {
		return 0
	}
	frame := codec.EventFrame(payload)
	loops := *s.loops.Load()
	for _, li := range idx {
		if li < len(loops) {
			loops[li].post(task{route: r, frame: frame, meta: m})
		}
	}
	return total
}

// deliver queues one event to this loop's sockets on its route. On loop.
func (l *loop) deliver(t *task) {
	key := t.route
	if key.Kind == session.RouteAdmin {
		key = session.Route{Kind: session.RouteAdmin}
	}
	n := 0
	lim := l.srv.limits()
	set := l.members[key]
	if set == nil {
		return
	}
	for _, c := range set.conns {
		if c.state == stOpen && c.wants(t.route) && l.push(c, t.frame, lim) {
			n++
		}
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

// push appends frame to c's ring unless the ring is over its caps, in
// which case c is a slow consumer: the frame is dropped for c and counted
// (SPEC §6), and the grace clock starts. On loop.
func (l *loop) push(c *conn, frame []byte, lim *Limits) bool {
	if len(c.ring) >= lim.OutboundRingMessages ||
		c.ringBytes+c.gc.OutboundBuffered()+len(frame) > lim.OutboundRingBytes {
		l.srv.mx.dropSlow.Inc()
		if c.slowSince == 0 {
			c.slowSince = time.Now().UnixNano()
		}
		l.backlog[c] = struct{}{}
		return false
	}
	if len(c.ring) == 0 {
		if c.ring == nil {
			c.ring = l.getRing()
		}
		l.dirty = append(l.dirty, c)
	}
	c.ring = append(c.ring, frame)
	c.ringBytes += len(frame)
	l.ringBytes += len(frame)
	return true
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

// dropRing forgets c's queued frames (socket closing).
func (l *loop) dropRing(c *conn) {
	if c.ring == nil {
		return
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
			s.sendError(c, codec.NewError(codec.CodeSlowConsumer, "slow consumer"))
			s.closeWith(c, codec.CloseSlowConsumer, "slow-consumer")
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
		_, _ = c.gc.Write(pingFrame)
		l.wheel.add(c, sec+max(int64(lim.PingInterval/time.Second), 1))
	})
	l.flushDirty()
}

// pingFrame is the server's empty ping, encoded once.
var pingFrame = codec.AppendFrame(nil, 0x9, nil)
