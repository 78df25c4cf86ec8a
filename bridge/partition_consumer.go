package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
)

// orderedHandler processes the messages of one partition one at a time,
// in stream order. handleOrdered returns once the message's ordered part
// is done (local deliveries queued, forwards queued behind the earlier
// ones of each target pod); its ack may follow later. It retries what can
// be retried (a route lookup while Redis is down) for as long as ctx
// lives rather than NAK: a NAKed message would come back after later
// ones, out of order.
//
// part counts the partition's messages not yet settled: the handler adds
// one per message and the settlement removes it, so stopping a partition
// can wait for its forwards before the lease goes to the next owner.
type orderedHandler interface {
	handleOrdered(ctx context.Context, msg jetstream.Msg, subject string, seq uint64, part *sync.WaitGroup)
}

// partitionSet runs the consumers of the partitions this pod owns; the
// session.PartitionOwner calls Start and Stop.
type partitionSet struct {
	layout        PartitionLayout
	js            jetstream.JetStream
	handler       orderedHandler
	ackWait       time.Duration
	maxAckPending int
	fetchBatch    int
	base          context.Context
	onTakeover    func(p int, had uint64) // NumAckPending a crashed owner left
	onConsuming   func(p int, took time.Duration)
	// noReset makes rewind recreate the consumer as on a server without
	// the reset API (tests).
	noReset bool
	// queued follows the messages fetched and waiting for their
	// partition's worker (dws_dispatch_queue_depth); optional.
	queued interface{ Add(float64) }
	// rewinds counts consumers rewound after lost deliveries
	// (dws_partition_rewinds_total{how=reset|recreate}); optional.
	rewinds *prometheus.CounterVec

	mu      sync.Mutex
	running map[int]*partitionWorker
}

func newPartitionSet(base context.Context, js jetstream.JetStream, l PartitionLayout, h orderedHandler, ackWait time.Duration, maxAckPending, fetchBatch int) *partitionSet {
	if fetchBatch <= 0 {
		fetchBatch = 256
	}
	return &partitionSet{base: base, js: js, layout: l, handler: h, ackWait: ackWait,
		maxAckPending: maxAckPending, fetchBatch: fetchBatch, running: map[int]*partitionWorker{}}
}

// Start begins consuming partition p. It returns at once; the consumer is
// (re)created on the worker's goroutine.
func (s *partitionSet) Start(p int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.running[p]; ok {
		return
	}
	ctx, cancel := context.WithCancel(s.base)
	w := &partitionWorker{set: s, p: p, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		queue: make(chan jetstream.Msg, s.fetchBatch)}
	s.running[p] = w
	safego.Go(ctx, "partition", w.run)
}

// Stop ends consumption of p and returns once its worker finished the
// message in hand; messages fetched but not processed are NAKed so the
// next owner gets them at once, first.
func (s *partitionSet) Stop(p int) {
	s.mu.Lock()
	w := s.running[p]
	delete(s.running, p)
	s.mu.Unlock()
	if w != nil {
		w.stop()
	}
}

