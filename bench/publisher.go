package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/internal/safego"
)

// Publisher publishes the bench's events to JetStream: one chats subject per
// group, sequence numbers per subject from 0, the publish time in the
// payload. Run is called from one goroutine at a time.
type Publisher struct {
	groups   int
	route    func(g int) int // index into js: which broker group g goes to
	conns    []*nats.Conn
	js       []jetstream.JetStream
	subjects []string
	pad      string
	next     []int64 // next sequence per group (Run's goroutine)
	acked    []atomic.Int64
	failed   []atomic.Int64
	pending  chan pendingPub
	ackDone  chan struct{}
	// lastErr is the latest publish error, for the report.
	mu      sync.Mutex
	lastErr string
	buf     []byte
}

type pendingPub struct {
	f jetstream.PubAckFuture
	g int
}

// PublisherOptions configures NewPublisher.
type PublisherOptions struct {
	// URLs are the brokers; group g goes to URLs[Route(g)] (Route nil = 0).
	URLs  []string
	Route func(g int) int
	// Groups is the number of subjects.
	Groups int
	// PayloadBytes pads each payload to about this size (0 = no padding).
	PayloadBytes int
}

// NewPublisher connects to every broker.
func NewPublisher(o PublisherOptions) (*Publisher, error) {
	p := &Publisher{
		groups: o.Groups, route: o.Route,
		next:    make([]int64, o.Groups),
		acked:   make([]atomic.Int64, o.Groups),
		failed:  make([]atomic.Int64, o.Groups),
		pending: make(chan pendingPub, 1<<16),
		ackDone: make(chan struct{}),
	}
	if p.route == nil {
		p.route = func(int) int { return 0 }
	}
	for g := range o.Groups {
		p.subjects = append(p.subjects, ChatsSubject(g))
	}
	if o.PayloadBytes > 160 {
		p.pad = strings.Repeat("x", o.PayloadBytes-160)
	}
	for _, u := range o.URLs {
		nc, err := nats.Connect(u, nats.Name("dws-bench publisher"))
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("publisher: connect %s: %w", u, err)
		}
		p.conns = append(p.conns, nc)
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
		if err != nil {
			p.Close()
			return nil, err
		}
		p.js = append(p.js, js)
	}
	safego.Go(context.Background(), "bench.publisher.acks", func(context.Context) { p.collect() })
	return p, nil
}

// collect counts acks in publish order; a future resolves within the
// publisher's ack timeout, so the channel never stalls for long.
func (p *Publisher) collect() {
	defer close(p.ackDone)
	for pp := range p.pending {
		select {
		case <-pp.f.Ok():
			p.acked[pp.g].Add(1)
		case err := <-pp.f.Err():
			p.failed[pp.g].Add(1)
			p.mu.Lock()
			p.lastErr = err.Error()
			p.mu.Unlock()
		}
	}
}

// Run publishes at rate events/s, round-robin over the groups, for dur,
// tagging each payload with phase (0 = untracked warm-up). It returns the
// number of events sent; it stops early when ctx ends.
func (p *Publisher) Run(ctx context.Context, rate float64, dur time.Duration, phase int) int64 {
	if rate <= 0 || dur <= 0 {
		return 0
	}
	start := time.Now()
	var sent int64
	for {
		el := time.Since(start)
		if el >= dur || ctx.Err() != nil {
			return sent
		}
		due := int64(el.Seconds() * rate)
		for ; sent < due; sent++ {
			p.publish(int(sent%int64(p.groups)), phase)
		}
		// Sleep only when ahead: the timer's granularity must not cap
		// the rate (a burst of due events goes out back to back).
		time.Sleep(time.Millisecond)
	}
}

func (p *Publisher) publish(g, phase int) {
	seq := p.next[g]
	p.next[g]++
	gs := strconv.Itoa(g)
	b := p.buf[:0]
	b = append(b, `{"event_id":"b`...)
	b = append(b, gs...)
	b = append(b, '-')
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `","company_id":"c`...)
	b = append(b, gs...)
	b = append(b, `","agent_id":"a`...)
	b = append(b, gs...)
	b = append(b, `","row_data":{"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"subject":"`...)
	b = append(b, p.subjects[g]...)
	b = append(b, `","phase":`...)
	b = strconv.AppendInt(b, int64(phase), 10)
	if p.pad != "" {
		b = append(b, `,"pad":"`...)
		b = append(b, p.pad...)
		b = append(b, '"')
	}
	b = append(b, `,"ts":`...)
	// The clock is read last, right before the publish call.
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, "}}"...)
	p.buf = b
	msg := &nats.Msg{
		Subject: p.subjects[g],
		Data:    append([]byte(nil), b...),
		Header:  nats.Header{bridge.HeaderRequestID: []string{"bench-" + gs + "-" + strconv.FormatInt(seq, 10)}},
	}
	f, err := p.js[p.route(g)].PublishMsgAsync(msg)
	if err != nil {
		p.failed[g].Add(1)
		p.mu.Lock()
		p.lastErr = err.Error()
		p.mu.Unlock()
		return
	}
	p.pending <- pendingPub{f: f, g: g}
}

// Wait waits until every publish so far is acked or failed, up to timeout.
func (p *Publisher) Wait(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var done int64
		for g := range p.groups {
			done += p.acked[g].Load() + p.failed[g].Load()
		}
		var total int64
		for _, n := range p.next {
			total += n
		}
		if done >= total {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Counts returns, per group, the sequences used (next) and how many of them
// failed; the events stored are next − failed, sequences 0..next-1.
func (p *Publisher) Counts() (next, failed []int64) {
	next = append([]int64(nil), p.next...)
	for g := range p.groups {
		failed = append(failed, p.failed[g].Load())
	}
	return next, failed
}

// Totals returns the events acked and failed so far.
func (p *Publisher) Totals() (acked, failed int64) {
	for g := range p.groups {
		acked += p.acked[g].Load()
		failed += p.failed[g].Load()
	}
	return acked, failed
}

// LastError is the latest publish error ("" = none).
func (p *Publisher) LastError() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// Close flushes and disconnects.
func (p *Publisher) Close() {
	for _, nc := range p.conns {
		_ = nc.Flush()
		nc.Close()
	}
	if p.pending != nil {
		close(p.pending)
		p.pending = nil
	}
}
