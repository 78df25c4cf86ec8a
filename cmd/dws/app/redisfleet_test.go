package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/fleettest"
	"github.com/dws-gateway/dws/session"
)

// Issue 13 with real pods: three in-process pods on a Redis Cluster (3
// masters, no replicas) or behind Sentinel (1 master, 1 replica, 3
// sentinels), real redis-server processes (internal/fleettest), one
// embedded JetStream per test, real WebSocket clients. session/fleet_test.go
// holds the same scenarios at store level.

// fleetLocks remembers the pod each test user connected to, so the lock
// keys (SPEC §4) can be checked through a client that follows the
// topology (the cluster helper's own client is one plain connection).
type fleetLocks struct {
	c     *cluster
	owner map[string]string // lock key → pod id
}

func newFleetLocks(c *cluster) *fleetLocks { return &fleetLocks{c: c, owner: map[string]string{}} }

// open connects user of (company, a1) to p and notes p as the lock owner.
func (l *fleetLocks) open(p *App, company, user string) *sock {
	l.c.t.Helper()
	l.owner[l.c.prefix+"session:"+company+":a1:"+user] = p.Cfg.Server.PodID
	return l.c.userSock(p, company, "a1", user)
}

// wrong lists the lock keys that do not name the pod holding the socket.
func (l *fleetLocks) wrong(rdb redis.UniversalClient) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var bad []string
	for key, pod := range l.owner {
		if got, err := rdb.Get(ctx, key).Result(); got != pod {
			bad = append(bad, fmt.Sprintf("%s = %q (%v), want %s", key, got, err, pod))
		}
	}
	return bad
}

// fleetCompanies returns one company per pod, in a partition that pod
// consumes, each with a chats socket on every pod and a reader of chat x1
// on the next pod: every pod consumes, and most frames are forwarded.
func fleetCompanies(t *testing.T, c *cluster, pub *publisher, locks *fleetLocks) []*seriesCompany {
	t.Helper()
	var cos []*seriesCompany
	for k, owner := range c.pods {
		co := &seriesCompany{name: c.companyOwnedBy(owner.Cfg.Server.PodID, "a1")}
		co.prefix = co.name + "-"
		for i, p := range c.pods {
			co.socks = append(co.socks, locks.open(p, co.name, fmt.Sprintf("u%d", i)))
		}
		reader := locks.open(c.pods[(k+1)%len(c.pods)], co.name, "reader")
		selectChat(t, pub, reader, co.name, "a1", "x1")
		co.chatty = []*sock{reader}
		cos = append(cos, co)
		t.Logf("%s: consumed by pod %d, reader on pod %d", co.name, k, (k+1)%len(c.pods))
	}
	return cos
}

// socksOf lists every socket of cos.
func socksOf(cos ...*seriesCompany) []*sock {
	var out []*sock
	for _, co := range cos {
		out = append(append(out, co.socks...), co.chatty...)
	}
	return out
}

// dropped lists the sockets whose reader stopped (closed by the pod, or
// reset).
func dropped(socks []*sock) []string {
	var out []string
	for _, s := range socks {
		s.mu.Lock()
		if s.err != nil {
			out = append(out, fmt.Sprintf("%s: %v", s.name, s.err))
		}
		s.mu.Unlock()
	}
	return out
}

// closeCode is the close code s was closed with, 0 while it is open.
func closeCode(s *sock) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ce, ok := s.err.(wsutil.ClosedError); ok {
		return int(ce.Code)
	}
	if s.err != nil {
		return -1
	}
	return 0
}

// readyRedis returns a pod's /ready status code and its redis dependency.
func readyRedis(t *testing.T, p *App) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.OpsAddr() + "/ready")
	if err != nil {
		t.Fatalf("/ready of %s: %v", p.Cfg.Server.PodID, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct{ Dependencies map[string]string }
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("/ready of %s: %v: %s", p.Cfg.Server.PodID, err, b)
	}
	return resp.StatusCode, r.Dependencies["redis"]
}

