package session

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTestReplayGuard(clock *testClock) *MemoryReplayGuard {
	g := NewMemoryReplayGuard()
	g.now = clock.Now
	return g
}

func TestMemoryReplayGuard_RemembersUntilExpiryThenForgets(t *testing.T) {
	clock := newTestClock(tokenEpoch)
	g := newTestReplayGuard(clock)
	until := tokenEpoch.Add(time.Minute)
	seen := func(jti string) bool {
		t.Helper()
		s, err := g.Seen(t.Context(), jti, until)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if seen("a") {
		t.Fatal("first use reported as seen")
	}
	if !seen("a") {
		t.Fatal("second use not reported")
	}
	// Still remembered at the very instant of expiry (the token is valid
	// while now ≤ expires_at).
	clock.Set(until)
	if !seen("a") {
		t.Fatal("forgotten at expires_at, while the token is still valid")
	}
	clock.Advance(time.Nanosecond)
	_, _ = g.Seen(t.Context(), "other", until.Add(time.Hour)) // triggers the sweep
	if g.Len() != 1 {
		t.Fatalf("Len = %d after expiry, want only the new jti", g.Len())
	}
}

func TestMemoryReplayGuard_AlreadyExpired_NotRecorded(t *testing.T) {
	clock := newTestClock(tokenEpoch)
	g := newTestReplayGuard(clock)
	for range 2 {
		if s, _ := g.Seen(t.Context(), "late", tokenEpoch.Add(-time.Second)); s {
			t.Fatal("expired jti reported as seen")
		}
	}
	if g.Len() != 0 {
		t.Fatalf("Len = %d, want 0", g.Len())
	}
}

func TestMemoryReplayGuard_MemoryTracksLiveTokens(t *testing.T) {
	clock := newTestClock(tokenEpoch)
	g := newTestReplayGuard(clock)
	for i := range 1000 {
		_, _ = g.Seen(t.Context(), fmt.Sprint(i), tokenEpoch.Add(time.Duration(i)*time.Second))
	}
	clock.Advance(500*time.Second + time.Millisecond)
	_, _ = g.Seen(t.Context(), "x", tokenEpoch.Add(time.Hour))
	// jtis 0..500 lapsed; 501..999 plus x remain.
	if g.Len() != 500 {
		t.Fatalf("Len = %d, want 500", g.Len())
	}
	if s, _ := g.Seen(t.Context(), "700", tokenEpoch.Add(time.Hour)); !s {
		t.Fatal("a live jti was dropped")
	}
}

func TestMemoryReplayGuard_Concurrent_OneFirstPerJTI(t *testing.T) {
	g := newTestReplayGuard(newTestClock(tokenEpoch))
	var firsts atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range 200 {
				s, err := g.Seen(t.Context(), fmt.Sprint(i), tokenEpoch.Add(time.Hour))
				if err != nil {
					t.Error(err)
				}
				if !s {
					firsts.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if firsts.Load() != 200 {
		t.Fatalf("%d first uses, want 200 (one per jti)", firsts.Load())
	}
}