// StopAll stops every partition (shutdown).
func (s *partitionSet) StopAll() {
	s.mu.Lock()
	ps := make([]int, 0, len(s.running))
	for p := range s.running {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	for _, p := range ps {
		s.Stop(p)
	}
}

// partitionWorker consumes one partition.
type partitionWorker struct {
	set    *partitionSet
	p      int
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	queue  chan jetstream.Msg
	// unsettled: messages handed to the handler and not yet acked.
	unsettled sync.WaitGroup
}

// pullHeartbeat and pullExpiry shape the consumer's pull requests. On a
// JetStream cluster a pull request lives on the node leading the consumer;
// when that node dies (kill -9, no leadership hand-over) the request dies
// with it and nothing tells the client, which notices only when two
// heartbeats are missed and then pulls again, from the new leader. The
// same happens to the first pull of a new replicated consumer while it
// elects its first leader. nats.go's defaults (30 s expiry, 15 s
// heartbeat) left such a partition unconsumed for 30 s (issue 13 test);
// these notice within 1 s, for two heartbeats a second per idle partition
// (DESIGN "Where it runs at scale").
const (
	pullHeartbeat = 500 * time.Millisecond
	pullExpiry    = 5 * time.Second
)

// takeoverRetry paces attempts to create a partition's consumer while
// NATS is unreachable.
const takeoverRetry = 250 * time.Millisecond

// gapRestartPause paces restarts of a partition whose deliveries keep
// arriving with gaps, so a pathological case cannot spin on the
// JetStream API.
const gapRestartPause = time.Second

// resetTimeout bounds one attempt to reset a partition's consumer: the
// request goes to the consumer's leader, which answers within a Raft round
// trip; a consumer electing a leader has no responder (answered at once)
// or drops the request, which is then asked again.
const resetTimeout = time.Second

// minResetMajor.minResetMinor is the first nats-server with the consumer
// reset API (ADR-60).
const minResetMajor, minResetMinor = 2, 14

func (w *partitionWorker) run(ctx context.Context) {
	defer close(w.done)
	began := time.Now()
	cons := w.takeOverRetrying(ctx, false)
	if cons == nil {
		return // stopped while taking over: nothing to report
	}
	if w.set.onConsuming != nil {
		w.set.onConsuming(w.p, time.Since(began))
	}
	var lastGap time.Time
	for w.consume(ctx, cons) {
		// Deliveries were lost on the way: start again at the oldest
		// unacked event, at once unless the last restart was just now.
		if time.Since(lastGap) < gapRestartPause && !pause(ctx) {
			return
		}
		lastGap = time.Now()
		if cons = w.rewind(ctx, cons); cons == nil {
			return
		}
	}
}

// errNotOurs: the partition's consumer is not the one this worker created
// any more; a new owner recreated it.
var errNotOurs = errors.New("the partition consumer was recreated by another owner")

// errNoReset: the server predates the consumer reset API.
var errNoReset = errors.New("nats-server without consumer reset")

// rewind puts the partition's consumer back at its oldest unacked event
// after lost deliveries (consume). On nats-server >= 2.14 a reset to the
// ack floor does it in one request to the consumer's leader, so it
// completes as soon as the consumer has a leader; older servers get the
// consumer recreated, which also needs the meta leader and elects a new
// Raft group (seconds on a loaded cluster). A rewind done is counted in
// dws_partition_rewinds_total by how. It returns nil when ctx ended
// or the consumer is no longer this worker's: then it stops the worker,
// as a "consumer deleted" does.
func (w *partitionWorker) rewind(ctx context.Context, cons jetstream.Consumer) jetstream.Consumer {
	created := cons.CachedInfo().Created
	for {
		err := w.reset(ctx, cons, created)
		switch {
		case err == nil:
			w.set.countRewind("reset")
			return cons
		case errors.Is(err, errNoReset):
			if cons = w.takeOverRetrying(ctx, true); cons != nil {
				w.set.countRewind("recreate")
			}
			return cons
		case errors.Is(err, errNotOurs):
			logx.From(ctx).Warn("partition consumer recreated by a new owner; stopping", "partition", w.p)
			w.cancel()
			return nil
		case ctx.Err() != nil:
			return nil
		}
		logx.From(ctx).Warn("partition consumer reset failed; retrying", "partition", w.p, "err", err.Error())
		if !pause(ctx) {
			return nil
		}
	}
}

// reset checks that the partition's consumer is still the one created at
// created and resets it to its ack floor: it delivers again from the
// oldest unacked event, with delivery sequences from 1.
func (w *partitionWorker) reset(ctx context.Context, cons jetstream.Consumer, created time.Time) error {
	opCtx, cancel := context.WithTimeout(ctx, resetTimeout)
	defer cancel()
	info, err := cons.Info(opCtx)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return errNotOurs
	}
	if err != nil {
		return err
	}
	if !info.Created.Equal(created) {
		return errNotOurs
	}
	if !w.set.canReset() {
		return errNoReset
	}
	_, err = w.set.js.ResetConsumer(opCtx, w.set.layout.Stream(), info.Name)
	return err
}

// countRewind counts one rewind done by how (reset or recreate).
func (s *partitionSet) countRewind(how string) {
	if s.rewinds != nil {
		s.rewinds.WithLabelValues(how).Inc()
	}
}

// canReset reports whether the server this pod is connected to has the
// consumer reset API.
func (s *partitionSet) canReset() bool {
	if s.noReset {
		return false
	}
	major, minor, ok := parseVersion(s.js.Conn().ConnectedServerVersion())
	return ok && (major > minResetMajor || major == minResetMajor && minor >= minResetMinor)
}

// pause waits takeoverRetry; false when ctx ended first.
func pause(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(takeoverRetry):
		return true
	}
}

// takeOverRetrying calls takeOver until it succeeds or ctx ends (nil).
func (w *partitionWorker) takeOverRetrying(ctx context.Context, restart bool) jetstream.Consumer {
	for {
		cons, err := w.takeOver(ctx, restart)
		if err == nil {
			return cons
		}
		if ctx.Err() != nil {
			return nil
		}
		logx.From(ctx).Warn("partition consumer not ready; retrying", "partition", w.p, "err", err.Error())
		if !pause(ctx) {
			return nil
		}
	}
}

