package bridge

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// The consumer comparison of perf/fanout-consumer.md: the shipped pull
// consumer (Consume with PullMaxMessages = nats.fetch_batch) against a push
// consumer with a queue group, both feeding the same dispatcher with a
// no-op Deliverer, against an embedded nats-server in this process.
//
//	go test ./bridge -run '^$' -bench 'Consume' -benchtime 20000x -count 3
//
// backlog: b.N events stored first, then consumed: saturation throughput.
// paced:   b.N events published at benchRate/s while consuming: latency
//          from the publisher's clock to Deliver, and how many events
//          reached the (shared) Deliverer after a later event of their
//          subject — with 2 pods, per-subject order is only kept within a pod.

const (
	benchRate     = 5000 // events/s in the paced runs, ~1/4 of saturation
	benchSubjects = 64   // distinct (company, agent) pairs
	benchPayload  = 300  // bytes, about an EnrichedEventPayload
)

// selfRoutes is a route registry in which this pod holds every route.
type selfRoutes string

func (s selfRoutes) Join(context.Context, session.Route) error { return nil }
func (s selfRoutes) Leave(session.Route)                       {}
func (s selfRoutes) Pods(context.Context, session.Route) ([]string, error) {
	return []string{string(s)}, nil
}

// latencyDeliverer stands for one socket subscribed to every subject,
// whichever pod delivers: it records publisher-clock → Deliver latency from
// the payload's first 8 bytes (a UnixNano stamp) and counts order
// inversions per subject from bytes 8..16 (sequence) and 16..20 (subject).
type latencyDeliverer struct {
	lat  []time.Duration
	next atomic.Int64

	mu         sync.Mutex
	last       [benchSubjects]uint64
	inversions int
}

func (l *latencyDeliverer) Deliver(_ session.Route, p []byte, _ reactor.Meta) int {
	if len(p) < 42 {
		return 1
	}
	var raw [20]byte
	if _, err := hex.Decode(raw[:], p[1:41]); err != nil {
		return 1
	}
	p = raw[:]
	if i := l.next.Add(1) - 1; int(i) < len(l.lat) {
		l.lat[i] = time.Duration(time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(p)))
	}
	seq, subj := binary.LittleEndian.Uint64(p[8:]), binary.LittleEndian.Uint32(p[16:])
	l.mu.Lock()
	if seq < l.last[subj] {
		l.inversions++
	} else {
		l.last[subj] = seq
	}
	l.mu.Unlock()
	return 1
}

type consumeRun struct {
	mode  string // pull | pull1024 | push
	pods  int    // consumers sharing the durable
	paced bool
	// stuck makes the last pod's Deliverer block (a pod wedged on a bad
	// socket or store): how much do the healthy pods still deliver?
	stuck  bool
	n      int
	report bool
}

// runConsume publishes and consumes r.n events and reports msgs/s, CPU µs
// per message (whole process: publisher, nats-server and consumer) and, when
// paced, latency percentiles.
func runConsume(b *testing.B, r consumeRun) {
	_, url := startNATS(b)
	pub := connect(b, url)
	cfg := testNATS()
	ctx := context.Background()
	js := newJS(b, pub)
	stream, err := EnsureStream(ctx, js, cfg)
	if err != nil {
		b.Fatal(err)
	}
	if r.mode == "pull1024" {
		cfg.FetchBatch = 1024
	}
	switch r.mode {
	case "pull", "pull1024", "iter":
		if _, err := EnsureConsumer(ctx, stream, cfg); err != nil {
			b.Fatal(err)
		}
	case "push":
		pc := ConsumerConfig(cfg)
		pc.DeliverSubject = "_dws.deliver." + nuid.Next()
		pc.DeliverGroup = cfg.Consumer
		if _, err := stream.CreatePushConsumer(ctx, pc); err != nil {
			b.Fatal(err)
		}
	}

	lat := &latencyDeliverer{lat: make([]time.Duration, r.n)}
	release := make(chan struct{})
	b.Cleanup(func() { close(release) })
	blocked := delivererFunc(func(session.Route, []byte, reactor.Meta) int { <-release; return 0 })
	ms := make([]*metrics.Metrics, r.pods)
	start := func() {
		for i := range r.pods {
			nc := connect(b, url)
			ms[i] = metrics.New()
			id := fmt.Sprintf("pod-%d", i)
			fwd := NewForwardClient(testGRPC(), ms[i])
			b.Cleanup(func() { _ = fwd.Close() })
			var local Deliverer = lat
			if r.stuck && i == r.pods-1 {
				local = blocked
			}
			d := newDispatcher(ctx, dispatchOptions{podID: id, workers: 8, queue: 1024, nakDelay: cfg.NakDelay}, selfRoutes(id), local, fwd, ms[i])
			var cc jetstream.ConsumeContext
			switch r.mode {
			case "pull", "pull1024":
				c, err := newJS(b, nc).Consumer(ctx, cfg.Stream, cfg.Consumer)
				if err != nil {
					b.Fatal(err)
				}
				cc, err = consume(ctx, c, d, cfg.FetchBatch)
				if err != nil {
					b.Fatal(err)
				}
			case "iter":
				c, err := newJS(b, nc).Consumer(ctx, cfg.Stream, cfg.Consumer)
				if err != nil {
					b.Fatal(err)
				}
				it, err := c.Messages(jetstream.PullMaxMessages(cfg.FetchBatch))
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					for {
						m, err := it.Next()
						if err != nil {
							return
						}
						d.enqueue(m)
					}
				}()
				b.Cleanup(it.Stop)
				continue
			case "push":
				c, err := newJS(b, nc).PushConsumer(ctx, cfg.Stream, cfg.Consumer)
				if err != nil {
					b.Fatal(err)
				}
				cc, err = c.Consume(d.enqueue)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.Cleanup(func() { cc.Stop() })
		}
	}
	acked := func() int {
		n := 0
		for _, m := range ms {
			if m != nil {
				n += int(counter(m.Acks.WithLabelValues("ack", "delivered")))
			}
		}
		return n
	}
	subjects := benchSubjectList()
	waitPub := func() { waitPublished(b, js) }

	if !r.paced { // stamps are old by the time they are consumed: no latency here
		for i := 0; i < r.n; i++ {
			if _, err := js.PublishAsync(subjects[i%benchSubjects], stamp(i)); err != nil {
				b.Fatal(err)
			}
			if i%1000 == 999 { // stay under the async publish window
				waitPub()
			}
		}
		waitPub()
	}
	cpu0 := cpuTime()
	t0 := time.Now()
	b.ResetTimer()
	start()
	if r.paced {
		publishPaced(b, js, subjects, r.n)
	}
	if r.stuck {
		// The stuck pod's messages come back only after ack_wait (30 s):
		// measure what the healthy pod delivered a second after the last
		// publish.
		time.Sleep(time.Second)
		b.StopTimer()
		got := int(lat.next.Load())
		b.ReportMetric(100*float64(got)/float64(r.n), "%delivered")
		lats := lat.lat[:min(got, r.n)]
		slices.Sort(lats)
		if len(lats) > 0 {
			b.ReportMetric(float64(lats[int(0.99*float64(len(lats)-1))].Microseconds()), "p99-µs")
		}
		return
	}
	deadline := time.Now().Add(120 * time.Second)
	for acked() < r.n {
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d of %d acked", r.mode, acked(), r.n)
		}
		time.Sleep(200 * time.Microsecond)
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	cpu := cpuTime() - cpu0

	b.ReportMetric(float64(r.n)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(r.n), "cpu-µs/msg")
	if r.paced {
		got := lat.lat[:min(int(lat.next.Load()), r.n)]
		slices.Sort(got)
		q := func(p float64) float64 { return float64(got[int(p*float64(len(got)-1))].Microseconds()) }
		b.ReportMetric(q(0.50), "p50-µs")
		b.ReportMetric(q(0.99), "p99-µs")
		b.ReportMetric(q(0.999), "p99.9-µs")
	}
	lat.mu.Lock()
	b.ReportMetric(float64(lat.inversions), "inversions")
	lat.mu.Unlock()
}

