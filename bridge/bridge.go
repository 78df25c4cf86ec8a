// Package bridge moves events between this pod and the world: the
// partitioned JetStream consumers of the partitions this pod owns, the
// dispatcher that turns each message into local deliveries and gRPC
// forwards in stream order, the pod-to-pod Push server and client pool,
// and the embedded NATS server of the single-node default (SPEC §5, §10).
package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/internal/safego"
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
	// Leases is where the pods agree who consumes which partition
	// (session.RedisPartitionLeases across a fleet); nil is a single pod
	// that owns every partition (in-memory leases).
	Leases session.PartitionLeases
	// EmbeddedServer says Conn reaches a NATS server embedded in this
	// process: the derived partition stream is then created in memory
	// (PartitionLayout.Memory).
	EmbeddedServer bool
	// SkipVersionCheck lets tests that know their server skip
	// CheckServerVersion; never set it in production.
	SkipVersionCheck bool
}

// Bridge consumes the partitions this pod owns and dispatches every event
// to this pod's sockets and, over gRPC, to the other pods holding its
// route, in stream order per (company, agent) (SPEC §5).
type Bridge struct {
	o       Options
	fwd     *ForwardClient
	ownsFwd bool
	js      jetstream.JetStream
	layout  PartitionLayout
	disp    *dispatcher
	set     *partitionSet
	owner   *session.PartitionOwner
	stopRun context.CancelFunc
	ranDone chan struct{}
	epoch   string
	mu      sync.Mutex
	started bool
	drained bool
	closed  bool
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

// Start checks the NATS server version, ensures the stream (creating it as
// SPEC §5 says) and the dws-owned partition stream derived from it, and
// starts taking this pod's share of the partitions. ctx bounds the set-up
// and carries the logger context; cancelling it later does not stop the
// Bridge (Drain and Close do).
func (b *Bridge) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.drained {
		return errors.New("bridge: already started or stopped")
	}
	if !b.o.SkipVersionCheck {
		if err := CheckServerVersion(b.o.Conn); err != nil {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	stream, err := EnsureStream(sctx, b.js, b.o.NATS)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	info, err := stream.Info(sctx)
	if err != nil {
		return fmt.Errorf("bridge: stream %q: %w", b.o.NATS.Stream, err)
	}
	b.layout = PartitionLayout{Source: b.o.NATS.Stream, Consumer: b.o.NATS.Consumer, Partitions: b.o.NATS.Partitions, Memory: b.o.EmbeddedServer}
	part, err := EnsurePartitionStream(sctx, b.js, b.layout, info)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	b.epoch = Epoch(info)

	base := context.WithoutCancel(ctx)
	b.disp = newDispatcher(base, dispatchOptions{
		podID:    b.o.PodID,
		nakDelay: b.o.NATS.NakDelay,
		cacheTTL: b.o.RouteCacheTTL,
	}, b.o.Routes, b.o.Local, b.fwd, b.o.Metrics)
	fetch, pending := partitionBudget(b.o.NATS)
	b.set = newPartitionSet(base, b.js, b.layout, b.disp, b.o.NATS.AckWait, pending, fetch)
	m := b.o.Metrics
	b.set.queued = m.DispatchQueueDepth
	b.set.rewinds = m.PartitionRewinds
	b.set.onTakeover = func(p int, had uint64) {
		m.PartitionTakeoverPending.Add(float64(had))
		logx.From(base).Info("partition taken over with events pending", "partition", p, "pending", had)
	}
	b.set.onConsuming = func(_ int, took time.Duration) { m.PartitionTakeover.Observe(took.Seconds()) }
	leases := b.o.Leases
	if leases == nil {
		leases = session.NewMemoryPartitionLeases()
	}
	b.owner = session.NewPartitionOwner(leases, session.PartitionOwnerOptions{
		PodID:      b.o.PodID,
		Partitions: b.o.NATS.Partitions,
		Failover:   b.o.NATS.Failover,
		Start:      b.set.Start,
		Stop:       b.set.Stop,
		Healthy: func() error {
			if !b.o.Conn.IsConnected() {
				return errors.New("nats disconnected")
			}
			return nil
		},
		OnChange: func(p int, owned bool, reason string) {
			m.PartitionChanges.WithLabelValues(reason).Inc()
			if owned {
				m.PartitionsOwned.Inc()
			} else {
				m.PartitionsOwned.Dec()
			}
			logx.From(base).Debug("partition ownership", "partition", p, "owned", owned, "reason", reason)
		},
	})
	runCtx, stop := context.WithCancel(base)
	b.stopRun, b.ranDone = stop, make(chan struct{})
	safego.Go(runCtx, "bridge.partitions", func(ctx context.Context) {
		defer close(b.ranDone)
		b.owner.Run(ctx)
	})
	if part.CachedInfo().Config.Replicas > 1 {
		// Only a replicated stream loses its source with a node; one
		// server restarts its sources itself when it comes back.
		w := &sourceWatch{nc: b.o.Conn, js: b.js, layout: b.layout, active: func() bool {
			return slices.Contains(b.owner.Owned(), 0)
		}, restarts: b.o.Metrics.PartitionSourceRestarts}
		safego.Go(runCtx, "bridge.source_watch", w.run)
	}
	b.started = true
	return nil
}

// minPartitionAckPending keeps one hot (company, agent) flowing while its
// forwards wait on a slow pod: at most this many of its events in flight
// (bounded memory: 64 partitions × 256 × the payload size on a pod that
// owns them all).
const minPartitionAckPending = 256

// partitionBudget splits nats.fetch_batch and nats.max_ack_pending over
// the partitions: they are pod-wide budgets in the configuration, and a
// pod may own every partition (single pod, or the last one standing), so
// each partition gets its share, with floors.
func partitionBudget(n config.NATS) (fetch, pending int) {
	parts := max(n.Partitions, 1)
	fetch = max(n.FetchBatch/parts, 16)
	pending = max(n.MaxAckPending/parts, minPartitionAckPending)
	return fetch, pending
}

// Epoch is the stream's epoch for ready frames (SPEC §5); "" before Start.
func (b *Bridge) Epoch() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.epoch
}

// Owned lists the partitions this pod consumes now (for /ready).
func (b *Bridge) Owned() []int {
	b.mu.Lock()
	o := b.owner
	b.mu.Unlock()
	if o == nil {
		return nil
	}
	return o.Owned()
}

// Layout names the derived stream and its consumers; zero before Start.
func (b *Bridge) Layout() PartitionLayout {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.layout
}

// Drain is shutdown step 2 of SPEC §6: hand every partition over (leave
// the membership so the other pods take them at once, stop consuming each
// after the message in hand, NAK what was fetched and not processed so
// the next owner gets it first), let every message already handled settle
// (local deliveries and forwards) and flush the acks to NATS. It returns
// ctx's error if that takes longer than ctx allows (Close then stops what
// is left). Safe to call more than once.
func (b *Bridge) Drain(ctx context.Context) error {
	b.mu.Lock()
	owner, d, first := b.owner, b.disp, !b.drained
	b.drained = true
	b.mu.Unlock()
	if owner == nil || !first {
		return nil
	}
	errOwner := owner.Drain(ctx)
	b.stopRun()
	if err := d.close(ctx); err != nil {
		return fmt.Errorf("bridge: drain: %w", err)
	}
	if err := b.o.Conn.FlushWithContext(ctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("bridge: flush acks: %w", err)
	}
	if errOwner != nil {
		// The leases lapse on their own within nats.failover.
		logx.From(ctx).Warn("partition hand-over incomplete", "err", errOwner.Error())
	}
	return nil
}

// Close stops consuming at once — a message not yet settled goes to the
// partition's next owner, which recreates the consumer at the oldest
// unacked event — and closes the forward client when the Bridge made it.
// It does not close Options.Conn. Call Drain first for a clean shutdown.
func (b *Bridge) Close() error {
	b.mu.Lock()
	stop, ran, closed := b.stopRun, b.ranDone, b.closed
	b.drained, b.closed = true, true
	b.mu.Unlock()
	if closed {
		return nil
	}
	if stop != nil {
		stop() // the owner's Run stops every partition and releases them
		select {
		case <-ran:
		case <-time.After(closeWait):
		}
	}
	if b.ownsFwd {
		return b.fwd.Close()
	}
	return nil
}

// closeWait bounds how long Close waits for the partitions to stop; past
// it they are left to the process exit.
const closeWait = 5 * time.Second

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
