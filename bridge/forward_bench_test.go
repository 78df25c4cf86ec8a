package bridge

import (
	"context"
	"slices"
	"testing"
	"time"
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
