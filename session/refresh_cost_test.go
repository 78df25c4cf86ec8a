package session

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// Issue 13 item 4: what an idle pod sends besides its lease is the lazy
// re-assert of its owned keys, one write per key per re-assert period
// (session.gc_ttl / 3), spread evenly over the ticks — never every key in
// one tick (a deploy's reconnect wave, or the full re-assert after a Redis
// restart, would otherwise come due together once a period).
//
// The store pass is driven by hand on a virtual clock (the refresher
// sleeps an hour), so the counts do not depend on how fast this machine
// is: 1 000 sockets (a lock and a message route each), 10 s ticks.
func TestRefresh_IdleReassert_OwnedKeysPerPeriod_SpreadOverTicks(t *testing.T) {
	t.Parallel()
	const (
		sockets = 1000
		keys    = 2 * sockets
		tick    = 10 * time.Second
		window  = 20 * time.Minute
	)
	for _, gc := range []time.Duration{30 * time.Minute, 3 * time.Hour} {
		t.Run("gc_ttl="+gc.String(), func(t *testing.T) {
			t.Parallel()
			c := nodeRedis(t)
			prefix := testPrefix(t, c)
			hook, hc := countedClient(t, sharedRedisAddr)
			opt := fastOptions("pod-a", prefix)
			opt.RefreshInterval = time.Hour // the test runs the store pass itself
			opt.RefreshBatch = 500
			opt.GCTTL = gc
			clock := newTestClock(time.Now())
			s := startStoreWith(t, hc, opt, func(s *RedisStores) { s.core.now = clock.Now })
			ctx := context.Background()
			for u := range sockets {
				if _, err := s.Locker().Acquire(ctx, "acme:a1:u"+strconv.Itoa(u)); err != nil {
					t.Fatal(err)
				}
				if err := s.Routes().Join(ctx, Route{Kind: RouteMessages, Company: "acme", Agent: "a1", Chat: strconv.Itoa(u)}); err != nil {
					t.Fatal(err)
				}
			}
			period := gc / 3
			perTick := float64(keys) * float64(tick) / float64(period)
			// ticks runs n store passes and returns the commands sent and
			// the most sent in one pass.
			ticks := func(n int) (total, peak int64) {
				for range n {
					clock.Advance(tick)
					hook.reset()
					if !s.refreshStores(ctx, false) {
						t.Fatal("store pass failed")
					}
					got := hook.commands.Load()
					total += got
					peak = max(peak, got)
				}
				return total, peak
			}
			// Bounds: ±15 % of the mean (over 4 standard deviations at
			// these sizes) and a peak tick under 3 × the mean per tick; the
			// former design sent all 2 000 keys in one tick per period.
			checkSpread := func(what string, total, peak int64, want float64) {
				t.Helper()
				if f := float64(total); f < 0.85*want || f > 1.15*want {
					t.Fatalf("%s: %d re-asserts of %d keys, want ~%.0f (keys × window / period %v)", what, total, keys, want, period)
				}
				if float64(peak) > 3*perTick+10 {
					t.Fatalf("%s: %d re-asserts in one tick, want about %.0f: due times are not spread", what, peak, perTick)
				}
				t.Logf("%s: %d re-asserts of %d keys over %v (period %v), peak %d in one %v tick (mean %.1f)", what, total, keys, window, period, peak, tick, perTick)
			}
			total, peak := ticks(int(window / tick))
			checkSpread("after the connects", total, peak, float64(keys)*float64(window)/float64(period))

			// A full re-assert writes every key at once; the lazy ones after
			// it are spread again.
			hook.reset()
			if !s.refreshStores(ctx, true) {
				t.Fatal("full re-assert failed")
			}
			if n := hook.commands.Load(); n != keys {
				t.Fatalf("full re-assert: %d commands, want %d", n, keys)
			}
			total, peak = ticks(int(window / tick))
			checkSpread("after a full re-assert", total, peak, float64(keys)*float64(window)/float64(period))
		})
	}
}
