package reactor

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/dws-gateway/dws/codec"
)

// wheel is a per-loop hashed timer wheel with wheelTick slots: each open
// socket sits in exactly one slot, the one of its next ping deadline, so a
// tick touches only the sockets due now (not every socket, and no timer or
// goroutine per socket). Touched only on its loop.
type wheel struct {
	slots [wheelSlots]*conn // heads of intrusive doubly linked lists
	now   int64             // wheel ticks; the slot last processed
	due   []*conn           // scratch of advance, reused
}

// wheelTick is the wheel's resolution. Pings due in one slot go out in one
// loop turn, every event posted meanwhile waiting behind them, so the slot
// must be short. With one-second slots and the first ping at open +
// interval, a connect ramp (or a reconnect wave) put its sockets in one or
// two slots: 2 500 pings in one turn per loop at 5 000 sockets, 106–187 ms
// on the loaded bench machine (perf/floor-20261206.md). With 100-ms slots
// and first pings spread over half an interval (firstPing), 19 000 sockets
// on 2 loops cost ~95 pings a turn per loop (≈ 0.5–1 ms of writev).
const wheelTick = 100 * time.Millisecond

// wheelSlots covers deadlines up to ~102 s ahead without rounds (the
// default ping interval is 20 s); later deadlines simply stay in their slot
// until their round comes (due check).
const wheelSlots = 1024

func newWheel() wheel { return wheel{} }

// add schedules c at wheel tick due.
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

// advance processes every wheel tick from the last one up to now, calling
// fire for each socket whose deadline has come (fire may re-add it).
func (w *wheel) advance(now int64, fire func(c *conn)) {
	if w.now == 0 {
		w.now = now - 1
	}
	for w.now < now {
		w.now++
		s := w.now % wheelSlots
		due := w.due[:0]
		for c := w.slots[s]; c != nil; c = c.next {
			if c.due <= w.now {
				due = append(due, c)
			}
		}
		for i, c := range due {
			w.remove(c)
			fire(c)
			due[i] = nil
		}
		w.due = due[:0]
	}
}

// pingTicks is the ping interval in wheel ticks, at least one.
func pingTicks(interval time.Duration) int64 {
	return max(int64(interval/wheelTick), 1)
}

// firstPing is the wheel tick of a new socket's first ping: uniformly in
// the second half of the interval from now, so sockets opened together
// are pinged over half an interval instead of all in one loop turn, and
// every later ping follows its own at the full interval (SPEC §6: a ping
// every interval; the first one comes no later than the interval).
// r is a uniform draw in [0, 1).
func firstPing(now int64, interval time.Duration, r float64) int64 {
	n := pingTicks(interval)
	half := n / 2
	return now + n - int64(r*float64(half))
}

// schedulePing puts a socket that just opened on the wheel. On loop.
func (l *loop) schedulePing(c *conn, now time.Time) {
	s := l.srv
	l.wheel.add(c, firstPing(s.wheelNow(now), s.limits().PingInterval, rand.Float64()))
}

// tick is the loop's housekeeping: retry backlogged sockets, close slow
// consumers past their grace, and once a wheel tick time out handshakes and
// run the ping wheel.
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
	l.backlogged.Store(len(l.backlog) > 0)
	wt := s.wheelNow(now)
	if wt == l.wheel.now {
		l.flushDirty()
		return
	}
	if sec := s.seconds(now); sec != l.second {
		l.second = sec
		l.trimRings()
	}
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
	l.wheel.advance(wt, func(c *conn) {
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
		l.wheel.add(c, wt+pingTicks(lim.PingInterval))
	})
	l.flushDirty()
}

// pingFrame is the server's empty ping, encoded once.
var pingFrame = codec.AppendFrame(nil, 0x9, nil)

// tickLoops drives per-loop housekeeping, one Execute per loop: every
// wheelTick for the timer wheel, and every backlogTick while the loop has
// sockets in backlog. An idle loop is woken 10 times a second, not 100:
// each wake-up is an eventfd write and a loop turn that an event posted
// at that moment waits behind.
func (s *Server) tickLoops(context.Context) {
	t := time.NewTicker(backlogTick)
	defer t.Stop()
	for {
		select {
		case <-s.stopTick:
			return
		case now := <-t.C:
			wt := s.wheelNow(now)
			loops := *s.loops.Load()
			s.pace.sample(now, loops)
			for _, l := range loops {
				if !tickDue(l, wt) {
					continue
				}
				l := l
				l.exec(func() { l.tick(now) })
			}
		}
	}
}

// tickDue tells the ticker whether l needs a tick at wheel tick wt: a new
// wheel tick, or sockets in backlog. Ticker goroutine only.
func tickDue(l *loop, wt int64) bool {
	if wt != l.tickedAt {
		l.tickedAt = wt
		return true
	}
	return l.backlogged.Load()
}

// seconds is whole seconds since the server started (the ring pool's
// trim clock).
func (s *Server) seconds(t time.Time) int64 { return int64(t.Sub(s.epoch)/time.Second) + 1 }

// wheelNow is the timer-wheel clock: wheel ticks since the server started,
// from 1.
func (s *Server) wheelNow(t time.Time) int64 { return int64(t.Sub(s.epoch)/wheelTick) + 1 }

// millis is the rate-limit clock: milliseconds since the server started,
// never 0 before it wraps (frameBucket).
func (s *Server) millis(t time.Time) uint32 { return uint32(t.Sub(s.epoch)/time.Millisecond) + 1 }
