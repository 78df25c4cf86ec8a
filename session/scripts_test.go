package session

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// scriptEnv is a prefix on the shared Redis plus a subscription to its
// kill channels, for calling the scripts directly.
type scriptEnv struct {
	c    redis.UniversalClient
	keys keyspace
	ps   *redis.PubSub
}

// The scripts' single-node paths are tested here; a Redis Cluster runs them
// only with checkLease "0" and never runs podsScript (the store's
// cluster-path tests cover those).
func newScriptEnv(t *testing.T) *scriptEnv {
	t.Helper()
	c := nodeRedis(t)
	k := keyspace{prefix: testPrefix(t, c)}
	ps := c.PSubscribe(context.Background(), k.killPattern())
	if _, err := ps.ReceiveTimeout(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	return &scriptEnv{c: c, keys: k, ps: ps}
}

// notice returns the next kill notice within wait, or false.
func (e *scriptEnv) notice(wait time.Duration) (killNotice, bool) {
	msg, err := e.ps.ReceiveTimeout(context.Background(), wait)
	if err != nil {
		return killNotice{}, false
	}
	m, ok := msg.(*redis.Message)
	if !ok {
		return killNotice{}, false
	}
	var n killNotice
	_ = json.Unmarshal([]byte(m.Payload), &n)
	return n, true
}

func (e *scriptEnv) acquire(t *testing.T, suffix, me, checkLease, force, notified string) (int64, string, bool) {
	t.Helper()
	res, err := acquireScript.Run(context.Background(), e.c, []string{e.keys.session(suffix)},
		me, 60000, e.keys.podPrefix(), checkLease, force, e.keys.killChannel(suffix), notified).Slice()
	if err != nil {
		t.Fatal(err)
	}
	return parseAcquire(res)
}

func TestAcquireScript_EveryPath(t *testing.T) {
	env := newScriptEnv(t)
	ctx := context.Background()
	live := func(pod string) { env.c.Set(ctx, env.keys.pod(pod), "t", time.Minute) }
	live("live")
	tests := []struct {
		name        string
		holder      string // "" = key missing
		checkLease  string
		force       string
		notified    string
		wantCode    int64
		wantValue   string // lock value afterwards
		wantNotice  bool
		wantOldPod  string
		wantTTLOver time.Duration
	}{
		{name: "key missing: set to me", wantCode: acqFree, checkLease: "1", wantValue: "me", wantTTLOver: 50 * time.Second},
		{name: "owner matches: renewed", holder: "me", checkLease: "1", wantCode: acqMine, wantValue: "me", wantTTLOver: 50 * time.Second},
		{name: "live other: held and notified", holder: "live", checkLease: "1", wantCode: acqHeld, wantValue: "live", wantNotice: true, wantOldPod: "live"},
		{name: "live other already notified: no second notice", holder: "live", checkLease: "1", notified: "live", wantCode: acqHeld, wantValue: "live"},
		{name: "dead other: taken at once and told", holder: "dead", checkLease: "1", wantCode: acqDead, wantValue: "me", wantNotice: true, wantOldPod: "dead"},
		{name: "dead other, lease check off (cluster): held", holder: "dead", checkLease: "0", wantCode: acqHeld, wantValue: "dead", wantNotice: true, wantOldPod: "dead"},
		{name: "force from the holder: forced and told", holder: "live", checkLease: "1", force: "live", wantCode: acqForced, wantValue: "me", wantNotice: true, wantOldPod: "live"},
		{name: "force from a former holder: still held", holder: "live", checkLease: "1", force: "other", notified: "live", wantCode: acqHeld, wantValue: "live"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			suffix := "c:a:u" + strconv.Itoa(i)
			key := env.keys.session(suffix)
			if tt.holder != "" {
				env.c.Set(ctx, key, tt.holder, time.Second)
			}
			code, holder, published := env.acquire(t, suffix, "me", tt.checkLease, tt.force, tt.notified)
			if code != tt.wantCode {
				t.Fatalf("code %d, want %d", code, tt.wantCode)
			}
			if tt.holder != "" && tt.holder != "me" && holder != tt.holder {
				t.Fatalf("holder %q, want %q", holder, tt.holder)
			}
			if got := get(t, env.c, key); got != tt.wantValue {
				t.Fatalf("lock value %q, want %q", got, tt.wantValue)
			}
			if tt.wantTTLOver > 0 {
				if ttl := env.c.PTTL(ctx, key).Val(); ttl < tt.wantTTLOver {
					t.Fatalf("TTL %v, want over %v", ttl, tt.wantTTLOver)
				}
			}
			if published != tt.wantNotice {
				t.Fatalf("published %v, want %v", published, tt.wantNotice)
			}
			n, got := env.notice(100 * time.Millisecond)
			if got != tt.wantNotice {
				t.Fatalf("notice received %v, want %v", got, tt.wantNotice)
			}
			if got && (n.NewPodID != "me" || n.OldPodID != tt.wantOldPod) {
				t.Fatalf("notice %+v, want new me old %s", n, tt.wantOldPod)
			}
		})
	}
}

