package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// DefaultReplayBatch is how many events one emit carries when
// ReplayOptions.Batch is 0: large enough that a 10 000-event resume is
// ~150 hand-overs to the reactor, small enough that a waiting storm of
// resume.max_concurrent replays holds little memory.
const DefaultReplayBatch = 64

// replayInactive lets the server remove a replay consumer whose pod died
// mid-replay (a live pod deletes it itself when done).
const replayInactive = 30 * time.Second

// replayResetAttempts bounds how often the ordered consumer recreates
// itself after a gap; the default (unlimited, with backoff) would let a
// replay outlive a deleted stream.
const replayResetAttempts = 3

// Results of dws_resumes_total: replayed, a resync reason, or failed.
const (
	resumeReplayed = "replayed"
	resumeFailed   = "failed"
)

// ReplayOptions configure a Replayer. The bridge takes no config type:
// cmd/ maps resume.* and nats.stream onto these.
type ReplayOptions struct {
	// Stream is nats.stream, the source stream: its sequence numbers are
	// the seq browsers hold (the derived partition stream is a work queue
	// that keeps nothing).
	Stream string
	// MaxEvents is resume.max_events: a replay of more events answers
	// too_many. 0 answers too_many to every resume that missed anything.
	MaxEvents int
	// MaxAge is resume.max_age: a replay whose first event is older
	// answers too_old. 0 = as old as the stream keeps.
	MaxAge time.Duration
	// MaxConcurrent is resume.max_concurrent (at least 1): more replays
	// wait for a slot.
	MaxConcurrent int
	// Batch is the events per emit (DefaultReplayBatch when 0), and the
	// most events a replay on its own consumer holds at once (a cached
	// replay holds references to the cache's copies).
	Batch int
	// CacheBytes is resume.cache_bytes: the bound of the block cache that
	// coalesces the replays of a reconnect storm (replay_cache.go). 0
	// reads every replay with its own filtered consumer.
	CacheBytes int
}

// Replayer reads what a resuming socket missed from nats.stream (SPEC
// §5a), implementing reactor.Replayer. Every replay shares one stream info
// request with the replays asking at the same time (infoGate). A replay
// whose range fits the cache is then served from blocks of the stream
// read once for all replays (replay_cache.go); a larger one, or any when
// CacheBytes is 0, reads with an ephemeral ordered consumer filtered to
// the socket's subjects, starting after since: the server filters and
// streams the events 64 at a time, where gets are one round trip per
// event (replay_bench_test.go has the figures of both paths, and of the
// get APIs, which also need AllowDirect on a stream dws must not modify).
// Safe for concurrent use.
type Replayer struct {
	js    jetstream.JetStream
	o     ReplayOptions
	slots chan struct{}
	info  *infoGate
	cache *replayCache // nil: CacheBytes 0

	results     map[string]prometheus.Counter
	events      prometheus.Counter
	duration    prometheus.Observer
	waiting     prometheus.Gauge
	dropInvalid prometheus.Counter
	dropBadSubj prometheus.Counter
}

var _ reactor.Replayer = (*Replayer)(nil)

// NewReplayer returns a Replayer reading o.Stream through js.
func NewReplayer(js jetstream.JetStream, o ReplayOptions, m *metrics.Metrics) *Replayer {
	if o.Batch <= 0 {
		o.Batch = DefaultReplayBatch
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 1
	}
	r := &Replayer{
		js:          js,
		o:           o,
		slots:       make(chan struct{}, o.MaxConcurrent),
		results:     map[string]prometheus.Counter{},
		events:      m.ResumeEvents,
		duration:    m.ResumeDuration,
		waiting:     m.ResumeWaiting,
		dropInvalid: m.Drops.WithLabelValues(DropInvalidPayload),
		dropBadSubj: m.Drops.WithLabelValues("bad_subject"),
		info:        &infoGate{js: js, name: o.Stream},
	}
	if o.CacheBytes > 0 {
		r.cache = newReplayCache(o.CacheBytes, m)
	}
	for _, res := range []string{resumeReplayed, reactor.ResyncTooOld, reactor.ResyncEpochChanged, reactor.ResyncTooMany, resumeFailed} {
		r.results[res] = m.Resumes.WithLabelValues(res)
	}
	return r
}