// allPods reports whether cond holds on every pod.
func allPods(c *cluster, cond func(p *App) bool) bool {
	for _, p := range c.pods {
		if !cond(p) {
			return false
		}
	}
	return true
}

// healthy: Redis reachable and every owned key re-asserted (/ready says
// ok only then, and the degraded gauge is 0).
func healthy(t *testing.T, p *App) bool {
	code, r := readyRedis(t, p)
	return code == 200 && r == "ok" && metric(t, p, "dws_degraded") == 0
}

// raceOneUser dials user 50 times at once, round-robin over the pods, and
// returns the pod index of the one socket left open, and that socket;
// every other accepted socket must be closed 4402 (409 refusals are legal
// under contention).
func raceOneUser(t *testing.T, c *cluster, company, user string) (int, net.Conn) {
	t.Helper()
	var (
		mu       sync.Mutex
		accepted []int
		conns    = map[int]net.Conn{}
		refused  int
		wg       sync.WaitGroup
	)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := tryWSDial(t, c.userURL(c.pods[i%3], company, "a1", user))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused++
				return
			}
			accepted = append(accepted, i)
			conns[i] = conn
		}()
	}
	wg.Wait()
	survivor := -1
	for _, i := range accepted {
		if _, err := wsutil.ReadServerText(conns[i]); err != nil {
			t.Fatalf("socket %d of %s: no ready: %v", i, user, err)
		}
		_ = conns[i].SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		switch code := readUntilClose(conns[i]); code {
		case -1:
			if survivor >= 0 {
				t.Fatalf("sockets %d and %d of %s both alive (%d accepted, %d refused)", survivor, i, user, len(accepted), refused)
			}
			survivor = i
		case 4402:
		default:
			t.Fatalf("socket %d of %s closed with %d, want 4402", i, user, code)
		}
	}
	if survivor < 0 {
		t.Fatalf("no socket of %s survived (%d accepted, %d refused)", user, len(accepted), refused)
	}
	t.Logf("racing connects of %s: %d accepted, %d refused (409), 1 survivor on pod %d", user, len(accepted), refused, survivor%3)
	return survivor % 3, conns[survivor]
}

// raceBuild reports whether the test binary runs the race detector.
func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// stillOpen reports whether conn, which receives nothing, is open: no
// close frame and no error within a short read.
func stillOpen(conn net.Conn) bool {
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	return readUntilClose(conn) == -1
}

// leaseNode is the Redis Cluster master serving the partition leases: they
// share one hash tag (session/partition_lease.go), so the cluster helper's
// plain client, which waitConsumers and companyOwnedBy read them through,
// must sit on that node.
func leaseNode(t *testing.T, cc *redis.ClusterClient) string {
	t.Helper()
	l := partitionLayout(config.Defaults().NATS)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := cc.MasterForKey(ctx, "{partitions:"+l.Stream()+"}:members")
	if err != nil {
		t.Fatalf("master of the partition leases: %v", err)
	}
	return m.Options().Addr
}

// chatsPods returns the pods the chats route of (company, a1) names.
func chatsPods(t *testing.T, p *App, company string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pods, err := p.routes.Pods(ctx, session.Route{Kind: session.RouteChats, Company: company, Agent: "a1"})
	if err != nil {
		return []string{err.Error()}
	}
	return pods
}

// everyRouteNamesAllPods: every company's chats route lists every pod.
func everyRouteNamesAllPods(t *testing.T, c *cluster, cos []*seriesCompany) bool {
	for _, co := range cos {
		if len(chatsPods(t, c.pods[0], co.name)) != len(c.pods) {
			return false
		}
	}
	return true
}

