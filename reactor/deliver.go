package reactor

import (
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
	if t.route.Kind == session.RouteAdmin && t.meta.Seq != 0 {
		// Only the seq rule needs it (admit and hold skip seq 0).
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
			case c.replaying:
				// Catching up: held, admitted when the replay ends.
				l.hold(c, t, pair, lim)
			case t.meta.Seq != 0 && !c.admit(t.route.Kind, pair, t.meta.Seq):
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
