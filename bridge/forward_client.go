// ForwardClient, the client side of pod-to-pod forwarding: the pool of
// per-pod targets (dial, circuit breaker, idle reaping, Close), their send
// queues and batching, the sender goroutine, the unary Push path, and the
// counting and completion of each batch's outcome. The PushStream path a
// target normally sends on is in forward_stream.go.

package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dws-gateway/dws/bridge/forwardpb"
	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/internal/safego"
)

// MetadataRequestID is the gRPC metadata key carrying the request ids of a
// unary Push batch, one value per event in order. PushStream carries them
// in Event.request_id only (its metadata is sent once per stream).
const MetadataRequestID = "x-request-id"

// Batch bounds besides grpc.batch_max. maxBatchBytes keeps a Push far below
// gRPC's 4 MiB default receive limit (an event alone is bounded by the NATS
// max_payload, 1 MiB by default, and may exceed it: it then travels alone).
const (
	maxBatchBytes      = 1 << 20
	defaultIdleTimeout = 5 * time.Minute
	// reconnectMaxDelay caps gRPC's reconnect backoff (its default climbs
	// to 120 s): a restarted pod must be reachable again well within the
	// breaker's open period.
	reconnectMaxDelay = 5 * time.Second
)

// ErrClientClosed is returned for pushes after ForwardClient.Close, and for
// pushes still queued or in flight when it is called.
var ErrClientClosed = errors.New("bridge: forward client closed")

// Completion learns the outcome of one forwarded event: how many sockets
// of pod accepted it, or why the pod was skipped (after the one retry, or
// at once when its circuit breaker is open). Called exactly once, from a
// sender goroutine; it must not block.
type Completion interface {
	Forwarded(pod string, accepted uint32, err error)
}

// ClientOption tunes a ForwardClient.
type ClientOption func(*ForwardClient)

// WithDialOptions adds gRPC dial options: a pod passes Security.DialOptions
// here (the bearer token every Push needs, and TLS credentials, which
// replace the insecure default); tests add interceptors.
func WithDialOptions(o ...grpc.DialOption) ClientOption {
	return func(c *ForwardClient) { c.dialOpts = append(c.dialOpts, o...) }
}

// WithIdleTimeout sets how long a pod's connection may stay unused before
// it is closed (default 5 min).
func WithIdleTimeout(d time.Duration) ClientOption {
	return func(c *ForwardClient) { c.idle = d }
}

// ForwardClient pushes events to other pods: one *grpc.ClientConn per pod
// (keyed by pod_id = host:port) carrying one long-lived PushStream, opened
// lazily. Events for a pod are batched (up to grpc.batch_max and
// maxBatchBytes) and a batch leaves as soon as the stream has room in its
// window of streamWindow unanswered batches; answers are matched first-in
// first-out, so the order events were pushed in is the order they arrive.
// A batch not answered within grpc.call_timeout of reaching the head of
// the window (the pod answers in order) breaks the stream; every
// unanswered batch is re-sent once on a fresh stream (a receiver drops
// what it already has by seq) and then skipped. A circuit breaker per pod
// counts stream failures. A pod that answers PushStream with UNIMPLEMENTED
// predates it and gets unary Push calls, one in flight, with the same
// retry and breaker. Safe for concurrent use.
type ForwardClient struct {
	cfg      config.GRPC
	m        *metrics.Metrics
	dialOpts []grpc.DialOption
	idle     time.Duration
	ctx      context.Context
	cancel   context.CancelFunc

	mu      sync.Mutex
	targets map[string]*target
	closed  bool

	results  map[string]prometheus.Counter
	toState  map[gobreaker.State]prometheus.Counter
	duration prometheus.Observer
}

