package bridge

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// TestMain keeps expected warnings (NAKs, unreachable pods) out of the test
// output; tests that assert on logs install their own writer.
func TestMain(m *testing.M) {
	logx.SetDefault(logx.New(io.Discard))
	os.Exit(m.Run())
}

// startNATS runs an embedded JetStream server for one test.
func startNATS(t testing.TB) (*server.Server, string) {
	t.Helper()
	s, url, err := StartEmbedded(config.NATS{})
	if err != nil {
		t.Fatalf("embedded nats-server failed to start: %v", err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s, url
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := Connect(url, t.Name())
	if err != nil {
		t.Fatalf("connect to NATS at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// newSource starts a NATS server holding the source stream wa_stream and
// returns its URL, a JetStream on it and the stream's info.
func newSource(ctx context.Context, t testing.TB) (url string, js jetstream.JetStream, info *jetstream.StreamInfo) {
	t.Helper()
	_, url = startNATS(t)
	js = newJS(t, connect(t, url))
	src, err := EnsureStream(ctx, js, config.NATS{Stream: "wa_stream", CreateStream: true})
	if err != nil {
		t.Fatal(err)
	}
	if info, err = src.Info(ctx); err != nil {
		t.Fatal(err)
	}
	return url, js, info
}

func newJS(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// testNATS is the NATS section the tests run with: defaults, and a short
// NAK delay so redelivery tests finish quickly.
func testNATS() config.NATS {
	c := config.Defaults().NATS
	c.NakDelay = 100 * time.Millisecond
	// A random port: the default (14222) is taken whenever a `make run`
	// pod is up on this machine.
	c.EmbeddedPort = -1
	return c
}

func testGRPC() config.GRPC {
	c := config.Defaults().GRPC
	c.CallTimeout = time.Second
	return c
}

// delivery is what a recorder saw for one Deliver call.
type delivery struct {
	Route   session.Route
	Payload string
	Meta    reactor.Meta
}

// recorder is a real Deliverer standing in for the reactor: it records
// every call (payload copied, as the reactor copies it into its frame) and
// answers how many "sockets" accepted it.
type recorder struct {
	mu     sync.Mutex
	got    []delivery
	accept int
	// hook, when set, runs inside Deliver (slow sockets, panics).
	hook   func(d delivery)
	notify chan struct{}
}

func newRecorder(accept int) *recorder {
	return &recorder{accept: accept, notify: make(chan struct{}, 1)}
}

func (r *recorder) Deliver(route session.Route, payload []byte, m reactor.Meta) int {
	d := delivery{Route: route, Payload: string(payload), Meta: m}
	r.mu.Lock()
	hook := r.hook
	r.mu.Unlock()
	if hook != nil {
		hook(d)
	}
	r.mu.Lock()
	r.got = append(r.got, d)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return r.accept
}

func (r *recorder) setHook(h func(delivery)) {
	r.mu.Lock()
	r.hook = h
	r.mu.Unlock()
}

func (r *recorder) snapshot() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitN waits until at least n deliveries were recorded.
func (r *recorder) waitN(t testing.TB, n int, within time.Duration) []delivery {
	t.Helper()
	deadline := time.After(within)
	for {
		if got := r.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-r.notify:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("want %d deliveries within %s, got %d", n, within, len(r.snapshot()))
		}
	}
}

// memRoutes is a test route registry shared by in-process pods: a real
// session.Routes (the session package's memory store is per pod), with a
// switch that makes it fail like an unreachable Redis.
type memRoutes struct {
	mu   sync.Mutex
	pods map[session.Route][]string
	down bool
	// calls counts Pods lookups.
	calls int
}

var errRegistryDown = errors.New("route registry unreachable (test)")

func newMemRoutes() *memRoutes { return &memRoutes{pods: map[session.Route][]string{}} }

func (m *memRoutes) add(r session.Route, pods ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range pods {
		if !slices.Contains(m.pods[r], p) {
			m.pods[r] = append(m.pods[r], p)
		}
	}
}

func (m *memRoutes) setDown(down bool) {
	m.mu.Lock()
	m.down = down
	m.mu.Unlock()
}

func (m *memRoutes) Join(context.Context, session.Route) error { return nil }
func (m *memRoutes) Leave(session.Route)                       {}

func (m *memRoutes) Pods(_ context.Context, r session.Route) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.down {
		return nil, errRegistryDown
	}
	return slices.Clone(m.pods[r]), nil
}

// pod is one in-process dws pod: its gRPC Push server on a loopback port
// (whose address is its pod id), a recorder as its reactor, its metrics,
// and optionally a running Bridge.
type pod struct {
	id     string
	rec    *recorder
	local  Deliverer // rec unless podOptions.local is set
	m      *metrics.Metrics
	server *ForwardServer
	bridge *Bridge
	fwd    *ForwardClient
}

type podOptions struct {
	nats     config.NATS
	grpc     config.GRPC
	dispatch config.Dispatch
	dial     []ClientOption
	accept   int
	// local replaces the pod's recorder as its Deliverer (benchmarks).
	local    Deliverer
	cacheTTL time.Duration
	// leases are shared by the pods of one test so they split the
	// partitions; nil = the pod owns them all.
	leases session.PartitionLeases
}

func defaultPodOptions() podOptions {
	return podOptions{nats: testNATS(), grpc: testGRPC(), dispatch: config.Defaults().Dispatch, accept: 1}
}

// startPod starts a pod's gRPC server (always) and, when nc is not nil,
// its Bridge consuming from nc.
func startPod(t testing.TB, nc *nats.Conn, routes session.Routes, o podOptions) *pod {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pod{id: lis.Addr().String(), rec: newRecorder(o.accept), m: metrics.New()}
	p.local = p.rec
	if o.local != nil {
		p.local = o.local
	}
	p.server = NewForwardServer(p.local, p.m)
	go func() { _ = p.server.Serve(lis) }()
	t.Cleanup(p.server.Stop)
	p.fwd = NewForwardClient(o.grpc, p.m, o.dial...)
	t.Cleanup(func() { _ = p.fwd.Close() })
	if nc != nil {
		p.startBridge(t, nc, routes, o)
	}
	return p
}

func (p *pod) startBridge(t testing.TB, nc *nats.Conn, routes session.Routes, o podOptions) {
	t.Helper()
	b, err := New(Options{
		PodID: p.id, NATS: o.nats, GRPC: o.grpc, Dispatch: o.dispatch,
		RouteCacheTTL: o.cacheTTL, Leases: o.leases,
		Conn: nc, Routes: routes, Local: p.local, Metrics: p.m, Forward: p.fwd,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Drain(ctx)
		_ = b.Close()
	})
	p.bridge = b
}

// publish stores one event with a request id and fails the test on error.
func publish(t testing.TB, nc *nats.Conn, subject, data, requestID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Publish(ctx, nc, subject, []byte(data), requestID); err != nil {
		t.Fatal(err)
	}
}

// counter reads a counter (or a counter of a vec) value.
func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// histogram reads a histogram's sample count and sum.
func histogram(h prometheus.Histogram) (count uint64, sum float64) {
	var m dto.Metric
	if err := h.(prometheus.Metric).Write(&m); err != nil {
		panic(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

func gauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

// eventually polls cond until it holds or within passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// backlog is where the partitioned consumption stands: unsettled is what
// the derived work-queue stream still holds (acked messages leave it),
// ackPending what the partition consumers delivered and wait an ack for.
type backlog struct {
	unsettled  uint64
	ackPending int
}

// settledState reads the derived stream and its partition consumers.
func settledState(t testing.TB, nc *nats.Conn, c config.NATS) backlog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l := PartitionLayout{Source: c.Stream, Consumer: c.Consumer, Partitions: c.Partitions}
	s, err := newJS(t, nc).Stream(ctx, l.Stream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := backlog{unsettled: info.State.Msgs}
	cs := s.ListConsumers(ctx)
	for ci := range cs.Info() {
		b.ackPending += ci.NumAckPending
	}
	if err := cs.Err(); err != nil {
		t.Fatal(err)
	}
	return b
}

// allSettled reports whether every message reached the derived stream and
// was acked.
func allSettled(t testing.TB, nc *nats.Conn, c config.NATS) bool {
	b := settledState(t, nc, c)
	return b.unsettled == 0 && b.ackPending == 0
}

// syncBuffer is a log sink tests read while workers write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// captureLogs routes the process logger to a buffer for one test. Tests
// using it must not be parallel: the logger is process-wide.
func captureLogs(t testing.TB) *syncBuffer {
	buf := &syncBuffer{}
	prev := logx.L()
	logx.SetDefault(logx.New(buf))
	t.Cleanup(func() { logx.SetDefault(prev) })
	return buf
}
