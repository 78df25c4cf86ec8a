package reactor

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/time/rate"

	"github.com/dws-gateway/dws/internal/metrics"
)

// barePacer returns a Server with just what the pacer touches.
func barePacer(t *testing.T, workers, queue int, tweak func(*Limits)) (*Server, *pacer) {
	t.Helper()
	s := &Server{m: metrics.New(), epoch: time.Now()}
	lim := DefaultLimits()
	if tweak != nil {
		tweak(&lim)
	}
	s.lim.Store(&lim)
	s.work = newWorkers(workers, queue)
	s.pace = newPacer(s)
	t.Cleanup(func() { s.pace.stop(); s.work.stop() })
	return s, s.pace
}

// The controller: halve from what got through when live events wait,
// leave the rate alone when no handshake is in flight, grow back by
// steps and end pacing above paceMax.
func TestPacer_Sample(t *testing.T) {
	srv := &Server{epoch: time.Now()}
	lagging := func(d time.Duration) []*loop {
		l := &loop{srv: srv}
		l.maxLag = d
		return []*loop{l}
	}
	t0 := time.Now()
	tick := backlogTick

	cases := []struct {
		name      string
		start     rate.Limit
		admitted  int64
		lag       time.Duration
		want      rate.Limit
		wantPaced bool
		off       bool // ratelimit.handshake_pace_lag: 0
	}{
		{"quiet, unpaced", rate.Inf, 100, 0, rate.Inf, false, false},
		{"lag with no handshake in flight is not ours", rate.Inf, 0, 10 * defaultPaceLag, rate.Inf, false, false},
		{"lag halves the rate that got through", rate.Inf, 100, 2 * defaultPaceLag, 5000, true, false}, // 100 in 10 ms = 10 000/s
		{"lag halves the limit when more got through", 4000, 100, 2 * defaultPaceLag, 2000, true, false},
		{"never below paceMin", 150, 1, 2 * defaultPaceLag, paceMin, true, false},
		{"no lag grows 5 %", 2000, 20, defaultPaceLag / 2, 2100, true, false},
		{"small rates grow by paceMin/10", 100, 1, 0, 100 + paceMin/10, true, false},
		{"past paceMax pacing ends", paceMax - 1, 500, 0, rate.Inf, false, false},
		{"a zero threshold turns pacing off", 2000, 100, 10 * defaultPaceLag, rate.Inf, false, true},
		{"and keeps it off", rate.Inf, 100, 10 * defaultPaceLag, rate.Inf, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, p := barePacer(t, 1, 1, func(l *Limits) {
				if tc.off {
					l.HandshakePaceLag = 0
				}
			})
			if tc.start != rate.Inf {
				p.setLimit(tc.start, t0)
			}
			p.lastSample = t0
			p.admitted.Store(tc.admitted)
			p.sample(t0.Add(tick), lagging(tc.lag))
			got := p.lim.Limit()
			if d := float64(got - tc.want); d > 1e-6 || d < -1e-6 {
				if !(got == rate.Inf && tc.want == rate.Inf) {
					t.Fatalf("limit %v, want %v", got, tc.want)
				}
			}
			if p.paced.Load() != tc.wantPaced {
				t.Fatalf("paced %v, want %v", p.paced.Load(), tc.wantPaced)
			}
			if p.admitted.Load() != 0 {
				t.Fatal("sample must reset the admission count")
			}
		})
	}
}

