package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/metrics"
)

// sharedRedisAddr is the machine's Redis; tests isolate by key prefix.
const sharedRedisAddr = "127.0.0.1:6379"

// redisServerBin runs the private servers of tests that kill Redis.
const redisServerBin = "/usr/bin/redis-server"

// newClient connects to addr through NewRedisClient; the test fails with
// what to start when nothing answers.
func newClient(t testing.TB, addr string) redis.UniversalClient {
	t.Helper()
	c, err := NewRedisClient(RedisClientOptions{Addrs: []string{addr}, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newClusterClient connects to a Redis Cluster through NewRedisClient.
func newClusterClient(t testing.TB, addrs []string) redis.UniversalClient {
	t.Helper()
	c, err := NewRedisClient(RedisClientOptions{Addrs: addrs, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sharedRedis returns a client of the machine's Redis, failing the test
// when it is down.
func sharedRedis(t testing.TB) redis.UniversalClient {
	t.Helper()
	if sharedClusterAddrs != nil {
		return newClusterClient(t, sharedClusterAddrs)
	}
	return nodeRedis(t)
}

// nodeRedis is sharedRedis always on the machine's single node: for tests
// of the single-node paths (scripts that read pod leases or the registry
// markers themselves), which a Redis Cluster never runs.
func nodeRedis(t testing.TB) redis.UniversalClient {
	t.Helper()
	c := newClient(t, sharedRedisAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s unreachable (%v): start redis-server on 127.0.0.1:6379", sharedRedisAddr, err)
	}
	return c
}

// testPrefix returns a fresh key prefix and deletes every key under it when
// the test ends.
func testPrefix(t testing.TB, c redis.UniversalClient) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "dwstest:" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, k := range scanKeys(t, c, prefix) {
			c.Del(ctx, k)
		}
	})
	return prefix
}

// scanKeys lists every key under prefix.
func scanKeys(t testing.TB, c redis.UniversalClient, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var (
		mu   sync.Mutex
		keys []string
	)
	scan := func(ctx context.Context, n redis.UniversalClient) error {
		it := n.Scan(ctx, 0, keyspace{prefix: prefix}.all(), 1000).Iterator()
		for it.Next(ctx) {
			mu.Lock()
			keys = append(keys, it.Val())
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		// SCAN walks one node: a cluster's keys are spread over its masters.
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return scan(ctx, n) })
	} else {
		err = scan(ctx, c)
	}
	if err != nil {
		t.Logf("scan %s: %v", prefix, err)
	}
	return keys
}

// fastOptions are short timings so lease expiry, refresh and kill waits
// happen within a test's budget.
func fastOptions(pod, prefix string) RedisOptions {
	return RedisOptions{
		PodID:           pod,
		KeyPrefix:       prefix,
		RefreshInterval: 200 * time.Millisecond,
		RefreshBatch:    50,
		OpTimeout:       500 * time.Millisecond,
		Metrics:         metrics.New(),
		Locks:           RedisLockOptions{SessionTTL: 600 * time.Millisecond, KillWait: 500 * time.Millisecond},
		Routes:          RedisRouteOptions{TTL: 600 * time.Millisecond},
	}
}

// testStore is a started store with a fake reactor as its Evictor.
type testStore struct {
	*RedisStores
	pod     string
	reactor *fakeReactor
	crash   func() // stops the background work without cleanup
}

// startStore builds and starts a store; Close runs at cleanup.
func startStore(t testing.TB, c redis.UniversalClient, opt RedisOptions) *testStore {
	t.Helper()
	return startStoreWith(t, c, opt, nil)
}

// startStoreWith is startStore with a change to the store (test seams)
// made before it starts.
func startStoreWith(t testing.TB, c redis.UniversalClient, opt RedisOptions, before func(*RedisStores)) *testStore {
	t.Helper()
	s := NewRedisStores(c, opt)
	if before != nil {
		before(s)
	}
	r := newFakeReactor(s)
	s.SetEvictor(r)
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		cancel()
		t.Fatalf("start %s: %v", opt.PodID, err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_ = s.Close(cctx)
		cancel()
	})
	crash := func() {
		cancel()
		if ps := s.locks.ps.Load(); ps != nil {
			_ = ps.Close() // a dead process hears no more notices
		}
	}
	return &testStore{RedisStores: s, pod: opt.PodID, reactor: r, crash: crash}
}

// fakeReactor stands in for the reactor's local connection index, with its
// Locker contract: at most one socket per session key; a newer local socket
// replaces the older one without a Release; Evict closes the socket without
// a Release (the key is the newcomer's); a normal close Releases.
type fakeReactor struct {
	locker Locker

	mu       sync.Mutex
	sockets  map[string]int // key → socket id
	nextID   int
	evicted  map[string]int // key → sockets closed by Evict
	evictAll atomic.Int64   // Evict calls, found or not
}

func newFakeReactor(s *RedisStores) *fakeReactor {
	return &fakeReactor{locker: s.Locker(), sockets: map[string]int{}, evicted: map[string]int{}}
}

// connect acquires key and indexes a new socket, replacing an older local
// one as the reactor does on TakeoverLocal.
func (r *fakeReactor) connect(ctx context.Context, key string) (Acquired, error) {
	a, err := r.locker.Acquire(ctx, key)
	if err != nil {
		return a, err
	}
	r.mu.Lock()
	r.nextID++
	r.sockets[key] = r.nextID // an older local socket is replaced
	r.mu.Unlock()
	return a, nil
}

// disconnect closes key's socket normally.
func (r *fakeReactor) disconnect(key string) {
	r.mu.Lock()
	_, ok := r.sockets[key]
	delete(r.sockets, key)
	r.mu.Unlock()
	if ok {
		r.locker.Release(key)
	}
}

// Evict implements Evictor.
func (r *fakeReactor) Evict(key string) {
	r.evictAll.Add(1)
	r.mu.Lock()
	_, ok := r.sockets[key]
	if ok {
		delete(r.sockets, key)
		r.evicted[key]++
	}
	r.mu.Unlock()
}

func (r *fakeReactor) has(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.sockets[key]
	return ok
}

func (r *fakeReactor) evictions(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.evicted[key]
}

// eventually polls cond every 10 ms until it holds or within passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// get reads a string key ("" when missing).
func get(t testing.TB, c redis.UniversalClient, key string) string {
	t.Helper()
	v, err := c.Get(context.Background(), key).Result()
	if err != nil && err != redis.Nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

// redisProc is a private redis-server for tests that kill and restart it.
type redisProc struct {
	t    testing.TB
	port int
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// startRedisProc starts redis-server on a free port; it is killed at
// cleanup.
func startRedisProc(t testing.TB) *redisProc {
	t.Helper()
	p := &redisProc{t: t, port: freePort(t), dir: t.TempDir()}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *redisProc) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

func (p *redisProc) start() {
	p.t.Helper()
	cmd := exec.Command(redisServerBin, "--port", strconv.Itoa(p.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", p.dir)
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("%s: %v: install redis-server", redisServerBin, err)
	}
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: p.addr(), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			p.t.Fatalf("redis-server on %s did not start", p.addr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill stops the server abruptly (SIGKILL): no shutdown save, clients see
// their connections reset.
func (p *redisProc) kill() {
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// connSetup are the commands go-redis sends when it opens a connection.
var connSetup = map[string]bool{"hello": true, "client": true, "auth": true, "select": true}

// countHook counts round trips (one per command or pipeline) and commands
// sent by one client.
type countHook struct {
	roundTrips, commands atomic.Int64
	probes               atomic.Int64 // PUBLISH commands, counted apart
	names                sync.Map     // command name → struct{}
}

// countedClient is newClient with a countHook on it.
func countedClient(t testing.TB, addr string) (*countHook, redis.UniversalClient) {
	t.Helper()
	hook := &countHook{}
	c := newClient(t, addr)
	c.AddHook(hook)
	return hook, c
}

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if connSetup[cmd.Name()] {
			return next(ctx, cmd)
		}
		if cmd.Name() == "publish" {
			// The kill listener's probe (one per quiet refresh interval):
			// counted apart, so bookkeeping figures stay comparable.
			h.probes.Add(1)
			return next(ctx, cmd)
		}
		h.roundTrips.Add(1)
		h.commands.Add(1)
		h.names.Store(cmd.Name(), struct{}{})
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && connSetup[cmds[0].Name()] {
			return next(ctx, cmds) // a new pooled connection's handshake
		}
		h.roundTrips.Add(1)
		h.commands.Add(int64(len(cmds)))
		for _, c := range cmds {
			h.names.Store(c.Name(), struct{}{})
		}
		return next(ctx, cmds)
	}
}

// only reports whether every command counted since the last reset is
// one of names.
func (h *countHook) only(names ...string) bool {
	ok := true
	h.names.Range(func(k, _ any) bool {
		ok = slices.Contains(names, k.(string))
		return ok
	})
	return ok
}

func (h *countHook) reset() {
	h.roundTrips.Store(0)
	h.commands.Store(0)
	h.probes.Store(0)
	h.names.Clear()
}

func (h *countHook) String() string {
	var names []string
	h.names.Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
	return fmt.Sprintf("%d round trips, %d commands %v", h.roundTrips.Load(), h.commands.Load(), names)
}

func TestNewRedisClient_PicksTopologyFromConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  RedisClientOptions
		want string
	}{
		{"single address", RedisClientOptions{Addrs: []string{"127.0.0.1:1"}}, "*redis.Client"},
		{"sentinel", RedisClientOptions{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}, MasterName: "mymaster"}, "*redis.Client"},
		{"cluster", RedisClientOptions{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}}, "*redis.ClusterClient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewRedisClient(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := fmt.Sprintf("%T", c); got != tt.want {
				t.Fatalf("client %s, want %s", got, tt.want)
			}
		})
	}
}

func TestNewRedisClient_BadConfig_ErrorsWithoutSecrets(t *testing.T) {
	tests := []struct {
		name string
		cfg  RedisClientOptions
	}{
		{"no addrs", RedisClientOptions{Password: "hunter2-secret"}},
		{"db on cluster", RedisClientOptions{Addrs: []string{"a:1", "b:2"}, DB: 3, Password: "hunter2-secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRedisClient(tt.cfg)
			if err == nil {
				t.Fatal("want an error")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestNewRedisClient_TimeoutsFromConfig(t *testing.T) {
	c, err := NewRedisClient(RedisClientOptions{Addrs: []string{"127.0.0.1:1"}, PoolSize: 7, ReadTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := c.(*redis.Client).Options()
	if o.PoolSize != 7 || o.ReadTimeout != 3*time.Second || o.WriteTimeout != time.Second || !o.ContextTimeoutEnabled {
		t.Fatalf("options not applied: pool %d read %v write %v ctx %v", o.PoolSize, o.ReadTimeout, o.WriteTimeout, o.ContextTimeoutEnabled)
	}
}
