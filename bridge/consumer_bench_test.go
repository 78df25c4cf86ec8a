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

	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// The partitioned consumption end to end (SPEC §5): N pods split the
// partitions of an embedded nats-server in this process (shared in-memory
// leases), each routes to a no-op Deliverer standing for one socket
// subscribed to every subject. (The pull-vs-push comparison of
// perf/fanout-consumer.md measured the shared consumer this replaced.)
//
//	go test ./bridge -run '^$' -bench 'Consume' -benchtime 20000x -count 3
//
// backlog: b.N events stored first, then consumed: saturation throughput.
// paced:   b.N events published at benchRate/s while consuming: latency
//          from the publisher's clock to Deliver, and order inversions per
//          subject across pods (must be 0: one owner per partition).

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
	pods  int
	paced bool
	n     int
}

// runConsume publishes and consumes r.n events and reports msgs/s, CPU µs
// per message (whole process: publisher, nats-server and pods), order
// inversions and, when paced, latency percentiles.
func runConsume(b *testing.B, r consumeRun) {
	_, url := startNATS(b)
	pub := connect(b, url)
	cfg := testNATS()
	js := newJS(b, pub)
	lat := &latencyDeliverer{lat: make([]time.Duration, r.n)}
	o := defaultPodOptions()
	o.local = lat
	o.leases = session.NewMemoryPartitionLeases()
	pods := make([]*pod, r.pods)
	for i := range pods {
		pods[i] = startPod(b, nil, nil, o)
	}
	acked := func() int {
		n := 0
		for _, p := range pods {
			n += int(counter(p.m.Acks.WithLabelValues("ack", "delivered")))
		}
		return n
	}
	subjects := benchSubjectList()
	if !r.paced {
		publishBacklogFn(b, pub, cfg, r.n, func(i int) (string, []byte) { return subjects[i%benchSubjects], stamp(i) })
	} else if _, err := EnsureStream(context.Background(), js, cfg); err != nil {
		b.Fatal(err)
	}
	cpu0 := cpuTime()
	t0 := time.Now()
	b.ResetTimer()
	for _, p := range pods {
		p.startBridge(b, connect(b, url), selfRoutes(p.id), o)
	}
	if r.paced {
		// Wait for the partitions to be spread before timing delivery.
		eventually(b, 10*time.Second, "partitions owned", func() bool {
			n := 0
			for _, p := range pods {
				n += len(p.bridge.Owned())
			}
			return n == cfg.Partitions
		})
		publishPaced(b, js, subjects, r.n)
	}
	deadline := time.Now().Add(120 * time.Second)
	for acked() < r.n {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d acked", acked(), r.n)
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
	if lat.inversions != 0 {
		b.Errorf("%d events reached the deliverer after a later event of their subject", lat.inversions)
	}
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
	for _, pods := range []int{1, 2} {
		b.Run(fmt.Sprintf("backlog/pods=%d", pods), func(b *testing.B) {
			runConsume(b, consumeRun{pods: pods, n: b.N})
		})
		b.Run(fmt.Sprintf("paced/pods=%d", pods), func(b *testing.B) {
			runConsume(b, consumeRun{pods: pods, n: b.N, paced: true})
		})
	}
}

// BenchmarkDispatch_NoopDeliverer is the shipped path end to end on one pod:
// partition pull → dispatcher → no-op Deliverer → ack. Allocations include
// the NATS client and the embedded server of this process.
func BenchmarkDispatch_NoopDeliverer(b *testing.B) {
	b.ReportAllocs()
	runConsume(b, consumeRun{pods: 1, n: b.N})
}
