package bridge

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dws-gateway/dws/bridge/forwardpb"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/internal/safego"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// HeaderRequestID is the NATS header carrying the request id (SPEC §5).
const HeaderRequestID = "X-Request-ID"

// Deliverer is the reactor's delivery port as the bridge sees it:
// *reactor.Server implements it. Deliver encodes the event frame once,
// queues it to every local socket matching r (for RouteAdmin, each admin
// socket's subscription is matched against r.Company/r.Agent) and returns
// how many sockets accepted it. It must be safe for concurrent use and must
// not block.
type Deliverer interface {
	Deliver(r session.Route, payload []byte, m reactor.Meta) int
}

// maxPanicDeliveries bounds redeliveries of a message whose dispatch
// panics: past it the message is terminated (a poison message would
// otherwise loop forever at nak_delay).
const maxPanicDeliveries = 5

// routeCacheSize bounds the optional route cache; at fleet scale the hot
// set of (company, agent) routes is far smaller.
const routeCacheSize = 65536

// dispatchOptions sizes a dispatcher.
type dispatchOptions struct {
	podID    string
	workers  int
	queue    int           // total queued messages across workers
	nakDelay time.Duration // redelivery delay while the route registry is down
	cacheTTL time.Duration // 0 = no route cache
}

// dispatcher turns JetStream messages into local deliveries and gRPC
// forwards. Each subject hashes to one worker, so the events of one subject
// are routed one after the other in consume order (SPEC §5 ordering);
// forwards to one pod leave in that order too (forward_client.go keeps one
// RPC in flight per pod). A message is settled (ack/nak/term) once its
// worker and every forward of it are done.
type dispatcher struct {
	o      dispatchOptions
	base   context.Context
	routes session.Routes
	local  Deliverer
	fwd    *ForwardClient
	m      *metrics.Metrics
	cache  *expirable.LRU[session.Route, []string]
	queues []chan jetstream.Msg

	workers  sync.WaitGroup
	inflight sync.WaitGroup // enqueued and not yet settled
	closing  sync.Once

	// Counters resolved once: the hot path does no label lookups.
	natsByKind   [3]prometheus.Counter
	natsUnknown  prometheus.Counter
	dropNoRoute  prometheus.Counter
	dropBadSubj  prometheus.Counter
	dropPod      prometheus.Counter
	dropPoison   prometheus.Counter
	ackDelivered prometheus.Counter
	ackNoRoute   prometheus.Counter
	ackSkipped   prometheus.Counter
	nakLookup    prometheus.Counter
	nakPanic     prometheus.Counter
	termBadSubj  prometheus.Counter
	termPoison   prometheus.Counter
	termInvalid  prometheus.Counter
	dropInvalid  prometheus.Counter
	// redelivered counts messages seen more than once (NumDelivered > 1):
	// after a pod, NATS or Redis failure these may duplicate an event for
	// some sockets (SPEC §5: clients dedupe by event_id).
	redelivered atomic.Uint64
}

func newDispatcher(base context.Context, o dispatchOptions, routes session.Routes, local Deliverer, fwd *ForwardClient, m *metrics.Metrics) *dispatcher {
	if o.workers <= 0 {
		o.workers = 1
	}
	per := o.queue / o.workers
	if per < 1 {
		per = 1
	}
	d := &dispatcher{o: o, base: base, routes: routes, local: local, fwd: fwd, m: m}
	if o.cacheTTL > 0 {
		d.cache = expirable.NewLRU[session.Route, []string](routeCacheSize, nil, o.cacheTTL)
	}
	for k := range d.natsByKind {
		d.natsByKind[k] = m.NATSMessages.WithLabelValues(session.RouteKind(k).String())
	}
	d.natsUnknown = m.NATSMessages.WithLabelValues("unknown")
	d.dropNoRoute = m.Drops.WithLabelValues("no_route")
	d.dropBadSubj = m.Drops.WithLabelValues("bad_subject")
	d.dropPod = m.Drops.WithLabelValues("pod_unreachable")
	d.dropPoison = m.Drops.WithLabelValues("poison")
	d.ackDelivered = m.Acks.WithLabelValues("ack", "delivered")
	d.ackNoRoute = m.Acks.WithLabelValues("ack", "no_route")
	d.ackSkipped = m.Acks.WithLabelValues("ack", "pod_unreachable")
	d.nakLookup = m.Acks.WithLabelValues("nak", "route_lookup")
	d.nakPanic = m.Acks.WithLabelValues("nak", "panic")
	d.termBadSubj = m.Acks.WithLabelValues("term", "bad_subject")
	d.termPoison = m.Acks.WithLabelValues("term", "poison")
	d.termInvalid = m.Acks.WithLabelValues("term", DropInvalidPayload)
	d.dropInvalid = m.Drops.WithLabelValues(DropInvalidPayload)

	d.queues = make([]chan jetstream.Msg, o.workers)
	for i := range d.queues {
		q := make(chan jetstream.Msg, per)
		d.queues[i] = q
		d.workers.Add(1)
		safego.Go(base, "dispatch_worker", func(context.Context) {
			defer d.workers.Done()
			for msg := range q {
				d.m.DispatchQueueDepth.Dec()
				d.handle(msg)
			}
		})
	}
	return d
}

