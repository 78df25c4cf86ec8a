package reactor

import "time"

// The low-priority lanes: work a loop does after its live events. A live
// event has milliseconds of slack; a handshake's 101 and a resuming
// socket's replay have seconds (SPEC §5a: caught up within resume's
// bounds). In a reconnect storm the handshakes and the replays are most
// of a loop's work (15 000 sockets, each an open and ~100 replayed
// frames), and a live event posted behind them waited for all of it
// (perf/resume-20261206.md: untouched live p99 12.6 → 402 ms, and still
// 255 ms with replays alone on a lane). So this work does not go through
// the inbox: each drain first applies and flushes the inbox, then runs
// each lane's tasks for at most laneTurn, flushing as it goes, and when
// some are left schedules itself again, so events and socket reads that
// arrived meanwhile go first.

// laneID names a lane; lanes run in this order, each with its own turn, so
// a handshake storm and a replay storm slow each other down but neither
// stops the other.
type laneID int

const (
	// laneOpen finishes handshakes on the loop (the 101 and ready, or the
	// rejection) once a worker has authenticated them: ~15 µs each, a
	// write syscall and the socket's routes.
	laneOpen laneID = iota
	// laneReplay runs replay batches: one socket's ≤ 64 frames and their
	// writev (~30–60 µs), and the hand-over to live delivery at the end.
	laneReplay
	nLanes
)

// laneTurn bounds one lane's work in one drain: a live event posted
// behind the lanes waits at most about nLanes × laneTurn plus one task
// each.
const laneTurn = 500 * time.Microsecond

// laneTask is a piece of lane work. It runs on the loop with ok = true,
// or, when the loop is gone and it never will, with ok = false on the
// goroutine that found out (it must then only release what it holds).
type laneTask func(ok bool)

// lane is one queue of low-priority work.
type lane struct {
	posted []laneTask // since the last drain; under loop.mu
	queued []laneTask // taken by a drain, not yet run; loop only
}

// postLane queues t on lane id and makes sure a drain will run. Tasks of
// one lane run in the order posted. Safe for concurrent use; false when
// the engine is gone (t has then been called with false).
func (l *loop) postLane(id laneID, t laneTask) bool {
	l.mu.Lock()
	l.lanes[id].posted = append(l.lanes[id].posted, t)
	schedule := !l.scheduled
	l.scheduled = true
	l.mu.Unlock()
	if !schedule {
		return true
	}
	return l.schedule()
}

// takeLanes moves the posted lane work to the loop's queues. Under l.mu.
func (l *loop) takeLanes() {
	for i := range l.lanes {
		ln := &l.lanes[i]
		if len(ln.posted) > 0 {
			ln.queued = append(ln.queued, ln.posted...)
			clear(ln.posted)
			ln.posted = ln.posted[:0]
		}
	}
}

// dropLanes takes every lane task posted and not yet run, for a loop that
// is gone. Under l.mu.
func (l *loop) dropLanes() (lost []laneTask) {
	for i := range l.lanes {
		lost = append(lost, l.lanes[i].posted...)
		l.lanes[i].posted = nil
	}
	return lost
}

// runLanes gives each lane its turn: tasks for up to laneTurn, at least
// one, flushing the sockets each one filled; then schedules another drain
// for what is left. On loop.
func (l *loop) runLanes() {
	left := false
	for i := range l.lanes {
		ln := &l.lanes[i]
		if len(ln.queued) == 0 {
			continue
		}
		start := time.Now()
		n := 0
		for n < len(ln.queued) {
			t := ln.queued[n]
			ln.queued[n] = nil
			n++
			l.srv.guard("loop.lane", func() { t(true) })
			l.flushDirty()
			if time.Since(start) >= laneTurn {
				break
			}
		}
		rest := copy(ln.queued, ln.queued[n:])
		clear(ln.queued[rest:])
		ln.queued = ln.queued[:rest]
		left = left || rest > 0
	}
	if !left {
		return
	}
	l.mu.Lock()
	again := !l.scheduled
	l.scheduled = true
	l.mu.Unlock()
	if again && !l.schedule() {
		// The engine is gone: nothing will run the rest.
		for i := range l.lanes {
			ln := &l.lanes[i]
			for j, t := range ln.queued {
				t(false)
				ln.queued[j] = nil
			}
			ln.queued = ln.queued[:0]
		}
	}
}
