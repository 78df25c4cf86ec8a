package session

import (
	"context"
	"sync"
)

// MemoryLocker is the single-session lock of SPEC §4 for a single node,
// where every socket lives on this pod: "newest wins" reduces to telling
// the caller that it already holds the key, so it closes its own older
// socket (4402 session-replaced). It never blocks, never fails and never
// degrades. Safe for concurrent use.
//
// Holders are counted, not just marked: every Acquire must be matched by
// exactly one Release, including the Release of a socket that was closed
// because a newer one replaced it. A plain held/free flag would let that
// late Release free the key under the newer socket, and the next
// connection would then find the key free and leave two sockets open.
type MemoryLocker struct {
	mu      sync.Mutex
	holders map[string]int
}

var _ Locker = (*MemoryLocker)(nil)

// NewMemoryLocker returns a locker with no key held.
func NewMemoryLocker() *MemoryLocker {
	return &MemoryLocker{holders: make(map[string]int)}
}

// Acquire takes key: TakeoverLocal when it was already held here (the
// caller closes the older socket), TakeoverNone when it was free. The
// error is always nil.
func (l *MemoryLocker) Acquire(_ context.Context, key string) (Acquired, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.holders[key]
	l.holders[key] = n + 1
	if n > 0 {
		return Acquired{Takeover: TakeoverLocal}, nil
	}
	return Acquired{Takeover: TakeoverNone}, nil
}

// Release drops one holder of key and frees it with the last one. A
// Release with no holder is ignored. Non-blocking.
func (l *MemoryLocker) Release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch n := l.holders[key]; {
	case n > 1:
		l.holders[key] = n - 1
	case n == 1:
		delete(l.holders, key)
	}
}

// Held reports whether key is held (for tests and /ready diagnostics).
func (l *MemoryLocker) Held(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holders[key] > 0
}