// Redis Cluster, 3 masters and no replica, 3 pods (SPEC §4, §5): 50 racing
// connects of one user leave exactly one socket, whose pod the lock names;
// locks, routes and partition leases spread over the masters work, so
// every socket on every pod gets every event of its subscriptions (most
// of them forwarded from the partition's pod) once, in order. Then a
// master is killed: with no replica the cluster is down, every pod
// degrades (accept_local: /ready stays 200 and names redis "degraded",
// dws_degraded is 1), keeps every socket and accepts new ones locally;
// events published meanwhile wait on the stream. The master returns empty:
// every pod is healthy again, every lock and route is re-asserted by its
// owner, a user accepted twice during the outage is left with one socket,
// and every socket gets every event published before, during and after
// the outage exactly once, in order.
func TestRedisCluster_ThreePods_OneSurvivorRoutesPartitionsAndMasterOutage(t *testing.T) {
	cl := fleettest.StartCluster(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs})
	t.Cleanup(func() { _ = cc.Close() })
	c, pub := newEventCluster(t, leaseNode(t, cc), 3, map[string]string{"redis.addrs": strings.Join(cl.Addrs, ",")})
	locks := newFleetLocks(c)
	ctx := context.Background()

	winner, racer := raceOneUser(t, c, "acme", "racer")
	locks.owner[c.prefix+"session:acme:a1:racer"] = c.pods[winner].Cfg.Server.PodID
	cos := fleetCompanies(t, c, pub, locks)
	if bad := locks.wrong(cc); len(bad) > 0 {
		t.Fatalf("lock keys not naming their socket's pod: %v", bad)
	}
	perMaster := map[string]int{}
	for key := range locks.owner {
		m, err := cc.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		perMaster[m.Options().Addr]++
	}
	if len(perMaster) < 2 {
		t.Fatalf("every lock key on one master (%v): the test would not cross slots", perMaster)
	}
	if !everyRouteNamesAllPods(t, c, cos) {
		t.Fatalf("chats routes do not name all 3 pods: %v", chatsPods(t, c.pods[0], cos[0].name))
	}
	publishSeries(t, pub, cos, 60, 300, nil)
	expectSeries(t, pub, cos)
	if fwd := sumMetric(t, c, "dws_deliveries_total", `path="forwarded"`); fwd == 0 {
		t.Fatal("no frame forwarded between pods")
	}

	// The victim is the master holding most of the test's locks: they come
	// back only if their owners re-assert them.
	victim := 0
	for i, a := range cl.Addrs {
		if perMaster[a] > perMaster[cl.Addrs[victim]] {
			victim = i
		}
	}
	cl.KillMaster(victim)
	killed := time.Now()
	eventuallyT(t, 15*time.Second, "every pod degraded, still ready", func() bool {
		return allPods(c, func(p *App) bool {
			code, r := readyRedis(t, p)
			return code == 200 && strings.HasPrefix(r, "degraded") && metric(t, p, "dws_degraded") == 1
		})
	})
	t.Logf("master %s (%d of the %d lock keys) killed; every pod degraded %v later", cl.Addrs[victim],
		perMaster[cl.Addrs[victim]], len(locks.owner), time.Since(killed).Round(time.Millisecond))
	for _, co := range cos {
		co.prefix = co.name + "-outage-"
	}
	publishSeries(t, pub, cos, 60, 300, nil)
	late := &seriesCompany{name: "late", prefix: "late-"}
	late.socks = []*sock{locks.open(c.pods[1], late.name, "u0")}
	dups := []*sock{c.userSock(c.pods[0], "dup", "a1", "u0"), c.userSock(c.pods[2], "dup", "a1", "u0")}

	if err := cl.RestartMaster(victim); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	eventuallyT(t, 20*time.Second, "every pod healthy", func() bool { return allPods(c, func(p *App) bool { return healthy(t, p) }) })
	eventuallyT(t, 5*time.Second, "every lock and route re-asserted", func() bool {
		return len(locks.wrong(cc)) == 0 && everyRouteNamesAllPods(t, c, cos) &&
			len(chatsPods(t, c.pods[0], late.name)) == 1
	})
	t.Logf("master back; every pod healthy, locks and routes re-asserted %v later", time.Since(back).Round(time.Millisecond))
	eventuallyT(t, 5*time.Second, "one of the two sockets accepted twice during the outage closed 4402", func() bool {
		return closeCode(dups[0])+closeCode(dups[1]) == 4402
	})
	quiet()
	keep := 0
	if closeCode(dups[0]) != 0 {
		keep = 1
	}
	if closeCode(dups[keep]) != 0 {
		t.Fatalf("both sockets of the user accepted twice are gone: %d %d", closeCode(dups[0]), closeCode(dups[1]))
	}
	dupPod := []*App{c.pods[0], c.pods[2]}[keep].Cfg.Server.PodID
	if got := cc.Get(ctx, c.prefix+"session:dup:a1:u0").Val(); got != dupPod {
		t.Fatalf("lock of the user accepted twice names %q, its socket is on %s", got, dupPod)
	}

	all := append(cos, late)
	for _, co := range all {
		co.prefix = co.name + "-after-"
	}
	publishSeries(t, pub, all, 60, 300, nil)
	expectSeries(t, pub, all)
	if d := dropped(socksOf(all...)); len(d) > 0 {
		t.Fatalf("sockets dropped over the outage: %v", d)
	}
	if !stillOpen(racer) {
		t.Fatal("the racing connects' survivor was dropped over the outage")
	}
}

