package session

import (
	"container/heap"
	"context"
	"strings"
	"sync"
	"time"
)

// ReplayGuard is the set of token ids already used (SPEC §3,
// auth.reject_replay). Implementations are safe for concurrent use; a shared
// one (Redis SET NX with expiry) may block, so call it off the event loop.
type ReplayGuard interface {
	// Seen records jti until the token's expires_at (until) and reports
	// whether it was already recorded — atomically, so of two concurrent
	// presentations exactly one sees false.
	Seen(ctx context.Context, jti string, until time.Time) (bool, error)
}

// MemoryReplayGuard is the in-process ReplayGuard for a single pod. Each jti
// is kept until its token expires and then dropped (a min-heap by deadline
// makes that O(log n) per call), so memory tracks the tokens alive right
// now. It never evicts a live jti early: that would re-open the replay
// window, and only tokens we minted can add entries. Safe for concurrent
// use; never blocks on I/O.
type MemoryReplayGuard struct {
	mu    sync.Mutex
	until map[string]time.Time
	order jtiHeap
	now   func() time.Time // time.Now; tests move it
}

var _ ReplayGuard = (*MemoryReplayGuard)(nil)

// NewMemoryReplayGuard returns an empty guard.
func NewMemoryReplayGuard() *MemoryReplayGuard {
	return &MemoryReplayGuard{until: make(map[string]time.Time), now: time.Now}
}

// Seen implements ReplayGuard. A jti whose until has already passed is not
// recorded: its token is expired and refused before the replay check.
func (g *MemoryReplayGuard) Seen(_ context.Context, jti string, until time.Time) (bool, error) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	// A token is valid while now ≤ expires_at, so its jti must be
	// remembered through that instant and may go once it is in the past.
	for len(g.order) > 0 && g.order[0].until.Before(now) {
		delete(g.until, heap.Pop(&g.order).(jtiDeadline).jti)
	}
	if _, ok := g.until[jti]; ok {
		return true, nil
	}
	if until.Before(now) {
		return false, nil
	}
	// Clone: the validator's jti points into the whole token plaintext,
	// which need not stay alive for as long as the jti does.
	jti = strings.Clone(jti)
	g.until[jti] = until
	heap.Push(&g.order, jtiDeadline{jti: jti, until: until})
	return false, nil
}

// Len returns how many jtis are remembered.
func (g *MemoryReplayGuard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.until)
}

type jtiDeadline struct {
	jti   string
	until time.Time
}

// jtiHeap is a min-heap of jtis by deadline (container/heap).
type jtiHeap []jtiDeadline

func (h jtiHeap) Len() int           { return len(h) }
func (h jtiHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h jtiHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *jtiHeap) Push(x any)        { *h = append(*h, x.(jtiDeadline)) }
func (h *jtiHeap) Pop() any {
	old := *h
	n := len(old) - 1
	x := old[n]
	old[n] = jtiDeadline{}
	*h = old[:n]
	return x
}
