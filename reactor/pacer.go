package reactor

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/dws-gateway/dws/internal/safego"
)

// Handshake pacing. A reconnect storm on a small pod (15 000 sockets in a
// second on 2 cores) oversubscribes the CPU: token decrypts, session locks,
// Redis, the replays the handshakes start and the clients' own work leave
// the loops' threads waiting for a core, and live events to untouched
// sockets waited 100+ ms although every piece of storm work on the loop
// itself is bounded (lane.go). Lanes order the loop's own work; they cannot
// give it a core. So admission is paced by what the live path feels: how
// long an event waited in a loop's inbox before the loop took it. While
// that stays under ratelimit.handshake_pace_lag (2 ms), handshakes go straight to the workers as
// before (a connect burst with no events flowing is never paced). When it
// goes over, the admission rate halves from what actually got through,
// then grows back by 5 % per tick: AIMD, as TCP does for the same reason.
// A handshake waits in the pacer at most ratelimit.handshake_pace_max_wait
// (6 s), so a storm is spread
// out, never timed out. Only handshakes are paced: each starts its
// socket's replay, so the replays spread with them (pacing replay batches
// as well only made catch-up slower, perf/resume-20261206.md).

const (
	// defaultPaceLag is ratelimit.handshake_pace_lag's default: the
	// inbox wait of a live event past which the pacer slows admission,
	// a few times what an idle loop shows (< 0.5 ms), well under the
	// live path's own p99 (~10 ms on a loaded 2-core box). 1 and 4 ms
	// did no better (perf/resume-20261206.md).
	defaultPaceLag = 2 * time.Millisecond
	// paceMin is the lowest admission rate: the pacer slows a storm, it
	// does not stop it.
	paceMin rate.Limit = 100
	// paceMax is the rate past which pacing ends (rate.Inf): above any
	// handshake rate a pod reaches.
	paceMax rate.Limit = 50_000
	// defaultPaceMaxWait is ratelimit.handshake_pace_max_wait's default:
	// one handshake's longest wait in the pacer, and never more than half
	// the handshake timeout (10 s by default), so a paced handshake still
	// has time to finish. It is most of a storm's spread: 15 000 resumes
	// caught up in 4.2–6.4 s p99 with it (resume's target is 10 s).
	defaultPaceMaxWait = 6 * time.Second
	// paceQueueMax bounds the handshakes waiting in the pacer. Each is a
	// socket already accepted and counted against the connection limit,
	// so this is a guard, not the bound that matters.
	paceQueueMax = 1 << 16
)

// pacedJob is a handshake waiting for admission.
type pacedJob struct {
	fn     func()
	queued time.Time
}

// pacer admits handshakes to the worker pool at a rate set by the loops'
// live lag. Safe for concurrent use.
type pacer struct {
	s   *Server
	lim *rate.Limiter

	// paced is false while the rate is unlimited: submit then skips the
	// queue (the common case costs two atomic loads).
	paced    atomic.Bool
	waiting  atomic.Int64
	admitted atomic.Int64 // since the last sample

	queue *fifo[pacedJob]

	lastSample time.Time // sampler only
}

func newPacer(s *Server) *pacer {
	p := &pacer{s: s, lim: rate.NewLimiter(rate.Inf, 1), queue: newFIFO[pacedJob]()}
	safego.Go(context.Background(), "reactor.pacer", p.run)
	return p
}

// submit hands a handshake's worker job to the pool now, or queues it
// when admission is paced. False means it could not be taken (pool or
// pacer full): the caller answers "server busy".
func (p *pacer) submit(fn func()) bool {
	if !p.paced.Load() && p.waiting.Load() == 0 {
		p.admitted.Add(1)
		return p.s.work.submit(fn)
	}
	// waiting counts before the push, so a concurrent submit that sees it
	// queues behind this one instead of overtaking it.
	p.waiting.Add(1)
	n, ok := p.queue.push(pacedJob{fn: fn, queued: time.Now()}, paceQueueMax)
	if !ok {
		p.waiting.Add(-1)
		return false
	}
	p.s.m.HandshakesPaced.Set(float64(n))
	return true
}