func TestReassertScript_EveryPath(t *testing.T) {
	env := newScriptEnv(t)
	ctx := context.Background()
	tests := []struct {
		name      string
		holder    string
		wantCode  int64
		wantValue string
	}{
		{"owner matches: renewed", "me", reassertKept, "me"},
		{"key missing: re-set to me", "", reassertRecreate, "me"},
		{"other owner: reported, untouched", "other", reassertLost, "other"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := env.keys.session("c:a:r" + strconv.Itoa(i))
			if tt.holder != "" {
				env.c.Set(ctx, key, tt.holder, time.Second)
			}
			res, err := reassertScript.Run(ctx, env.c, []string{key}, "me", 60000).Slice()
			if err != nil {
				t.Fatal(err)
			}
			code, holder, _ := parseAcquire(res)
			if code != tt.wantCode {
				t.Fatalf("code %d, want %d", code, tt.wantCode)
			}
			if code == reassertLost && holder != "other" {
				t.Fatalf("holder %q", holder)
			}
			if got := get(t, env.c, key); got != tt.wantValue {
				t.Fatalf("value %q, want %q", got, tt.wantValue)
			}
			if tt.wantValue == "me" && env.c.PTTL(ctx, key).Val() < 50*time.Second {
				t.Fatal("TTL not renewed")
			}
		})
	}
}

func TestReleaseScript_OnlyOwnerDeletes(t *testing.T) {
	env := newScriptEnv(t)
	ctx := context.Background()
	tests := []struct {
		name      string
		holder    string
		wantDel   int64
		wantValue string
	}{
		{"owner matches: deleted", "me", 1, ""},
		{"other owner: kept", "other", 0, "other"},
		{"key missing: nothing", "", 0, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := env.keys.session("c:a:d" + strconv.Itoa(i))
			if tt.holder != "" {
				env.c.Set(ctx, key, tt.holder, time.Second)
			}
			n, err := releaseScript.Run(ctx, env.c, []string{key}, "me").Int64()
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.wantDel {
				t.Fatalf("deleted %d, want %d", n, tt.wantDel)
			}
			if got := get(t, env.c, key); got != tt.wantValue {
				t.Fatalf("value %q, want %q", got, tt.wantValue)
			}
		})
	}
}

func TestPodsScript_LiveLeaseAndUnexpiredScoreOnly(t *testing.T) {
	env := newScriptEnv(t)
	ctx := context.Background()
	key := env.keys.route(Route{Kind: RouteChats, Company: "c", Agent: "a"})
	now := time.Now()
	future := float64(now.Add(time.Minute).UnixMilli())
	env.c.ZAdd(ctx, key,
		redis.Z{Score: future, Member: "live"},
		redis.Z{Score: future, Member: "dead"},                                      // lease gone
		redis.Z{Score: float64(now.Add(-time.Second).UnixMilli()), Member: "stale"}, // expiry passed
		redis.Z{Score: future, Member: "me"},                                        // asking pod, no lease needed
	)
	env.c.Set(ctx, env.keys.pod("live"), "t", time.Minute)
	env.c.Set(ctx, env.keys.pod("stale"), "t", time.Minute)
	env.c.Set(ctx, env.keys.registryAlive(), "1", time.Minute)
	got, err := podsScript.Run(ctx, env.c, []string{key, env.keys.registryAlive(), env.keys.registryRecovering()},
		now.UnixMilli(), env.keys.podPrefix(), "me", 1000, 60000).StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"live", "me"}; !slices.Equal(got, want) {
		t.Fatalf("pods %v, want %v", got, want)
	}
}