// Replay implements reactor.Replayer: it waits for a slot, checks the
// bounds of SPEC §5a before emitting anything, then emits the matching
// events after req.Since up to the stream's last sequence at the start,
// in seq order, Batch at a time. It may block; run it off the event loops.
func (r *Replayer) Replay(ctx context.Context, req reactor.ReplayRequest, emit func([]reactor.ReplayEvent) bool) (string, error) {
	if err := r.acquire(ctx); err != nil {
		r.results[resumeFailed].Inc()
		return "", err
	}
	start := time.Now()
	resync, err := r.replay(ctx, req, emit)
	<-r.slots
	r.duration.Observe(time.Since(start).Seconds())
	switch {
	case err != nil:
		r.results[resumeFailed].Inc()
		if ctx.Err() == nil { // a socket that left mid-replay is no failure to log
			logx.From(ctx).Warn("resume replay failed", "stream", r.o.Stream, "since", req.Since, "err", err)
		}
	case resync != "":
		r.results[resync].Inc()
	default:
		r.results[resumeReplayed].Inc()
	}
	return resync, err
}

// CacheStats reports the replay cache's counts (zero without a cache).
func (r *Replayer) CacheStats() CacheStats {
	if r.cache == nil {
		return CacheStats{}
	}
	return r.cache.stats()
}

// acquire takes a replay slot, counting the wait in dws_resume_waiting:
// a reconnect storm queues here instead of growing memory (SPEC §5a).
func (r *Replayer) acquire(ctx context.Context) error {
	select {
	case r.slots <- struct{}{}:
		return nil
	default:
	}
	r.waiting.Inc()
	defer r.waiting.Dec()
	select {
	case r.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Replayer) replay(ctx context.Context, req reactor.ReplayRequest, emit func([]reactor.ReplayEvent) bool) (string, error) {
	filters, err := replayFilters(req)
	if err != nil || len(filters) == 0 {
		return "", err
	}
	s, info, err := r.info.get(ctx)
	if err != nil {
		return "", err
	}
	epoch := Epoch(info)
	if req.Epoch != "" && req.Epoch != epoch {
		return reactor.ResyncEpochChanged, nil
	}
	if req.Since+1 < info.State.FirstSeq {
		return reactor.ResyncTooOld, nil // the first event the client lacks is gone
	}
	// Events after last reach the socket live: the reactor buffers them
	// while this replay runs and drops the overlap by seq.
	last := info.State.LastSeq
	if req.Since >= last {
		return "", nil
	}
	switch {
	case r.cache == nil:
	case !r.cache.fits(last-req.Since, info):
		// Counted: a storm whose range outgrows resume.cache_bytes costs
		// a consumer per replay again, which operators must see.
		r.cache.tooLarge.add(1)
	default:
		resync, err := r.replayCached(ctx, s, epoch, req.Since, last, filters, emit)
		if err == nil || ctx.Err() != nil {
			return resync, err
		}
		// Nothing was emitted (the cached path emits once every block is
		// in hand): read this replay on its own consumer instead.
		logx.From(ctx).Debug("replay cache read failed; replaying with a filtered consumer", "err", err)
		r.cache.readFailed.add(1)
	}
	return r.replayConsumer(ctx, s, req.Since, last, filters, emit)
}

// replayCached serves a replay from the block cache (replay_cache.go): it
// gathers the matching events in (since, last] (too_many past MaxEvents),
// checks the first one's age, then emits them, all from memory.
func (r *Replayer) replayCached(ctx context.Context, s jetstream.Stream, epoch string, since, last uint64, filters []string, emit func([]reactor.ReplayEvent) bool) (string, error) {
	match := newReplayMatch(filters)
	limit := max(r.o.MaxEvents, 0)
	// One walk over the blocks collects the matching events (at most
	// limit+1: too_many stops it, before reading more blocks); they are
	// emitted from that list.
	mp := matchedPool.Get().(*[]*cachedMsg)
	matched := (*mp)[:0]
	defer func() {
		if cap(matched) <= matchedPoolCap {
			clear(matched)
			*mp = matched[:0]
			matchedPool.Put(mp)
		}
	}()
	collect := func(b *cacheBlock) bool {
		return b.each(&match, since, last, func(m *cachedMsg) bool {
			matched = append(matched, m)
			return len(matched) <= limit
		})
	}
	// The blocks held already, then the rest one by one (read, or waited
	// for).
	held := r.cache.held(epoch, blockOf(since+1), last)
	for _, b := range held {
		if !collect(b) {
			return reactor.ResyncTooMany, nil
		}
	}
	for k := blockOf(since+1) + uint64(len(held)); k <= blockOf(last); k++ {
		b, err := r.cache.block(ctx, s, epoch, k, blockNeed(k, last), last)
		if err != nil {
			return "", err
		}
		if !collect(b) {
			return reactor.ResyncTooMany, nil
		}
	}
	if len(matched) == 0 {
		return "", nil
	}
	if r.tooOld(matched[0].published) {
		return reactor.ResyncTooOld, nil
	}
	out := r.newBatch(emit)
	defer out.release()
	for _, m := range matched {
		if !out.add(m) {
			return "", nil
		}
	}
	out.flush()
	return "", nil
}

// matchedPool keeps replayCached's lists of matching events: grown one
// append at a time they were 20 MB of garbage in a 15 000-socket storm,
// whose GC cycles take a core from the event loops. Lists longer than
// matchedPoolCap (resume.max_events may be 10 000) are left to the GC.
var matchedPool = sync.Pool{New: func() any {
	s := make([]*cachedMsg, 0, 128)
	return &s
}}

const matchedPoolCap = 1024

// replayConsumer reads a replay with its own ephemeral ordered consumer
// filtered to the socket's subjects: the path without the cache, and for
// a range larger than the cache should hold.
func (r *Replayer) replayConsumer(ctx context.Context, s jetstream.Stream, since, last uint64, filters []string, emit func([]reactor.ReplayEvent) bool) (string, error) {
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       since + 1,
		InactiveThreshold: replayInactive,
		MaxResetAttempts:  replayResetAttempts,
	})
	if err != nil {
		return "", fmt.Errorf("replay consumer: %w", err)
	}
	// PullMaxMessages(Batch) keeps at most about one batch buffered in the
	// client besides the one being filled.
	it, err := oc.Messages(jetstream.PullMaxMessages(r.o.Batch))
	if err != nil {
		return "", fmt.Errorf("replay consumer: %w", err)
	}
	defer r.closeConsumer(it, oc)

	// NumPending at creation counts the matching events after since up to
	// the stream's end then — possibly a few past last, published since
	// the snapshot; too_many may answer one event early at the limit.
	ci := oc.CachedInfo()
	if ci == nil {
		return "", errors.New("replay consumer: no info after creation")
	}
	if ci.NumPending > uint64(max(r.o.MaxEvents, 0)) {
		return reactor.ResyncTooMany, nil
	}
	if ci.NumPending == 0 {
		return "", nil
	}
	return r.read(ctx, it, last, emit)
}