// NewForwardClient returns a client pool configured by cfg; m receives
// dws_grpc_forwards_total (one per batch), its send → answer duration and
// breaker state changes. Close it when done.
func NewForwardClient(cfg config.GRPC, m *metrics.Metrics, opts ...ClientOption) *ForwardClient {
	if cfg.BatchMax <= 0 {
		cfg.BatchMax = 1
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 2 * time.Second
	}
	if cfg.BreakerFailures <= 0 {
		cfg.BreakerFailures = 5
	}
	c := &ForwardClient{
		cfg:      cfg,
		m:        m,
		idle:     defaultIdleTimeout,
		targets:  make(map[string]*target),
		results:  make(map[string]prometheus.Counter),
		toState:  make(map[gobreaker.State]prometheus.Counter),
		duration: m.GRPCForwardDuration,
	}
	for _, r := range []string{"ok", "retried_ok", "failed", "breaker_open"} {
		c.results[r] = m.GRPCForwards.WithLabelValues(r)
	}
	c.toState[gobreaker.StateClosed] = m.BreakerStateChanges.WithLabelValues("closed")
	c.toState[gobreaker.StateOpen] = m.BreakerStateChanges.WithLabelValues("open")
	c.toState[gobreaker.StateHalfOpen] = m.BreakerStateChanges.WithLabelValues("half_open")
	for _, o := range opts {
		o(c)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.idle > 0 {
		safego.Go(c.ctx, "forward_idle_reaper", c.reapIdle)
	}
	return c
}

// Push forwards ev to pod and waits for its outcome: the number of the
// pod's sockets that accepted it, or the error that made it skip the pod.
// ctx bounds only the wait; the event still leaves with its batch.
func (c *ForwardClient) Push(ctx context.Context, pod string, ev *forwardpb.Event) (uint32, error) {
	w := &waiter{done: make(chan struct{})}
	c.PushAsync(pod, ev, w)
	select {
	case <-w.done:
		return w.accepted, w.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

type waiter struct {
	done     chan struct{}
	accepted uint32
	err      error
}

func (w *waiter) Forwarded(_ string, n uint32, err error) {
	w.accepted, w.err = n, err
	close(w.done)
}

// PushAsync queues ev for pod and returns at once; done learns the
// outcome. ev must not be modified until then. Events pushed to one pod
// leave in PushAsync order. The queue is not bounded here: the dispatcher
// bounds it (at most nats.max_ack_pending messages are unsettled, each
// with one event per pod).
func (c *ForwardClient) PushAsync(pod string, ev *forwardpb.Event, done Completion) {
	for {
		t, err := c.target(pod)
		if err != nil {
			done.Forwarded(pod, 0, err)
			return
		}
		t.mu.Lock()
		if t.closed { // reaped between lookup and lock: take a fresh one
			t.mu.Unlock()
			continue
		}
		t.queue = append(t.queue, queued{ev: ev, done: done})
		t.mu.Unlock()
		t.signal()
		return
	}
}

// Close closes every connection; queued and in-flight pushes complete with
// ErrClientClosed (a unary Push being sent, with the error it gets).
func (c *ForwardClient) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	ts := c.targets
	c.targets = map[string]*target{}
	c.mu.Unlock()
	// Targets first, then the context: a stream cancelled before its
	// target is closed would look like a failure of the pod.
	for _, t := range ts {
		t.shutdown()
	}
	c.cancel()
	var errs []error
	for _, t := range ts {
		errs = append(errs, t.conn.Close())
	}
	return errors.Join(errs...)
}

// target returns the pod's sender state, dialing lazily and starting its
// sender.
func (c *ForwardClient) target(pod string) (*target, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClientClosed
	}
	if t := c.targets[pod]; t != nil {
		return t, nil
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMaxDelay},
			MinConnectTimeout: c.cfg.CallTimeout,
		}),
	}, c.dialOpts...)
	conn, err := grpc.NewClient(pod, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial pod %s: %w", pod, err)
	}
	t := &target{c: c, pod: pod, conn: conn, client: forwardpb.NewForwardClient(conn),
		wake: make(chan struct{}, 1), lastUsed: time.Now()}
	t.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:    pod,
		Timeout: c.cfg.BreakerOpen,
		ReadyToTrip: func(n gobreaker.Counts) bool {
			return n.ConsecutiveFailures >= uint32(c.cfg.BreakerFailures)
		},
		// Only transport failures say the pod is unhealthy; an
		// application error means it answered.
		IsSuccessful:  func(err error) bool { return err == nil || !retryable(err) },
		OnStateChange: func(_ string, _, to gobreaker.State) { c.toState[to].Inc() },
	})
	c.targets[pod] = t
	safego.Go(c.ctx, "forward_sender", t.run)
	return t, nil
}

// reapIdle closes connections unused for the idle timeout, so pods that
// left the fleet do not keep sockets and goroutines forever.
func (c *ForwardClient) reapIdle(ctx context.Context) {
	tick := time.NewTicker(c.idle / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			var idle []*target
			c.mu.Lock()
			for pod, t := range c.targets {
				if t.idleSince(now, c.idle) {
					delete(c.targets, pod)
					idle = append(idle, t)
				}
			}
			c.mu.Unlock()
			for _, t := range idle {
				t.shutdown()
				_ = t.conn.Close()
			}
		}
	}
}

