package bridge

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/dws-gateway/dws/bridge/forwardpb"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

func TestForward_RouteHeldOnlyByOtherPod_DeliveredThereOnce(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	o := defaultPodOptions()
	a := startPod(t, nil, routes, o) // holds the sockets, does not consume
	b := startPod(t, nc, routes, o)  // consumes everything
	r := session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}
	routes.add(r, a.id)

	const n = 50
	start := time.Now()
	for i := 0; i < n; i++ {
		publish(t, nc, "websocket.c.a.chats", strconv.Itoa(i), fmt.Sprintf("req-%d", i))
	}
	got := a.rec.waitN(t, n, 5*time.Second)
	eventually(t, 5*time.Second, "all acked by b", func() bool {
		return counter(b.m.Acks.WithLabelValues("ack", "delivered")) == n
	})
	time.Sleep(50 * time.Millisecond) // a duplicate would land by now
	got = a.rec.snapshot()
	if len(got) != n {
		t.Fatalf("pod A got %d deliveries, want exactly %d", len(got), n)
	}
	for i, d := range got {
		if d.Route != r || d.Payload != strconv.Itoa(i) || d.Meta.RequestID != fmt.Sprintf("req-%d", i) {
			t.Fatalf("delivery %d = %+v", i, d)
		}
		// The seq is the event's sequence in nats.stream (fresh stream:
		// i+1), carried across the gRPC hop.
		if d.Meta.Seq != uint64(i+1) {
			t.Fatalf("delivery %d carries seq %d, want %d", i, d.Meta.Seq, i+1)
		}
		if d.Meta.PublishedAt.Before(start.Add(-time.Second)) || d.Meta.PublishedAt.After(time.Now()) {
			t.Fatalf("publish time not carried across: %s", d.Meta.PublishedAt)
		}
	}
	if len(b.rec.snapshot()) != 0 {
		t.Fatal("pod B delivered locally although it holds no socket")
	}
	for i, d := range got {
		if !d.Meta.Forwarded {
			t.Fatalf("delivery %d not marked forwarded (the reactor labels it by Meta.Forwarded)", i)
		}
	}
	if v := counter(b.m.GRPCForwards.WithLabelValues("ok")); v < 1 || v > n {
		t.Fatalf("B grpc forwards{ok} = %v", v)
	}
}

func TestForward_TwoPodsConsuming_EachEventReachesHolderOnce(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	routes := newMemRoutes()
	o := defaultPodOptions()
	o.leases = session.NewMemoryPartitionLeases()
	a := startPod(t, connect(t, url), routes, o)
	b := startPod(t, connect(t, url), routes, o)
	r := session.Route{Kind: session.RouteMessages, Company: "c", Agent: "a", Chat: "x"}
	routes.add(r, a.id)
	nc := connect(t, url)

	const n = 400
	for i := 0; i < n; i++ {
		publish(t, nc, "websocket.c.a.messages.x", strconv.Itoa(i), "")
	}
	a.rec.waitN(t, n, 10*time.Second)
	eventually(t, 5*time.Second, "everything acked", func() bool {
		return allSettled(t, nc, o.nats)
	})
	seen := map[string]int{}
	for _, d := range a.rec.snapshot() {
		seen[d.Payload]++
	}
	for i := 0; i < n; i++ {
		if seen[strconv.Itoa(i)] != 1 {
			t.Fatalf("event %d reached pod A %d times", i, seen[strconv.Itoa(i)])
		}
	}
	// Every event was consumed by exactly one pod; what B consumed it
	// forwarded, and B delivered nothing itself.
	byA := counter(a.m.Acks.WithLabelValues("ack", "delivered"))
	byB := counter(b.m.Acks.WithLabelValues("ack", "delivered"))
	fwd := 0.0
	for _, d := range a.rec.snapshot() {
		if d.Meta.Forwarded {
			fwd++
		}
	}
	if byA+byB != n || fwd != byB {
		t.Fatalf("acked by A %v + by B %v != %d, or forwarded to A %v != consumed by B", byA, byB, n, fwd)
	}
	if got := len(b.rec.snapshot()); got != 0 {
		t.Fatalf("B delivered %d events locally; it holds no socket", got)
	}
	local := byA
	t.Logf("consumed by A: %v, by B and forwarded: %v", local, fwd)
}

