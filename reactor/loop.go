package reactor

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/session"
)

// loop is dws's state for one gnet event loop. Fields below mu are shared
// with other goroutines; everything else is touched only on the loop.
//
// DESIGN pitfall: waking a socket per message (AsyncWrite) is a throughput
// cliff. Other goroutines instead append to the loop's inbox and schedule
// at most one Execute per batch; the loop drains the inbox, fills rings and
// flushes every dirty socket once with a single writev.
type loop struct {
	srv *Server
	el  gnet.EventLoop
	idx int

	drainFn gnet.Runnable // l.drain, made once: a method value allocates

	mu        sync.Mutex
	inbox     []task
	scheduled bool
	// lanes hold the low-priority work run after the inbox (lane.go):
	// their posted halves are under mu, their queued halves loop-only.
	lanes [nLanes]lane
	// eventSince is when the first event of the inbox was posted (0: the
	// inbox holds no event); maxLag is the longest an event waited for a
	// drain since the pacer last looked (pacer.go). Under mu.
	eventSince time.Duration
	maxLag     time.Duration
	// backlogged says the loop has sockets in backlog: the ticker then
	// posts a tick every backlogTick, otherwise only once a wheelTick.
	// Set on the loop, read by the ticker.
	backlogged atomic.Bool
	// tickedAt is the wheel tick the ticker last posted a tick for.
	// Ticker goroutine only.
	tickedAt int64

	// Loop-only state.
	spare   []task // the previous inbox, reused to avoid garbage
	members map[session.Route]*memberSet
	dirty   []*conn            // sockets with frames queued this turn
	backlog map[*conn]struct{} // sockets whose ring waits for the kernel
	pending map[*conn]struct{} // sockets still in the handshake
	wheel   wheel
	second  int64 // seconds() of the last once-a-second chores

	freeRings    [][][]byte
	published    []time.Time // publish times of events written this turn
	ringBytes    int
	ringReported int
}

// task is one unit of work handed to a loop: either an event frame for a
// route, or a function to run on the loop.
type task struct {
	route session.Route
	frame []byte
	meta  Meta
	fn    func()
	// sockets is how many of the loop's sockets Deliver counted for the
	// frame: those the loop does not reach are counted as dropped.
	sockets int32
}

func newLoop(s *Server, el gnet.EventLoop, idx int) *loop {
	l := &loop{
		srv:     s,
		el:      el,
		idx:     idx,
		members: make(map[session.Route]*memberSet),
		backlog: make(map[*conn]struct{}),
		pending: make(map[*conn]struct{}),
		wheel:   newWheel(),
	}
	l.drainFn = gnet.RunnableFunc(l.drain)
	return l
}

// post queues t and makes sure one Execute will drain the inbox. Safe for
// concurrent use. It reports false when the engine is gone: then the whole
// inbox is thrown away (tasks other callers queued behind the failed
// Execute too), and every event in it is counted as dropped with reason
// loop_closed and logged with its request id.
func (l *loop) post(t task) bool {
	l.mu.Lock()
	if l.eventSince == 0 && t.fn == nil {
		l.eventSince = l.srv.mono()
	}
	l.inbox = append(l.inbox, t)
	schedule := !l.scheduled
	l.scheduled = true
	l.mu.Unlock()
	if !schedule {
		return true
	}
	return l.schedule()
}

// schedule asks gnet to run drain. The caller has set l.scheduled. It
// reports false when the engine is gone; then the inbox and the lanes are
// thrown away (see post).
func (l *loop) schedule() bool {
	if err := l.el.Execute(context.Background(), l.drainFn); err != nil {
		l.mu.Lock()
		lost, lostLane := l.inbox, l.dropLanes()
		l.inbox = nil
		l.scheduled = false
		l.mu.Unlock()
		l.discard(lost, err)
		for _, t := range lostLane {
			t(false)
		}
		return false
	}
	return true
}

// discard counts and logs the events of an inbox that will never run.
func (l *loop) discard(lost []task, err error) {
	for i := range lost {
		t := &lost[i]
		if t.fn == nil && t.sockets > 0 {
			l.srv.mx.dropLoop.Add(float64(t.sockets))
			logx.L().Warn("event dropped: event loop gone", "request_id", t.meta.RequestID,
				"sockets", t.sockets, "loop", l.idx, "err", err.Error())
		}
		*t = task{}
	}
}

// exec runs fn on the loop. Safe for concurrent use.
func (l *loop) exec(fn func()) bool { return l.post(task{fn: fn}) }

// drain runs on the loop: it takes the whole inbox, applies it, flushes
// every socket that got frames, then gives the lanes their turns.
func (l *loop) drain(context.Context) error {
	l.mu.Lock()
	if l.eventSince != 0 {
		l.maxLag = max(l.maxLag, l.srv.mono()-l.eventSince)
		l.eventSince = 0
	}
	batch := l.inbox
	l.inbox = l.spare[:0]
	l.scheduled = false
	l.takeLanes()
	l.mu.Unlock()

	for i := range batch {
		t := &batch[i]
		if t.fn != nil {
			l.srv.guard("loop.task", t.fn)
		} else {
			l.deliver(t)
		}
		*t = task{} // drop references so frames can be collected
	}
	l.spare = batch[:0]
	l.flushDirty()
	l.runLanes()
	return nil
}

// takeLag returns the longest an event waited for this loop since the
// last call, counting one still waiting. The pacer's signal.
func (l *loop) takeLag(now time.Time) time.Duration {
	at := now.Sub(l.srv.epoch)
	l.mu.Lock()
	lag := l.maxLag
	l.maxLag = 0
	if l.eventSince != 0 {
		lag = max(lag, at-l.eventSince)
	}
	l.mu.Unlock()
	return lag
}

// memberSet lists a loop's sockets on one route. A slice, not a map: fan-out
// walks it for every event, and a slice walk is several times cheaper; each
// socket remembers its position (conn.pos) so removal is O(1).
type memberSet struct {
	conns []*conn
}

// slot is the conn.pos index a route kind uses: a socket sits on at most one
// chats-or-admin route and one messages route.
func slot(r session.Route) int {
	if r.Kind == session.RouteMessages {
		return 1
	}
	return 0
}

// join adds c to the loop's members of r.
func (l *loop) join(c *conn, r session.Route) {
	set := l.members[r]
	if set == nil {
		set = &memberSet{}
		l.members[r] = set
	}
	c.pos[slot(r)] = int32(len(set.conns))
	set.conns = append(set.conns, c)
	l.srv.index.add(indexKey(c, r), l.idx, 1)
}

// leave removes c from the loop's members of r.
func (l *loop) leave(c *conn, r session.Route) {
	set := l.members[r]
	s := slot(r)
	i := int(c.pos[s])
	if set == nil || i < 0 || i >= len(set.conns) || set.conns[i] != c {
		return
	}
	last := len(set.conns) - 1
	moved := set.conns[last]
	set.conns[i] = moved
	moved.pos[s] = int32(i)
	set.conns[last] = nil
	set.conns = set.conns[:last]
	c.pos[s] = -1
	if len(set.conns) == 0 {
		delete(l.members, r)
	}
	l.srv.index.add(indexKey(c, r), l.idx, -1)
}

// memberKey is the loop's member list an event for r walks: every admin
// socket sits on one list, filtered by subscription at delivery.
func memberKey(r session.Route) session.Route { return r.Key() }
