package session

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/codec"
)

func TestLock_FreeKey_AcquiredAndNamesThisPod(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	a := startStore(t, c, fastOptions("pod-a", prefix))
	got, err := a.reactor.connect(context.Background(), "acme:a1:u7")
	if err != nil {
		t.Fatal(err)
	}
	if got != (Acquired{Takeover: TakeoverNone}) {
		t.Fatalf("acquired %+v", got)
	}
	if v := get(t, c, prefix+"session:acme:a1:u7"); v != "pod-a" {
		t.Fatalf("lock names %q", v)
	}
}

func TestLock_SamePod_TakeoverLocalAndKeyKeptForNewerSocket(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	a := startStore(t, c, fastOptions("pod-a", prefix))
	key := "acme:a1:u7"
	ctx := context.Background()
	if _, err := a.reactor.connect(ctx, key); err != nil {
		t.Fatal(err)
	}
	got, err := a.reactor.connect(ctx, key) // replaces the first socket
	if err != nil || got.Takeover != TakeoverLocal {
		t.Fatalf("second acquire: %+v %v", got, err)
	}
	if v := get(t, c, prefix+"session:"+key); v != "pod-a" {
		t.Fatalf("lock after a local takeover names %q", v)
	}
	a.reactor.disconnect(key)
	eventually(t, 2*time.Second, "lock deleted after the current socket's release", func() bool {
		return get(t, c, prefix+"session:"+key) == ""
	})
	a.Locker().Release(key) // a stray second Release is ignored
}