// Behind Sentinel (1 master, 1 replica, 3 sentinels), 3 pods, the master
// is failed over — asked for (SENTINEL FAILOVER) and forced (kill -9 of
// the master) — while events flow at a steady rate and users keep
// connecting. No socket is dropped; every socket gets every event
// published across the failover exactly once, in order (seq strictly
// increasing); every connect is accepted (locally while Redis is away,
// SPEC §2 step 7 with accept_local) and routed afterwards; every lock
// names the pod holding its socket; and a second connect of a connected
// user on another pod replaces exactly that one socket (SPEC §4).
//
// What this catches: writes the old master acknowledges after the
// replica's promotion are discarded, so a pod's lease can lapse on the new
// master while the pod lives; other pods' route lookups must not then skip
// its sockets (an event acked for them is lost), and the locks and route
// members written in that window must come back.
func TestRedisSentinel_FailoverWhileConnectingAndPublishing_NothingDroppedOrLost(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(*fleettest.Sentinel) (string, error)
	}{
		{"SENTINEL FAILOVER", (*fleettest.Sentinel).Failover},
		{"kill -9 master", (*fleettest.Sentinel).KillMaster},
	} {
		t.Run(tc.name, func(t *testing.T) { testSentinelFailover(t, tc.fail) })
	}
}