type queued struct {
	ev   *forwardpb.Event
	done Completion
}

// flight is one batch on its way to the pod: built once, sent on a stream
// (or by unary Push), and completed exactly once by whoever removes it
// from the list it is on (the queue, resend, a stream's inflight) under
// target.mu.
type flight struct {
	batch []queued
	req   *forwardpb.PushRequest // its own: gRPC may read it after Send
	first time.Time              // first send, for the duration histogram
	// clock is when its answer deadline (CallTimeout) started: its send,
	// or when the answer before it was read, if later (restartClock).
	clock   time.Time
	retried bool // already re-sent once: the next failure skips it
}

// target is one pod: its connection, breaker, send queue and stream. One
// sender goroutine per target (run) builds batches and sends them; one
// receiver goroutine per open stream (receive) completes them.
type target struct {
	c      *ForwardClient
	pod    string
	conn   *grpc.ClientConn
	client forwardpb.ForwardClient
	cb     *gobreaker.TwoStepCircuitBreaker[struct{}]
	// wake holds one token: the queue grew, window room freed, the stream
	// broke or the target closed. One token is enough because the sender
	// re-reads all state after waking.
	wake chan struct{}

	mu       sync.Mutex
	queue    []queued
	resend   []*flight   // unanswered batches of a broken stream; they go first
	stream   *pushStream // nil until opened, and after it broke
	unary    bool        // the pod answered PushStream UNIMPLEMENTED
	busy     bool        // the sender is opening a stream or in a unary Push
	closed   bool
	lastUsed time.Time
}

// signal wakes the sender if it is parked; it never blocks.
func (t *target) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// idleSince reports (and marks closed) a target with nothing queued or in
// flight and no batch taken for idle.
func (t *target) idleSince(now time.Time, idle time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.busy || len(t.queue) > 0 || len(t.resend) > 0 || now.Sub(t.lastUsed) < idle ||
		(t.stream != nil && len(t.stream.inflight) > 0) {
		return false
	}
	t.closed = true
	return true
}

// shutdown closes t: its stream ends and everything queued or in flight
// completes with ErrClientClosed. The sender exits when it wakes.
func (t *target) shutdown() {
	t.mu.Lock()
	t.closed = true
	fs := t.resend
	t.resend = nil
	if st := t.stream; st != nil {
		t.stream = nil
		st.broken = true
		st.timer.Stop()
		st.cancel()
		fs = append(fs, st.inflight...)
		st.inflight = nil
	}
	if len(t.queue) > 0 {
		fs = append(fs, &flight{batch: t.queue})
		t.queue = nil
	}
	t.mu.Unlock()
	t.signal()
	for _, f := range fs {
		t.finish(f, nil, ErrClientClosed, false)
	}
}

// run is the sender: it takes batches off the queue and sends them until
// the target closes. It parks while there is nothing to send or no window
// room, instead of exiting: a parked goroutine is cheaper to wake than a
// new one to start for each event (perf/cluster-hop-20261206.md).
func (t *target) run(ctx context.Context) {
	waited := false // grpc.batch_wait already spent on the next batch
	for {
		more := true
		if !safego.Run(ctx, "forward_send", func() { more = t.step(ctx, &waited) }) {
			// Completions recover their own panics (finish); whatever
			// else panicked, the sender lives on for the next batch.
			t.mu.Lock()
			t.busy = false
			t.mu.Unlock()
		}
		if !more {
			return
		}
	}
}

// step does one thing: park, wait out batch_wait, open a stream, or send
// one batch. It reports false when the target is closed.
func (t *target) step(ctx context.Context, waited *bool) bool {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return false
	}
	if len(t.resend) == 0 && len(t.queue) == 0 {
		t.mu.Unlock()
		t.park(ctx)
		return true
	}
	if w := t.c.cfg.BatchWait; w > 0 && !*waited && len(t.resend) == 0 && len(t.queue) < t.c.cfg.BatchMax {
		t.mu.Unlock()
		*waited = true
		time.Sleep(w)
		return true
	}
	if t.unary {
		f := t.nextFlight()
		t.busy = true
		t.mu.Unlock()
		*waited = false
		resp, breakerOpen, err := t.pushUnary(ctx, f)
		t.mu.Lock()
		t.busy = false
		if err != nil && retryable(err) && !breakerOpen {
			// The pod went away; it may come back upgraded: probe
			// PushStream again on the next batch.
			t.unary = false
		}
		t.mu.Unlock()
		t.finish(f, resp, err, breakerOpen)
		return true
	}
	return t.stepStream(ctx, waited)
}

