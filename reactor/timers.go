package reactor

// wheel is a per-loop hashed timer wheel with one-second slots: each open
// socket sits in exactly one slot, the one of its next ping deadline, so a
// tick touches only the sockets due now (not every socket, and no timer or
// goroutine per socket). Touched only on its loop.
type wheel struct {
	slots [wheelSlots]*conn // heads of intrusive doubly linked lists
	now   int64             // seconds; the slot last processed
}

// wheelSlots covers deadlines up to ~4 minutes ahead without rounds; later
// deadlines simply stay in their slot until their round comes (due check).
const wheelSlots = 256

func newWheel() wheel { return wheel{} }

// add schedules c at second due.
func (w *wheel) add(c *conn, due int64) {
	c.due = due
	s := int32(due % wheelSlots)
	c.wheel = s
	c.prev = nil
	c.next = w.slots[s]
	if c.next != nil {
		c.next.prev = c
	}
	w.slots[s] = c
}

// remove unlinks c if it is on the wheel.
func (w *wheel) remove(c *conn) {
	if c.wheel < 0 {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		w.slots[c.wheel] = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.wheel = nil, nil, -1
}

// advance processes every second from the last one up to now, calling fire
// for each socket whose deadline has come (fire may re-add it).
func (w *wheel) advance(now int64, fire func(c *conn)) {
	if w.now == 0 {
		w.now = now - 1
	}
	for w.now < now {
		w.now++
		s := w.now % wheelSlots
		var due []*conn
		for c := w.slots[s]; c != nil; c = c.next {
			if c.due <= w.now {
				due = append(due, c)
			}
		}
		for _, c := range due {
			w.remove(c)
			fire(c)
		}
	}
}
