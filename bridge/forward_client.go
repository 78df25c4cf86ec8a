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
// Push batch, one value per event in order.
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

// ErrClientClosed is returned for pushes after ForwardClient.Close.
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
// (keyed by pod_id = host:port), a per-call timeout, exactly one retry on
// UNAVAILABLE or DEADLINE_EXCEEDED, a circuit breaker per pod, and
// per-pod batching — while one Push to a pod is in flight, events for it
// accumulate and leave together (up to grpc.batch_max), so a burst becomes
// a few RPCs and the order events were pushed in is the order they arrive.
// Safe for concurrent use.
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
// dws_grpc_forwards_total, its duration and breaker state changes. Close
// it when done.
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
		start := !t.running
		t.running = true
		t.mu.Unlock()
		if start {
			safego.Go(c.ctx, "forward_sender", t.run)
		}
		return
	}
}

// Close closes every connection; queued and in-flight pushes complete with
// an error.
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
	c.cancel()
	var errs []error
	for _, t := range ts {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		errs = append(errs, t.conn.Close())
	}
	return errors.Join(errs...)
}

// target returns the pod's sender state, dialing lazily.
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
	t := &target{c: c, pod: pod, conn: conn, client: forwardpb.NewForwardClient(conn), lastUsed: time.Now()}
	t.cb = gobreaker.NewCircuitBreaker[*forwardpb.PushResponse](gobreaker.Settings{
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
			c.mu.Lock()
			for pod, t := range c.targets {
				t.mu.Lock()
				if !t.running && len(t.queue) == 0 && now.Sub(t.lastUsed) >= c.idle {
					t.closed = true
					delete(c.targets, pod)
					_ = t.conn.Close()
				}
				t.mu.Unlock()
			}
			c.mu.Unlock()
		}
	}
}

type queued struct {
	ev   *forwardpb.Event
	done Completion
}

// target is one pod: its connection, breaker and send queue. At most one
// sender goroutine runs per target (running), which keeps one Push in
// flight and the pod's events in order.
type target struct {
	c      *ForwardClient
	pod    string
	conn   *grpc.ClientConn
	client forwardpb.ForwardClient
	cb     *gobreaker.CircuitBreaker[*forwardpb.PushResponse]

	mu       sync.Mutex
	queue    []queued
	running  bool
	closed   bool
	lastUsed time.Time

	// Owned by the running sender only.
	batch []queued
	evs   []*forwardpb.Event
	ids   []string
}

// run sends batches until the queue is empty, then exits; the next push
// starts a new sender.
func (t *target) run(ctx context.Context) {
	for {
		if w := t.c.cfg.BatchWait; w > 0 {
			t.mu.Lock()
			short := len(t.queue) < t.c.cfg.BatchMax
			t.mu.Unlock()
			if short {
				time.Sleep(w)
			}
		}
		t.mu.Lock()
		if len(t.queue) == 0 {
			t.running = false
			t.lastUsed = time.Now()
			t.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(t.queue) && n < t.c.cfg.BatchMax {
			size += len(t.queue[n].ev.Payload)
			if n > 0 && size > maxBatchBytes {
				break
			}
			n++
		}
		t.batch = append(t.batch[:0], t.queue[:n]...)
		rest := copy(t.queue, t.queue[n:])
		clear(t.queue[rest:])
		t.queue = t.queue[:rest]
		t.mu.Unlock()

		if !safego.Run(ctx, "forward_send", func() { t.send(ctx) }) {
			t.complete(nil, errors.New("forward: sender panicked"))
		}
		clear(t.batch)
	}
}

// send pushes t.batch once, through the breaker, with at most one retry.
func (t *target) send(ctx context.Context) {
	t.evs, t.ids = t.evs[:0], t.ids[:0]
	for _, q := range t.batch {
		t.evs = append(t.evs, q.ev)
		t.ids = append(t.ids, q.ev.RequestId)
	}
	req := &forwardpb.PushRequest{Events: t.evs}
	md := metadata.MD{MetadataRequestID: t.ids}

	start := time.Now()
	retried := false
	resp, err := t.cb.Execute(func() (*forwardpb.PushResponse, error) {
		resp, err := t.call(ctx, req, md)
		if retryable(err) && ctx.Err() == nil {
			retried = true
			resp, err = t.call(ctx, req, md)
		}
		return resp, err
	})
	switch {
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		t.c.results["breaker_open"].Inc()
		err = fmt.Errorf("pod %s: circuit breaker open: %w", t.pod, err)
	case err != nil:
		t.c.duration.Observe(time.Since(start).Seconds())
		t.c.results["failed"].Inc()
		err = fmt.Errorf("pod %s: push: %w", t.pod, err)
	default:
		t.c.duration.Observe(time.Since(start).Seconds())
		if retried {
			t.c.results["retried_ok"].Inc()
		} else {
			t.c.results["ok"].Inc()
		}
		if len(resp.GetAccepted()) != len(t.batch) {
			err = fmt.Errorf("pod %s: push answered %d counts for %d events", t.pod, len(resp.GetAccepted()), len(t.batch))
			resp = nil
		}
	}
	t.complete(resp, err)
}

func (t *target) call(ctx context.Context, req *forwardpb.PushRequest, md metadata.MD) (*forwardpb.PushResponse, error) {
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, md), t.c.cfg.CallTimeout)
	defer cancel()
	return t.client.Push(ctx, req)
}

// complete tells every caller of the batch its own outcome.
func (t *target) complete(resp *forwardpb.PushResponse, err error) {
	for i, q := range t.batch {
		done := q.done
		if done == nil {
			continue
		}
		// Cleared first: a callback that panics is not called again by
		// the recovery path, so each caller hears exactly once.
		t.batch[i].done = nil
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