func TestForward_AdminEvent_ReachesAdminSocketsOnEveryPod(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	o := defaultPodOptions()
	a := startPod(t, nil, routes, o)
	c := startPod(t, nil, routes, o)
	b := startPod(t, nc, routes, o) // the only consumer; holds no admin socket
	b.rec.accept = 0
	routes.add(session.Route{Kind: session.RouteAdmin}, a.id, c.id)

	publish(t, nc, "websocket.acme.a1.agents", `{"agent":"a1"}`, "req-admin")
	want := session.Route{Kind: session.RouteAdmin, Company: "acme", Agent: "a1"}
	for name, p := range map[string]*pod{"A": a, "C": c, "B (local try)": b} {
		got := p.rec.waitN(t, 1, 5*time.Second)
		if len(got) != 1 || got[0].Route != want || got[0].Meta.RequestID != "req-admin" {
			t.Fatalf("pod %s got %+v", name, got)
		}
	}
}

func TestForward_OneSubject_OrderKeptAcrossForwardingAndBatched(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	o := defaultPodOptions()
	a := startPod(t, nil, routes, o)
	b := startPod(t, nil, routes, o)
	r := session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}
	routes.add(r, a.id)

	const n = 1000
	publishBacklog(t, nc, o.nats, "websocket.c.a.chats", n)
	b.startBridge(t, nc, routes, o)
	got := a.rec.waitN(t, n, 10*time.Second)
	assertInOrder(t, got, r, n)
	rpcs := counter(b.m.GRPCForwards.WithLabelValues("ok"))
	t.Logf("%d events forwarded in %v Push calls", n, rpcs)
	if rpcs > n/4 {
		t.Fatalf("a burst of %d events took %v Push calls: want batching", n, rpcs)
	}
}

// attemptCounter is a client interceptor counting Push attempts per pod.
type attemptCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *attemptCounter) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	a.mu.Lock()
	a.n[cc.Target()]++
	a.mu.Unlock()
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (a *attemptCounter) get(pod string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[pod]
}

