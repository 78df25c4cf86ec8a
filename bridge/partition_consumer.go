package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	// queued follows the messages fetched and waiting for their
	// partition's worker (dws_dispatch_queue_depth); optional.
	queued interface{ Add(float64) }

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

func (w *partitionWorker) run(ctx context.Context) {
	defer close(w.done)
	began := time.Now()
	var cons jetstream.Consumer
	for {
		var err error
		if cons, err = w.takeOver(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return // stopped while taking over: nothing to report
		}
		logx.From(ctx).Warn("partition consumer not ready; retrying", "partition", w.p, "err", err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(takeoverRetry):
		}
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if ctx.Err() != nil {
			_ = m.Nak() // stopping: the next owner gets it first
			return
		}
		select {
		case w.queue <- m:
			w.set.addQueued(1)
		case <-ctx.Done():
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
		return
	}
	if w.set.onConsuming != nil {
		w.set.onConsuming(w.p, time.Since(began))
	}
	for {
		select {
		case <-ctx.Done():
			cc.Stop()
			<-cc.Closed()
			w.nakQueued()
			return
		case m := <-w.queue:
			w.set.addQueued(-1)
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
// deleted").
func (w *partitionWorker) takeOver(ctx context.Context) (jetstream.Consumer, error) {
	l := w.set.layout
	opCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := w.set.js.Stream(opCtx, l.Stream())
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", l.Stream(), err)
	}
	name := l.ConsumerName(w.p)
	if old, err := stream.Consumer(opCtx, name); err == nil {
		if had := old.CachedInfo().NumAckPending; had > 0 && w.set.onTakeover != nil {
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
