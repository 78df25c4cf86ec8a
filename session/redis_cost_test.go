package session

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// TestRedisCost_Fleet is the measurement of perf/redis-cost.md (issue 13
// item 4): N simulated pods — real RedisStores at the default timings, each
// with its own client and fake sockets (lock + chats route + message
// route) — against private redis-servers, one per design, measured side by
// side in the same run: "before" is session.gc_ttl 5m (the former
// max(10 × session.ttl, 5 min) at the defaults), "after" the 24 h default.
// Commands/s come from INFO commandstats deltas (commands run inside
// scripts included), client commands from a go-redis hook per pod.
//
// Off unless DWS_REDIS_COST is set (minutes of run time and GBs of memory
// at 100 pods):
//
//	DWS_REDIS_COST=1 DWS_REDIS_COST_PODS=1,3,10,100 go test -run TestRedisCost_Fleet -v -timeout 90m ./session/
//
// Other knobs: DWS_REDIS_COST_SOCKETS (sockets per pod, 20000),
// DWS_REDIS_COST_WINDOW (each measurement window, 60s),
// DWS_REDIS_COST_CHURN (connects/s per pod in the churn window, 11),
// DWS_REDIS_COST_DESIGNS ("before,after"; one of them halves the load),
// DWS_REDIS_COST_PHASES ("idle,churn"),
// DWS_REDIS_COST_PARTITIONS (0: off; n: every pod also runs a
// PartitionOwner over n partitions at nats.failover 5s, the other per-pod
// bookkeeping on Redis, wired as cmd/dws/app wires it: its own client,
// RedisPartitionLeases of the partition stream's group). The owners use a
// redis-server of their own, so INFO commandstats splits the two parts;
// the "total" row is their sum, what one shared Redis would count.
func TestRedisCost_Fleet(t *testing.T) {
	if os.Getenv("DWS_REDIS_COST") == "" {
		t.Skip("measurement: set DWS_REDIS_COST=1 (see perf/redis-cost.md)")
	}
	pods := envInts(t, "DWS_REDIS_COST_PODS", "1,3")
	sockets := envInts(t, "DWS_REDIS_COST_SOCKETS", "20000")[0]
	churn := envInts(t, "DWS_REDIS_COST_CHURN", "11")[0]
	partitions := envInts(t, "DWS_REDIS_COST_PARTITIONS", "0")[0]
	phases := strings.Split(orEnv(os.Getenv("DWS_REDIS_COST_PHASES"), "idle,churn"), ",")
	window, err := time.ParseDuration(orEnv(os.Getenv("DWS_REDIS_COST_WINDOW"), "60s"))
	if err != nil {
		t.Fatal(err)
	}
	type design struct {
		name string
		gc   time.Duration
	}
	var designs []design
	for _, d := range strings.Split(orEnv(os.Getenv("DWS_REDIS_COST_DESIGNS"), "before,after"), ",") {
		switch d {
		case "before":
			designs = append(designs, design{"before (gc_ttl 5m)", 5 * time.Minute})
		case "after":
			designs = append(designs, design{"after (gc_ttl 24h)", defaultGCTTL})
		default:
			t.Fatalf("DWS_REDIS_COST_DESIGNS: %q is not before or after", d)
		}
	}
	fmt.Printf("| pods | design | phase | part | commands/s total | per pod | EVALSHA/s per pod | client commands/s per pod | failed refresh batches / ownership changes | top commands (calls/s total) |\n")
	fmt.Printf("| ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, n := range pods {
		t.Run(strconv.Itoa(n)+"pods", func(t *testing.T) {
			fleets := make([]*costFleet, len(designs))
			var wg sync.WaitGroup
			start := time.Now()
			for i, d := range designs {
				fleets[i] = newCostFleet(t, n, d.gc, partitions)
				wg.Go(func() { fleets[i].connect(t, sockets) })
			}
			wg.Wait()
			t.Logf("%d pods × %d sockets connected in %v", n, sockets, time.Since(start).Round(time.Second))
			for i, f := range fleets {
				t.Logf("%s: Redis memory %s, %d keys", designs[i].name, f.memory(t), f.admin.DBSize(context.Background()).Val())
				f.startOwners(t)
			}
			for _, phase := range phases {
				if phase == "churn" {
					for _, f := range fleets {
						f.startChurn(churn)
					}
				}
				before := make([]costSnap, len(fleets))
				for i, f := range fleets {
					before[i] = f.snapshot(t)
				}
				time.Sleep(window)
				for i, f := range fleets {
					f.report(t, designs[i].name, phase, n, before[i], window)
				}
			}
			for _, f := range fleets {
				f.stop()
			}
		})
	}
}

