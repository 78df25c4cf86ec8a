package session

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/fleettest"
)

// On a real 3-master Redis Cluster (keys spread over every slot range),
// racing connects of one user over 3 pods leave exactly one socket, the
// routes list every pod, and partition leases work; the kill notice travels
// from the node holding the lock to a pod subscribed on another node.
func TestFleet_Cluster_RacingConnectsRoutesPartitions(t *testing.T) {
	t.Parallel()
	cl := fleettest.StartCluster(t)
	c := newClusterClient(t, cl.Addrs)
	prefix := testPrefix(t, c)
	var pods []*testStore
	for i := range 3 {
		opt := fastOptions(fmt.Sprintf("pod-%d", i), prefix)
		opt.Locks.KillWait = 2 * time.Second
		s := startStore(t, c, opt)
		if s.core.leaseInScript {
			t.Fatal("a cluster client must take the cluster path")
		}
		pods = append(pods, s)
	}
	ctx := context.Background()
	key := "acme:a1:u7"
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = pods[i%3].reactor.connect(ctx, key)
		}()
	}
	wg.Wait()
	eventually(t, 5*time.Second, "one socket survives and it owns the lock", func() bool {
		live, owner := 0, ""
		for _, p := range pods {
			if p.reactor.has(key) {
				live++
				owner = p.pod
			}
		}
		return live == 1 && get(t, c, prefix+"session:"+key) == owner
	})

	routes := []Route{{Kind: RouteChats, Company: "acme", Agent: "a1"}, {Kind: RouteMessages, Company: "beta", Agent: "b2", Chat: "x"}}
	for _, rt := range routes {
		for _, p := range pods {
			if err := p.Routes().Join(ctx, rt); err != nil {
				t.Fatal(err)
			}
		}
		got, err := pods[0].Routes().Pods(ctx, rt)
		if err != nil || len(got) != 3 {
			t.Fatalf("pods of %+v: %v %v", rt, got, err)
		}
	}
	pods[2].crash()
	c.Del(ctx, prefix+"pod:pod-2") // its lease lapsed
	got, err := pods[0].Routes().Pods(ctx, routes[0])
	if err != nil || len(got) != 2 {
		t.Fatalf("pods after a crash: %v %v", got, err)
	}

	// Every partition script and the pipelined heartbeat on the cluster.
	leases := NewRedisPartitionLeases(c, prefix, "wa")
	for _, b := range []struct {
		pod            string
		check, checked bool // asked for a check; got one
		live           int
	}{
		{"pod-0", true, true, 1},   // the checking script
		{"pod-0", false, false, 1}, // the pipelined beat
		{"pod-1", false, true, 2},  // a first beat finds no membership: checked
	} {
		pulse, err := leases.Heartbeat(ctx, Beat{Pod: b.pod, TTL: time.Minute, Check: b.check})
		if err != nil || pulse.Checked != b.checked || len(pulse.Live) != b.live {
			t.Fatalf("heartbeat %+v: %+v %v", b, pulse, err)
		}
	}
	got8, err := leases.Acquire(ctx, []int{0, 1, 2, 3, 4, 5, 6, 7}, "pod-0")
	if err != nil || !slices.Equal(got8, slices.Repeat([]bool{true}, 8)) {
		t.Fatalf("acquire: %v %v", got8, err)
	}
	if got, err := leases.Acquire(ctx, []int{7}, "pod-1"); err != nil || got[0] {
		t.Fatalf("pod-1 took pod-0's lease: %v %v", got, err)
	}
	pulse, err := leases.Heartbeat(ctx, Beat{Pod: "pod-0", TTL: time.Minute, Owned: []int{0, 1, 2, 3, 4, 5, 6, 7}, Check: true})
	if err != nil || !slices.Equal(pulse.Held, got8) {
		t.Fatalf("check: %+v %v", pulse, err)
	}
	if err := leases.Release(ctx, []int{0, 1}, "pod-0"); err != nil {
		t.Fatal(err)
	}
	if o, _ := leases.Owner(ctx, 0); o != "" {
		t.Fatalf("released lease still names %q", o)
	}
	if err := leases.Leave(ctx, "pod-0", time.Minute); err != nil {
		t.Fatal(err)
	}
	if o, _ := leases.Owner(ctx, 7); o != "pod-0" {
		t.Fatalf("a leaving pod's lease names %q, want pod-0 until released", o)
	}
}

// Through Sentinel (redis.master_name + sentinel addrs) the stores work,
// and a failover — asked for (SENTINEL FAILOVER) or forced (kill -9 of the
// master) — keeps locks: the lock taken before is still held by its owner
// after, the owner's socket stays, and another pod's connect finds it held
// and its owner answers the kill notice.
func TestFleet_Sentinel_FailoverKeepsLocks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		fail func(*fleettest.Sentinel) (string, error)
	}{
		{"SENTINEL FAILOVER", (*fleettest.Sentinel).Failover},
		{"kill -9 master", (*fleettest.Sentinel).KillMaster},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testSentinelFailover(t, tc.fail)
		})
	}
}