// Paced handshakes go through the queue at about the limit, in order, and
// none waits past its bound.
func TestPacer_QueueAdmitsAtTheLimit(t *testing.T) {
	_, p := barePacer(t, 4, 64, nil)
	p.setLimit(200, time.Now()) // burst 2
	const n = 40
	var (
		done  atomic.Int64
		order = make(chan int, n)
	)
	start := time.Now()
	for i := range n {
		if !p.submit(func() { order <- i; done.Add(1) }) {
			t.Fatalf("submit %d refused", i)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for done.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d admitted after 5 s", done.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	// 40 at 200/s with a burst of 2: about 190 ms. Bounded above loosely
	// (a busy machine sleeps long), below strictly: pacing must pace.
	if took < 150*time.Millisecond {
		t.Fatalf("40 handshakes at 200/s admitted in %v: not paced", took)
	}
	if p.waiting.Load() != 0 {
		t.Fatalf("waiting %d after all admitted", p.waiting.Load())
	}
	// Four workers may run them out of order; the pacer hands them over
	// in order, so the first few must be among the first admitted.
	first := <-order
	if first >= 8 {
		t.Fatalf("first job run was #%d", first)
	}
}

// Stopping the pacer drops what it held, and dws_handshakes_paced says
// so: a stopped pod must not show handshakes waiting for ever.
func TestPacer_StopClearsPacedGauge(t *testing.T) {
	s, p := barePacer(t, 1, 8, nil)
	p.setLimit(paceMin, time.Now())
	p.lim.ReserveN(time.Now(), p.lim.Burst()) // the next ones wait
	for i := range 20 {
		if !p.submit(func() {}) {
			t.Fatalf("submit %d refused", i)
		}
	}
	if v := testutil.ToFloat64(s.m.HandshakesPaced); v < 10 {
		t.Fatalf("dws_handshakes_paced = %v with 20 queued at %v/s, want most of them", v, paceMin)
	}
	p.stop()
	deadline := time.Now().Add(2 * time.Second)
	for testutil.ToFloat64(s.m.HandshakesPaced) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("dws_handshakes_paced = %v after stop, want 0", testutil.ToFloat64(s.m.HandshakesPaced))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// It stays 0: the admit in progress at stop must not set it back.
	time.Sleep(3 * time.Second / time.Duration(paceMin))
	if v := testutil.ToFloat64(s.m.HandshakesPaced); v != 0 {
		t.Fatalf("dws_handshakes_paced = %v after stop settled, want 0", v)
	}
}

// A handshake never waits in the pacer much past its bound, whatever
// the limit: a storm is spread out, not timed out.
func TestPacer_MaxWait(t *testing.T) {
	_, p := barePacer(t, 1, 8, func(l *Limits) { l.HandshakePaceMaxWait = time.Second })
	bound := p.waitBound()
	p.setLimit(paceMin, time.Now())
	// Drain the bucket so the next reservation waits 1/paceMin per job.
	p.lim.ReserveN(time.Now(), p.lim.Burst())
	// 400 jobs at 100/s would take 4 s; none may wait past maxWait.
	const n = 400
	var maxWait atomic.Int64
	done := make(chan struct{}, n)
	for range n {
		q := time.Now()
		p.submit(func() {
			w := int64(time.Since(q))
			for {
				old := maxWait.Load()
				if w <= old || maxWait.CompareAndSwap(old, w) {
					break
				}
			}
			done <- struct{}{}
		})
	}
	timeout := time.After(bound + 3*time.Second)
	for range n {
		select {
		case <-done:
		case <-timeout:
			t.Fatal("queued handshakes not admitted within maxWait")
		}
	}
	// Loose above (a busy machine wakes late), but well under the 4 s an
	// unbounded wait would take.
	if w := time.Duration(maxWait.Load()); w > bound+1500*time.Millisecond {
		t.Fatalf("a handshake waited %v in the pacer (bound %v)", w, bound)
	}
	if w := time.Duration(maxWait.Load()); w < bound/2 {
		t.Fatalf("the longest wait was %v: 400 jobs at 100/s were not paced", w)
	}
}

// The lag signal: how long an event waited in a loop's inbox, counted
// whether the drain has run or not; function tasks (ticks, handshakes)
// are not live events and do not count.
func TestLoop_TakeLag(t *testing.T) {
	l := firstLoop(t, startPod(t, nil))
	l.takeLag(time.Now()) // reset

	// Block the loop, post an event behind it, then let it go.
	release := make(chan struct{})
	blocked := make(chan struct{})
	l.exec(func() { close(blocked); <-release })
	<-blocked
	l.post(task{}) // an event for no route: nothing to deliver
	time.Sleep(20 * time.Millisecond)
	if lag := l.takeLag(time.Now()); lag < 20*time.Millisecond {
		t.Fatalf("event waiting 20 ms reads lag %v", lag)
	}
	close(release)
	done := make(chan struct{})
	l.exec(func() { close(done) })
	<-done
	// The drain saw the event's whole wait; after that nothing waits.
	if lag := l.takeLag(time.Now()); lag < 20*time.Millisecond {
		t.Fatalf("after the drain the lag reads %v, want the event's whole wait", lag)
	}
	if lag := l.takeLag(time.Now()); lag != 0 {
		t.Fatalf("with nothing waiting the lag reads %v", lag)
	}

	// A function task waiting is not a live event.
	release = make(chan struct{})
	blocked = make(chan struct{})
	l.exec(func() { close(blocked); <-release })
	<-blocked
	l.exec(func() {})
	time.Sleep(20 * time.Millisecond)
	lag := l.takeLag(time.Now())
	close(release)
	if lag != 0 {
		t.Fatalf("a waiting function task reads lag %v", lag)
	}
}

// A paced pod still opens sockets: the handshake waits its turn in the
// pacer, then authenticates and gets its 101 and ready as before.
func TestPacer_PacedHandshakesStillOpen(t *testing.T) {
	p := startPod(t, nil)
	p.srv.pace.setLimit(paceMin, time.Now()) // 100/s, burst 1
	start := time.Now()
	var cs []*client
	for i := range 5 {
		cs = append(cs, dial(t, p.userURL("acme", "a1", fmt.Sprintf("u%d", i))).ready())
	}
	for _, c := range cs {
		c.conn.Close()
	}
	// Five at 100/s with a burst of 1: at least ~40 ms, so they went
	// through the queue, not around it.
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Fatalf("5 handshakes at 100/s opened in %v: not paced", took)
	}
	if w := p.srv.pace.waiting.Load(); w != 0 {
		t.Fatalf("%d handshakes still counted as waiting", w)
	}
}