// tooOld reports whether the first missed event is older than MaxAge.
func (r *Replayer) tooOld(published time.Time) bool {
	return r.o.MaxAge > 0 && published.Before(time.Now().Add(-r.o.MaxAge))
}

// read emits the consumer's events up to last, Batch at a time.
func (r *Replayer) read(ctx context.Context, it jetstream.MessagesContext, last uint64, emit func([]reactor.ReplayEvent) bool) (string, error) {
	out := r.newBatch(emit)
	defer out.release()
	first := true
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return "", fmt.Errorf("replay read: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return "", fmt.Errorf("replay read: %w", err)
		}
		seq := md.Sequence.Stream
		if seq > last {
			break // published after the snapshot: live delivery has it
		}
		if first {
			first = false
			if r.tooOld(md.Timestamp) {
				return reactor.ResyncTooOld, nil
			}
		}
		m := newCachedMsg(msg, md)
		if !out.add(&m) {
			return "", nil
		}
		// NumPending is what matches after this message: 0 means every
		// matching event up to last has been read.
		if seq == last || md.NumPending == 0 {
			break
		}
	}
	out.flush()
	return "", nil
}

// replayBatch gathers a replay's events into batches of Batch for emit.
type replayBatch struct {
	r    *Replayer
	emit func([]reactor.ReplayEvent) bool
	evs  []reactor.ReplayEvent
}

// batchPool recycles the batches' event slices (64 events of ~180 B):
// one per replay made a storm of 15 000 replays allocate half of its
// garbage here.
var batchPool sync.Pool