func testSentinelFailover(t *testing.T, fail func(*fleettest.Sentinel) (string, error)) {
	rs := fleettest.StartSentinel(t)
	sc, err := session.NewRedisClient(session.RedisClientOptions{Addrs: rs.SentinelAddrs, MasterName: rs.MasterName})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Close() })
	// The cluster helper's plain client (partition leases, read at set-up
	// only) sits on the first master; the pods go through the sentinels.
	flags := map[string]string{
		"redis.addrs": strings.Join(rs.SentinelAddrs, ","), "redis.master_name": rs.MasterName,
	}
	if raceBuild() {
		// Under -race on a small machine the pods' refresh ticks run late
		// by more than the 600 ms lease of the 200 ms default here, before
		// any failover: leases lapse at steady state and the test measures
		// the overload. A 1 s refresh (3 s lease) keeps what it checks; the
		// 200 ms timing is exercised without -race.
		flags["session.refresh_interval"] = "1s"
		flags["session.ttl"], flags["route.ttl"] = "3s", "3s"
	}
	c, pub := newEventCluster(t, rs.Master(), 3, flags)
	locks := newFleetLocks(c)
	cos := fleetCompanies(t, c, pub, locks)
	layout := partitionLayout(c.pods[0].Cfg.NATS)

	series := publishSteadily(t, pub, cos, 300)
	joiners := &seriesCompany{name: "joiners", prefix: "joiners-"}
	join := func() {
		i := len(joiners.socks)
		joiners.socks = append(joiners.socks, locks.open(c.pods[i%3], joiners.name, fmt.Sprintf("j%d", i)))
	}
	for range 3 {
		join()
	}
	time.Sleep(time.Second)

	// Users keep connecting, one every 100 ms, from the failover's start
	// until a second after the sentinels agree on the new master.
	old := rs.Master()
	var newMaster string
	failed := make(chan error, 1)
	go func() {
		var err error
		newMaster, err = fail(rs)
		failed <- err
	}()
	began := time.Now()
	during := 0
	for done := false; !done; {
		select {
		case err := <-failed:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		default:
			join()
			during++
			time.Sleep(100 * time.Millisecond)
		}
	}
	took := time.Since(began)
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		join()
	}
	eventuallyT(t, 15*time.Second, "every pod healthy after the failover", func() bool {
		return allPods(c, func(p *App) bool { return healthy(t, p) })
	})
	t.Logf("master %s -> %s in %v; %d users connected meanwhile, %d in all; %v Redis errors counted by the pods",
		old, newMaster, took.Round(time.Millisecond), during, len(joiners.socks), sumMetric(t, c, "dws_redis_errors_total"))
	if during == 0 {
		t.Fatal("no user connected during the failover")
	}
	// Once the sentinels agree and every pod says Redis is ok, the new
	// master holds every lock, those taken during the failover included.
	if bad := locks.wrong(sc); len(bad) > 0 {
		t.Errorf("%d of %d locks wrong on the new master once every pod is healthy: %v", len(bad), len(locks.owner), bad)
	}

	time.Sleep(time.Second) // events keep flowing on the new master
	series.stop(t)
	stored, _ := series.readBack(t, pub, layout.Source)
	expectSeries(t, pub, cos)
	t.Logf("%d events published across the failover reached each of %d sockets once, in order", stored, len(socksOf(cos...)))
	// Those who connected around the failover are routed: they get every
	// event published from now on.
	publishSeries(t, pub, []*seriesCompany{joiners}, 30, 300, nil)
	expectSeries(t, pub, []*seriesCompany{joiners})
	everyone := append(socksOf(cos...), joiners.socks...)
	if d := dropped(everyone); len(d) > 0 {
		t.Fatalf("sockets dropped over the failover: %v", d)
	}

	// A second connect, on another pod, of a user connected before the
	// failover and of one connected during it replaces that socket and
	// only it.
	replaced := map[*sock]bool{}
	var newer []*sock
	for _, r := range []struct {
		s       *sock
		company string
		user    string
		to      *App
	}{
		{cos[0].socks[0], cos[0].name, "u0", c.pods[1]},   // u0 on pod 0
		{joiners.socks[3], joiners.name, "j3", c.pods[1]}, // j3, the first to connect during the failover, on pod 0
	} {
		replaced[r.s] = true
		newer = append(newer, locks.open(r.to, r.company, r.user))
		eventuallyT(t, 5*time.Second, r.s.name+"'s older socket closed 4402", func() bool { return closeCode(r.s) == 4402 })
	}
	quiet()
	var others []*sock
	for _, s := range everyone {
		if !replaced[s] {
			others = append(others, s)
		}
	}
	if d := dropped(append(others, newer...)); len(d) > 0 {
		t.Fatalf("second connects dropped other sockets too: %v", d)
	}
	if bad := locks.wrong(sc); len(bad) > 0 {
		t.Fatalf("after the second connects: %v", bad)
	}
}
