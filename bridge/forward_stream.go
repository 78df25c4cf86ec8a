// The PushStream path of ForwardClient: one long-lived PushStream per
// target pod, the window of streamWindow batches in flight on it, answers
// matched to batches first-in first-out, the answer deadline that breaks a
// stream and sends its unanswered batches again once on a fresh one, and
// the switch to unary Push for a pod that answers UNIMPLEMENTED. The
// client, its targets, batching, the unary path and completion are in
// forward_client.go.

package bridge

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dws-gateway/dws/bridge/forwardpb"
	"github.com/dws-gateway/dws/internal/safego"
)

// streamWindow is how many batches may be in flight on one target's
// stream before the sender waits for an answer. An answer comes back one
// round trip plus the receiver's Deliver later: ~0.1 ms on an idle pod,
// 1–4 ms when the machine is starved (perf/cluster-hop-20261206.md). Events
// arriving meanwhile join the next batch, so the window only has to cover
// those stalls: at the measured 1.0–1.4 events per batch, 8 batches keep
// the sender from ever waiting for a round trip, while a broken stream
// re-sends at most 8 batches (≤ 8 × maxBatchBytes) and the receiver's
// HTTP/2 buffers hold at most that much unread.
const streamWindow = 8

// pushStream is one PushStream call to a target and the batches it has
// sent but not yet seen answered.
type pushStream struct {
	call   forwardpb.Forward_PushStreamClient
	cancel context.CancelFunc
	// timer fires when the oldest unanswered batch is overdue.
	timer   *time.Timer
	timeout time.Duration // grpc.call_timeout

	// Guarded by target.mu.
	inflight []*flight // in send order, at most streamWindow
	cbDone   func(error)
	broken   bool
	// completing: the receiver is telling an answered batch's callers;
	// the timer is stopped meanwhile and restarted after.
	completing bool
}

// stepStream is step's PushStream path, called with t.mu held (it
// releases it): it opens the target's stream when there is none, parks
// while the window is full, or sends the next batch.
func (t *target) stepStream(ctx context.Context, waited *bool) bool {
	st := t.stream
	if st == nil {
		t.busy = true
		t.mu.Unlock()
		opened := time.Now()
		st, err := t.open(ctx)
		t.mu.Lock()
		t.busy = false
		if t.closed { // Close completed the queue meanwhile
			t.mu.Unlock()
			if st != nil {
				st.cancel()
			}
			return false
		}
		if err != nil {
			fs, breakerOpen := t.openFailed(err, opened)
			t.mu.Unlock()
			for _, f := range fs {
				t.finish(f, nil, err, breakerOpen)
			}
			return true
		}
		t.stream = st
		t.mu.Unlock()
		safego.Go(ctx, "forward_receiver", func(context.Context) { t.receive(st) })
		return true
	}
	if len(st.inflight) >= streamWindow {
		t.mu.Unlock()
		t.park(ctx)
		return true
	}
	f := t.nextFlight()
	f.clock = t.lastUsed
	if f.first.IsZero() {
		f.first = f.clock
	}
	st.inflight = append(st.inflight, f)
	if len(st.inflight) == 1 && !st.completing {
		st.timer.Reset(t.c.cfg.CallTimeout)
	}
	t.mu.Unlock()
	*waited = false
	// io.EOF means the pod ended the stream; the receiver gets its status
	// from Recv. Any other error is the client's own and breaks it here.
	if err := st.call.Send(f.req); err != nil && !errors.Is(err, io.EOF) {
		t.broke(st, err)
	}
	return true
}

// open starts a PushStream through the breaker. NewStream waits while the
// connection is being made, so it is bounded by CallTimeout like a call.
func (t *target) open(ctx context.Context) (*pushStream, error) {
	done, err := t.cb.Allow()
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	slow := time.AfterFunc(t.c.cfg.CallTimeout, cancel)
	call, err := t.client.PushStream(sctx)
	if !slow.Stop() {
		err = status.Errorf(codes.DeadlineExceeded, "pod %s: no stream within %v", t.pod, t.c.cfg.CallTimeout)
	}
	if err != nil {
		cancel()
		done(err)
		return nil, err
	}
	st := &pushStream{call: call, cancel: cancel, cbDone: done, timeout: t.c.cfg.CallTimeout}
	st.timer = time.AfterFunc(time.Hour, func() { t.overdue(st) })
	st.timer.Stop()
	return st, nil
}

