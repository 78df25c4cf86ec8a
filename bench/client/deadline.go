package client

// deadlineQueue is a FIFO of (slot, generation, deadline) entries. Every
// entry of one queue is pushed with the same timeout, so deadlines arrive in
// non-decreasing order and the head is always the next to expire: no heap
// and no timer per socket. Entries of sockets that moved on (closed, or past
// the stage the deadline guards) are recognised by their generation or state
// and skipped when they reach the head.
type deadlineQueue struct {
	items []deadline
	head  int
}

type deadline struct {
	at   int64 // engine-monotonic nanoseconds
	slot int32
	gen  uint32
}

func (q *deadlineQueue) push(d deadline) {
	// Reclaim the consumed prefix once it dominates, so the slice does not
	// grow with the total number of sockets ever dialled.
	if q.head > 1024 && q.head*2 > len(q.items) {
		n := copy(q.items, q.items[q.head:])
		q.items = q.items[:n]
		q.head = 0
	}
	q.items = append(q.items, d)
}

// popExpired returns the next entry whose deadline is at or before now.
func (q *deadlineQueue) popExpired(now int64) (deadline, bool) {
	if q.head >= len(q.items) || q.items[q.head].at > now {
		return deadline{}, false
	}
	d := q.items[q.head]
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	return d, true
}

func (q *deadlineQueue) len() int { return len(q.items) - q.head }