func testSentinelFailover(t *testing.T, fail func(*fleettest.Sentinel) (string, error)) {
	s := fleettest.StartSentinel(t)
	c, err := NewRedisClient(RedisClientOptions{Addrs: s.SentinelAddrs, MasterName: s.MasterName})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	prefix := testPrefix(t, c)
	optA := fastOptions("pod-a", prefix)
	optA.RefreshInterval = time.Second // lease 3 s: outlives the failover
	a := startStore(t, c, optA)
	optB := fastOptions("pod-b", prefix)
	optB.RefreshInterval = time.Second
	optB.Locks.KillWait = 3 * time.Second
	b := startStore(t, c, optB)
	ctx := context.Background()
	key := "acme:a1:u7"
	if _, err := a.reactor.connect(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "WAIT", 1, 2000).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := fail(s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the lock readable on the new master", func() bool {
		v, _ := c.Get(ctx, prefix+"session:"+key).Result()
		return v == "pod-a"
	})
	time.Sleep(2 * optA.RefreshInterval) // refreshes run on the new master
	if !a.reactor.has(key) || a.reactor.evictions(key) != 0 {
		t.Fatalf("owner's socket lost over the failover: has %v evictions %d", a.reactor.has(key), a.reactor.evictions(key))
	}
	if v := get(t, c, prefix+"session:"+key); v != "pod-a" {
		t.Fatalf("after failover the lock names %q", v)
	}
	got, err := b.reactor.connect(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	// Remote, not forced: the owner heard the kill notice, so its
	// subscription followed the failover to the new master (the probe in
	// redisLocker.receive).
	if got.Takeover != TakeoverRemote {
		t.Fatalf("takeover %v after failover, want remote (the lock was held and its owner told)", got.Takeover)
	}
	eventually(t, 3*time.Second, "the older socket closed", func() bool { return !a.reactor.has(key) })
	if v := get(t, c, prefix+"session:"+key); v != "pod-b" {
		t.Fatalf("after the takeover the lock names %q", v)
	}
}

// One address of a Redis Cluster in redis.addrs (a managed service's
// configuration endpoint) builds the cluster client, found by probing the
// node: a plain client would fail every key outside that node's slots
// with MOVED. One address of a plain node stays a plain client.
func TestNewRedisClient_OneAddress_ProbesClusterMode(t *testing.T) {
	t.Parallel()
	cl := fleettest.StartCluster(t)
	for _, tc := range []struct {
		name, addr string
		cluster    bool
	}{
		{"cluster node", cl.Addrs[1], true},
		{"plain node", sharedRedisAddr, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClusterClient(t, []string{tc.addr})
			if _, ok := c.(*redis.ClusterClient); ok != tc.cluster {
				t.Fatalf("client %T for %s, want cluster=%v", c, tc.addr, tc.cluster)
			}
			if !tc.cluster {
				return
			}
			ctx := context.Background()
			prefix := testPrefix(t, c)
			// 64 keys cover every master's slots; a plain client on the
			// same node meets MOVED, and the store's log says what to fix.
			plain := redis.NewClient(&redis.Options{Addr: tc.addr})
			t.Cleanup(func() { _ = plain.Close() })
			moved := 0
			for i := range 64 {
				k := fmt.Sprintf("%sk%d", prefix, i)
				if err := c.Set(ctx, k, "v", time.Minute).Err(); err != nil {
					t.Fatalf("SET through one seed: %v", err)
				}
				if err := plain.Get(ctx, k).Err(); err != nil && err != redis.Nil {
					if !strings.Contains(movedHint(err).Error(), "redis.addrs names a Redis Cluster node") {
						t.Fatalf("no hint for %v", err)
					}
					moved++
				}
			}
			if moved == 0 {
				t.Fatal("no key outside the node's slots: the MOVED hint went untested")
			}
		})
	}
}

// A Redis Cluster master dies (no replica, so the cluster is down, as
// cluster-require-full-coverage says): every pod degrades (SPEC §2 step 7,
// session.on_store_down accept_local) and keeps its sockets, new sockets
// are accepted locally, and when the master returns empty every lock and
// route is re-asserted by its owner: nothing a live socket holds is lost,
// and no socket was evicted.
func TestFleet_Cluster_KillMaster_DegradesThenReasserts(t *testing.T) {
	t.Parallel()
	cl := fleettest.StartCluster(t)
	c := newClusterClient(t, cl.Addrs)
	prefix := testPrefix(t, c)
	ctx := context.Background()
	var pods []*testStore
	for i := range 3 {
		pods = append(pods, startStore(t, c, fastOptions(fmt.Sprintf("pod-%d", i), prefix)))
	}
	owner := map[string]*testStore{}
	connect := func(key string, p *testStore, degraded bool) {
		t.Helper()
		a, err := p.reactor.connect(ctx, key)
		if err != nil || a.Degraded != degraded {
			t.Fatalf("connect %s on %s: %+v %v (want degraded=%v)", key, p.pod, a, err, degraded)
		}
		owner[key] = p
	}
	for i := range 30 { // 30 users spread over every master's slots
		connect(fmt.Sprintf("acme:a%d:u%d", i%5, i), pods[i%3], false)
	}
	rt := Route{Kind: RouteChats, Company: "acme", Agent: "a1"}
	for _, p := range pods {
		if err := p.Routes().Join(ctx, rt); err != nil {
			t.Fatal(err)
		}
	}

	cl.KillMaster(0)
	eventually(t, 15*time.Second, "every pod degraded", func() bool {
		for _, p := range pods {
			if p.Healthy() {
				return false
			}
		}
		return true
	})
	for i, p := range pods { // accepted locally while Redis is down
		connect(fmt.Sprintf("beta:b1:during%d", i), p, true)
	}

	if err := cl.RestartMaster(0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "every pod healthy and every lock and route re-asserted", func() bool {
		for _, p := range pods {
			if !p.Healthy() {
				return false
			}
		}
		for key, p := range owner {
			if v, _ := c.Get(ctx, prefix+"session:"+key).Result(); v != p.pod {
				return false
			}
		}
		got, err := pods[0].Routes().Pods(ctx, rt)
		return err == nil && len(got) == 3
	})
	for key, p := range owner {
		if !p.reactor.has(key) || p.reactor.evictions(key) != 0 {
			t.Fatalf("%s lost on %s over the outage (evictions %d)", key, p.pod, p.reactor.evictions(key))
		}
	}
}
