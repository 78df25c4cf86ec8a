package session

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dws-gateway/dws/internal/safego"
)

// A route lookup after Redis lost its data must never answer with a partial
// member list (SPEC §5: the dispatcher would deliver locally, ACK, and the
// other pods' sockets would lose the event): it fails with the store-down
// error until every pod re-registered, then lists them all.
func TestRecovery_RedisLostData_PodsFailsUntilEveryPodReregistered(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cluster bool // the Redis Cluster code path (markers read by commands)
		// lose empties the data set: a killed-and-restarted server (the
		// pods see errors) or a flush (the pods never see one and only
		// notice their missing lease or registry:alive). Lookups fail
		// at least once either way (connection refused, or the window).
		lose func(t *testing.T, p *redisProc)
	}{
		{name: "restarted empty", lose: restartEmpty},
		{name: "flushed under running pods", lose: flush},
		{name: "restarted empty, cluster path", cluster: true, lose: restartEmpty},
		{name: "flushed under running pods, cluster path", cluster: true, lose: flush},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			proc := startRedisProc(t)
			optA, optB := fastOptions("pod-a", ""), fastOptions("pod-b", "")
			// The recovery window is one refresh plus max(refresh/2,
			// OpTimeout) of slack for a late refresher; under -race on a
			// loaded 2-core CI machine a tick was once >500 ms late and
			// pod-b re-registered after the window closed. The slack is
			// what this test does not measure, so it is generous here.
			optA.OpTimeout, optB.OpTimeout = 2*time.Second, 2*time.Second
			a := startStore(t, newClient(t, proc.addr()), optA)
			b := startStore(t, newClient(t, proc.addr()), optB)
			if tt.cluster {
				a.core.leaseInScript, b.core.leaseInScript = false, false
			}
			ctx := context.Background()
			rt := Route{Kind: RouteChats, Company: "acme", Agent: "a1"}
			for _, s := range []*testStore{a, b} {
				if err := s.Routes().Join(ctx, rt); err != nil {
					t.Fatal(err)
				}
			}
			both := []string{"pod-a", "pod-b"}
			if got := sortedPods(t, a.Routes(), rt); !slices.Equal(got, both) {
				t.Fatalf("before: pods %v", got)
			}

			// Poll as the dispatcher would, from before the loss until
			// well after recovery.
			poll := pollLookups(t, a.Routes(), rt, both)
			lost := time.Now()
			tt.lose(t, proc)
			poll.check(t, "the data loss", "the recovery window was never seen")
			t.Logf("%d lookups failed, full list %v after the loss", poll.failed.Load(),
				time.Duration(poll.firstFull.Load()-lost.UnixNano()).Round(time.Millisecond))
		})
	}
}

// lookupPoll polls Pods as the dispatcher would, counting lookups held
// (errors), answered in full (want, once a lookup was held) and partial.
type lookupPoll struct {
	partial, failed, full atomic.Int64
	firstFull             atomic.Int64 // unix ns
	bad                   atomic.Value
	stop                  func()
}