// Not parallel: it reads the process logger's output.
func TestForward_TargetDown_OneRetryThenBreakerOpensOthersUnaffected(t *testing.T) {
	logs := captureLogs(t)
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	attempts := &attemptCounter{n: map[string]int{}}
	o := defaultPodOptions()
	o.grpc.BreakerFailures = 3
	o.grpc.BreakerOpen = time.Minute
	o.dial = []ClientOption{WithDialOptions(grpc.WithUnaryInterceptor(attempts.intercept))}
	a := startPod(t, nil, routes, o)
	b := startPod(t, nc, routes, o)
	dead := deadAddr(t)
	r := session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}
	routes.add(r, a.id, dead)

	const n = 6
	for i := 0; i < n; i++ {
		publish(t, nc, "websocket.c.a.chats", strconv.Itoa(i), fmt.Sprintf("req-down-%d", i))
		// One at a time, so each event is its own Push to the dead pod.
		eventually(t, 5*time.Second, "event settled", func() bool {
			return counter(b.m.Acks.WithLabelValues("ack", "pod_unreachable")) == float64(i+1)
		})
		if i == 0 {
			if got := attempts.get(dead); got != 2 {
				t.Fatalf("attempts to the dead pod for the first event = %d, want 2 (one retry)", got)
			}
		}
	}
	// Events 0..2 each tried twice; then the breaker is open: no attempt.
	if got := attempts.get(dead); got != 2*o.grpc.BreakerFailures {
		t.Fatalf("attempts to the dead pod = %d, want %d", got, 2*o.grpc.BreakerFailures)
	}
	if v := counter(b.m.BreakerStateChanges.WithLabelValues("open")); v != 1 {
		t.Fatalf("breaker opened %v times, want 1", v)
	}
	if v := counter(b.m.GRPCForwards.WithLabelValues("breaker_open")); v != n-3 {
		t.Fatalf("forwards{breaker_open} = %v, want %d", v, n-3)
	}
	if v := counter(b.m.GRPCForwards.WithLabelValues("failed")); v != 3 {
		t.Fatalf("forwards{failed} = %v, want 3", v)
	}
	if v := counter(b.m.Drops.WithLabelValues("pod_unreachable")); v != n {
		t.Fatalf("drops{pod_unreachable} = %v, want %d", v, n)
	}
	// The live pod got everything, each attempt once.
	got := a.rec.waitN(t, n, 5*time.Second)
	assertInOrder(t, got, r, n)
	if attempts.get(a.id) != n {
		t.Fatalf("attempts to the live pod = %d, want %d", attempts.get(a.id), n)
	}
	// Skips are logged with the request id.
	out := logs.String()
	for i := 0; i < n; i++ {
		id := fmt.Sprintf(`"request_id":"req-down-%d"`, i)
		if !strings.Contains(out, id) || !strings.Contains(out, dead) {
			t.Fatalf("log lacks the skip of event %d (%s, pod %s):\n%s", i, id, dead, out)
		}
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// pushServer starts a ForwardServer over d and counts the Push RPCs it
// serves and the request ids it saw in metadata.
func pushServer(t *testing.T, d Deliverer) (addr string, rpcs *atomic.Int64, mdIDs *[]string) {
	t.Helper()
	rpcs = new(atomic.Int64)
	var mu sync.Mutex
	ids := []string{}
	s := NewForwardServer(d, metrics.New(), grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == forwardpb.Forward_Push_FullMethodName {
			rpcs.Add(1)
			md, _ := metadata.FromIncomingContext(ctx)
			mu.Lock()
			ids = append(ids, md.Get(MetadataRequestID)...)
			mu.Unlock()
		}
		return h(ctx, req)
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String(), rpcs, &ids
}

// lenDeliverer accepts each event on as many sockets as its payload is
// long, so a caller can tell its own answer from its neighbours'.
type lenDeliverer struct{ delay time.Duration }

func (l lenDeliverer) Deliver(_ session.Route, p []byte, _ reactor.Meta) int {
	time.Sleep(l.delay)
	return len(p)
}

func TestForwardClient_Burst_FewRPCsEachCallerGetsOwnOutcome(t *testing.T) {
	t.Parallel()
	addr, rpcs, ids := pushServer(t, lenDeliverer{delay: 20 * time.Microsecond})
	c := NewForwardClient(testGRPC(), metrics.New())
	t.Cleanup(func() { _ = c.Close() })

	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := `"` + strings.Repeat("x", i%17+1) + `"`
			ev := &forwardpb.Event{Kind: forwardpb.Kind_KIND_CHATS, Company: "c", Agent: "a", Payload: []byte(payload), RequestId: "r" + strconv.Itoa(i)}
			got, err := c.Push(context.Background(), addr, ev)
			if err != nil || int(got) != len(payload) {
				errs <- fmt.Errorf("event %d: accepted %d, err %v; want %d", i, got, err, len(payload))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if r := rpcs.Load(); r >= n/2 {
		t.Fatalf("%d concurrent pushes took %d RPCs; want batching", n, r)
	} else {
		t.Logf("%d pushes in %d RPCs", n, r)
	}
	if len(*ids) != n {
		t.Fatalf("metadata carried %d request ids, want %d", len(*ids), n)
	}
}

func TestForwardClient_SlowPod_DeadlineExceededRetriedOnce(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	slowOnce := delivererFunc(func(session.Route, []byte, reactor.Meta) int {
		if calls.Add(1) == 1 {
			time.Sleep(300 * time.Millisecond)
		}
		return 1
	})
	addr, rpcs, _ := pushServer(t, slowOnce)
	cfg := testGRPC()
	cfg.CallTimeout = 100 * time.Millisecond
	m := metrics.New()
	c := NewForwardClient(cfg, m)
	t.Cleanup(func() { _ = c.Close() })

	got, err := c.Push(context.Background(), addr, &forwardpb.Event{Kind: forwardpb.Kind_KIND_CHATS, Company: "c", Agent: "a", Payload: []byte("{}")})
	if err != nil || got != 1 {
		t.Fatalf("push = %d, %v; want 1 after a retry", got, err)
	}
	if rpcs.Load() != 2 || counter(m.GRPCForwards.WithLabelValues("retried_ok")) != 1 {
		t.Fatalf("rpcs %d, retried_ok %v; want 2 and 1", rpcs.Load(), counter(m.GRPCForwards.WithLabelValues("retried_ok")))
	}
}

type delivererFunc func(session.Route, []byte, reactor.Meta) int

func (f delivererFunc) Deliver(r session.Route, p []byte, m reactor.Meta) int { return f(r, p, m) }

func TestForwardClient_IdleConnection_Closed(t *testing.T) {
	t.Parallel()
	addr, _, _ := pushServer(t, lenDeliverer{})
	c := NewForwardClient(testGRPC(), metrics.New(), WithIdleTimeout(100*time.Millisecond))
	t.Cleanup(func() { _ = c.Close() })
	ev := &forwardpb.Event{Kind: forwardpb.Kind_KIND_CHATS, Company: "c", Agent: "a", Payload: []byte(`"ab"`)}
	if _, err := c.Push(context.Background(), addr, ev); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "idle connection reaped", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.targets) == 0
	})
	// And the pod is reachable again on the next push.
	if got, err := c.Push(context.Background(), addr, ev); err != nil || got != 4 {
		t.Fatalf("push after reaping = %d, %v", got, err)
	}
}

