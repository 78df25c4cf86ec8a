package reactor

import "time"

// The replay lane: a loop's low-priority work. A resuming socket's replay
// has seconds of slack (SPEC §5a: caught up within resume's bounds), a
// live event has milliseconds; in a reconnect storm the replays are most
// of a loop's work (15 000 sockets × ~100 frames), and a live event posted
// behind them waited for all of it (perf/resume-20261206.md: untouched
// live p99 12.6 → 402 ms). So replay work does not go through the inbox:
// each drain first applies and flushes the inbox, then runs replay tasks
// for at most laneTurn, each flushed as it goes, and when some are left
// schedules itself again, so events and socket reads that arrived
// meanwhile go first.

// laneTurn bounds the replay work of one drain: a live event posted
// behind it waits at most about this long plus one task. A task is one
// replay batch for one socket (≤ 64 frames and their writev, ~30–60 µs),
// so a turn runs about ten of them.
const laneTurn = 500 * time.Microsecond

// laneTask is a piece of replay work. It runs on the loop with ok = true,
// or, when the loop is gone and it never will, with ok = false on the
// goroutine that found out (it must then only release its waiter).
type laneTask func(ok bool)

// postLane queues t on the replay lane and makes sure a drain will run.
// Tasks run in the order posted. Safe for concurrent use; false when the
// engine is gone (t has then been called with false).
func (l *loop) postLane(t laneTask) bool {
	l.mu.Lock()
	l.replays = append(l.replays, t)
	schedule := !l.scheduled
	l.scheduled = true
	l.mu.Unlock()
	if !schedule {
		return true
	}
	return l.schedule()
}

// runLane runs replay tasks for up to laneTurn, at least one, flushing the
// sockets each one filled, and schedules another drain for the rest.
// On loop.
func (l *loop) runLane() {
	start := time.Now()
	n := 0
	for n < len(l.lane) {
		t := l.lane[n]
		l.lane[n] = nil
		n++
		l.srv.guard("loop.replay", func() { t(true) })
		l.flushDirty()
		if time.Since(start) >= laneTurn {
			break
		}
	}
	rest := copy(l.lane, l.lane[n:])
	clear(l.lane[rest:])
	l.lane = l.lane[:rest]
	if rest == 0 {
		return
	}
	l.mu.Lock()
	again := !l.scheduled
	l.scheduled = true
	l.mu.Unlock()
	if again && !l.schedule() {
		// The engine is gone: nothing will run the rest.
		for i, t := range l.lane {
			t(false)
			l.lane[i] = nil
		}
		l.lane = l.lane[:0]
	}
}