// run admits queued handshakes, one reservation each, in arrival order.
func (p *pacer) run(ctx context.Context) {
	for {
		j, ok := p.queue.pop()
		if !ok {
			p.s.m.HandshakesPaced.Set(0) // after any admit's last Set
			return
		}
		stop := false
		if !safego.Run(ctx, "reactor.pacer", func() { stop = !p.admit(j) }) {
			// Counted as a recovered panic; this handshake is lost (its
			// socket times out), the pacer must go on: a dead pacer
			// would queue every later handshake for ever.
			p.s.m.HandshakesPaced.Set(float64(p.waiting.Add(-1)))
		}
		if stop {
			return
		}
	}
}

// admit waits for j's turn, at most until its deadline, then hands it to
// the worker pool. False when the pacer was stopped meanwhile.
func (p *pacer) admit(j pacedJob) bool {
	r := p.lim.Reserve()
	if d := r.Delay(); d > 0 {
		if left := p.waitBound() - time.Since(j.queued); d > left {
			// Admitted at its deadline without a token: taking one
			// would push every later handshake past its own, and the
			// pacer would only delay the storm, not spread it.
			r.Cancel()
			d = max(left, 0)
		}
		time.Sleep(d)
	}
	// The job was accepted: a full worker queue makes it wait, it does
	// not turn it into a 503.
	for !p.s.work.submit(j.fn) {
		if p.queue.isClosed() {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	p.admitted.Add(1)
	p.s.m.HandshakesPaced.Set(float64(p.waiting.Add(-1)))
	return true
}

// settings are the pacer's threshold and wait bound from the limits
// (hot-reloadable); a Server built without limits gets the defaults.
func (p *pacer) settings() (lag, maxWait time.Duration) {
	lim := p.s.limits()
	if lim == nil {
		return defaultPaceLag, defaultPaceMaxWait
	}
	maxWait = lim.HandshakePaceMaxWait
	if lim.HandshakeTimeout > 0 {
		maxWait = min(maxWait, lim.HandshakeTimeout/2)
	}
	return lim.HandshakePaceLag, maxWait
}

// waitBound is how long a handshake may wait in the pacer.
func (p *pacer) waitBound() time.Duration {
	_, w := p.settings()
	return w
}

// stop ends the pacer; queued handshakes are dropped (their sockets close
// with the engine), so dws_handshakes_paced reads 0 again: a stopped pod
// must not show handshakes waiting for ever.
func (p *pacer) stop() {
	p.queue.close()
	p.s.m.HandshakesPaced.Set(0)
}

// sample adjusts the rate from the loops' live lag since the last sample.
// Ticker goroutine only, every backlogTick.
func (p *pacer) sample(now time.Time, loops []*loop) {
	var lag time.Duration
	for _, l := range loops {
		lag = max(lag, l.takeLag(now))
	}
	dt := now.Sub(p.lastSample)
	p.lastSample = now
	n := p.admitted.Swap(0)
	if dt <= 0 || dt > time.Second {
		return // first sample, or the ticker stalled: no rate to read
	}
	cur := p.lim.Limit()
	paceLag, _ := p.settings()
	if paceLag <= 0 {
		// Pacing is off (ratelimit.handshake_pace_lag: 0).
		if cur != rate.Inf {
			p.setLimit(rate.Inf, now)
		}
		return
	}
	var next rate.Limit
	switch {
	case lag > paceLag:
		if n == 0 && p.waiting.Load() == 0 {
			// No handshake is in flight: the lag is not theirs, and a
			// low limit would only slow the next burst.
			return
		}
		got := rate.Limit(float64(n) / dt.Seconds())
		base := cur
		if cur == rate.Inf || got < cur {
			base = got
		}
		next = max(base/2, paceMin)
	case cur == rate.Inf:
		return
	default:
		next = cur + max(cur/20, paceMin/10)
		if next >= paceMax {
			next = rate.Inf
		}
	}
	p.setLimit(next, now)
}

// setLimit applies a new admission rate. Sampler only.
func (p *pacer) setLimit(r rate.Limit, now time.Time) {
	if r == rate.Inf {
		p.lim.SetLimitAt(now, rate.Inf)
		p.paced.Store(false)
		p.s.m.HandshakePaceLimit.Set(0)
		return
	}
	// A tick's worth of burst: admissions come in small groups, not one
	// timer wake-up each.
	p.lim.SetBurstAt(now, max(1, int(math.Ceil(float64(r)*backlogTick.Seconds()))))
	p.lim.SetLimitAt(now, r)
	p.paced.Store(true)
	p.s.m.HandshakePaceLimit.Set(float64(r))
}
