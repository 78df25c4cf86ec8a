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

// loopCount is one loop's share of the sockets an event reaches.
type loopCount struct {
	loop int
	n    int32
}

// socketsFor appends to dst, per loop, how many sockets an event for r
// reaches, and returns the total. For RouteAdmin, r.Company/r.Agent are
// matched against the admins' subscriptions, as conn.wants does.
func (x *index) socketsFor(r session.Route, dst []loopCount) ([]loopCount, int) {
	var keys [4]session.Route
	nk := 1
	keys[0] = r
	if r.Kind == session.RouteAdmin {
		nk = adminKeys(r, &keys)
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	var counts [4][]int32
	found := false
	for k := 0; k < nk; k++ {
		counts[k] = x.counts[keys[k]]
		found = found || counts[k] != nil
	}
	if !found {
		return dst, 0
	}
	total := 0
	for i := 0; i < x.loops; i++ {
		var n int32
		for k := 0; k < nk; k++ {
			if counts[k] != nil {
				n += counts[k][i]
			}
		}
		if n > 0 {
			dst = append(dst, loopCount{loop: i, n: n})
			total += int(n)
		}
	}
	return dst, total
}

// indexKey is the key c is counted under while on r: the route itself,
// except that an admin socket is counted under its subscription
// (Route{Kind: RouteAdmin, Company: sub company, Agent: sub agent}, empty =
// all), so Deliver can tell how many admins an event reaches without
// walking them.
func indexKey(c *conn, r session.Route) session.Route {
	if r.Kind != session.RouteAdmin || c.ident == nil {
		return r
	}
	return session.Route{Kind: session.RouteAdmin, Company: c.ident.subCompany, Agent: c.ident.subAgent}
}

// adminKeys fills keys with the distinct subscriptions an admin event for
// r.Company/r.Agent matches (each part either equal or empty = all) and
// returns how many there are.
func adminKeys(r session.Route, keys *[4]session.Route) int {
	n := 0
	for _, c := range [2]string{r.Company, ""} {
		for _, a := range [2]string{r.Agent, ""} {
			k := session.Route{Kind: session.RouteAdmin, Company: c, Agent: a}
			dup := false
			for i := 0; i < n; i++ {
				dup = dup || keys[i] == k
			}
			if !dup {
				keys[n] = k
				n++
			}
		}
	}
	return n
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