func TestForwardClient_Closed_PushFailsFast(t *testing.T) {
	t.Parallel()
	c := NewForwardClient(testGRPC(), metrics.New())
	_ = c.Close()
	if _, err := c.Push(context.Background(), "127.0.0.1:1", &forwardpb.Event{}); err != ErrClientClosed {
		t.Fatalf("push after Close: %v", err)
	}
}

func TestForwardServer_InvalidEvent_AnsweredZeroOthersDelivered(t *testing.T) {
	t.Parallel()
	rec := newRecorder(3)
	addr, _, _ := pushServer(t, rec)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := metadata.AppendToOutgoingContext(context.Background(), MetadataRequestID, "", MetadataRequestID, "md-id")
	resp, err := forwardpb.NewForwardClient(conn).Push(ctx, &forwardpb.PushRequest{Events: []*forwardpb.Event{
		{Kind: forwardpb.Kind_KIND_UNSPECIFIED, Company: "c", Agent: "a"},
		{Kind: forwardpb.Kind_KIND_MESSAGES, Company: "c", Agent: "a", Chat: "x", Payload: []byte(`"p"`), PublishedUnixNano: 42},
		{Kind: forwardpb.Kind_KIND_MESSAGES, Company: "c", Agent: "a"}, // no chat
	}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(resp.Accepted) != "[0 3 0]" {
		t.Fatalf("accepted = %v, want [0 3 0]", resp.Accepted)
	}
	got := rec.snapshot()
	want := delivery{Route: session.Route{Kind: session.RouteMessages, Company: "c", Agent: "a", Chat: "x"}, Payload: `"p"`,
		Meta: reactor.Meta{RequestID: "md-id", PublishedAt: time.Unix(0, 42)}}
	if len(got) != 1 || got[0].Route != want.Route || got[0].Payload != want.Payload ||
		got[0].Meta.RequestID != want.Meta.RequestID || !got[0].Meta.PublishedAt.Equal(want.Meta.PublishedAt) {
		t.Fatalf("deliveries = %+v, want [%+v]", got, want)
	}
}

func TestForwardServer_Health_ServingUntilStopped(t *testing.T) {
	t.Parallel()
	s := NewForwardServer(newRecorder(0), metrics.New())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", ForwardServiceName} {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q = %v, %v", svc, resp, err)
		}
	}
	s.GracefulStop()
	if err := <-served; err != nil {
		t.Fatalf("Serve after GracefulStop returned %v, want nil", err)
	}
}