func pollLookups(t *testing.T, routes Routes, rt Route, want []string) *lookupPoll {
	t.Helper()
	lp := &lookupPoll{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	safego.Go(ctx, "test.poll", func(ctx context.Context) {
		defer close(done)
		for ctx.Err() == nil {
			pods, err := routes.Pods(ctx, rt)
			slices.Sort(pods)
			switch {
			case ctx.Err() != nil: // stopped mid-lookup
			case err != nil:
				if !errors.Is(err, errStoreDown) && !isOutage(err) {
					lp.bad.Store(err)
				}
				lp.failed.Add(1)
			case slices.Equal(pods, want):
				if lp.failed.Load() > 0 { // after the loss was seen
					lp.full.Add(1)
					lp.firstFull.CompareAndSwap(0, time.Now().UnixNano())
				}
			default:
				lp.bad.Store(pods)
				lp.partial.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	var once sync.Once
	lp.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(lp.stop)
	return lp
}

// check waits for full answers again, stops polling, and fails on any
// partial answer, any error but the store-down one the dispatcher NAKs, or
// no held lookup at all (noHold says what that would mean).
func (lp *lookupPoll) check(t *testing.T, after, noHold string) {
	t.Helper()
	eventually(t, 5*time.Second, "full member list again", func() bool { return lp.full.Load() > 5 })
	lp.stop()
	if n := lp.partial.Load(); n > 0 {
		t.Fatalf("%d lookups answered a partial member list after %s (last %v)", n, after, lp.bad.Load())
	}
	if v := lp.bad.Load(); v != nil {
		t.Fatalf("lookup failed with %v, want the store-down error the dispatcher NAKs", v)
	}
	if lp.failed.Load() == 0 {
		t.Fatal("no lookup was held: " + noHold)
	}
}

func restartEmpty(t *testing.T, p *redisProc) {
	p.kill()
	time.Sleep(300 * time.Millisecond) // both pods notice the outage
	p.start()
}

func flush(t *testing.T, p *redisProc) {
	c := newClient(t, p.addr())
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// A fresh cluster is no recovery: registry:alive is created by the first
// Start, and lookups answer at once, from the first pod to the last.
func TestRecovery_FreshClusterStart_LookupsAnswerAtOnce(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	ctx := context.Background()
	rt := Route{Kind: RouteChats, Company: "acme", Agent: "a1"}
	var want []string
	for _, pod := range []string{"pod-a", "pod-b", "pod-c"} {
		s := startStore(t, c, fastOptions(pod, prefix))
		if err := s.Routes().Join(ctx, rt); err != nil {
			t.Fatal(err)
		}
		want = append(want, pod)
		if got := sortedPods(t, s.Routes(), rt); !slices.Equal(got, want) {
			t.Fatalf("%s started: pods %v, want %v", pod, got, want)
		}
	}
	if n := c.Exists(ctx, prefix+"registry:recovering").Val(); n != 0 {
		t.Fatal("a fresh start opened a recovery window")
	}
	if ttl := c.PTTL(ctx, prefix+"registry:alive").Val(); ttl <= 0 || ttl > registryAliveTTL {
		t.Fatalf("registry:alive TTL %v after Start, want ≤ %v", ttl, registryAliveTTL)
	}
}

// Pods stays one round trip (one EVALSHA) with the registry check, both in
// the steady state and once a recovery is over.
func TestRecovery_Pods_OneRoundTrip(t *testing.T) {
	t.Parallel()
	proc := startRedisProc(t)
	hook, hc := countedClient(t, proc.addr())
	opt := fastOptions("pod-a", "")
	a := startStore(t, hc, opt)
	b := startStore(t, newClient(t, proc.addr()), fastOptions("pod-b", ""))
	ctx := context.Background()
	rt := Route{Kind: RouteChats, Company: "acme", Agent: "a1"}
	if err := b.Routes().Join(ctx, rt); err != nil {
		t.Fatal(err)
	}
	// The refresher shares the client, so a tick may land inside one
	// measurement: a few tries, at least one must be clean.
	lookup := func(when string) {
		t.Helper()
		for range 5 {
			hook.reset()
			pods, err := a.Routes().Pods(ctx, rt)
			if err != nil || !slices.Equal(pods, []string{"pod-b"}) {
				t.Fatalf("%s: pods %v %v", when, pods, err)
			}
			if rt, cmds := hook.roundTrips.Load(), hook.commands.Load(); rt == 1 && cmds == 1 {
				return
			}
		}
		t.Fatalf("%s: %s, want 1 round trip of 1 command", when, hook)
	}
	lookup("steady state")
	if err := newClient(t, proc.addr()).FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "recovery over", func() bool {
		_, err := a.Routes().Pods(ctx, rt)
		return err == nil
	})
	lookup("after recovery")
}

// A lost registry:alive alone (evicted) opens one recovery window, not a
// window re-opened on every tick: lookups answer again once it closes.
func TestRecovery_AliveMarkerEvicted_OneWindowThenLookupsAnswer(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	opt := fastOptions("pod-a", prefix)
	a := startStore(t, c, opt)
	ctx := context.Background()
	rt := Route{Kind: RouteChats, Company: "acme", Agent: "a1"}
	if err := a.Routes().Join(ctx, rt); err != nil {
		t.Fatal(err)
	}
	c.Del(ctx, prefix+"registry:alive")
	eventually(t, 2*opt.RefreshInterval, "the refresher re-creates registry:alive", func() bool {
		return c.Exists(ctx, prefix+"registry:alive").Val() == 1
	})
	if _, err := a.Routes().Pods(ctx, rt); !errors.Is(err, errStoreDown) {
		t.Fatalf("lookup inside the window: %v, want the store-down error", err)
	}
	eventually(t, 2*a.registry.recoveryWindow, "window closed, lookups answer", func() bool {
		pods, err := a.Routes().Pods(ctx, rt)
		return err == nil && slices.Equal(pods, []string{"pod-a"})
	})
	time.Sleep(3 * opt.RefreshInterval)
	if n := c.Exists(ctx, prefix+"registry:recovering").Val(); n != 0 {
		t.Fatal("recovery window re-opened by later ticks")
	}
}
