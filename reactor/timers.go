package reactor

import (
	"context"
	"time"

	"github.com/dws-gateway/dws/codec"
)

// wheel is a per-loop hashed timer wheel with one-second slots: each open
// socket sits in exactly one slot, the one of its next ping deadline, so a
// tick touches only the sockets due now (not every socket, and no timer or
// goroutine per socket). Touched only on its loop.
type wheel struct {
	slots [wheelSlots]*conn // heads of intrusive doubly linked lists
	now   int64             // seconds; the slot last processed
}

// wheelSlots covers deadlines up to ~4 minutes ahead without rounds; later
// deadlines simply stay in their slot until their round comes (due check).
const wheelSlots = 256

func newWheel() wheel { return wheel{} }

// add schedules c at second due.
func (w *wheel) add(c *conn, due int64) {
	c.due = due
	s := int32(due % wheelSlots)
	c.wheel = s
	c.prev = nil
	c.next = w.slots[s]
	if c.next != nil {
		c.next.prev = c
	}
	w.slots[s] = c
}

// remove unlinks c if it is on the wheel.
func (w *wheel) remove(c *conn) {
	if c.wheel < 0 {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		w.slots[c.wheel] = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.wheel = nil, nil, -1
}

// advance processes every second from the last one up to now, calling fire
// for each socket whose deadline has come (fire may re-add it).
func (w *wheel) advance(now int64, fire func(c *conn)) {
	if w.now == 0 {
		w.now = now - 1
	}
	for w.now < now {
		w.now++
		s := w.now % wheelSlots
		var due []*conn
		for c := w.slots[s]; c != nil; c = c.next {
			if c.due <= w.now {
				due = append(due, c)
			}
		}
		for _, c := range due {
			w.remove(c)
			fire(c)
		}
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
			c.closeAfter(codec.NewError(codec.CodeSlowConsumer, "slow consumer"),
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
				c.abort()
			}
		}
	}
	l.wheel.advance(sec, func(c *conn) {
		if c.state != stOpen {
			return
		}
		if int(c.missed) >= lim.MaxMissedPongs {
			c.closeWith(codec.CloseGoingAway, "ping timeout")
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

// tickLoops drives per-loop housekeeping: the backlog flush every 50 ms and
// the timer wheel once a second, each as one Execute per loop.
func (s *Server) tickLoops(context.Context) {
	t := time.NewTicker(backlogTick)
	defer t.Stop()
	for {
		select {
		case <-s.stopTick:
			return
		case now := <-t.C:
			for _, l := range *s.loops.Load() {
				l := l
				l.exec(func() { l.tick(now) })
			}
		}
	}
}

// seconds is the timer-wheel clock: whole seconds since the server started.
func (s *Server) seconds(t time.Time) int64 { return int64(t.Sub(s.epoch)/time.Second) + 1 }

// millis is the rate-limit clock: milliseconds since the server started,
// never 0 before it wraps (frameBucket).
func (s *Server) millis(t time.Time) uint32 { return uint32(t.Sub(s.epoch)/time.Millisecond) + 1 }