func benchSubjectList() []string {
	subjects := make([]string, benchSubjects)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("websocket.company%d.agent%d.chats", i, i)
	}
	return subjects
}

// stamp is event i's payload: publish time, sequence within its subject,
// subject index, hex-encoded in a JSON string padded to benchPayload bytes
// (the bridge drops payloads that are not UTF-8 JSON).
func stamp(i int) []byte {
	var raw [20]byte
	binary.LittleEndian.PutUint64(raw[:], uint64(time.Now().UnixNano()))
	binary.LittleEndian.PutUint64(raw[8:], uint64(i/benchSubjects+1))
	binary.LittleEndian.PutUint32(raw[16:], uint32(i%benchSubjects))
	p := make([]byte, benchPayload)
	for k := range p {
		p[k] = 'x'
	}
	p[0], p[len(p)-1] = '"', '"'
	hex.Encode(p[1:41], raw[:])
	return p
}

func waitPublished(b *testing.B, js jetstream.JetStream) {
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		b.Fatal("publish stalled")
	}
}

// publishPaced publishes n events round-robin over subjects at benchRate/s
// (a burst every millisecond).
func publishPaced(b *testing.B, js jetstream.JetStream, subjects []string, n int) {
	per := benchRate / 1000
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 0; i < n; {
		<-tick.C
		for k := 0; k < per && i < n; k, i = k+1, i+1 {
			if _, err := js.PublishAsync(subjects[i%len(subjects)], stamp(i)); err != nil {
				b.Fatal(err)
			}
		}
	}
	waitPublished(b, js)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkConsume(b *testing.B) {
	for _, mode := range []string{"pull", "pull1024", "iter", "push"} {
		for _, pods := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/backlog/pods=%d", mode, pods), func(b *testing.B) {
				runConsume(b, consumeRun{mode: mode, pods: pods, n: b.N})
			})
			b.Run(fmt.Sprintf("%s/paced/pods=%d", mode, pods), func(b *testing.B) {
				runConsume(b, consumeRun{mode: mode, pods: pods, n: b.N, paced: true})
			})
		}
	}
}

// BenchmarkConsumeStuckPod: two pods share the durable consumer and one
// wedges; events are published at benchRate/s. Pull: the wedged pod holds
// at most its outstanding pull. Push with a queue group: the server keeps
// handing it every other event until max_ack_pending is reached for the
// whole consumer, then stops delivering to everyone until ack_wait.
//
//	go test ./bridge -run '^$' -bench 'ConsumeStuckPod' -benchtime 20000x
func BenchmarkConsumeStuckPod(b *testing.B) {
	for _, mode := range []string{"pull", "push"} {
		b.Run(mode, func(b *testing.B) {
			runConsume(b, consumeRun{mode: mode, pods: 2, n: b.N, paced: true, stuck: true})
		})
	}
}

// BenchmarkDispatch_NoopDeliverer is the shipped path end to end on one pod:
// JetStream pull → dispatcher → no-op Deliverer → ack. Allocations include
// the NATS client and the embedded server of this process.
func BenchmarkDispatch_NoopDeliverer(b *testing.B) {
	b.ReportAllocs()
	runConsume(b, consumeRun{mode: "pull", pods: 1, n: b.N})
}