func TestLock_HeldByLivePod_KillNoticeThenRemoteTakeover(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	for _, key := range []string{"acme:a1:u7", "admin:root"} {
		t.Run(key, func(t *testing.T) {
			a := startStore(t, c, fastOptions("pod-a-"+key, prefix))
			optB := fastOptions("pod-b-"+key, prefix)
			optB.Locks.KillWait = 3 * time.Second
			b := startStore(t, c, optB)
			ctx := context.Background()
			if _, err := a.reactor.connect(ctx, key); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			got, err := b.reactor.connect(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if got.Takeover != TakeoverRemote {
				t.Fatalf("takeover %v, want remote", got.Takeover)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("remote takeover took %v; the holder should answer the notice at once", d)
			}
			if a.reactor.has(key) || a.reactor.evictions(key) != 1 {
				t.Fatalf("older socket not evicted: has %v evictions %d", a.reactor.has(key), a.reactor.evictions(key))
			}
			if v := get(t, c, prefix+"session:"+key); v != b.pod {
				t.Fatalf("lock names %q, want %q", v, b.pod)
			}
			if s := testutil.ToFloat64(b.core.m.KillNotices.WithLabelValues("sent")); s < 1 {
				t.Fatalf("kill notices sent %v", s)
			}
			if r := testutil.ToFloat64(a.core.m.KillNotices.WithLabelValues("received")); r != 1 {
				t.Fatalf("kill notices received %v", r)
			}
		})
	}
}

func TestLock_HeldByDeadPod_TakesOverAtOnce(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	opt := fastOptions("pod-b", prefix)
	opt.Locks.KillWait = 3 * time.Second
	a := startStore(t, c, fastOptions("pod-a", prefix))
	b := startStore(t, c, opt)
	ctx := context.Background()
	key := "acme:a1:u7"
	if _, err := a.reactor.connect(ctx, key); err != nil {
		t.Fatal(err)
	}
	a.crash()
	c.Del(ctx, prefix+"pod:pod-a") // the lease lapsed
	start := time.Now()
	got, err := b.reactor.connect(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Takeover != TakeoverDeadPod {
		t.Fatalf("takeover %v, want dead_pod", got.Takeover)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("dead-pod takeover took %v", d)
	}
	if v := get(t, c, prefix+"session:"+key); v != "pod-b" {
		t.Fatalf("lock names %q", v)
	}
}

func TestLock_HeldByCrashedPod_FreeWithinSessionTTL(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	a := startStore(t, c, fastOptions("pod-a", prefix))
	optB := fastOptions("pod-b", prefix)
	optB.Locks.KillWait = 5 * time.Second // longer than the lease: only its lapse frees the key
	b := startStore(t, c, optB)
	ctx := context.Background()
	key := "acme:a1:u7"
	if _, err := a.reactor.connect(ctx, key); err != nil {
		t.Fatal(err)
	}
	a.crash() // no cleanup: the lease lapses after 3 × refresh
	start := time.Now()
	got, err := b.reactor.connect(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Takeover != TakeoverDeadPod {
		t.Fatalf("takeover %v, want dead_pod", got.Takeover)
	}
	// The lease lapses within session.ttl; the newcomer's retry step adds
	// at most acquireBackoffMax.
	if d := time.Since(start); d > optB.Locks.SessionTTL+acquireBackoffMax+200*time.Millisecond {
		t.Fatalf("crashed owner's lock free after %v, want within session.ttl %v", d, optB.Locks.SessionTTL)
	}
}

func TestLock_HeldBySilentLivePod_ForcedAfterKillWait(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	modes := []bool{true, false}
	if _, cluster := c.(*redis.ClusterClient); cluster {
		modes = []bool{false} // a cluster script cannot read another slot's lease
	}
	for _, inScript := range modes {
		t.Run(fmt.Sprintf("lease_in_script=%v", inScript), func(t *testing.T) {
			opt := fastOptions(fmt.Sprintf("pod-b-%v", inScript), prefix)
			opt.Locks.KillWait = 300 * time.Millisecond
			b := startStore(t, c, opt)
			b.core.leaseInScript = inScript
			ctx := context.Background()
			key := fmt.Sprintf("acme:a1:silent-%v", inScript)
			// A live pod that never answers kill notices.
			c.Set(ctx, prefix+"pod:ghost", "t", time.Minute)
			c.Set(ctx, prefix+"session:"+key, "ghost", time.Minute)
			start := time.Now()
			got, err := b.reactor.connect(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			d := time.Since(start)
			if got.Takeover != TakeoverForced {
				t.Fatalf("takeover %v, want forced", got.Takeover)
			}
			if d < opt.Locks.KillWait || d > opt.Locks.KillWait+time.Second {
				t.Fatalf("forced after %v, want just after kill_wait %v", d, opt.Locks.KillWait)
			}
			if v := get(t, c, prefix+"session:"+key); v != b.pod {
				t.Fatalf("lock names %q", v)
			}
			if n := testutil.ToFloat64(b.core.m.SessionConflicts.WithLabelValues("forced")); n != 1 {
				t.Fatalf("forced conflicts %v", n)
			}
		})
	}
}

func TestLock_ClusterPath_DeadPodTakenOverAtOnce(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	opt := fastOptions("pod-b", prefix)
	opt.Locks.KillWait = 3 * time.Second
	b := startStore(t, c, opt)
	b.core.leaseInScript = false // the Redis Cluster path: lease checked from Go
	ctx := context.Background()
	key := "acme:a1:u7"
	c.Set(ctx, prefix+"session:"+key, "gone-pod", time.Minute)
	start := time.Now()
	got, err := b.reactor.connect(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Takeover != TakeoverDeadPod || time.Since(start) > time.Second {
		t.Fatalf("takeover %v after %v, want dead_pod at once", got.Takeover, time.Since(start))
	}
}

func TestLock_StaleKeyFromPreviousProcess_YieldedOnNotice(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	optB := fastOptions("pod-b", prefix)
	optB.Locks.KillWait = 3 * time.Second
	a := startStore(t, c, fastOptions("pod-a", prefix)) // restarted: holds nothing
	b := startStore(t, c, optB)
	ctx := context.Background()
	key := "acme:a1:u7"
	c.Set(ctx, prefix+"session:"+key, a.pod, time.Minute) // left by pod-a's previous life
	start := time.Now()
	got, err := b.reactor.connect(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Takeover != TakeoverRemote || time.Since(start) > time.Second {
		t.Fatalf("takeover %v after %v, want remote well before kill_wait", got.Takeover, time.Since(start))
	}
}

func TestLock_ConcurrentAcquiresAcrossPods_OneSocketSurvives(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	for _, key := range []string{"acme:a1:u7", "admin:root"} {
		t.Run(key, func(t *testing.T) {
			t.Parallel()
			prefix := testPrefix(t, c)
			var pods []*testStore
			for i := range 3 {
				pods = append(pods, startStore(t, c, fastOptions(fmt.Sprintf("pod-%d", i), prefix)))
			}
			ctx := context.Background()
			var (
				wg       sync.WaitGroup
				mu       sync.Mutex
				ok, lost int
			)
			start := make(chan struct{})
			for i := range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					time.Sleep(time.Duration(i%10) * 3 * time.Millisecond)
					_, err := pods[i%3].reactor.connect(ctx, key)
					mu.Lock()
					defer mu.Unlock()
					var ce *codec.Error
					switch {
					case err == nil:
						ok++
					case errors.As(err, &ce) && ce.Code == codec.CodeSessionConflict:
						lost++
					default:
						t.Errorf("acquire: %v", err)
					}
				}()
			}
			close(start)
			wg.Wait()
			if ok == 0 {
				t.Fatalf("no acquire succeeded (%d conflicts)", lost)
			}
			var holder string
			t.Cleanup(func() {
				if !t.Failed() {
					return
				}
				t.Logf("lock: %q", get(t, c, prefix+"session:"+key))
				for _, p := range pods {
					p.locks.mu.Lock()
					e := p.locks.entries[key]
					if e != nil {
						t.Logf("%s: socket %v held %v pending %d yield %v killSeq %d acqGen %d",
							p.pod, p.reactor.has(key), e.held, e.pending, e.yieldPending, e.killSeq, e.acqGen)
					} else {
						t.Logf("%s: socket %v no entry", p.pod, p.reactor.has(key))
					}
					p.locks.mu.Unlock()
				}
			})
			eventually(t, 5*time.Second, "exactly one socket, named by the lock", func() bool {
				n := 0
				for _, p := range pods {
					if p.reactor.has(key) {
						n++
						holder = p.pod
					}
				}
				return n == 1 && get(t, c, prefix+"session:"+key) == holder
			})
			evicted := 0
			for _, p := range pods {
				if p.pod != holder {
					evicted += p.reactor.evictions(key)
				}
			}
			if evicted == 0 {
				t.Fatal("no socket was evicted on the older pods")
			}
			t.Logf("%d acquired, %d superseded with 409, %d evictions on older pods, survivor %s", ok, lost, evicted, holder)
		})
	}
}

func TestLock_NoticeBeforeSocketIndexed_EvictedAgain(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	a := startStore(t, c, fastOptions("pod-a", prefix))
	ctx := context.Background()
	key := "acme:a1:u7"
	// Acquire without indexing the socket yet, as if the reactor were
	// still completing the handshake when the notice arrives.
	if _, err := a.Locker().Acquire(ctx, key); err != nil {
		t.Fatal(err)
	}
	a.locks.onKillNotice(ctx, key, `{"new_pod_id":"pod-z","old_pod_id":"pod-a"}`)
	a.reactor.mu.Lock()
	a.reactor.sockets[key] = 1 // the reactor indexes the socket now
	a.reactor.mu.Unlock()
	eventually(t, time.Second, "late-indexed socket evicted", func() bool { return a.reactor.evictions(key) == 1 })
	eventually(t, time.Second, "lock yielded", func() bool { return get(t, c, prefix+"session:"+key) == "" })
}

func TestLock_RefreshFindsAnotherOwner_ClosesSocket(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	a := startStore(t, c, fastOptions("pod-a", prefix))
	ctx := context.Background()
	lost, gone := "acme:a1:lost", "acme:a1:gone"
	for _, k := range []string{lost, gone} {
		if _, err := a.reactor.connect(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	// A takeover whose notice this pod missed, and a key that vanished.
	c.Set(ctx, prefix+"session:"+lost, "pod-other", time.Minute)
	c.Del(ctx, prefix+"session:"+gone)
	a.core.requestFull()
	eventually(t, time.Second, "socket of the lost key closed", func() bool { return a.reactor.evictions(lost) == 1 })
	eventually(t, time.Second, "vanished key re-asserted", func() bool { return get(t, c, prefix+"session:"+gone) == "pod-a" })
	if !a.reactor.has(gone) || a.reactor.evictions(gone) != 0 {
		t.Fatal("the socket of a vanished key must stay")
	}
	if v := get(t, c, prefix+"session:"+lost); v != "pod-other" {
		t.Fatalf("refresh overwrote another pod's lock: %q", v)
	}
}

func TestLock_AcquireRelease_OneRoundTripEach(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	hook, hc := countedClient(t, sharedRedisAddr)
	opt := fastOptions("pod-a", prefix)
	opt.RefreshInterval = time.Minute // no refresh inside the measurement
	a := startStore(t, hc, opt)
	ctx := context.Background()
	hook.reset()
	if _, err := a.reactor.connect(ctx, "acme:a1:u1"); err != nil {
		t.Fatal(err)
	}
	if n := hook.roundTrips.Load(); n != 1 {
		t.Fatalf("acquire of a free key: %s, want 1 round trip", hook)
	}
	hook.reset()
	a.reactor.disconnect("acme:a1:u1")
	eventually(t, time.Second, "released", func() bool { return get(t, c, prefix+"session:acme:a1:u1") == "" })
	if n := hook.roundTrips.Load(); n != 1 {
		t.Fatalf("release: %s, want 1 round trip", hook)
	}
}

// BenchmarkHandshake_AcquireJoinReleaseLeave measures the Redis side of a
// socket's life on one pod: lock + chats route at connect, both released
// at close (100 agents, so most Joins find the route already registered).
func BenchmarkHandshake_AcquireJoinReleaseLeave(b *testing.B) {
	c := sharedRedis(b)
	prefix := testPrefix(b, c)
	hook, hc := countedClient(b, sharedRedisAddr)
	opt := fastOptions("pod-bench", prefix)
	opt.RefreshInterval = time.Minute
	s := startStore(b, hc, opt)
	locker, routes := s.Locker(), s.Routes()
	ctx := context.Background()
	var seq atomic.Int64
	hook.reset()
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(32) // server.workers: many handshakes in flight
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			key := "acme:a" + strconv.FormatInt(n%100, 10) + ":u" + strconv.FormatInt(n, 10)
			rt := Route{Kind: RouteChats, Company: "acme", Agent: "a" + strconv.FormatInt(n%100, 10)}
			if _, err := locker.Acquire(ctx, key); err != nil {
				b.Error(err)
				return
			}
			if err := routes.Join(ctx, rt); err != nil {
				b.Error(err)
				return
			}
			locker.Release(key)
			routes.Leave(rt)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(hook.roundTrips.Load())/float64(b.N), "roundtrips/op")
	b.ReportMetric(float64(hook.commands.Load())/float64(b.N), "cmds/op")
}

// BenchmarkHandshake_AcquireJoin is the connect path alone (SPEC §2 step 7
// and the chats route): what bounds handshakes per second. Keys are
// released by Close at the end.
func BenchmarkHandshake_AcquireJoin(b *testing.B) {
	c := sharedRedis(b)
	prefix := testPrefix(b, c)
	hook, hc := countedClient(b, sharedRedisAddr)
	opt := fastOptions("pod-bench", prefix)
	opt.RefreshInterval = time.Minute
	s := startStore(b, hc, opt)
	locker, routes := s.Locker(), s.Routes()
	ctx := context.Background()
	var seq atomic.Int64
	hook.reset()
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			agent := "a" + strconv.FormatInt(n%100, 10)
			if _, err := locker.Acquire(ctx, "acme:"+agent+":u"+strconv.FormatInt(n, 10)); err != nil {
				b.Error(err)
				return
			}
			if err := routes.Join(ctx, Route{Kind: RouteChats, Company: "acme", Agent: agent}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(hook.roundTrips.Load())/float64(b.N), "roundtrips/op")
	b.ReportMetric(float64(hook.commands.Load())/float64(b.N), "cmds/op")
}

// User ids with ':', '.', '@' and glob metacharacters (issue 9): a takeover
// of one such session sends its kill notice to that session alone — the
// channel is literal and the pattern subscription is built from the prefix
// only — and every lock key is the id verbatim.
func TestLock_UserIdsWithColonsAndGlobChars_NoticeReachesOnlyItsSession(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	a := startStore(t, c, fastOptions("pod-a", prefix))
	optB := fastOptions("pod-b", prefix)
	optB.Locks.KillWait = 3 * time.Second
	b := startStore(t, c, optB)
	ctx := context.Background()
	users := []string{"x*y", "xzy", "x?y", "a:b", "a", "b", "ann.lee@example.com", "ann.lee@example", "q[z]", "qz", `s\t`}
	for _, u := range users {
		if _, err := a.reactor.connect(ctx, "acme:a1:"+u); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
	taken := map[string]bool{"x*y": true, "a:b": true, "ann.lee@example.com": true, "q[z]": true}
	for u := range taken {
		got, err := b.reactor.connect(ctx, "acme:a1:"+u)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		if got.Takeover != TakeoverRemote {
			t.Fatalf("%s: takeover %v, want remote", u, got.Takeover)
		}
	}
	for _, u := range users {
		key := "acme:a1:" + u
		want, wantEvictions := a.pod, 0
		if taken[u] {
			want, wantEvictions = b.pod, 1
		}
		if v := get(t, c, prefix+"session:"+key); v != want {
			t.Errorf("%s: lock names %q, want %q", u, v, want)
		}
		if n := a.reactor.evictions(key); n != wantEvictions || a.reactor.has(key) == taken[u] {
			t.Errorf("%s: %d evictions (socket kept: %v), want %d", u, n, a.reactor.has(key), wantEvictions)
		}
	}
}

// afterGetHook runs fn once, right after the first GET of key returns.
type afterGetHook struct {
	key  string
	once sync.Once
	fn   func()
}

func (h *afterGetHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *afterGetHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if args := cmd.Args(); cmd.Name() == "get" && len(args) == 2 && args[1] == h.key {
			h.once.Do(h.fn)
		}
		return err
	}
}

func (h *afterGetHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A committed Acquire that heard a notice re-reads the key before it
// records the lock. A second notice landing between that read and the
// record used to be lost: the pod kept its socket while the key named
// another pod (seen once in CI as two sockets for admin:root).
func TestLock_NoticeBetweenReadBackAndRecord_Superseded(t *testing.T) {
	t.Parallel()
	c := nodeRedis(t)
	prefix := testPrefix(t, c)
	b := startStore(t, c, fastOptions("pod-b", prefix))
	l := b.locks
	ctx := context.Background()
	key := "acme:a1:u7"
	skey := prefix + "session:" + key
	// pod-b's acquire script has just set the key after it had told a
	// holder to let go (committed), and a notice reached it meanwhile.
	if err := c.Set(ctx, skey, "pod-b", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	e := &lockEntry{pending: 1, killSeq: 1}
	l.mu.Lock()
	l.entries[key] = e
	l.mu.Unlock()
	// Right after pod-b reads the key back (still its own), pod-c takes
	// it and its notice reaches pod-b before the record.
	c.AddHook(&afterGetHook{key: skey, fn: func() {
		c.Set(ctx, skey, "pod-c", time.Minute)
		l.onKillNotice(ctx, key, `{"new_pod_id":"pod-c","old_pod_id":"pod-b"}`)
	}})
	_, err := l.finishAcquire(ctx, key, e, 0, TakeoverRemote, true)
	var ce *codec.Error
	if !errors.As(err, &ce) || ce.Code != codec.CodeSessionConflict {
		t.Fatalf("finishAcquire: %v, want a session conflict (pod-c is newer)", err)
	}
	l.mu.Lock()
	held := e.held
	l.mu.Unlock()
	if held {
		t.Fatal("pod-b records the lock while the key names pod-c")
	}
	if v := get(t, c, skey); v != "pod-c" {
		t.Fatalf("key names %q, want pod-c", v)
	}
}
