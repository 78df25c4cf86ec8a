package session

import (
	"context"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The dial hook's decision: a connection to another address than the
// previous connection's is a master switch; the first connection, a
// reconnection to the same address and a dialer that names no address are
// not.
func TestMasterWatch_Observe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		dials    []string
		switched []bool // per dial
	}{
		{"first connection", []string{"a:1"}, []bool{false}},
		{"pool grows on one master", []string{"a:1", "a:1", "a:1"}, []bool{false, false, false}},
		{"failover", []string{"a:1", "a:1", "b:2", "b:2"}, []bool{false, false, true, false}},
		{"failover and back", []string{"a:1", "b:2", "a:1"}, []bool{false, true, true}},
		{"same host, other port", []string{"a:1", "a:2"}, []bool{false, true}},
		{"no address is ignored", []string{"", "a:1", "", "a:1"}, []bool{false, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w masterWatch
			want := uint64(0)
			for i, addr := range tt.dials {
				_, got := w.observe(addr)
				if got != tt.switched[i] {
					t.Fatalf("dial %d (%q): switched %v, want %v", i, addr, got, tt.switched[i])
				}
				if got {
					want++
				}
			}
			if n := w.switches.Load(); n != want {
				t.Fatalf("%d switches counted, want %d", n, want)
			}
		})
	}
}

// A switch makes the pod's lookups distrust Redis and asks the refresher
// for a full round at once; only a recovery window opened after the switch
// (the count read before the markers were written) settles it.
func TestRegistry_MasterSwitch_SuspectUntilWindowOpenedAfterIt(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialed
	t.Cleanup(func() { _ = rdb.Close() })
	c := newRedisCore(rdb, fastOptions("pod-a", "x:"))
	g := newRedisRegistry(c)
	ctx := context.Background()

	g.observeDial(ctx, "10.0.0.1:6379")
	if g.switchSuspect() || c.needFull.Load() {
		t.Fatal("the first connection counted as a switch")
	}
	before := g.master.switches.Load() // a round that started before the switch
	g.observeDial(ctx, "10.0.0.2:6379")
	if !g.switchSuspect() {
		t.Fatal("switch not suspected")
	}
	if !c.needFull.Load() || len(c.kick) != 1 {
		t.Fatal("switch did not ask the refresher for a full round now")
	}
	g.settleSwitches(before)
	if !g.switchSuspect() {
		t.Fatal("a window opened from a round that started before the switch settled it")
	}
	g.settleSwitches(g.master.switches.Load())
	if g.switchSuspect() {
		t.Fatal("still suspect after a window opened after the switch")
	}
	g.observeDial(ctx, "10.0.0.2:6379")
	if g.switchSuspect() {
		t.Fatal("a reconnection to the new master counted as a switch")
	}
}

// A Sentinel-style failover at store level: B replicates A and is
// promoted; A keeps acknowledging writes (a third pod joins the route, and
// every lease renewal) until the pods' connections move to B, which lacks
// them: the joiner's member and, after a lease TTL, every lease. From the
// switch on, no lookup may answer a partial member list (the dispatcher
// would ack the event for the missing pods' sockets); lookups fail with
// the store-down error until every pod re-registered on B, then list all.
func TestFailover_MasterSwitch_NoPartialLookup(t *testing.T) {
	t.Parallel()
	procA, procB := startRedisProc(t), startRedisProc(t)
	ctx := context.Background()
	admin := func(p *redisProc) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: p.addr()})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ra, rb := admin(procA), admin(procB)
	if err := ra.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rb.SlaveOf(ctx, "127.0.0.1", procA.addr()[len("127.0.0.1:"):]).Err(); err != nil {
		t.Fatal(err)
	}
	var target atomic.Value // the address the pods' clients dial
	target.Store(procA.addr())
	switching := func() redis.UniversalClient {
		c := redis.NewClient(&redis.Options{
			Addr:        "master",
			DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
			Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, target.Load().(string))
			},
		})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// A 1 s refresh (3 s lease): the pods' own ticks, which find their
	// leases gone on B, come late enough for a partial answer to show.
	opts := func(pod string) RedisOptions {
		o := fastOptions(pod, "")
		o.RefreshInterval = time.Second
		return o
	}
	a := startStore(t, switching(), opts("pod-a"))
	b := startStore(t, switching(), opts("pod-b"))
	rt := Route{Kind: RouteChats, Company: "acme", Agent: "a1"}
	for _, s := range []*testStore{a, b} {
		if err := s.Routes().Join(ctx, rt); err != nil {
			t.Fatal(err)
		}
	}
	routeKey := a.core.keys.route(rt)
	eventually(t, 5*time.Second, "B replicates the route", func() bool { return rb.ZCard(ctx, routeKey).Val() == 2 })

	// Promotion; A still takes writes: pod-c joins, leases are renewed.
	if err := rb.SlaveOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	c := startStore(t, switching(), opts("pod-c"))
	if err := c.Routes().Join(ctx, rt); err != nil {
		t.Fatal(err)
	}
	all := []string{"pod-a", "pod-b", "pod-c"}
	if got := sortedPods(t, a.Routes(), rt); !slices.Equal(got, all) {
		t.Fatalf("before the switch: pods %v", got)
	}
	time.Sleep(3200 * time.Millisecond) // the leases lapse on B (3 s)

	poll := pollLookups(t, a.Routes(), rt, all)

	// The switch: new connections reach B; A drops its clients, but for
	// the kill-notice subscriptions (as seen with Sentinel: they stay on
	// the demoted master until their probe is missed).
	switched := time.Now()
	target.Store(procB.addr())
	if err := ra.ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	poll.check(t, "the switch", "the switch was not seen")
	if !a.Healthy() || !b.Healthy() || !c.Healthy() {
		t.Fatal("a pod is degraded after the switch")
	}
	t.Logf("%d lookups held, full list %v after the switch", poll.failed.Load(), time.Since(switched).Round(time.Millisecond))
}
