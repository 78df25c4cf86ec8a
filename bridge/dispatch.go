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

// dispatchOptions configures a dispatcher.
type dispatchOptions struct {
	podID    string
	nakDelay time.Duration // pause between route lookups while the registry is down
	cacheTTL time.Duration // 0 = no route cache
}

// dispatcher turns JetStream messages into local deliveries and gRPC
// forwards. Each owned partition calls handleOrdered with its messages one
// at a time in stream order, so the events of one (company, agent) are
// routed in publish order (SPEC §5); forwards to one pod leave in that
// order too (forward_client.go keeps one RPC in flight per pod, FIFO). A
// message is settled (ack/nak/term) once its local part and every forward
// of it are done; the partition goes on with the next message meanwhile.
type dispatcher struct {
	o      dispatchOptions
	base   context.Context
	routes session.Routes
	local  Deliverer
	fwd    *ForwardClient
	m      *metrics.Metrics
	cache  *expirable.LRU[session.Route, []string]

	inflight sync.WaitGroup // handled and not yet settled

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
	waitLookup   prometheus.Counter
	nakPanic     prometheus.Counter
	retryPanic   prometheus.Counter
	termBadSubj  prometheus.Counter
	termPoison   prometheus.Counter
	termInvalid  prometheus.Counter
	dropInvalid  prometheus.Counter
	// redelivered counts messages seen more than once (NumDelivered > 1):
	// after a failure or a handover; the sockets drop the ones they
	// already have by seq.
	redelivered atomic.Uint64
}

func newDispatcher(base context.Context, o dispatchOptions, routes session.Routes, local Deliverer, fwd *ForwardClient, m *metrics.Metrics) *dispatcher {
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
	d.waitLookup = m.Acks.WithLabelValues("in_progress", "route_lookup")
	d.nakPanic = m.Acks.WithLabelValues("nak", "panic")
	d.retryPanic = m.Acks.WithLabelValues("in_progress", "panic")
	d.termBadSubj = m.Acks.WithLabelValues("term", "bad_subject")
	d.termPoison = m.Acks.WithLabelValues("term", "poison")
	d.termInvalid = m.Acks.WithLabelValues("term", DropInvalidPayload)
	d.dropInvalid = m.Drops.WithLabelValues(DropInvalidPayload)
	return d
}

// close waits until every message handled so far is settled (forwards
// included) or ctx ends. Call it once no partition runs.
func (d *dispatcher) close(ctx context.Context) error {
	done := make(chan struct{})
	go func() { // plain goroutine: one Wait, cannot panic
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

// job tracks one message until it is settled. pending counts the
// partition's own part plus one per forward in flight; whoever brings it
// to zero settles the message.
type job struct {
	d        *dispatcher
	msg      jetstream.Msg
	ctx      context.Context
	subject  string          // as published on nats.stream
	seq      uint64          // sequence in nats.stream
	part     *sync.WaitGroup // the partition's unsettled messages; may be nil
	delivery uint64          // NumDelivered, 0 when unknown
	pending  atomic.Int32
	skipped  atomic.Int32
	panicked atomic.Bool
	out      outcome
	// lookupErr is the last route lookup error, for the log.
	lookupErr error
}

// handleOrdered implements orderedHandler: it routes one message of a
// partition and returns once its local deliveries are queued and its
// forwards are queued behind the partition's earlier ones; the ack follows
// when they complete. While the route registry is unreachable it keeps the
// message (in-progress acks) and retries every nak_delay instead of NAKing
// it: a NAKed message would come back after later ones, and the sockets
// would drop it as older than what they already have. A panic is retried
// the same way, maxPanicDeliveries times, then the message is terminated.
// When ctx ends first (the partition moved), the message is NAKed for the
// next owner.
func (d *dispatcher) handleOrdered(ctx context.Context, msg jetstream.Msg, subject string, seq uint64, part *sync.WaitGroup) {
	id := requestID(msg)
	if id == "" {
		id = uuid.NewString()
	}
	j := &job{d: d, msg: msg, ctx: logx.WithRequestID(d.base, id), subject: subject, seq: seq, part: part}
	d.inflight.Add(1)
	if part != nil {
		part.Add(1)
	}
	j.pending.Store(1)
	for attempt := 1; ; attempt++ {
		j.out = outDelivered
		ok := safego.Run(j.ctx, "dispatch", func() { d.route(j, id) })
		switch {
		case !ok && attempt >= maxPanicDeliveries:
			j.panicked.Store(true)
			j.delivery = maxPanicDeliveries // settle terminates it
		case !ok:
			d.retryPanic.Inc()
		case j.out == outLookupFailed:
			if attempt == 1 {
				logx.From(j.ctx).Warn("route lookup failed; holding the message and retrying",
					"subject", subject, "retry_every", d.o.nakDelay.String(), "err", j.lookupErr.Error())
			}
			d.waitLookup.Inc()
		default:
			j.done()
			return
		}
		if j.panicked.Load() {
			break
		}
		_ = msg.InProgress()
		select {
		case <-ctx.Done():
			// Handed over meanwhile: the next owner takes it, first.
			j.out = outLookupFailed
			j.panicked.Store(false)
			j.done()
			return
		case <-time.After(d.o.nakDelay):
		}
	}
	j.done()
}

// route does the partition's part of a message: parse, look up, deliver
// locally, start the forwards. It delivers nothing when the lookup fails,
// so handleOrdered may call it again.
func (d *dispatcher) route(j *job, id string) {
	subject := j.subject
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

	meta := reactor.Meta{RequestID: id, Seq: j.seq}
	if md, err := j.msg.Metadata(); err == nil && j.delivery == 0 {
		meta.PublishedAt = md.Timestamp
		j.delivery = md.NumDelivered
		if md.NumDelivered > 1 {
			d.redelivered.Add(1)
			d.m.NATSRedeliveries.Inc()
			logx.From(j.ctx).Debug("redelivered message", "subject", subject, "delivery", md.NumDelivered)
		}
	}

	// The full route still goes to Deliver for subscription filtering.
	key := r.Key()
	pods, err := d.pods(j.ctx, key)
	if err != nil {
		j.out, j.lookupErr = outLookupFailed, err
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
		Seq:               j.seq,
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
			"pod", pod, "subject", j.subject, "err", err.Error())
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
	if j.part != nil {
		defer j.part.Done()
	}
	var err error
	switch {
	case j.panicked.Load():
		if j.delivery >= maxPanicDeliveries {
			d.termPoison.Inc()
			d.dropPoison.Inc()
			logx.From(j.ctx).Error("message terminated after repeated panics",
				"subject", j.subject, "delivery", j.delivery)
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
		logx.From(j.ctx).Warn("message on an unknown subject shape terminated", "subject", j.subject)
		err = j.msg.TermWithReason("dws: unknown subject")
	case j.out == outInvalidPayload:
		d.termInvalid.Inc()
		d.dropInvalid.Inc()
		logx.From(j.ctx).Warn("message whose payload is not UTF-8 JSON terminated",
			"subject", j.subject, "bytes", len(j.msg.Data()))
		err = j.msg.TermWithReason("dws: payload is not UTF-8 JSON")
	case j.out == outNoRoute:
		d.ackNoRoute.Inc()
		d.dropNoRoute.Inc()
		// Every event nobody is connected for passes here: DebugContext on
		// the base logger costs nothing when debug is off, where From
		// would build a logger per event (the handler adds request_id).
		logx.L().DebugContext(j.ctx, "no pod holds the route", "subject", j.subject)
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
			"subject", j.subject, "err", err.Error())
	}
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
