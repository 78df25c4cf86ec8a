package session

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRedisReplayGuard_SecondPresentationOnAnyPod_Seen(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	a := startStore(t, c, fastOptions("pod-a", prefix))
	b := startStore(t, c, fastOptions("pod-b", prefix))
	ctx := context.Background()
	until := time.Now().Add(time.Minute)
	if seen, err := a.ReplayGuard().Seen(ctx, "j1", until); err != nil || seen {
		t.Fatalf("first presentation: seen %v err %v", seen, err)
	}
	if seen, err := b.ReplayGuard().Seen(ctx, "j1", until); err != nil || !seen {
		t.Fatalf("replay on another pod: seen %v err %v", seen, err)
	}
	ttl := c.PTTL(ctx, prefix+"jti:j1").Val()
	if ttl < 55*time.Second || ttl > 62*time.Second {
		t.Fatalf("jti kept for %v, want until expires_at", ttl)
	}
}

func TestRedisReplayGuard_ConcurrentPresentations_ExactlyOneFirst(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	var guards []ReplayGuard
	for i := range 3 {
		guards = append(guards, startStore(t, c, fastOptions("pod-"+strconv.Itoa(i), prefix)).ReplayGuard())
	}
	var first atomic.Int64
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen, err := guards[i%3].Seen(context.Background(), "race", time.Now().Add(time.Minute))
			if err != nil {
				t.Error(err)
			}
			if !seen {
				first.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := first.Load(); n != 1 {
		t.Fatalf("%d presentations saw the jti first, want 1", n)
	}
}

func TestRedisReplayGuard_ExpiredToken_NotRecorded(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	a := startStore(t, c, fastOptions("pod-a", prefix))
	if seen, err := a.ReplayGuard().Seen(context.Background(), "old", time.Now().Add(-time.Second)); err != nil || seen {
		t.Fatalf("seen %v err %v", seen, err)
	}
	if n := c.Exists(context.Background(), prefix+"jti:old").Val(); n != 0 {
		t.Fatal("expired jti recorded")
	}
}

func TestRedisReplayGuard_RedisDown_Errors(t *testing.T) {
	t.Parallel()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	a := startStore(t, newClient(t, addr), fastOptions("pod-a", ""))
	if _, err := a.ReplayGuard().Seen(context.Background(), "j", time.Now().Add(time.Minute)); err == nil {
		t.Fatal("want an error while Redis is down")
	}
}

// auth.reject_replay across pods with the shared token cache in front: a
// minted token opens one socket in the whole fleet, although the second
// pod finds its validation in the cache.
func TestRedisReplayGuard_MintedTokenOpensOneSocketAcrossPods(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	f := newTokenFixture(t)
	f.clock.Set(time.Now()) // Redis TTLs run on the real clock
	pod := func(name string) *Validator {
		s := startStore(t, c, fastOptions(name, prefix))
		local, err := NewMemoryTokenCache(16)
		if err != nil {
			t.Fatal(err)
		}
		return f.validator(t, ValidatorOptions{RejectReplay: true, Replay: s.ReplayGuard(),
			Cache: NewTieredTokenCache(local, s.TokenCache(), 30*time.Second), CacheTTL: 30 * time.Second})
	}
	a, b := pod("pod-a"), pod("pod-b")
	tok := f.mintUser(t, UserClaims{CompanyID: "c1", AgentID: "a1", UserID: "u1", ExpiresAt: time.Now().Add(time.Minute)})
	_, err := a.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	for _, v := range []*Validator{b, a} {
		_, err = v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
		wantReason(t, err, ReasonReplay)
	}
	if n := len(scanKeys(t, c, prefix+"token_cache:")); n != 0 {
		t.Fatalf("%d token_cache entries for a replay-checked token, want 0", n)
	}
}
