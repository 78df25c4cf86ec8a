package session

import (
	"context"
	"sync"
)

// MemoryRoutes is the route registry for a single node (SPEC §5): a count
// of local sockets per route, and this pod listed under every route with a
// socket. Join never blocks on I/O, so unlike the Redis registry it is safe
// on an event loop too. Safe for concurrent use.
type MemoryRoutes struct {
	mu    sync.RWMutex
	count map[Route]int
	// self is the one answer Pods ever gives for a registered route,
	// shared so dispatching an event allocates nothing. Its capacity is
	// 1: a caller appending to it gets a copy, never a write into ours.
	self []string
}

var _ Routes = (*MemoryRoutes)(nil)

// NewMemoryRoutes returns an empty registry for pod podID.
func NewMemoryRoutes(podID string) *MemoryRoutes {
	return &MemoryRoutes{count: make(map[Route]int), self: []string{podID}[:1:1]}
}

// registryKey is r as the registry keys it, matching the Redis keys of
// keys.go: chats routes ignore Chat (route:{C}:{A}:chats) and the admin
// route ignores everything but its kind (route:admin, SPEC §5 — the
// subscription filters at delivery, not here).
func registryKey(r Route) Route {
	switch r.Kind {
	case RouteChats:
		r.Chat = ""
	case RouteAdmin:
		r = Route{Kind: RouteAdmin}
	}
	return r
}

// Join counts one more local socket on r. The error is always nil.
func (m *MemoryRoutes) Join(_ context.Context, r Route) error {
	r = registryKey(r)
	m.mu.Lock()
	m.count[r]++
	m.mu.Unlock()
	return nil
}

// Leave counts one local socket less on r; a Leave without a matching Join
// is ignored. Non-blocking.
func (m *MemoryRoutes) Leave(r Route) {
	r = registryKey(r)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch n := m.count[r]; {
	case n > 1:
		m.count[r] = n - 1
	case n == 1:
		delete(m.count, r)
	}
}

// Pods returns [podID] when r has a local socket, else nil. The slice is
// shared: read it, do not write into it. The error is always nil.
func (m *MemoryRoutes) Pods(_ context.Context, r Route) ([]string, error) {
	r = registryKey(r)
	m.mu.RLock()
	n := m.count[r]
	m.mu.RUnlock()
	if n == 0 {
		return nil, nil
	}
	return m.self, nil
}