func (r *Replayer) newBatch(emit func([]reactor.ReplayEvent) bool) *replayBatch {
	b := &replayBatch{r: r, emit: emit}
	if p, ok := batchPool.Get().(*[]reactor.ReplayEvent); ok && cap(*p) >= r.o.Batch {
		b.evs = (*p)[:0]
	}
	return b
}

// release returns the batch's slice to the pool; the batch is done.
func (b *replayBatch) release() {
	if b.evs != nil {
		clear(b.evs) // payloads and frames go with their cache block
		evs := b.evs[:0]
		b.evs = nil
		batchPool.Put(&evs)
	}
}

// add appends m's event (a message the live path would drop is dropped
// and counted the same way) and emits a full batch; false: emit refused.
func (b *replayBatch) add(m *cachedMsg) bool {
	ev, ok := b.r.event(m)
	if !ok {
		return true
	}
	if b.evs == nil {
		b.evs = make([]reactor.ReplayEvent, 0, b.r.o.Batch)
	}
	b.evs = append(b.evs, ev)
	if len(b.evs) == b.r.o.Batch {
		return b.flush()
	}
	return true
}

func (b *replayBatch) flush() bool {
	if len(b.evs) == 0 {
		return true
	}
	ok := b.emit(b.evs)
	b.r.events.Add(float64(len(b.evs)))
	clear(b.evs)
	b.evs = b.evs[:0] // emit keeps nothing of a batch (reactor.Replayer)
	return ok
}

// event turns one stored message into a replayed event; a message the
// live path would drop (bad subject, payload not UTF-8 JSON) is dropped
// and counted the same way. The payload is shared, never written.
func (r *Replayer) event(m *cachedMsg) (reactor.ReplayEvent, bool) {
	if !m.routeOK {
		r.dropBadSubj.Inc()
		return reactor.ReplayEvent{}, false
	}
	if !m.valid {
		r.dropInvalid.Inc()
		return reactor.ReplayEvent{}, false
	}
	return reactor.ReplayEvent{
		Seq:     m.seq,
		Route:   m.route,
		Payload: m.data,
		Frame:   m.frame,
		Meta:    reactor.Meta{RequestID: m.requestID, PublishedAt: m.published, Seq: m.seq},
	}, true
}

// closeConsumer stops the iterator and deletes the ephemeral consumer now
// rather than after replayInactive: a storm of resumes would otherwise
// leave thousands of idle consumers on the server.
func (r *Replayer) closeConsumer(it jetstream.MessagesContext, oc jetstream.Consumer) {
	it.Stop()
	ci := oc.CachedInfo()
	if ci == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.js.DeleteConsumer(ctx, r.o.Stream, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		logx.L().Debug("replay consumer not deleted; the server removes it when idle", "consumer", ci.Name, "err", err)
	}
}

// replayFilters are the subjects a socket receives (SPEC §5): a user gets
// the chats of (C, A) and the messages of its selected chat (only those
// for ChatOnly); an admin the agents events of C and A, empty = all.
func replayFilters(req reactor.ReplayRequest) ([]string, error) {
	if req.Admin {
		c, a := req.Company, req.Agent
		if c == "" {
			c = "*"
		}
		if a == "" {
			a = "*"
		}
		if !filterToken(c) || !filterToken(a) {
			return nil, fmt.Errorf("replay: company %q / agent %q cannot be a subject token", req.Company, req.Agent)
		}
		return []string{subjectPrefix + c + "." + a + ".agents"}, nil
	}
	var filters []string
	if !req.ChatOnly {
		s, ok := Subject(session.Route{Kind: session.RouteChats, Company: req.Company, Agent: req.Agent})
		if !ok {
			return nil, fmt.Errorf("replay: company %q / agent %q cannot be a subject token", req.Company, req.Agent)
		}
		filters = append(filters, s)
	}
	if req.Chat != "" {
		s, ok := Subject(session.Route{Kind: session.RouteMessages, Company: req.Company, Agent: req.Agent, Chat: req.Chat})
		if !ok {
			return nil, fmt.Errorf("replay: chat %q cannot be a subject token", req.Chat)
		}
		filters = append(filters, s)
	}
	return filters, nil
}

// filterToken accepts "*" or one valid subject token.
func filterToken(t string) bool {
	return t == "*" || (validToken(t) && !strings.Contains(t, "."))
}
