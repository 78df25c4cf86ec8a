// Package bridge moves events between this pod and the world: the shared
// JetStream consumer, the dispatcher that turns each message into local
// deliveries and gRPC forwards, the pod-to-pod Push server and client pool,
// and the embedded NATS server of the single-node default (SPEC §5, §10).
package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/session"
)

// setupTimeout bounds the JetStream API calls of Start (stream and
// consumer lookups): seconds, because a cluster may be electing a leader.
const setupTimeout = 10 * time.Second

// Options wires a Bridge. Conn, Routes, Local and Metrics are required.
type Options struct {
	// PodID is this pod's routable gRPC address (SPEC §1): the member name
	// it has in the route registry and the address other pods push to.
	PodID    string
	NATS     config.NATS
	GRPC     config.GRPC
	Dispatch config.Dispatch
	// RouteCacheTTL caches route lookups in process (route.cache_ttl);
	// 0, the default, asks the registry for every message.
	RouteCacheTTL time.Duration
	Conn          *nats.Conn
	Routes        session.Routes
	Local         Deliverer
	Metrics       *metrics.Metrics
	// Forward is the gRPC client pool; nil makes one from GRPC and
	// Security, owned and closed by the Bridge.
	Forward *ForwardClient
	// Security is how the pool made here authenticates to other pods
	// (bearer token, TLS); unused when Forward is set.
	Security Security
}

// Bridge consumes the shared durable consumer and dispatches every event to
// this pod's sockets and, over gRPC, to the other pods holding its route.
type Bridge struct {
	o        Options
	fwd      *ForwardClient
	ownsFwd  bool
	js       jetstream.JetStream
	disp     *dispatcher
	mu       sync.Mutex
	cc       jetstream.ConsumeContext
	consumer jetstream.Consumer
	drained  bool
	closed   bool
}

// New checks o and builds a Bridge; nothing runs until Start.
func New(o Options) (*Bridge, error) {
	switch {
	case o.Conn == nil:
		return nil, errors.New("bridge: Options.Conn is required")
	case o.Routes == nil:
		return nil, errors.New("bridge: Options.Routes is required")
	case o.Local == nil:
		return nil, errors.New("bridge: Options.Local is required")
	case o.Metrics == nil:
		return nil, errors.New("bridge: Options.Metrics is required")
	case o.PodID == "":
		return nil, errors.New("bridge: Options.PodID is required")
	case o.NATS.Stream == "" || o.NATS.Consumer == "":
		return nil, errors.New("bridge: nats.stream and nats.consumer are required")
	}
	js, err := jetstream.New(o.Conn)
	if err != nil {
		return nil, fmt.Errorf("bridge: jetstream: %w", err)
	}
	b := &Bridge{o: o, js: js, fwd: o.Forward}
	if b.fwd == nil {
		dial, err := o.Security.DialOptions()
		if err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
		b.fwd = NewForwardClient(o.GRPC, o.Metrics, WithDialOptions(dial...))
		b.ownsFwd = true
	}
	return b, nil
}

// Start ensures the stream and the durable consumer exist (creating them
// as SPEC §5 says) and starts consuming. ctx bounds the set-up and carries
// the logger context; cancelling it later does not stop the Bridge (Drain
// and Close do).
func (b *Bridge) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cc != nil || b.drained {
		return errors.New("bridge: already started or stopped")
	}
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	stream, err := EnsureStream(sctx, b.js, b.o.NATS)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	cons, err := EnsureConsumer(sctx, stream, b.o.NATS)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	base := context.WithoutCancel(ctx)
	b.disp = newDispatcher(base, dispatchOptions{
		podID:    b.o.PodID,
		workers:  b.o.Dispatch.Workers,
		queue:    b.o.Dispatch.Queue,
		nakDelay: b.o.NATS.NakDelay,
		cacheTTL: b.o.RouteCacheTTL,
	}, b.o.Routes, b.o.Local, b.fwd, b.o.Metrics)
	cc, err := consume(base, cons, b.disp, b.o.NATS.FetchBatch)
	if err != nil {
		_ = b.disp.close(ctx)
		return fmt.Errorf("bridge: consume: %w", err)
	}
	b.consumer, b.cc = cons, cc
	return nil
}

// Drain is shutdown step 2 of SPEC §6: stop fetching, let every message
// already received finish (local deliveries and forwards), settle each
// (ack, or NAK when the registry failed) and flush the acks to NATS. It
// returns ctx's error if that takes longer than ctx allows (Close then
// stops what is left). Safe to call more than once.
func (b *Bridge) Drain(ctx context.Context) error {
	b.mu.Lock()
	cc, d, first := b.cc, b.disp, !b.drained
	b.drained = true
	b.mu.Unlock()
	if cc == nil || !first {
		return nil
	}
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-ctx.Done():
		return fmt.Errorf("bridge: drain: %w", ctx.Err())
	}
	if err := d.close(ctx); err != nil {
		return fmt.Errorf("bridge: drain: %w", err)
	}
	if err := b.o.Conn.FlushWithContext(ctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("bridge: flush acks: %w", err)
	}
	return nil
}

// closeWait bounds how long Close waits for the consume callback to
// return before it stops the dispatcher; past it the workers are left to
// the process exit rather than risk a send on a closed queue.
const closeWait = 2 * time.Second

// Close stops consuming at once — messages not yet settled are redelivered
// by JetStream after ack_wait — stops the dispatch workers once their
// queues are empty, and closes the forward client when the Bridge made it.
// It does not close Options.Conn. Call Drain first for a clean shutdown.
func (b *Bridge) Close() error {
	b.mu.Lock()
	cc, d, closed := b.cc, b.disp, b.closed
	b.drained, b.closed = true, true
	b.mu.Unlock()
	if closed {
		return nil
	}
	if cc != nil {
		cc.Stop()
		select {
		case <-cc.Closed():
			// No enqueue can follow: the workers may stop.
			d.stop()
		case <-time.After(closeWait):
		}
	}
	if b.ownsFwd {
		return b.fwd.Close()
	}
	return nil
}

// Redelivered reports how many messages this pod received more than once
// (JetStream redelivery after a failure); their events may have reached
// some sockets twice.
func (b *Bridge) Redelivered() uint64 {
	b.mu.Lock()
	d := b.disp
	b.mu.Unlock()
	if d == nil {
		return 0
	}
	return d.redelivered.Load()
}

// Published is what Publish reports: where the event was stored and the
// request id it carries.
type Published struct {
	Stream    string
	Sequence  uint64
	RequestID string
}

// Publish stores one event on JetStream with its X-Request-ID header (a new
// id when requestID is empty), as `dws publish` does for the newcomer demo.
// The subject must be one of the SPEC §5 shapes.
func Publish(ctx context.Context, nc *nats.Conn, subject string, data []byte, requestID string) (Published, error) {
	if _, ok := ParseSubject(subject); !ok {
		return Published{}, fmt.Errorf("subject %q is not websocket.{C}.{A}.chats|messages.{X}|agents", subject)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return Published{}, err
	}
	if requestID == "" {
		requestID = uuid.NewString()
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(HeaderRequestID, requestID)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return Published{}, fmt.Errorf("publish %s: %w", subject, err)
	}
	return Published{Stream: ack.Stream, Sequence: ack.Sequence, RequestID: requestID}, nil
}