func TestRouteAssertScript_WritesMemberCollectsLapsedSetsKeyTTL(t *testing.T) {
	env := newScriptEnv(t)
	ctx := context.Background()
	key := env.keys.route(Route{Kind: RouteChats, Company: "c", Agent: "a"})
	now := time.Now()
	env.c.ZAdd(ctx, key,
		redis.Z{Score: float64(now.Add(-time.Second).UnixMilli()), Member: "lapsed"},
		redis.Z{Score: float64(now.Add(time.Minute).UnixMilli()), Member: "other"},
	)
	score := now.Add(5 * time.Minute).UnixMilli()
	if err := routeAssertScript.Run(ctx, env.c, []string{key}, "me", score, now.UnixMilli(), (5 * time.Minute).Milliseconds()).Err(); err != nil {
		t.Fatal(err)
	}
	members, err := env.c.ZRangeWithScores(ctx, key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range members {
		got[m.Member.(string)] = m.Score
	}
	if _, ok := got["lapsed"]; ok || len(got) != 2 || got["me"] != float64(score) {
		t.Fatalf("members %v: want me at %d and other, lapsed collected", got, score)
	}
	if ttl := env.c.PTTL(ctx, key).Val(); ttl < 4*time.Minute {
		t.Fatalf("route key TTL %v, want the GC TTL", ttl)
	}
}

func TestPodsScript_RegistryMarkers_RecoveryBeforeMembers(t *testing.T) {
	tests := []struct {
		name           string
		alive, recover bool
		want           int64 // 0 = the member list
		wantRecoverTTL bool  // registry:recovering set with the window
		wantAliveAfter bool
	}{
		{name: "data set lost: opens the window", want: podsRecoveryStarted, wantRecoverTTL: true, wantAliveAfter: true},
		{name: "window open: waits", alive: true, recover: true, want: podsRecovering, wantAliveAfter: true},
		{name: "intact: members", alive: true, want: 0, wantAliveAfter: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newScriptEnv(t)
			ctx := context.Background()
			key := env.keys.route(Route{Kind: RouteChats, Company: "c", Agent: "a"})
			env.c.ZAdd(ctx, key, redis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: "me"})
			if tt.alive {
				env.c.Set(ctx, env.keys.registryAlive(), "1", time.Minute)
			}
			if tt.recover {
				env.c.Set(ctx, env.keys.registryRecovering(), "1", time.Minute)
			}
			res, err := podsScript.Run(ctx, env.c, []string{key, env.keys.registryAlive(), env.keys.registryRecovering()},
				time.Now().UnixMilli(), env.keys.podPrefix(), "me", 1500, 86400000).Result()
			if err != nil {
				t.Fatal(err)
			}
			switch v := res.(type) {
			case int64:
				if v != tt.want {
					t.Fatalf("reply %d, want %d", v, tt.want)
				}
			case []any:
				if tt.want != 0 || len(v) != 1 || v[0] != "me" {
					t.Fatalf("reply %v, want code %d", v, tt.want)
				}
			default:
				t.Fatalf("reply %T %v", res, res)
			}
			if tt.wantRecoverTTL {
				if ttl := env.c.PTTL(ctx, env.keys.registryRecovering()).Val(); ttl <= 0 || ttl > 1500*time.Millisecond {
					t.Fatalf("registry:recovering TTL %v, want the 1.5 s window passed in", ttl)
				}
			}
			if ttl := env.c.PTTL(ctx, env.keys.registryAlive()).Val(); tt.wantAliveAfter && (ttl <= 0 || ttl > 24*time.Hour) {
				t.Fatalf("registry:alive TTL %v, want set with a TTL ≤ 24 h", ttl)
			}
		})
	}
}
