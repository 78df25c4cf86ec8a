package session

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"
)

func newTestMemoryCache(t testing.TB, size int, clock *testClock) *MemoryTokenCache {
	t.Helper()
	c, err := NewMemoryTokenCache(size)
	if err != nil {
		t.Fatal(err)
	}
	c.now = clock.Now
	return c
}

func sumOf(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }

func TestMemoryTokenCache_EntryLivesForItsOwnTTL(t *testing.T) {
	clock := newTestClock(tokenEpoch)
	c := newTestMemoryCache(t, 16, clock)
	short := Identity{Kind: KindUser, UserID: "short"}
	long := Identity{Kind: KindUser, UserID: "long"}
	c.Put(t.Context(), sumOf("a"), short, 5*time.Second)
	c.Put(t.Context(), sumOf("b"), long, 30*time.Second)

	if id, ok := c.Get(t.Context(), sumOf("a")); !ok || id.UserID != "short" {
		t.Fatalf("fresh entry: %+v, %v", id, ok)
	}
	clock.Advance(5 * time.Second)
	if _, ok := c.Get(t.Context(), sumOf("a")); ok {
		t.Fatal("entry served at its deadline")
	}
	if c.Len() != 1 {
		t.Fatalf("expired entry not removed on Get: Len = %d", c.Len())
	}
	if id, ok := c.Get(t.Context(), sumOf("b")); !ok || id.UserID != "long" {
		t.Fatal("longer entry expired with the shorter one")
	}
	clock.Advance(25 * time.Second)
	if _, ok := c.Get(t.Context(), sumOf("b")); ok {
		t.Fatal("entry served past its deadline")
	}
}

func TestMemoryTokenCache_NonPositiveTTL_StoresNothing(t *testing.T) {
	c := newTestMemoryCache(t, 4, newTestClock(tokenEpoch))
	c.Put(t.Context(), sumOf("a"), Identity{}, 0)
	c.Put(t.Context(), sumOf("b"), Identity{}, -time.Second)
	if c.Len() != 0 {
		t.Fatalf("Len = %d, want 0", c.Len())
	}
}

func TestMemoryTokenCache_BoundedBySize_EvictsLeastRecentlyUsed(t *testing.T) {
	c := newTestMemoryCache(t, 2, newTestClock(tokenEpoch))
	c.Put(t.Context(), sumOf("a"), Identity{UserID: "a"}, time.Minute)
	c.Put(t.Context(), sumOf("b"), Identity{UserID: "b"}, time.Minute)
	c.Get(t.Context(), sumOf("a")) // a is now the most recent
	c.Put(t.Context(), sumOf("c"), Identity{UserID: "c"}, time.Minute)
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}
	if _, ok := c.Get(t.Context(), sumOf("b")); ok {
		t.Fatal("least recently used entry survived")
	}
	if _, ok := c.Get(t.Context(), sumOf("a")); !ok {
		t.Fatal("recently used entry evicted")
	}
}

func TestNewMemoryTokenCache_RejectsNonPositiveSize(t *testing.T) {
	for _, n := range []int{0, -1} {
		if _, err := NewMemoryTokenCache(n); err == nil {
			t.Errorf("size %d accepted", n)
		}
	}
}

func TestMemoryTokenCache_ConcurrentUse(t *testing.T) {
	c := newTestMemoryCache(t, 64, newTestClock(tokenEpoch))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				k := sumOf(fmt.Sprint((g*500 + i) % 100))
				c.Put(t.Context(), k, Identity{UserID: "x"}, time.Minute)
				if id, ok := c.Get(t.Context(), k); ok && id.UserID != "x" {
					t.Errorf("got %+v", id)
				}
			}
		})
	}
	wg.Wait()
	if c.Len() > 64 {
		t.Fatalf("Len = %d past size 64", c.Len())
	}
}