// park waits for a signal or the client's end.
func (t *target) park(ctx context.Context) {
	select {
	case <-t.wake:
	case <-ctx.Done():
	}
}

// nextFlight takes the next batch to send, resends first. Called with
// t.mu held and work available.
func (t *target) nextFlight() *flight {
	t.lastUsed = time.Now()
	if len(t.resend) > 0 {
		f := t.resend[0]
		t.resend[0] = nil
		t.resend = t.resend[1:]
		return f
	}
	n, size := 0, 0
	for n < len(t.queue) && n < t.c.cfg.BatchMax {
		size += len(t.queue[n].ev.Payload)
		if n > 0 && size > maxBatchBytes {
			break
		}
		n++
	}
	f := &flight{batch: make([]queued, n), req: &forwardpb.PushRequest{Events: make([]*forwardpb.Event, n)}}
	copy(f.batch, t.queue[:n])
	for i, q := range f.batch {
		f.req.Events[i] = q.ev
	}
	rest := copy(t.queue, t.queue[n:])
	clear(t.queue[rest:])
	t.queue = t.queue[:rest]
	return f
}

// pushUnary sends f by unary Push through the breaker, retried once on a
// transport failure unless a broken stream already spent its retry.
func (t *target) pushUnary(ctx context.Context, f *flight) (resp *forwardpb.PushResponse, breakerOpen bool, err error) {
	done, err := t.cb.Allow()
	if err != nil {
		return nil, true, err
	}
	ids := make([]string, len(f.batch))
	for i, q := range f.batch {
		ids[i] = q.ev.RequestId
	}
	md := metadata.MD{MetadataRequestID: ids}
	if f.first.IsZero() {
		f.first = time.Now()
	}
	resp, err = t.call(ctx, f.req, md)
	if retryable(err) && ctx.Err() == nil && !f.retried {
		f.retried = true
		resp, err = t.call(ctx, f.req, md)
	}
	done(err)
	return resp, false, err
}

func (t *target) call(ctx context.Context, req *forwardpb.PushRequest, md metadata.MD) (*forwardpb.PushResponse, error) {
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, md), t.c.cfg.CallTimeout)
	defer cancel()
	return t.client.Push(ctx, req)
}

// finish counts f's outcome and completes its events. A completion that
// panics is recovered and the rest of the batch still hears: each callback
// is cleared before it is called, so a retry never calls one twice.
func (t *target) finish(f *flight, resp *forwardpb.PushResponse, err error, breakerOpen bool) {
	err = t.count(f, resp, err, breakerOpen)
	for !safego.Run(t.c.ctx, "forward_complete", func() { t.complete(f, resp, err) }) {
	}
}

// count records one batch's outcome in dws_grpc_forwards_total and the
// duration histogram (first send → answer or failure) and returns the
// error its callers hear. A batch the client's own Close ended is not the
// pod's outcome and is not counted.
func (t *target) count(f *flight, resp *forwardpb.PushResponse, err error, breakerOpen bool) error {
	switch {
	case errors.Is(err, ErrClientClosed):
		return err
	case breakerOpen:
		t.c.results["breaker_open"].Inc()
		return fmt.Errorf("pod %s: circuit breaker open: %w", t.pod, err)
	case err != nil:
		if !f.first.IsZero() {
			t.c.duration.Observe(time.Since(f.first).Seconds())
		}
		t.c.results["failed"].Inc()
		return fmt.Errorf("pod %s: push: %w", t.pod, err)
	}
	t.c.duration.Observe(time.Since(f.first).Seconds())
	if f.retried {
		t.c.results["retried_ok"].Inc()
	} else {
		t.c.results["ok"].Inc()
	}
	if len(resp.GetAccepted()) != len(f.batch) {
		return fmt.Errorf("pod %s: push answered %d counts for %d events", t.pod, len(resp.GetAccepted()), len(f.batch))
	}
	return nil
}

// complete tells every caller of the batch its own outcome.
func (t *target) complete(f *flight, resp *forwardpb.PushResponse, err error) {
	for i, q := range f.batch {
		done := q.done
		if done == nil {
			continue
		}
		// Cleared first: a callback that panics is not called again by
		// the recovery path, so each caller hears exactly once.
		f.batch[i].done = nil
		if err != nil {
			done.Forwarded(t.pod, 0, err)
		} else {
			done.Forwarded(t.pod, resp.Accepted[i], nil)
		}
	}
}

// retryable reports the failures worth the one retry: the pod could not be
// reached or did not answer in time.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}
