package session

import (
	"sync"
	"time"
)

// serverClock estimates Redis's clock (TIME) from this process's
// monotonic clock, so that the partition heartbeat, sent every tick by
// every pod, can be a plain pipelined ZADD + ZRANGE instead of a script
// that calls TIME itself (two commands instead of four as INFO
// commandstats counts them). Membership expiry stays on Redis's clock:
// pods' wall clocks need not agree.
//
// A calibration is one reading of TIME taken inside a script sent at
// local instant send and answered at recv. The server read its clock
// somewhere in between, so at a later local instant T its clock reads at
// least srv + (T - recv) and at most srv + (T - send): lo and hi below,
// each widened by clockSlack for the drift of two oscillators over
// clockMaxAge (100 ppm × 2 min = 12 ms) and a server clock slewed by NTP.
// Callers use hi for what must not end early (the expiry they write, the
// instant after which their own membership may have lapsed) and lo for
// what must not be declared over early (other pods' memberships).
// Safe for concurrent use.
type serverClock struct {
	now func() time.Time // monotonic reading; time.Now outside tests

	mu         sync.Mutex
	srv        time.Duration // server time at calibration, since the Unix epoch
	send, recv time.Time     // zero: never calibrated
}

const (
	// clockMaxAge: a calibration older than this is not used (the owner
	// checks its leases, which recalibrates, every partitionCheckEvery).
	clockMaxAge = 2 * time.Minute
	clockSlack  = 25 * time.Millisecond
)

func newServerClock() *serverClock { return &serverClock{now: time.Now} }

// calibrate records a TIME reading (seconds, microseconds) taken by a
// request sent at send and answered at recv.
func (c *serverClock) calibrate(sec, usec int64, send, recv time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.srv = time.Duration(sec)*time.Second + time.Duration(usec)*time.Microsecond
	c.send, c.recv = send, recv
}

// at returns the bounds of the server's clock, in Unix milliseconds, at
// local instant t; ok is false without a calibration younger than
// clockMaxAge.
func (c *serverClock) at(t time.Time) (lo, hi int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recv.IsZero() || t.Sub(c.recv) > clockMaxAge || t.Before(c.send) {
		return 0, 0, false
	}
	lo = (c.srv + t.Sub(c.recv) - clockSlack).Milliseconds()
	hi = (c.srv + t.Sub(c.send) + clockSlack).Milliseconds()
	return lo, hi, true
}
