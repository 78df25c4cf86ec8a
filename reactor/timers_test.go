package reactor

import (
	"testing"
	"time"
)

func TestFirstPing_InSecondHalfOfInterval(t *testing.T) {
	cases := []struct {
		name      string
		interval  time.Duration
		r         float64
		wantTicks int64 // from now
	}{
		{"default interval, no jitter", 20 * time.Second, 0, 200},
		{"default interval, mid draw", 20 * time.Second, 0.5, 150},
		{"default interval, top draw", 20 * time.Second, 0.999999, 101},
		{"one second", time.Second, 0, 10},
		{"one second, top draw", time.Second, 0.999999, 6},
		{"below a tick", 10 * time.Millisecond, 0.7, 1},
		{"two ticks", 2 * wheelTick, 0.999999, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const now = 1000
			got := firstPing(now, tc.interval, tc.r) - now
			if got != tc.wantTicks {
				t.Fatalf("first ping %d ticks from now, want %d", got, tc.wantTicks)
			}
			n := pingTicks(tc.interval)
			if got < 1 || got > n || got < n-n/2 {
				t.Fatalf("first ping %d ticks from now: outside (interval/2, interval] = (%d, %d]", got, n-n/2, n)
			}
		})
	}
}

// Sockets opened in one second get their first pings spread over half an
// interval: no wheel slot holds more than a few percent of them.
func TestWheel_FirstPingsSpread(t *testing.T) {
	const sockets = 19000
	var w wheel
	now := int64(10)
	conns := make([]conn, sockets)
	for i := range conns {
		conns[i].wheel = -1
		w.add(&conns[i], firstPing(now+int64(i%10), 20*time.Second, float64(i)/sockets))
	}
	fired := map[int64]int{}
	for tick := now; tick <= now+int64(10+200); tick++ {
		w.advance(tick, func(c *conn) { fired[tick]++ })
	}
	total, most := 0, 0
	for _, n := range fired {
		total += n
		most = max(most, n)
	}
	if total != sockets {
		t.Fatalf("%d sockets fired, want %d", total, sockets)
	}
	// 19 000 over ~100 ticks: ~190 a tick; one-second slots put them all
	// in one or two.
	if most > 2*sockets/100 {
		t.Fatalf("busiest tick fired %d pings (want ≤ %d)", most, 2*sockets/100)
	}
}

func TestWheel_RemoveAndRounds(t *testing.T) {
	var w wheel
	a, b, c := &conn{wheel: -1}, &conn{wheel: -1}, &conn{wheel: -1}
	w.add(a, 5)
	w.add(b, 5)
	w.add(c, 5+wheelSlots) // same slot, next round
	w.remove(b)
	var got []*conn
	for tick := int64(1); tick <= 5+wheelSlots; tick++ {
		w.advance(tick, func(x *conn) { got = append(got, x) })
		if tick == 5 && (len(got) != 1 || got[0] != a) {
			t.Fatalf("tick 5 fired %d sockets, want a alone", len(got))
		}
	}
	if len(got) != 2 || got[1] != c {
		t.Fatalf("fired %d sockets, want a then c a round later", len(got))
	}
	if a.wheel != -1 || b.wheel != -1 || c.wheel != -1 {
		t.Fatal("fired or removed sockets still on the wheel")
	}
}

func BenchmarkWheel_AdvanceWithPings(b *testing.B) {
	b.ReportAllocs()
	var w wheel
	conns := make([]conn, 20000)
	for i := range conns {
		conns[i].wheel = -1
		w.add(&conns[i], int64(i%200)+1)
	}
	tick := int64(0)
	b.ResetTimer()
	for b.Loop() {
		tick++
		w.advance(tick, func(c *conn) { w.add(c, tick+200) })
	}
}

// The ticker wakes a loop once a wheel tick, and every backlog tick only
// while the loop has sockets in backlog.
func TestTickDue_WheelTicksAndBacklog(t *testing.T) {
	steps := []struct {
		wt         int64
		backlogged bool
		want       bool
	}{
		{1, false, true},  // first wheel tick
		{1, false, false}, // same wheel tick, nothing in backlog
		{1, false, false},
		{1, true, true}, // a socket went to backlog
		{1, true, true},
		{2, false, true}, // next wheel tick
		{2, false, false},
		{5, false, true}, // ticks skipped (a stalled ticker) still post once
	}
	l := &loop{}
	for i, st := range steps {
		l.backlogged.Store(st.backlogged)
		if got := tickDue(l, st.wt); got != st.want {
			t.Fatalf("step %d (wheel tick %d, backlogged %v): due %v, want %v", i, st.wt, st.backlogged, got, st.want)
		}
	}
}