// enqueue hands msg to the worker owning its subject, blocking while that
// worker's queue is full: the pull consumer then stops asking for more,
// which is the backpressure we want. Called from the consume callback only,
// never after close.
func (d *dispatcher) enqueue(msg jetstream.Msg) {
	d.inflight.Add(1)
	d.m.DispatchQueueDepth.Inc()
	d.queues[workerFor(msg.Subject(), len(d.queues))] <- msg
}

// stop lets the workers exit once their queues are empty. Call it only when
// no enqueue can follow (the consume context is closed).
func (d *dispatcher) stop() {
	d.closing.Do(func() {
		for _, q := range d.queues {
			close(q)
		}
	})
}

// close stops the workers once their queues are empty and waits until
// every message they took is settled (forwards included) or ctx ends.
func (d *dispatcher) close(ctx context.Context) error {
	d.stop()
	done := make(chan struct{})
	go func() { // plain goroutine: two Waits, cannot panic
		d.workers.Wait()
		d.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// workerFor is FNV-1a of the subject: stable, allocation-free, and spreads
// company/agent/chat tokens well enough over a handful of workers.
func workerFor(subject string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(subject); i++ {
		h ^= uint32(subject[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// requestID returns the message's X-Request-ID (exact header name first;
// publishers that canonicalise it as X-Request-Id are accepted too) or "".
func requestID(msg jetstream.Msg) string {
	h := msg.Headers()
	if len(h) == 0 {
		return ""
	}
	if v := h.Get(HeaderRequestID); v != "" {
		return v
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, HeaderRequestID) {
			return v[0]
		}
	}
	return ""
}

// outcome is how a message will be settled once all its parts are done.
type outcome uint8

const (
	outDelivered outcome = iota
	outNoRoute
	outLookupFailed
	outBadSubject
	outInvalidPayload
)

// job tracks one message until it is settled. pending counts the worker's
// own part plus one per forward in flight; whoever brings it to zero
// settles the message.
type job struct {
	d        *dispatcher
	msg      jetstream.Msg
	ctx      context.Context
	delivery uint64 // NumDelivered, 0 when unknown
	pending  atomic.Int32
	skipped  atomic.Int32
	panicked atomic.Bool
	out      outcome
}

// handle routes one message; a panic anywhere in it is recovered here and
// the message NAKed, so one bad event never stops a worker.
func (d *dispatcher) handle(msg jetstream.Msg) {
	id := requestID(msg)
	if id == "" {
		id = uuid.NewString()
	}
	j := &job{d: d, msg: msg, ctx: logx.WithRequestID(d.base, id)}
	j.pending.Store(1)
	if !safego.Run(j.ctx, "dispatch", func() { d.route(j, id) }) {
		j.panicked.Store(true)
	}
	j.done()
}

// route does the worker's part of a message: parse, look up, deliver
// locally, start the forwards.
func (d *dispatcher) route(j *job, id string) {
	subject := j.msg.Subject()
	r, ok := ParseSubject(subject)
	if !ok {
		d.natsUnknown.Inc()
		j.out = outBadSubject
		return
	}
	d.natsByKind[r.Kind].Inc()
	// Checked once here, before any socket or pod sees it: the payload is
	// spliced into text frames as it is (SPEC §5).
	if !ValidPayload(j.msg.Data()) {
		j.out = outInvalidPayload
		return
	}

	meta := reactor.Meta{RequestID: id}
	if md, err := j.msg.Metadata(); err == nil {
		meta.PublishedAt = md.Timestamp
		j.delivery = md.NumDelivered
		if md.NumDelivered > 1 {
			d.redelivered.Add(1)
			d.m.NATSRedeliveries.Inc()
			logx.From(j.ctx).Debug("redelivered message", "subject", subject, "delivery", md.NumDelivered)
		}
	}

	// The admin registry key ignores company/agent (session.RouteAdmin);
	// the full route still goes to Deliver for subscription filtering.
	key := r
	if r.Kind == session.RouteAdmin {
		key = session.Route{Kind: session.RouteAdmin}
	}
	pods, err := d.pods(j.ctx, key)
	if err != nil {
		logx.From(j.ctx).Warn("route lookup failed; message will be redelivered",
			"subject", subject, "nak_delay", d.o.nakDelay.String(), "err", err.Error())
		j.out = outLookupFailed
		return
	}

	here, remote := false, 0
	for _, p := range pods {
		if p == d.o.podID {
			here = true
		} else {
			remote++
		}
	}
	data := j.msg.Data()
	accepted := 0
	// Admin sockets are matched by subscription at delivery, so this pod
	// tries its own even when the registry has not caught up with it yet.
	if here || r.Kind == session.RouteAdmin {
		// dws_deliveries_total{path="local"} is counted by the reactor,
		// per socket that took the frame.
		accepted = d.local.Deliver(r, data, meta)
	}
	if !here && remote == 0 && accepted == 0 {
		j.out = outNoRoute
		return
	}
	if remote == 0 {
		return
	}
	ev := &forwardpb.Event{
		Kind:              kindToProto(r.Kind),
		Company:           r.Company,
		Agent:             r.Agent,
		Chat:              r.Chat,
		Payload:           data,
		PublishedUnixNano: unixNano(meta.PublishedAt),
		RequestId:         id,
	}
	for _, p := range pods {
		if p == d.o.podID {
			continue
		}
		// Counted before the push so a fast completion can never bring
		// pending to zero while the worker still holds its part.
		j.pending.Add(1)
		d.fwd.PushAsync(p, ev, j)
	}
}

// pods is Routes.Pods behind the optional cache. Only successful lookups
// are cached; a cached answer may miss a pod that joined within cacheTTL,
// which is why the cache is off by default.
func (d *dispatcher) pods(ctx context.Context, r session.Route) ([]string, error) {
	if d.cache != nil {
		if p, ok := d.cache.Get(r); ok {
			return p, nil
		}
	}
	p, err := d.routes.Pods(ctx, r)
	if err == nil && d.cache != nil {
		d.cache.Add(r, p)
	}
	return p, err
}

// Forwarded implements Completion: one forward of j finished.
func (j *job) Forwarded(pod string, accepted uint32, err error) {
	if err != nil {
		j.skipped.Add(1)
		j.d.dropPod.Inc()
		logx.From(j.ctx).Warn("pod unreachable; event skipped for it",
			"pod", pod, "subject", j.msg.Subject(), "err", err.Error())
	}
	j.done()
}

func (j *job) done() {
	if j.pending.Add(-1) == 0 {
		j.settle()
	}
}

// settle acks, NAKs or terminates the message exactly once.
func (j *job) settle() {
	d := j.d
	defer d.inflight.Done()
	var err error
	switch {
	case j.panicked.Load():
		if j.delivery >= maxPanicDeliveries {
			d.termPoison.Inc()
			d.dropPoison.Inc()
			logx.From(j.ctx).Error("message terminated after repeated panics",
				"subject", j.msg.Subject(), "delivery", j.delivery)
			err = j.msg.TermWithReason("dws: dispatch panicked")
		} else {
			d.nakPanic.Inc()
			err = j.msg.NakWithDelay(d.o.nakDelay)
		}
	case j.out == outLookupFailed:
		d.nakLookup.Inc()
		err = j.msg.NakWithDelay(d.o.nakDelay)
	case j.out == outBadSubject:
		d.termBadSubj.Inc()
		d.dropBadSubj.Inc()
		logx.From(j.ctx).Warn("message on an unknown subject shape terminated", "subject", j.msg.Subject())
		err = j.msg.TermWithReason("dws: unknown subject")
	case j.out == outInvalidPayload:
		d.termInvalid.Inc()
		d.dropInvalid.Inc()
		logx.From(j.ctx).Warn("message whose payload is not UTF-8 JSON terminated",
			"subject", j.msg.Subject(), "bytes", len(j.msg.Data()))
		err = j.msg.TermWithReason("dws: payload is not UTF-8 JSON")
	case j.out == outNoRoute:
		d.ackNoRoute.Inc()
		d.dropNoRoute.Inc()
		logx.From(j.ctx).Debug("no pod holds the route", "subject", j.msg.Subject())
		err = j.msg.Ack()
	case j.skipped.Load() > 0:
		d.ackSkipped.Inc()
		err = j.msg.Ack()
	default:
		d.ackDelivered.Inc()
		err = j.msg.Ack()
	}
	if err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		// The connection is down: JetStream redelivers after ack_wait.
		logx.From(j.ctx).Warn("settling message failed; it will be redelivered",
			"subject", j.msg.Subject(), "err", err.Error())
	}
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
