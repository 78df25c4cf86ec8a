package session

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestMemoryLocker_NewestWins_ReplacedSocketReleaseKeepsNewHolder(t *testing.T) {
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
	acquire(TakeoverLocal) // socket 2 replaces socket 1
	l.Release(key)         // socket 1 closes (replaced)
	if !l.Held(key) {
		t.Fatal("the replaced socket's release freed the newer socket's lock")
	}
	acquire(TakeoverLocal) // socket 3 still finds socket 2 holding it
	l.Release(key)         // socket 2 closes (replaced)
	l.Release(key)         // socket 3 closes
	if l.Held(key) {
		t.Fatal("key still held after every holder released")
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
	for range n {
		wg.Go(func() { l.Release("k") })
	}
	wg.Wait()
	if l.Held("k") {
		t.Fatal("held after every release")
	}
}
