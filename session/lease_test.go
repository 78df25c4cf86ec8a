package session

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dws-gateway/dws/codec"
)

func TestLease_StartWritesLease_CloseDeletesIt(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	opt := fastOptions("pod-a", prefix)
	a := startStore(t, c, opt)
	ctx := context.Background()
	if v := get(t, c, prefix+"pod:pod-a"); v == "" {
		t.Fatal("no pod lease after Start")
	} else if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
		t.Fatalf("lease value %q is not the start time", v)
	}
	if ttl := c.PTTL(ctx, prefix+"pod:pod-a").Val(); ttl <= 0 || ttl > 3*opt.RefreshInterval {
		t.Fatalf("lease TTL %v, want ≤ 3 × refresh interval", ttl)
	}
	time.Sleep(4 * opt.RefreshInterval)
	if get(t, c, prefix+"pod:pod-a") == "" {
		t.Fatal("lease lapsed although the refresher runs")
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if get(t, c, prefix+"pod:pod-a") != "" {
		t.Fatal("lease left behind by Close")
	}
	if err := a.Start(ctx); err == nil {
		t.Fatal("a store must not start twice")
	}
}

func TestClose_AfterReleasesAndWithout_ScanFindsNothing(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	ctx := context.Background()
	var stores []*testStore
	for i := range 2 {
		stores = append(stores, startStore(t, c, fastOptions("pod-"+strconv.Itoa(i), prefix)))
	}
	for i, s := range stores {
		for u := range 20 {
			key := "acme:a" + strconv.Itoa(i) + ":u" + strconv.Itoa(u)
			if _, err := s.reactor.connect(ctx, key); err != nil {
				t.Fatal(err)
			}
			if err := s.Routes().Join(ctx, Route{Kind: RouteMessages, Company: "acme", Agent: "a1", Chat: strconv.Itoa(u)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Routes().Join(ctx, Route{Kind: RouteAdmin}); err != nil {
			t.Fatal(err)
		}
	}
	// pod-0's sockets close normally; pod-1 shuts down holding its own.
	for u := range 20 {
		stores[0].reactor.disconnect("acme:a0:u" + strconv.Itoa(u))
		stores[0].Routes().Leave(Route{Kind: RouteMessages, Company: "acme", Agent: "a1", Chat: strconv.Itoa(u)})
	}
	stores[0].Routes().Leave(Route{Kind: RouteAdmin})
	if len(scanKeys(t, c, prefix)) == 0 {
		t.Fatal("nothing written: the test proves nothing")
	}
	for _, s := range stores {
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// registry:alive is shared by every pod, so it stays, bounded by its
	// TTL; everything a pod owned is gone.
	for _, k := range scanKeys(t, c, prefix) {
		if k != prefix+"registry:alive" {
			t.Fatalf("key left behind: %s", k)
		}
		if ttl := c.PTTL(ctx, k).Val(); ttl <= 0 || ttl > registryAliveTTL {
			t.Fatalf("registry:alive TTL %v, want ≤ %v", ttl, registryAliveTTL)
		}
	}
}

func TestDegraded_RedisKilledAndRestarted_KeysReassertedDuplicatesResolved(t *testing.T) {
	t.Parallel()
	proc := startRedisProc(t)
	ca, cb, probe := newClient(t, proc.addr()), newClient(t, proc.addr()), newClient(t, proc.addr())
	optA, optB := fastOptions("pod-a", ""), fastOptions("pod-b", "")
	a, b := startStore(t, ca, optA), startStore(t, cb, optB)
	ctx := context.Background()
	chats := Route{Kind: RouteChats, Company: "acme", Agent: "a1"}
	if _, err := a.reactor.connect(ctx, "acme:a1:u1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Routes().Join(ctx, chats); err != nil {
		t.Fatal(err)
	}
	if _, err := b.reactor.connect(ctx, "acme:a1:u2"); err != nil {
		t.Fatal(err)
	}

	proc.kill()
	eventually(t, 2*time.Second, "both pods degraded", func() bool { return !a.Healthy() && !b.Healthy() })
	if g := testutil.ToFloat64(a.core.m.Degraded); g != 1 {
		t.Fatalf("degraded gauge %v, want 1", g)
	}
	start := time.Now()
	got, err := a.reactor.connect(ctx, "acme:a1:u3")
	if err != nil || !got.Degraded {
		t.Fatalf("acquire while Redis is down: %+v %v, want accepted locally", got, err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("degraded acquire took %v: it must not wait on Redis", d)
	}
	if err := a.Routes().Join(ctx, Route{Kind: RouteMessages, Company: "acme", Agent: "a1", Chat: "x1"}); err != nil {
		t.Fatalf("join while Redis is down: %v", err)
	}
	if _, err := a.Routes().Pods(ctx, chats); err == nil {
		t.Fatal("pods while Redis is down must fail (the dispatcher NAKs)")
	}
	// The same user accepted on both pods while neither can see the other.
	if _, err := a.reactor.connect(ctx, "acme:a1:dup"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.reactor.connect(ctx, "acme:a1:dup"); err != nil {
		t.Fatal(err)
	}

	proc.start() // empty: every key is gone
	eventually(t, 2*optA.RefreshInterval+time.Second, "both pods healthy again", func() bool { return a.Healthy() && b.Healthy() })
	if g := testutil.ToFloat64(a.core.m.Degraded); g != 0 {
		t.Fatalf("degraded gauge %v after recovery", g)
	}
	want := map[string]string{
		"session:acme:a1:u1":        "pod-a",
		"session:acme:a1:u2":        "pod-b",
		"session:acme:a1:u3":        "pod-a",
		"pod:pod-a":                 "",
		"pod:pod-b":                 "",
		"route:acme:a1:chats":       "pod-a",
		"route:acme:a1:messages:x1": "pod-a",
	}
	eventually(t, optA.RefreshInterval+time.Second, "owned keys re-asserted", func() bool {
		for k, v := range want {
			switch {
			case k[:6] == "route:":
				if probe.ZScore(ctx, k, v).Err() != nil {
					return false
				}
			case v == "":
				if get(t, probe, k) == "" {
					return false
				}
			default:
				if get(t, probe, k) != v {
					return false
				}
			}
		}
		return true
	})
	var winner, loser *testStore
	eventually(t, time.Second, "duplicate resolved: one socket left, named by the lock", func() bool {
		owner := get(t, probe, "session:acme:a1:dup")
		winner, loser = a, b
		if owner == "pod-b" {
			winner, loser = b, a
		}
		return owner != "" && winner.reactor.has("acme:a1:dup") && !loser.reactor.has("acme:a1:dup")
	})
	if loser.reactor.evictions("acme:a1:dup") != 1 {
		t.Fatal("the losing duplicate was not evicted")
	}
	for _, k := range []string{"acme:a1:u1", "acme:a1:u3"} {
		if !a.reactor.has(k) || a.reactor.evictions(k) != 0 {
			t.Fatalf("socket %s dropped across the outage", k)
		}
	}
	if !b.reactor.has("acme:a1:u2") {
		t.Fatal("socket acme:a1:u2 dropped across the outage")
	}
	// The kill-notice subscription came back with Redis.
	if _, err := b.reactor.connect(ctx, "acme:a1:u1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "notice after restart evicts", func() bool { return a.reactor.evictions("acme:a1:u1") == 1 })
	if n := totalRedisErrors(a); n == 0 {
		t.Fatal("no Redis errors counted for the outage")
	}
}

func TestDegraded_RejectMode_Returns503(t *testing.T) {
	t.Parallel()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t)) // nothing listens
	opt := fastOptions("pod-a", "")
	opt.OnStoreDown = OnStoreDownReject
	a := startStore(t, newClient(t, addr), opt)
	if a.Healthy() {
		t.Fatal("healthy without Redis")
	}
	_, err := a.reactor.connect(context.Background(), "acme:a1:u1")
	var ce *codec.Error
	if !errors.As(err, &ce) || ce.Code != codec.CodeServiceUnavailable || ce.HTTPStatus() != 503 {
		t.Fatalf("err %v, want ServiceUnavailable 503", err)
	}
}

func TestDegraded_RedisDown_BacksOffInsteadOfSpinning(t *testing.T) {
	t.Parallel()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	opt := fastOptions("pod-a", "")
	a := startStore(t, newClient(t, addr), opt)
	got, err := a.reactor.connect(context.Background(), "acme:a1:u1")
	if err != nil || !got.Degraded || got.Takeover != TakeoverNone {
		t.Fatalf("accept_local: %+v %v", got, err)
	}
	if g := testutil.ToFloat64(a.core.m.Degraded); g != 1 {
		t.Fatalf("degraded gauge %v", g)
	}
	before := totalRedisErrors(a)
	time.Sleep(time.Second)
	// Probes back off to one per refresh interval (200 ms) for the lease
	// and the subscription: ~10 a second, not thousands.
	if n := totalRedisErrors(a) - before; n > 25 {
		t.Fatalf("%v Redis errors in 1 s while down: busy loop", n)
	}
}

func totalRedisErrors(s *testStore) float64 {
	var n float64
	for _, op := range []string{"lease", "subscribe", "start", "acquire", "join", "pods", "release", "refresh"} {
		n += testutil.ToFloat64(s.core.m.RedisErrors.WithLabelValues(op))
	}
	return n
}

func TestDegraded_JoinWhileDown_SucceedsAndIsWrittenLater(t *testing.T) {
	t.Parallel()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	a := startStore(t, newClient(t, addr), fastOptions("pod-a", ""))
	rt := Route{Kind: RouteChats, Company: "acme", Agent: "a1"}
	if err := a.Routes().Join(context.Background(), rt); err != nil {
		t.Fatal(err)
	}
	a.routes.mu.Lock()
	e := a.routes.entries[a.core.keys.route(rt)]
	dirty := e != nil && e.dirty && e.refs == 1
	a.routes.mu.Unlock()
	if !dirty {
		t.Fatal("join while down not recorded for re-assertion")
	}
}

func TestRefresh_CostGrowsWithPodsNotSockets(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	hook, hc := countedClient(t, sharedRedisAddr)
	opt := fastOptions("pod-a", prefix)
	opt.RefreshBatch = 100
	a := startStore(t, hc, opt)
	ctx := context.Background()
	const sockets, agents = 1000, 50
	for u := range sockets {
		if _, err := a.Locker().Acquire(ctx, "acme:a1:u"+strconv.Itoa(u)); err != nil {
			t.Fatal(err)
		}
		if err := a.Routes().Join(ctx, Route{Kind: RouteMessages, Company: "acme", Agent: "a" + strconv.Itoa(u%agents), Chat: strconv.Itoa(u)}); err != nil {
			t.Fatal(err)
		}
	}
	// Steady state: only the lease is written; owned keys are vouched
	// for by it. Settle first: under a loaded CI machine a write above
	// may have timed out (OpTimeout 500 ms) and be re-asserted a tick
	// later, one EVALSHA that is a retry, not steady-state cost.
	settled := time.Now().Add(5 * time.Second)
	for {
		hook.reset()
		time.Sleep(2 * opt.RefreshInterval)
		if hook.only("set", "pexpire") || time.Now().After(settled) {
			break
		}
	}
	hook.reset()
	time.Sleep(5*opt.RefreshInterval + opt.RefreshInterval/2)
	// One pipeline per tick: the lease and registry:alive's TTL.
	if rt, cmds := hook.roundTrips.Load(), hook.commands.Load(); rt < 4 || rt > 6 || cmds != 2*rt {
		t.Fatalf("5 steady ticks with %d sockets: %s, want one lease write (+ marker PEXPIRE) per tick", sockets, hook)
	}
	// The kill listener's probe: at most one PUBLISH per interval, per pod.
	if p := hook.probes.Load(); p > 6 {
		t.Fatalf("5 steady ticks: %d probe publishes, want at most one per interval", p)
	}
	t.Logf("steady state, %d sockets: %s over 5 ticks", sockets, hook)
	// A full re-assert (after a Redis restart): batches of refresh_batch.
	hook.reset()
	a.core.requestFull()
	owned := sockets * 2 // a lock and a message route per socket
	want := int64(1 + (owned+opt.RefreshBatch-1)/opt.RefreshBatch)
	eventually(t, time.Second, "full re-assert", func() bool { return hook.roundTrips.Load() >= want })
	time.Sleep(50 * time.Millisecond)
	if rt := hook.roundTrips.Load(); rt != want {
		t.Fatalf("full re-assert of %d keys: %s, want %d round trips", owned, hook, want)
	}
	t.Logf("full re-assert of %d keys in batches of %d: %s", owned, opt.RefreshBatch, hook)
}