// consume hands cons's messages to the handler in the order they arrive
// until ctx ends (false) or a delivery is seen missing (true: the caller
// rewinds the consumer).
//
// A pull consumer does not deliver in stream order when deliveries are
// lost on the way: a message the server sent that never reached this
// client (its NATS server killed with the message in its buffers, the
// consumer's leader killed after sending it, a slow-consumer drop) stays
// pending and comes back only after ack_wait, after later ones of its
// partition. The sockets would then drop it as older than what they
// already have: an event lost (issue 13 test, 1 in 4 runs under load: the
// 9 deliveries in flight when a pod's server was killed came back 2 s
// later, behind newer ones). The consumer's delivery sequence, one more
// per delivery redeliveries included, shows such a loss as a gap at the
// next message. Rewinding the consumer to its ack floor (rewind) then
// resumes at the oldest unacked event of the work queue, in order; what
// was handled and not yet acked comes again and the sockets drop it by
// seq. A sequence that goes back
// (a new consumer leader that had not heard of the last deliveries sends
// them again) is in order and is taken as it is.
func (w *partitionWorker) consume(ctx context.Context, cons jetstream.Consumer) (gap bool) {
	// Its own context: on a gap the callback must stop blocking on a
	// queue nobody reads any more.
	cctx, stopDelivery := context.WithCancel(ctx)
	defer stopDelivery()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if cctx.Err() != nil {
			_ = m.Nak() // stopping: the next owner gets it first
			return
		}
		select {
		case w.queue <- m:
			w.set.addQueued(1)
		case <-cctx.Done():
			_ = m.Nak()
		}
	},
		jetstream.PullMaxMessages(w.set.fetchBatch),
		jetstream.PullExpiry(pullExpiry),
		jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrConsumerDeleted) {
				// Another pod took the partition over (it recreates the
				// consumer): stop delivering at once.
				logx.From(ctx).Warn("partition consumer deleted by a new owner; stopping", "partition", w.p)
				w.cancel()
				return
			}
			logx.From(ctx).Debug("partition consume", "partition", w.p, "err", err.Error())
		}),
	)
	if err != nil {
		logx.From(ctx).Error("partition consume failed", "partition", w.p, "err", err.Error())
		return false
	}
	stop := func() {
		stopDelivery()
		cc.Stop()
		<-cc.Closed()
		w.nakQueued()
	}
	var delivered uint64 // the last delivery sequence handed on
	for {
		select {
		case <-ctx.Done():
			stop()
			return false
		case m := <-w.queue:
			w.set.addQueued(-1)
			if md, err := m.Metadata(); err == nil {
				d := md.Sequence.Consumer
				if d > delivered+1 {
					logx.From(ctx).Warn("partition deliveries lost on the way; rewinding its consumer to the oldest unacked event",
						"partition", w.p, "missing", d-delivered-1, "after_delivery", delivered)
					_ = m.Nak()
					stop()
					return true
				}
				delivered = d
			}
			subject, _, ok := w.set.layout.OriginalSubject(m.Subject())
			seq, sok := OriginSeq(m.Headers())
			if !ok || !sok {
				logx.From(ctx).Warn("partition message of an unknown shape terminated", "subject", m.Subject())
				_ = m.TermWithReason("dws: not a partition message")
				continue
			}
			w.set.handler.handleOrdered(ctx, m, subject, seq, &w.unsettled)
		}
	}
}

// takeOver (re)creates the partition's durable consumer. Recreating, not
// binding, is the failover (SPEC §5): the stream is a work queue, so a new
// consumer starts at the oldest event not yet acked, at once, instead of
// after ack_wait for what a crashed owner had pulled; and it fences a
// previous owner that is still pulling (its consume fails with "consumer
// deleted"). restart is a recreate after lost deliveries (consume): what
// is pending then is this pod's own, not a previous owner's.
func (w *partitionWorker) takeOver(ctx context.Context, restart bool) (jetstream.Consumer, error) {
	l := w.set.layout
	opCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := w.set.js.Stream(opCtx, l.Stream())
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", l.Stream(), err)
	}
	name := l.ConsumerName(w.p)
	if old, err := stream.Consumer(opCtx, name); err == nil {
		if had := old.CachedInfo().NumAckPending; had > 0 && !restart && w.set.onTakeover != nil {
			w.set.onTakeover(w.p, uint64(had))
		}
		if err := stream.DeleteConsumer(opCtx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("delete consumer %s: %w", name, err)
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("consumer %s: %w", name, err)
	}
	c, err := stream.CreateConsumer(opCtx, l.PartitionConsumerConfig(w.p, w.set.ackWait, w.set.maxAckPending))
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", name, err)
	}
	return c, nil
}

// settleWait bounds how long a stopping partition waits for its forwards
// to be acked before its lease goes to the next owner. Past it the next
// owner redelivers them, and the sockets drop what they already have.
const settleWait = 2 * time.Second

func (w *partitionWorker) stop() {
	w.cancel()
	<-w.done
	settled := make(chan struct{})
	go func() { // plain goroutine: one Wait, cannot panic
		w.unsettled.Wait()
		close(settled)
	}()
	select {
	case <-settled:
	case <-time.After(settleWait):
	}
}

func (s *partitionSet) addQueued(n float64) {
	if s.queued != nil {
		s.queued.Add(n)
	}
}

// nakQueued gives back what was fetched and not processed.
func (w *partitionWorker) nakQueued() {
	for {
		select {
		case m := <-w.queue:
			w.set.addQueued(-1)
			_ = m.Nak()
		default:
			return
		}
	}
}