// costFleet is n pods on one private redis-server, and their partition
// owners (if any) on another.
type costFleet struct {
	srv       *redisProc
	admin     *redis.Client
	pods      []*costPod
	cancel    context.CancelFunc
	churnWG   sync.WaitGroup
	churnErrs atomic.Int64 // failed churn handshakes (reported)

	ctx        context.Context // the pods' background work
	partitions int
	partAdmin  *redis.Client     // nil without partition owners
	owners     []*PartitionOwner // one per pod
	partHooks  []*countHook      // their clients' counters
	changes    sync.Map          // reason -> *atomic.Int64: ownership changes
}

// costPod is one simulated pod: its stores, its client's counter and its
// live sockets.
type costPod struct {
	id      int
	stores  *RedisStores
	hook    *countHook
	mu      sync.Mutex
	live    []costSocket
	nextUID int
}

// costSocket is a fake socket of the doc's worst case: its agent's chats
// route (2 000 agents per pod) and a chat of its own.
type costSocket struct{ user, agent int }

const costAgents = 2000

func newCostFleet(t *testing.T, n int, gc time.Duration, partitions int) *costFleet {
	f := &costFleet{srv: startRedisProc(t)}
	f.admin = redis.NewClient(&redis.Options{Addr: f.srv.addr()})
	t.Cleanup(func() { _ = f.admin.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	t.Cleanup(cancel)
	for i := range n {
		hook, c := countedClient(t, f.srv.addr())
		s := NewRedisStores(c, RedisOptions{PodID: "pod-" + strconv.Itoa(i), GCTTL: gc})
		s.SetEvictor(nopEvictor{})
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		f.pods = append(f.pods, &costPod{id: i, stores: s, hook: hook})
	}
	f.ctx, f.partitions = ctx, partitions
	return f
}

// startOwners runs a PartitionOwner per pod as bridge.Start wires it
// (nats.failover 5s, one lease client per pod apart from the stores',
// group = the partition stream's name), on a redis-server of their own,
// once the sockets are connected (the handshake burst on two cores would
// only make them fence and start over), and waits until they settle.
func (f *costFleet) startOwners(t *testing.T) {
	if f.partitions <= 0 {
		return
	}
	partitions := f.partitions
	srv := startRedisProc(t)
	f.partAdmin = redis.NewClient(&redis.Options{Addr: srv.addr()})
	t.Cleanup(func() { _ = f.partAdmin.Close() })
	for _, p := range f.pods {
		hook, c := countedClient(t, srv.addr())
		o := NewPartitionOwner(NewRedisPartitionLeases(c, "", "wa_stream_dws_p"+strconv.Itoa(partitions)), PartitionOwnerOptions{
			PodID: p.stores.PodID(), Partitions: partitions, Failover: 5 * time.Second,
			OnChange: func(_ int, _ bool, reason string) {
				n, _ := f.changes.LoadOrStore(reason, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			},
		})
		o.StartLoop(f.ctx)
		f.owners = append(f.owners, o)
		f.partHooks = append(f.partHooks, hook)
	}
	f.settle(t)
}

// settle waits until the partition owners (if any) consume every
// partition, balanced, so a window measures the steady state, not the
// start's acquisitions.
func (f *costFleet) settle(t *testing.T) {
	start := time.Now()
	for {
		total, lo, hi := f.ownership()
		if total == f.partitions && hi-lo <= 1 {
			t.Logf("partitions settled over %d pods in %v", len(f.owners), time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("partitions not settled after 2 min: %d of %d consumed, %d..%d per pod", total, f.partitions, lo, hi)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ownership sums the partitions the owners consume and the spread of
// their shares: a settled fleet consumes every partition, each pod its
// share ± 1.
func (f *costFleet) ownership() (total, lo, hi int) {
	lo = f.partitions
	for _, o := range f.owners {
		n := len(o.Owned())
		total += n
		lo, hi = min(lo, n), max(hi, n)
	}
	return total, lo, hi
}

// connect opens sockets on every pod, 8 handshakes in flight per pod.
func (f *costFleet) connect(t *testing.T, sockets int) {
	var wg sync.WaitGroup
	for _, p := range f.pods {
		for w := range 8 {
			wg.Go(func() {
				for u := w; u < sockets; u += 8 {
					if err := p.open(costSocket{user: u, agent: u % costAgents}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		p.nextUID = sockets
	}
	wg.Wait()
}

func (p *costPod) routes(s costSocket) (chats, msgs Route) {
	c, a := "c"+strconv.Itoa(p.id), "a"+strconv.Itoa(s.agent)
	return Route{Kind: RouteChats, Company: c, Agent: a},
		Route{Kind: RouteMessages, Company: c, Agent: a, Chat: "x" + strconv.Itoa(s.user)}
}

func (p *costPod) lockKey(s costSocket) string {
	return "c" + strconv.Itoa(p.id) + ":a" + strconv.Itoa(s.agent) + ":u" + strconv.Itoa(s.user)
}

// open is a handshake: the lock, then both routes (SPEC §4–5).
func (p *costPod) open(s costSocket) error {
	ctx := context.Background()
	if _, err := p.stores.Locker().Acquire(ctx, p.lockKey(s)); err != nil {
		return err
	}
	chats, msgs := p.routes(s)
	for _, rt := range []Route{chats, msgs} {
		if err := p.stores.Routes().Join(ctx, rt); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.live = append(p.live, s)
	p.mu.Unlock()
	return nil
}

// closeRandom closes one live socket as the reactor does: release, leave.
func (p *costPod) closeRandom() {
	p.mu.Lock()
	if len(p.live) == 0 {
		p.mu.Unlock()
		return
	}
	i := rand.IntN(len(p.live))
	s := p.live[i]
	p.live[i] = p.live[len(p.live)-1]
	p.live = p.live[:len(p.live)-1]
	p.mu.Unlock()
	p.stores.Locker().Release(p.lockKey(s))
	chats, msgs := p.routes(s)
	p.stores.Routes().Leave(msgs)
	p.stores.Routes().Leave(chats)
}

// startChurn replaces rate sockets per second on every pod (a close, then
// a connect of a new user on a random agent), at independent phases.
func (f *costFleet) startChurn(rate int) {
	ctx, cancel := context.WithCancel(context.Background())
	prev := f.cancel
	f.cancel = func() { cancel(); prev() }
	for _, p := range f.pods {
		f.churnWG.Go(func() {
			if !sleepCtx(ctx, rand.N(time.Second)) {
				return
			}
			tk := time.NewTicker(time.Second / time.Duration(rate))
			defer tk.Stop()
			for ctx.Err() == nil {
				<-tk.C
				p.closeRandom()
				u := p.nextUID
				p.nextUID++
				if err := p.open(costSocket{user: u, agent: rand.IntN(costAgents)}); err != nil {
					f.churnErrs.Add(1)
				}
			}
		})
	}
}

// stop ends churn and the stores' background work without Close (the
// servers die with the test; a 100-pod sweep would only add minutes).
func (f *costFleet) stop() {
	f.cancel()
	f.churnWG.Wait()
}

// costSnap is one reading of both servers' counters.
type costSnap struct{ sessions, partitions map[string]int64 }

// snapshot reads INFO commandstats of both servers and adds the pods'
// client-side counts as "client:commands" (and, for the sessions, the
// failed refresh batches; for the partitions, the ownership changes).
func (f *costFleet) snapshot(t *testing.T) costSnap {
	s := costSnap{sessions: commandStats(t, f.admin)}
	if f.partAdmin != nil {
		s.partitions = commandStats(t, f.partAdmin)
		for _, h := range f.partHooks {
			s.partitions["client:commands"] += h.commands.Load() + h.probes.Load()
		}
		f.changes.Range(func(_, n any) bool {
			s.partitions["client:changes"] += n.(*atomic.Int64).Load()
			return true
		})
	}
	m := s.sessions
	for _, p := range f.pods {
		m["client:commands"] += p.hook.commands.Load() + p.hook.probes.Load()
		// A refresh that timed out sends the pod into degraded mode and a
		// full re-assert: a window with any is an overloaded machine.
		m["client:refresh_errors"] += int64(testutil.ToFloat64(p.stores.core.m.RefreshBatches.WithLabelValues("error")))
	}
	return s
}

// commandStats reads INFO commandstats: calls per command.
func commandStats(t *testing.T, c *redis.Client) map[string]int64 {
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, rest, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		m[name], _ = strconv.ParseInt(calls, 10, 64)
	}
	return m
}

// memory is the server's used_memory_human.
func (f *costFleet) memory(t *testing.T) string {
	info, err := f.admin.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(info, "used_memory_human:")
	v, _, _ := strings.Cut(rest, "\r\n")
	return v
}

// report prints the table rows of the deltas since before: the sessions'
// server, and with partition owners theirs and the sum. INFO itself (the
// measurement's own command) is left out.
func (f *costFleet) report(t *testing.T, design, phase string, n int, before costSnap, window time.Duration) {
	after := f.snapshot(t)
	if e := f.churnErrs.Load(); e > 0 {
		t.Errorf("%s: %d churn handshakes failed", design, e)
	}
	sess := costDelta(before.sessions, after.sessions)
	row := func(part string, d map[string]int64, bad int64) {
		sec := window.Seconds()
		var total int64
		type kv struct {
			name string
			d    int64
		}
		var per []kv
		for name, v := range d {
			if name == "info" || strings.HasPrefix(name, "client:") || v == 0 {
				continue
			}
			total += v
			per = append(per, kv{name, v})
		}
		slices.SortFunc(per, func(a, b kv) int { return int(b.d - a.d) })
		var top []string
		for _, e := range per[:min(len(per), 6)] {
			top = append(top, fmt.Sprintf("%s %.1f", e.name, float64(e.d)/sec))
		}
		fmt.Printf("| %d | %s | %s | %s | %.1f | %.2f | %.2f | %.2f | %d | %s |\n", n, design, phase, part,
			float64(total)/sec, float64(total)/sec/float64(n), float64(d["evalsha"])/sec/float64(n),
			float64(d["client:commands"])/sec/float64(n), bad, strings.Join(top, ", "))
	}
	if after.partitions == nil {
		row("sessions", sess, sess["client:refresh_errors"])
		return
	}
	part := costDelta(before.partitions, after.partitions)
	sum := map[string]int64{}
	for _, d := range []map[string]int64{sess, part} {
		for k, v := range d {
			sum[k] += v
		}
	}
	row("sessions", sess, sess["client:refresh_errors"])
	row("partitions", part, part["client:changes"])
	row("total", sum, sess["client:refresh_errors"]+part["client:changes"])
	total, lo, hi := f.ownership()
	t.Logf("%s %s: partitions consumed %d of %d, %d..%d per pod; ownership changes in the window %d",
		design, phase, total, f.partitions, lo, hi, part["client:changes"])
	if total != f.partitions || hi-lo > 1 {
		t.Errorf("%s %s: partitions not settled: %d of %d consumed, %d..%d per pod", design, phase, total, f.partitions, lo, hi)
	}
}

// costDelta is after - before, per counter.
func costDelta(before, after map[string]int64) map[string]int64 {
	d := make(map[string]int64, len(after))
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}

// nopEvictor is the measurement pods' Evictor: their sockets are fake.
type nopEvictor struct{}

func (nopEvictor) Evict(string) {}

func envInts(t *testing.T, name, def string) []int {
	var out []int
	for _, f := range strings.Split(orEnv(os.Getenv(name), def), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, n)
	}
	return out
}

func orEnv(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
