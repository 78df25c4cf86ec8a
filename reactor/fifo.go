package reactor

import "sync"

// fifo is an unbounded-by-type, caller-bounded queue of jobs that a fixed
// set of goroutines take in order: the resumer's replays and the pacer's
// held handshakes. A storm waits here as a few words per socket instead
// of a goroutine per socket.
type fifo[T any] struct {
	mu     sync.Mutex
	cond   sync.Cond
	items  []T
	closed bool
}

func newFIFO[T any]() *fifo[T] {
	q := &fifo[T]{}
	q.cond.L = &q.mu
	return q
}

// push appends v unless the queue is closed or already holds limit items
// (limit ≤ 0: no limit). It reports the length after the push.
func (q *fifo[T]) push(v T, limit int) (n int, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || (limit > 0 && len(q.items) >= limit) {
		return len(q.items), false
	}
	q.items = append(q.items, v)
	q.cond.Signal()
	return len(q.items), true
}

// pop blocks for the oldest item; ok is false once the queue is closed.
func (q *fifo[T]) pop() (v T, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return v, false
	}
	v = q.items[0]
	var zero T
	q.items[0] = zero
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = nil // let a storm's backing array go
	}
	return v, true
}

// close wakes every pop with ok = false and drops what was queued; it
// returns how many items that was.
func (q *fifo[T]) close() (dropped int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	dropped = len(q.items)
	q.closed = true
	q.items = nil
	q.cond.Broadcast()
	return dropped
}

// isClosed reports whether close has run.
func (q *fifo[T]) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}
