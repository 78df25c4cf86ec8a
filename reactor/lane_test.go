package reactor

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// Live work posted behind a long replay backlog must not wait for all of
// it (the reconnect storm of perf/resume-20261206.md): a drain runs the
// inbox first and then at most laneTurn of replay tasks, so a live task
// overtakes the queue after a few tasks, not after the whole backlog.
func TestLane_LiveWorkOvertakesQueuedReplays(t *testing.T) {
	l := firstLoop(t, startPod(t, nil))

	const (
		tasks    = 200
		taskCost = 200 * time.Microsecond // a replay batch's order of cost
	)
	var (
		ran      atomic.Int64 // replay tasks run
		failed   atomic.Int64 // tasks told the loop was gone
		atPost   = int64(-1)
		atRun    atomic.Int64
		liveDone = make(chan struct{})
		allDone  = make(chan struct{})
	)
	for range tasks {
		l.postLane(laneReplay, func(ok bool) {
			if !ok {
				failed.Add(1)
			}
			for start := time.Now(); time.Since(start) < taskCost; {
			}
			if ran.Add(1) == tasks {
				close(allDone)
			}
		})
	}
	// Post the live task once the loop is busy with the lane.
	for ran.Load() < tasks/10 {
		time.Sleep(100 * time.Microsecond)
	}
	atPost = ran.Load()
	l.exec(func() { atRun.Store(ran.Load()); close(liveDone) })
	select {
	case <-liveDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the live task never ran")
	}
	select {
	case <-allDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("replay tasks stalled: %d of %d ran", ran.Load(), tasks)
	}
	if failed.Load() > 0 {
		t.Fatalf("%d replay tasks were told the loop was gone", failed.Load())
	}
	// A turn runs tasks until laneTurn is spent: about 3 of these, at
	// most one more for the check after each, and the turn in progress
	// when the live task was posted. 3 × (laneTurn/taskCost + 1) leaves
	// room for a descheduled loop; without the lane it would wait for
	// every task queued ahead of it (up to tasks − tasks/10).
	waited := atRun.Load() - atPost
	limit := 3 * (int64(laneTurn/taskCost) + 1)
	t.Logf("the live task waited for %d replay tasks (limit %d, queued ahead %d)", waited, limit, tasks-atPost)
	if waited > limit {
		t.Fatalf("the live task waited for %d replay tasks, want ≤ %d", waited, limit)
	}
}

// firstLoop returns p's first event loop; gnet hands dws a loop on its
// first connection, so it opens one (closed at the test's end).
func firstLoop(t *testing.T, p *pod) *loop {
	t.Helper()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	deadline := time.Now().Add(5 * time.Second)
	for len(*p.srv.loops.Load()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no event loop after a connection")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return (*p.srv.loops.Load())[0]
}
