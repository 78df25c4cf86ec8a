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
// The lock is per pod, not per socket, like the Redis lock whose value is
// the pod id: a second Acquire of a held key succeeds (TakeoverLocal) and
// one Release frees it. So the caller releases when the pod stops owning
// the session — when its current socket closes — and not when a socket
// replaced by a newer one closes; the reactor's local index tells the two
// apart (index.release reports whether the closing socket still owned the
// key).
type MemoryLocker struct {
	mu   sync.Mutex
	held map[string]struct{}
}

var _ Locker = (*MemoryLocker)(nil)

// NewMemoryLocker returns a locker with no key held.
func NewMemoryLocker() *MemoryLocker {
	return &MemoryLocker{held: make(map[string]struct{})}
}

// Acquire takes key: TakeoverLocal when it was already held here (the
// caller closes the older socket), TakeoverNone when it was free. The
// error is always nil.
func (l *MemoryLocker) Acquire(_ context.Context, key string) (Acquired, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.held[key]; ok {
		return Acquired{Takeover: TakeoverLocal}, nil
	}
	l.held[key] = struct{}{}
	return Acquired{Takeover: TakeoverNone}, nil
}

// Release frees key; releasing a free key does nothing. Non-blocking.
func (l *MemoryLocker) Release(key string) {
	l.mu.Lock()
	delete(l.held, key)
	l.mu.Unlock()
}

// Held reports whether key is held (for tests and diagnostics).
func (l *MemoryLocker) Held(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.held[key]
	return ok
}
