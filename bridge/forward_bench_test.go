package bridge

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dws-gateway/dws/bridge/forwardpb"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// BenchmarkForwardHop measures what the cross-pod hop adds: events are
// published at benchRate/s over benchSubjects subjects and consumed by one
// pod; "local" — that pod holds every route; "forwarded" — only another pod
// does, so every event crosses gRPC Push over loopback before Deliver.
//
//	go test ./bridge -run '^$' -bench 'ForwardHop' -benchtime 20000x
func BenchmarkForwardHop(b *testing.B) {
	for _, path := range []string{"local", "forwarded"} {
		b.Run(path, func(b *testing.B) {
			_, url := startNATS(b)
			nc := connect(b, url)
			js := newJS(b, nc)
			routes := newMemRoutes()
			lat := &latencyDeliverer{lat: make([]time.Duration, b.N)}
			o := defaultPodOptions()
			o.local = lat
			holder := startPod(b, nil, routes, o)
			subjects := benchSubjectList()
			for _, s := range subjects {
				r, _ := ParseSubject(s)
				routes.add(r, holder.id)
			}
			if _, err := EnsureStream(context.Background(), js, o.nats); err != nil {
				b.Fatal(err)
			}
			consumer := holder
			if path == "forwarded" {
				consumer = startPod(b, nil, routes, defaultPodOptions())
			}
			consumer.startBridge(b, connect(b, url), routes, o)

			b.ResetTimer()
			publishPaced(b, js, subjects, b.N)
			eventually(b, 30*time.Second, "all delivered", func() bool { return int(lat.next.Load()) >= b.N })
			b.StopTimer()
			got := lat.lat[:b.N]
			slices.Sort(got)
			q := func(p float64) float64 { return float64(got[int(p*float64(len(got)-1))].Microseconds()) }
			b.ReportMetric(q(0.50), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(q(0.999), "p99.9-µs")
			if path == "forwarded" {
				b.ReportMetric(float64(b.N)/counter(consumer.m.GRPCForwards.WithLabelValues("ok")), "events/rpc")
			}
		})
	}
}

// BenchmarkForwardPush measures the gRPC hop alone, in process over
// loopback, without NATS: a ForwardClient pushes to a ForwardServer whose
// Deliver only stamps the time. "stream" is the sender's path (one
// PushStream per pod, pipelined); "unary" pushes to a pod that serves only
// Push, so the client falls back to one unary call in flight per pod — the
// path before issue 10. "serial" waits for each event's Completion before
// the next push (pure latency); "paced" pushes every benchPushEvery without
// waiting, as a dispatcher does. Reported per event: push → Deliver on the
// receiver (hop-p50/p99-µs, what a socket waits for) and push → Completion
// on the sender (p50/p99-µs), events per batch, and allocations on both
// sides together.
//
//	go test ./bridge -run '^$' -bench 'ForwardPush' -benchtime 5000x -count 5 > push.txt
//	benchstat -col /mode push.txt
func BenchmarkForwardPush(b *testing.B) {
	for _, mode := range []string{"unary", "stream"} {
		for _, load := range []string{"serial", "paced"} {
			// key=value names: `benchstat -col /mode` compares the two.
			b.Run("mode="+mode+"/load="+load, func(b *testing.B) {
				benchForwardPush(b, mode == "unary", load == "paced")
			})
		}
	}
}

// benchPushEvery paces the "paced" load: 4 000 events/s, above the
// cluster bench's 200–400/s so batching and pipelining both show.
const benchPushEvery = 250 * time.Microsecond

func benchForwardPush(b *testing.B, unary, paced bool) {
	n := b.N
	const warm = 200
	st := &stampDeliverer{at: make([]time.Time, n+warm)}
	srvM := metrics.New()
	var srv *grpc.Server
	if unary {
		srv = grpc.NewServer(grpc.MaxRecvMsgSize(maxPushBytes))
		forwardpb.RegisterForwardServer(srv, pushOnly{NewForwardServer(st, srvM)})
	} else {
		srv = NewForwardServer(st, srvM).srv
	}
	addr := serveGRPC(b, srv)
	m := metrics.New()
	c := NewForwardClient(testGRPC(), m)
	b.Cleanup(func() { _ = c.Close() })

	evs := make([]*forwardpb.Event, n+warm)
	for i := range evs {
		evs[i] = &forwardpb.Event{Kind: forwardpb.Kind_KIND_CHATS, Company: "c", Agent: "a",
			Payload: []byte(strconv.Quote(strconv.Itoa(i))), Seq: uint64(i + 1)}
	}
	comps := make([]stampCompletion, n+warm)
	done := make(chan struct{}, n+warm)
	for i := range comps {
		comps[i].done = done
	}
	push := make([]time.Time, n+warm)
	// Warm-up: the connection, the stream (or the unary fallback).
	for i := 0; i < warm; i++ {
		push[i] = time.Now()
		c.PushAsync(addr, evs[i], &comps[i])
		<-done
	}
	batches0 := counter(m.GRPCForwards.WithLabelValues("ok"))

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := warm; i < n+warm; i++ {
		if paced {
			time.Sleep(time.Until(start.Add(time.Duration(i-warm) * benchPushEvery)))
		}
		push[i] = time.Now()
		c.PushAsync(addr, evs[i], &comps[i])
		if !paced {
			<-done
		}
	}
	if paced {
		for i := 0; i < n; i++ {
			<-done
		}
	}
	b.StopTimer()
	rtt := make([]time.Duration, 0, n)
	hop := make([]time.Duration, 0, n)
	for i := warm; i < n+warm; i++ {
		if comps[i].err != nil {
			b.Fatalf("event %d: %v", i, comps[i].err)
		}
		rtt = append(rtt, comps[i].at.Sub(push[i]))
		hop = append(hop, st.at[i].Sub(push[i]))
	}
	q := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[int(p*float64(len(d)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(q(hop, 0.50), "hop-p50-µs")
	b.ReportMetric(q(hop, 0.99), "hop-p99-µs")
	b.ReportMetric(q(rtt, 0.50), "p50-µs")
	b.ReportMetric(q(rtt, 0.99), "p99-µs")
	b.ReportMetric(float64(n)/(counter(m.GRPCForwards.WithLabelValues("ok"))-batches0), "events/batch")
}

// pushOnly is a pod from before PushStream: the real Push, and the
// answer an older pod's gRPC server gives for a method it does not know.
type pushOnly struct{ *ForwardServer }

func (pushOnly) PushStream(forwardpb.Forward_PushStreamServer) error {
	return status.Error(codes.Unimplemented, "method PushStream not implemented")
}

// stampDeliverer records when each event (its payload is the JSON string
// of its index) reached Deliver.
type stampDeliverer struct{ at []time.Time }

func (s *stampDeliverer) Deliver(_ session.Route, p []byte, _ reactor.Meta) int {
	now := time.Now()
	if i, err := strconv.Atoi(string(p[1 : len(p)-1])); err == nil && i < len(s.at) {
		s.at[i] = now
	}
	return 1
}

// stampCompletion records when its event's outcome arrived.
type stampCompletion struct {
	at   time.Time
	err  error
	done chan<- struct{}
}

func (s *stampCompletion) Forwarded(_ string, _ uint32, err error) {
	s.at, s.err = time.Now(), err
	s.done <- struct{}{}
}