// openFailed settles what a failed stream open costs, with t.mu held: the
// batches waiting for their resend are skipped, or, when none waits, the
// next batch is charged the attempt (resent once, like a failed call). It
// returns the flights to complete. A batch charged the attempt is timed
// from the open's start (opened), so a batch that never got onto a stream
// still shows its wait in the duration histogram.
func (t *target) openFailed(err error, opened time.Time) (fs []*flight, breakerOpen bool) {
	breakerOpen = errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)
	if len(t.resend) == 0 {
		t.resend = append(t.resend, t.nextFlight())
	}
	keep := t.resend[:0]
	for _, f := range t.resend {
		if f.first.IsZero() && !breakerOpen {
			f.first = opened
		}
		if retryable(err) && !breakerOpen && !f.retried {
			f.retried = true
			keep = append(keep, f)
		} else {
			fs = append(fs, f)
		}
	}
	clear(t.resend[len(keep):])
	t.resend = keep
	return fs, breakerOpen
}

// receive completes the stream's batches as their answers arrive, oldest
// first, until the stream breaks.
func (t *target) receive(st *pushStream) {
	for {
		resp, err := st.call.Recv()
		if errors.Is(err, io.EOF) { // the pod ended the stream cleanly
			err = status.Error(codes.Unavailable, "stream ended by the pod")
		}
		if err != nil {
			t.broke(st, err)
			return
		}
		t.mu.Lock()
		if st.broken { // timed out meanwhile: its batches are resent
			t.mu.Unlock()
			return
		}
		if len(st.inflight) == 0 {
			t.mu.Unlock()
			t.broke(st, status.Error(codes.Internal, "answer without a request"))
			return
		}
		f := st.inflight[0]
		n := copy(st.inflight, st.inflight[1:])
		st.inflight[n] = nil
		st.inflight = st.inflight[:n]
		// The clock stops while this goroutine tells the batch's callers:
		// answers it is too busy to read are no fault of the pod.
		st.timer.Stop()
		st.completing = true
		done := st.cbDone
		st.cbDone = nil
		t.mu.Unlock()
		if done != nil { // the stream works: one success per stream
			done(nil)
		}
		t.signal()
		t.finish(f, resp, nil, false)
		t.mu.Lock()
		st.completing = false
		if !st.broken && len(st.inflight) > 0 {
			st.restartClock()
		}
		t.mu.Unlock()
	}
}

// restartClock starts the answer deadline of the batch now at the head
// (if its own send is earlier) and arms the timer for it. The pod answers
// a stream's batches in order, so a batch's time in the pod starts when
// the one before it was answered and read: without this, a slow but live
// pod, or a slow completion here, would time out the tail of a full
// window. Called with target.mu held.
func (st *pushStream) restartClock() {
	head := st.inflight[0]
	if now := time.Now(); now.After(head.clock) {
		head.clock = now
	}
	st.timer.Reset(time.Until(head.clock.Add(st.timeout)))
}

// overdue breaks the stream when its oldest batch has waited CallTimeout.
func (t *target) overdue(st *pushStream) {
	t.mu.Lock()
	if st.broken || st.completing || len(st.inflight) == 0 {
		t.mu.Unlock()
		return
	}
	if d := time.Until(st.inflight[0].clock.Add(t.c.cfg.CallTimeout)); d > 0 { // answered meanwhile
		st.timer.Reset(d)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.broke(st, status.Errorf(codes.DeadlineExceeded, "no answer within %v", t.c.cfg.CallTimeout))
}

// broke ends st after err (the first caller wins) and decides the fate of
// its unanswered batches: after UNIMPLEMENTED (a pod before PushStream)
// all go again by unary Push; after a transport failure or timeout each
// is resent once on a fresh stream, ahead of the queue, so order holds;
// after any other error (the pod refused the stream) they are skipped.
func (t *target) broke(st *pushStream, err error) {
	t.mu.Lock()
	if st.broken {
		t.mu.Unlock()
		return
	}
	st.broken = true
	st.timer.Stop()
	st.cancel()
	if t.stream == st {
		t.stream = nil
	}
	inflight := st.inflight
	st.inflight = nil
	done := st.cbDone
	st.cbDone = nil
	var failed, again []*flight
	switch {
	case status.Code(err) == codes.Unimplemented:
		t.unary = true
		again = inflight
	case retryable(err):
		for _, f := range inflight {
			if f.retried {
				failed = append(failed, f)
			} else {
				f.retried = true
				again = append(again, f)
			}
		}
	default:
		failed = inflight
	}
	if len(again) > 0 {
		t.resend = append(again, t.resend...)
	}
	t.mu.Unlock()

	switch {
	case done != nil:
		done(err)
	case retryable(err):
		// The stream had worked (its success is counted); its failure
		// counts too.
		if d, aerr := t.cb.Allow(); aerr == nil {
			d(err)
		}
	}
	t.signal()
	for _, f := range failed {
		t.finish(f, nil, err, false)
	}
}
