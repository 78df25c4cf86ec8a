package reactor

import (
	"sync"

	"github.com/dws-gateway/dws/session"
)

// index is the pod-wide view the delivery port needs without touching a
// loop: how many sockets each loop holds per route, and which socket owns
// each session key. The sockets themselves are listed per loop (loop.members)
// and touched only there.
type index struct {
	mu       sync.RWMutex
	counts   map[session.Route][]int32
	sessions map[string]*conn
	loops    int
}

func newIndex(loops int) *index {
	return &index{
		counts:   make(map[session.Route][]int32),
		sessions: make(map[string]*conn),
		loops:    loops,
	}
}

// add changes the count of sockets of loop li on r by d.
func (x *index) add(r session.Route, li int, d int32) {
	x.mu.Lock()
	c := x.counts[r]
	if c == nil {
		c = make([]int32, x.loops)
		x.counts[r] = c
	}
	c[li] += d
	if d < 0 {
		empty := true
		for _, n := range c {
			if n != 0 {
				empty = false
				break
			}
		}
		if empty {
			delete(x.counts, r)
		}
	}
	x.mu.Unlock()
}

// loopsFor appends to dst the loops holding sockets on r and returns the
// total number of sockets.
func (x *index) loopsFor(r session.Route, dst []int) ([]int, int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	total := 0
	for i, n := range x.counts[r] {
		if n > 0 {
			dst = append(dst, i)
			total += int(n)
		}
	}
	return dst, total
}

// claim makes c the owner of key and returns the previous owner, if any.
func (x *index) claim(key string, c *conn) (old *conn) {
	x.mu.Lock()
	old = x.sessions[key]
	x.sessions[key] = c
	x.mu.Unlock()
	return old
}

// release forgets c as the owner of key; it reports whether c owned it.
func (x *index) release(key string, c *conn) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.sessions[key] != c {
		return false
	}
	delete(x.sessions, key)
	return true
}

// owner returns the socket owning key, or nil.
func (x *index) owner(key string) *conn {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.sessions[key]
}

// size returns the number of open sessions.
func (x *index) size() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.sessions)
}