func TestTieredTokenCache_RemoteHitFillsLocalWithinBounds(t *testing.T) {
	clock := newTestClock(tokenEpoch)
	local := newRecordingCache(t, clock)
	remote := newRecordingCache(t, clock)
	tiered := NewTieredTokenCache(local, remote, 30*time.Second).(*tieredTokenCache)
	tiered.now = clock.Now

	// Remote only, token expiring in 10 s: local is filled for 10 s.
	soon := Identity{Kind: KindUser, UserID: "soon", ExpiresAt: tokenEpoch.Add(10 * time.Second)}
	remote.MemoryTokenCache.Put(t.Context(), sumOf("soon"), soon, time.Minute)
	if id, ok := tiered.Get(t.Context(), sumOf("soon")); !ok || id.UserID != "soon" {
		t.Fatalf("remote hit not returned: %+v %v", id, ok)
	}
	if local.puts.Load() != 1 || time.Duration(local.lastTTL.Load()) != 10*time.Second {
		t.Fatalf("local fill: %d puts, ttl %v; want 1 put for 10s", local.puts.Load(), time.Duration(local.lastTTL.Load()))
	}
	// Token expiring in an hour: local filled for fillTTL only.
	later := Identity{Kind: KindUser, UserID: "later", ExpiresAt: tokenEpoch.Add(time.Hour)}
	remote.MemoryTokenCache.Put(t.Context(), sumOf("later"), later, time.Minute)
	tiered.Get(t.Context(), sumOf("later"))
	if time.Duration(local.lastTTL.Load()) != 30*time.Second {
		t.Fatalf("local fill ttl %v, want fillTTL 30s", time.Duration(local.lastTTL.Load()))
	}
	// Second read is local: remote not asked again.
	before := remote.gets.Load()
	if _, ok := tiered.Get(t.Context(), sumOf("later")); !ok {
		t.Fatal("local fill not served")
	}
	if remote.gets.Load() != before {
		t.Fatal("remote asked although local had the entry")
	}
	// A remote entry for an already expired token is returned (the
	// validator re-checks expiry) but not copied.
	past := Identity{Kind: KindUser, UserID: "past", ExpiresAt: tokenEpoch.Add(-time.Second)}
	remote.MemoryTokenCache.Put(t.Context(), sumOf("past"), past, time.Minute)
	puts := local.puts.Load()
	tiered.Get(t.Context(), sumOf("past"))
	if local.puts.Load() != puts {
		t.Fatal("expired token copied into local")
	}
	// Miss in both.
	if _, ok := tiered.Get(t.Context(), sumOf("none")); ok {
		t.Fatal("hit for an absent key")
	}
}

func TestTieredTokenCache_PutWritesBoth(t *testing.T) {
	clock := newTestClock(tokenEpoch)
	local := newRecordingCache(t, clock)
	remote := newRecordingCache(t, clock)
	tiered := NewTieredTokenCache(local, remote, time.Minute)
	tiered.Put(t.Context(), sumOf("k"), Identity{UserID: "k"}, 7*time.Second)
	for name, c := range map[string]*recordingCache{"local": local, "remote": remote} {
		if _, ok := c.MemoryTokenCache.Get(t.Context(), sumOf("k")); !ok {
			t.Errorf("%s not written", name)
		}
		if time.Duration(c.lastTTL.Load()) != 7*time.Second {
			t.Errorf("%s ttl %v, want 7s", name, time.Duration(c.lastTTL.Load()))
		}
	}
}

func TestValidator_WithTieredCache_SecondPodHitsRemote(t *testing.T) {
	// Two pods with their own local caches and one shared remote: a token
	// validated on pod 1 is served to pod 2 from the shared cache.
	f := newTokenFixture(t)
	remote := newRecordingCache(t, f.clock)
	pod := func() *Validator {
		local := newTestMemoryCache(t, 16, f.clock)
		return f.validator(t, ValidatorOptions{Cache: NewTieredTokenCache(local, remote, 30*time.Second), CacheTTL: 30 * time.Second})
	}
	pod1, pod2 := pod(), pod()
	tok := f.mintUser(t, userClaims())
	_, err := pod1.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	_, err = pod2.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	if remote.hits.Load() != 1 || remote.puts.Load() != 1 {
		t.Fatalf("remote hits %d, puts %d; want 1 and 1", remote.hits.Load(), remote.puts.Load())
	}
}
