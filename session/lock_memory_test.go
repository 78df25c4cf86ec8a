package session

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestMemoryLocker_HeldKey_AcquireIsLocalTakeover(t *testing.T) {
	l := NewMemoryLocker()
	const key = "c1:a1:u1"
	acquire := func(want Takeover) {
		t.Helper()
		got, err := l.Acquire(t.Context(), key)
		if err != nil {
			t.Fatalf("Acquire: %v", err)
		}
		if got.Takeover != want || got.Degraded {
			t.Fatalf("Acquire = %+v, want takeover %v, not degraded", got, want)
		}
	}
	acquire(TakeoverNone)  // socket 1
	acquire(TakeoverLocal) // socket 2 replaces socket 1 (which does not release)
	acquire(TakeoverLocal) // socket 3 replaces socket 2
	if !l.Held(key) {
		t.Fatal("not held")
	}
	l.Release(key) // socket 3, the owner, closes
	if l.Held(key) {
		t.Fatal("still held after the owner released")
	}
	l.Release(key) // a stray release is harmless
	acquire(TakeoverNone)
}

func TestMemoryLocker_KeysAreIndependent(t *testing.T) {
	l := NewMemoryLocker()
	for _, k := range []string{"c1:a1:u1", "c1:a1:u2", "admin:root"} {
		got, _ := l.Acquire(t.Context(), k)
		if got.Takeover != TakeoverNone {
			t.Fatalf("%s: takeover %v, want none", k, got.Takeover)
		}
	}
	l.Release("c1:a1:u1")
	if l.Held("c1:a1:u1") || !l.Held("c1:a1:u2") || !l.Held("admin:root") {
		t.Fatal("release touched other keys")
	}
}

func TestMemoryLocker_ConcurrentAcquire_ExactlyOneFindsItFree(t *testing.T) {
	l := NewMemoryLocker()
	const n = 64
	var free, local atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			got, err := l.Acquire(t.Context(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			switch got.Takeover {
			case TakeoverNone:
				free.Add(1)
			case TakeoverLocal:
				local.Add(1)
			}
		})
	}
	wg.Wait()
	if free.Load() != 1 || local.Load() != n-1 {
		t.Fatalf("none %d, local %d; want 1 and %d", free.Load(), local.Load(), n-1)
	}
}

func TestMemoryLocker_ConcurrentKeys_RaceFree(t *testing.T) {
	l := NewMemoryLocker()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			key := string(rune('a' + g))
			for range 500 {
				got, _ := l.Acquire(t.Context(), key)
				if got.Takeover != TakeoverNone {
					t.Errorf("%s: own key found held", key)
					return
				}
				_ = l.Held(key)
				l.Release(key)
			}
		})
	}
	wg.Wait()
}
