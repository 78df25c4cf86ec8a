package bridge

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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
	t.Logf("%d events forwarded in %v batches", n, rpcs)
	if rpcs > n/4 {
		t.Fatalf("a burst of %d events took %v batches: want batching", n, rpcs)
	}
}

// attemptCounter is a client interceptor counting attempts per pod: unary
// Push calls and PushStream opens.
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

func (a *attemptCounter) interceptStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	a.mu.Lock()
	a.n[cc.Target()]++
	a.mu.Unlock()
	return streamer(ctx, desc, cc, method, opts...)
}

// options returns the dial options installing both interceptors.
func (a *attemptCounter) options() ClientOption {
	return WithDialOptions(grpc.WithUnaryInterceptor(a.intercept), grpc.WithStreamInterceptor(a.interceptStream))
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
	o.dial = []ClientOption{attempts.options()}
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
	// The breaker counts stream failures: event 0's stream and its retry
	// fail (2), event 1's stream is the third and opens the breaker, which
	// refuses event 1's retry and every later event without an attempt.
	if got := attempts.get(dead); got != o.grpc.BreakerFailures {
		t.Fatalf("attempts to the dead pod = %d, want %d", got, o.grpc.BreakerFailures)
	}
	if v := counter(b.m.BreakerStateChanges.WithLabelValues("open")); v != 1 {
		t.Fatalf("breaker opened %v times, want 1", v)
	}
	if v := counter(b.m.GRPCForwards.WithLabelValues("breaker_open")); v != n-1 {
		t.Fatalf("forwards{breaker_open} = %v, want %d", v, n-1)
	}
	if v := counter(b.m.GRPCForwards.WithLabelValues("failed")); v != 1 {
		t.Fatalf("forwards{failed} = %v, want 1", v)
	}
	if v := counter(b.m.Drops.WithLabelValues("pod_unreachable")); v != n {
		t.Fatalf("drops{pod_unreachable} = %v, want %d", v, n)
	}
	// The live pod got everything, over one stream.
	got := a.rec.waitN(t, n, 5*time.Second)
	assertInOrder(t, got, r, n)
	if attempts.get(a.id) != 1 {
		t.Fatalf("attempts to the live pod = %d, want 1 stream", attempts.get(a.id))
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

// pushServer starts a ForwardServer over d and counts the batches it
// receives (unary Push calls and PushStream requests) and the request ids
// they carried: a unary call's from metadata, a stream's from its events.
func pushServer(t *testing.T, d Deliverer) (addr string, batches *atomic.Int64, reqIDs *[]string) {
	t.Helper()
	addr, s, batches, reqIDs := pushServerHandle(t, d)
	t.Cleanup(s.Stop)
	return addr, batches, reqIDs
}

// pushServerHandle is pushServer returning the server, for tests that stop
// it themselves.
func pushServerHandle(t *testing.T, d Deliverer) (string, *ForwardServer, *atomic.Int64, *[]string) {
	t.Helper()
	batches := new(atomic.Int64)
	var mu sync.Mutex
	ids := []string{}
	unary := grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == forwardpb.Forward_Push_FullMethodName {
			batches.Add(1)
			md, _ := metadata.FromIncomingContext(ctx)
			mu.Lock()
			ids = append(ids, md.Get(MetadataRequestID)...)
			mu.Unlock()
		}
		return h(ctx, req)
	})
	stream := grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, &countingStream{ServerStream: ss, onRecv: func(req *forwardpb.PushRequest) {
			batches.Add(1)
			mu.Lock()
			for _, ev := range req.GetEvents() {
				ids = append(ids, ev.GetRequestId())
			}
			mu.Unlock()
		}})
	})
	s := NewForwardServer(d, metrics.New(), unary, stream)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(lis) }()
	return lis.Addr().String(), s, batches, &ids
}

// countingStream calls onRecv for each PushRequest a server stream reads.
type countingStream struct {
	grpc.ServerStream
	onRecv func(*forwardpb.PushRequest)
}

func (c *countingStream) RecvMsg(m any) error {
	err := c.ServerStream.RecvMsg(m)
	if req, ok := m.(*forwardpb.PushRequest); ok && err == nil {
		c.onRecv(req)
	}
	return err
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
	addr, batches, ids := pushServer(t, lenDeliverer{delay: 20 * time.Microsecond})
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
	if r := batches.Load(); r >= n/2 {
		t.Fatalf("%d concurrent pushes took %d batches; want batching", n, r)
	} else {
		t.Logf("%d pushes in %d batches", n, r)
	}
	if len(*ids) != n {
		t.Fatalf("the batches carried %d request ids, want %d", len(*ids), n)
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
	addr, batches, _ := pushServer(t, slowOnce)
	cfg := testGRPC()
	cfg.CallTimeout = 100 * time.Millisecond
	m := metrics.New()
	c := NewForwardClient(cfg, m)
	t.Cleanup(func() { _ = c.Close() })

	got, err := c.Push(context.Background(), addr, &forwardpb.Event{Kind: forwardpb.Kind_KIND_CHATS, Company: "c", Agent: "a", Payload: []byte("{}")})
	if err != nil || got != 1 {
		t.Fatalf("push = %d, %v; want 1 after a retry", got, err)
	}
	// The stream timed out; the batch was re-sent once on a fresh one.
	if batches.Load() != 2 || counter(m.GRPCForwards.WithLabelValues("retried_ok")) != 1 {
		t.Fatalf("batches %d, retried_ok %v; want 2 and 1", batches.Load(), counter(m.GRPCForwards.WithLabelValues("retried_ok")))
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
	batch := []*forwardpb.Event{
		{Kind: forwardpb.Kind_KIND_UNSPECIFIED, Company: "c", Agent: "a"},
		{Kind: forwardpb.Kind_KIND_MESSAGES, Company: "c", Agent: "a", Chat: "x", Payload: []byte(`"p"`), PublishedUnixNano: 42},
		{Kind: forwardpb.Kind_KIND_MESSAGES, Company: "c", Agent: "a"}, // no chat
	}
	// Push and PushStream share one body: the same answers, deliveries and
	// drop counts. A unary call's request ids may come from metadata; a
	// stream's come from the events.
	tests := []struct {
		name   string
		send   func(t *testing.T, c forwardpb.ForwardClient, req *forwardpb.PushRequest) *forwardpb.PushResponse
		wantID string
	}{
		{"unary Push", func(t *testing.T, c forwardpb.ForwardClient, req *forwardpb.PushRequest) *forwardpb.PushResponse {
			ctx := metadata.AppendToOutgoingContext(context.Background(), MetadataRequestID, "", MetadataRequestID, "md-id")
			resp, err := c.Push(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}, "md-id"},
		{"PushStream", func(t *testing.T, c forwardpb.ForwardClient, req *forwardpb.PushRequest) *forwardpb.PushResponse {
			req = proto.Clone(req).(*forwardpb.PushRequest)
			req.Events[1].RequestId = "ev-id"
			st, err := c.PushStream(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(req); err != nil {
				t.Fatal(err)
			}
			resp, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}, "ev-id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(3)
			m := metrics.New()
			addr := serveForward(t, NewForwardServer(rec, m))
			resp := tt.send(t, forwardpb.NewForwardClient(rawConn(t, addr)), &forwardpb.PushRequest{Events: batch})
			if fmt.Sprint(resp.Accepted) != "[0 3 0]" {
				t.Fatalf("accepted = %v, want [0 3 0]", resp.Accepted)
			}
			got := rec.snapshot()
			want := delivery{Route: session.Route{Kind: session.RouteMessages, Company: "c", Agent: "a", Chat: "x"}, Payload: `"p"`,
				Meta: reactor.Meta{RequestID: tt.wantID, PublishedAt: time.Unix(0, 42)}}
			if len(got) != 1 || got[0].Route != want.Route || got[0].Payload != want.Payload ||
				got[0].Meta.RequestID != want.Meta.RequestID || !got[0].Meta.PublishedAt.Equal(want.Meta.PublishedAt) {
				t.Fatalf("deliveries = %+v, want [%+v]", got, want)
			}
			if v := counter(m.Drops.WithLabelValues("bad_forward")); v != 2 {
				t.Fatalf("drops{bad_forward} = %v, want 2", v)
			}
		})
	}
}

// serveForward serves s on a loopback port until the test ends.
func serveForward(t *testing.T, s *ForwardServer) string {
	t.Helper()
	addr := serveGRPC(t, s.srv)
	t.Cleanup(s.Stop) // first: NOT_SERVING and the streams' drain
	return addr
}

// serveGRPC serves srv on a loopback port until the test ends.
func serveGRPC(tb testing.TB, srv *grpc.Server) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	tb.Cleanup(srv.Stop)
	return lis.Addr().String()
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

// outcomes records, per event index, every Completion call: a test pushes
// event i with outcomes.of(i) and checks each was told exactly once.
type outcomes struct {
	mu    sync.Mutex
	calls []int
	acc   []uint32
	errs  []error
	total atomic.Int64
}

func newOutcomes(n int) *outcomes {
	return &outcomes{calls: make([]int, n), acc: make([]uint32, n), errs: make([]error, n)}
}

func (o *outcomes) of(i int) Completion { return eventOutcome{o, i} }

type eventOutcome struct {
	o *outcomes
	i int
}

func (c eventOutcome) Forwarded(_ string, n uint32, err error) {
	c.o.mu.Lock()
	c.o.calls[c.i]++
	c.o.acc[c.i], c.o.errs[c.i] = n, err
	c.o.mu.Unlock()
	c.o.total.Add(1)
}

// waitOnce waits for every event's outcome, then for quiet (a late
// duplicate would land within it), and fails unless each was told exactly
// once. It returns how many succeeded.
func (o *outcomes) waitOnce(t *testing.T, within, quiet time.Duration) (ok int) {
	t.Helper()
	n := len(o.calls)
	eventually(t, within, "every event completed", func() bool { return o.total.Load() >= int64(n) })
	time.Sleep(quiet)
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, c := range o.calls {
		if c != 1 {
			t.Fatalf("event %d completed %d times, want exactly once", i, c)
		}
		if o.errs[i] == nil {
			ok++
		}
	}
	return ok
}

// pushAllAccepted pushes events 0..n-1 (chatsEvent) to addr in order and
// fails unless each was accepted and told exactly once.
func pushAllAccepted(t *testing.T, c *ForwardClient, addr string, n int) *outcomes {
	t.Helper()
	out := newOutcomes(n)
	for i := 0; i < n; i++ {
		c.PushAsync(addr, chatsEvent(i), out.of(i))
	}
	if ok := out.waitOnce(t, 20*time.Second, 20*time.Millisecond); ok != n {
		t.Fatalf("%d of %d events accepted; errors %v", ok, n, out.errs)
	}
	return out
}

// windowMeter is a client stream interceptor: it counts PushStream opens
// and the most requests outstanding (sent, not yet answered) on one.
type windowMeter struct {
	opens    atomic.Int64
	out, max atomic.Int64
}

func (w *windowMeter) option() ClientOption {
	return WithDialOptions(grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		w.opens.Add(1)
		w.out.Store(0)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &meteredStream{ClientStream: cs, w: w}, nil
	}))
}

type meteredStream struct {
	grpc.ClientStream
	w *windowMeter
}

func (m *meteredStream) SendMsg(msg any) error {
	n := m.w.out.Add(1) // before sending: the answer may beat SendMsg's return
	for cur := m.w.max.Load(); n > cur && !m.w.max.CompareAndSwap(cur, n); cur = m.w.max.Load() {
	}
	return m.ClientStream.SendMsg(msg)
}

func (m *meteredStream) RecvMsg(msg any) error {
	err := m.ClientStream.RecvMsg(msg)
	if err == nil {
		m.w.out.Add(-1)
	}
	return err
}

// orderedDeliverer records payloads in delivery order and answers
// len(payload), after delay.
type orderedDeliverer struct {
	delay time.Duration
	mu    sync.Mutex
	got   []string
}

func (o *orderedDeliverer) Deliver(_ session.Route, p []byte, _ reactor.Meta) int {
	time.Sleep(o.delay)
	o.mu.Lock()
	o.got = append(o.got, string(p))
	o.mu.Unlock()
	return len(p)
}

func (o *orderedDeliverer) snapshot() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.got)
}

// chatsEvent is event i of a test: its payload is the JSON string of i.
func chatsEvent(i int) *forwardpb.Event {
	return &forwardpb.Event{Kind: forwardpb.Kind_KIND_CHATS, Company: "c", Agent: "a",
		Payload: []byte(strconv.Quote(strconv.Itoa(i))), RequestId: "r" + strconv.Itoa(i), Seq: uint64(i + 1)}
}

func TestForwardClient_ManyBatches_OrderKeptWithSeveralInFlight(t *testing.T) {
	t.Parallel()
	// A slow Deliver keeps the receiver behind, so the window fills.
	d := &orderedDeliverer{delay: 100 * time.Microsecond}
	addr, batches, _ := pushServer(t, d)
	cfg := testGRPC()
	cfg.BatchMax = 2
	meter := &windowMeter{}
	c := NewForwardClient(cfg, metrics.New(), meter.option())
	t.Cleanup(func() { _ = c.Close() })

	const n = 600
	out := pushAllAccepted(t, c, addr, n)
	for i := 0; i < n; i++ {
		if want := uint32(len(chatsEvent(i).Payload)); out.acc[i] != want {
			t.Fatalf("event %d answered %d, want its own count %d", i, out.acc[i], want)
		}
	}
	got := d.snapshot()
	if len(got) != n {
		t.Fatalf("pod got %d events, want %d", len(got), n)
	}
	for i, p := range got {
		if want := string(chatsEvent(i).Payload); p != want {
			t.Fatalf("delivery %d = %s, want %s: order broken", i, p, want)
		}
	}
	if meter.opens.Load() != 1 {
		t.Fatalf("%d streams opened, want 1", meter.opens.Load())
	}
	if mx := meter.max.Load(); mx < 2 || mx > streamWindow {
		t.Fatalf("at most %d batches were in flight, want 2..%d (pipelined within the window)", mx, streamWindow)
	}
	t.Logf("%d events in %d batches, up to %d in flight", n, batches.Load(), meter.max.Load())
}

func TestForwardClient_PodFailsMidStream_EachEventCompletedOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// start serves the pod and returns the function that breaks it
		// once some events were delivered.
		start    func(t *testing.T, d *orderedDeliverer) (addr string, fail func())
		wantCode codes.Code
	}{
		{"server stopped", func(t *testing.T, d *orderedDeliverer) (string, func()) {
			addr, s, _, _ := pushServerHandle(t, d)
			t.Cleanup(s.Stop)
			return addr, s.Stop
		}, codes.Unavailable},
		{"answers time out", func(t *testing.T, d *orderedDeliverer) (string, func()) {
			stall := make(chan struct{})
			release := make(chan struct{})
			var once sync.Once
			addr, s, _, _ := pushServerHandle(t, delivererFunc(func(r session.Route, p []byte, m reactor.Meta) int {
				select {
				case <-stall:
					<-release
				default:
				}
				return d.Deliver(r, p, m)
			}))
			t.Cleanup(s.Stop)
			t.Cleanup(func() { close(release) }) // runs first: frees the stuck handlers
			return addr, func() { once.Do(func() { close(stall) }) }
		}, codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := &orderedDeliverer{delay: 200 * time.Microsecond}
			addr, fail := tt.start(t, d)
			cfg := testGRPC()
			cfg.BatchMax = 4
			cfg.CallTimeout = 150 * time.Millisecond
			m := metrics.New()
			c := NewForwardClient(cfg, m)
			t.Cleanup(func() { _ = c.Close() })

			const n, breakAt = 400, 40
			out := newOutcomes(n)
			for i := 0; i < n; i++ {
				c.PushAsync(addr, chatsEvent(i), out.of(i))
			}
			eventually(t, 10*time.Second, "some events delivered", func() bool { return len(d.snapshot()) >= breakAt })
			fail()
			ok := out.waitOnce(t, 20*time.Second, 3*cfg.CallTimeout)
			// The batch being delivered when the pod broke may be lost
			// with its answer, so only bounds are certain.
			if ok == 0 || ok == n || ok > len(d.snapshot()) {
				t.Fatalf("%d of %d events accepted, %d delivered; want some before the failure, not all", ok, n, len(d.snapshot()))
			}
			out.mu.Lock()
			defer out.mu.Unlock()
			for i, err := range out.errs {
				if err != nil && status.Code(err) != tt.wantCode && !strings.Contains(err.Error(), "circuit breaker open") {
					t.Fatalf("event %d failed with %v, want %v or the open breaker", i, err, tt.wantCode)
				}
			}
			t.Logf("%d accepted, %d skipped; forwards ok %v retried_ok %v failed %v breaker_open %v", ok, n-ok,
				counter(m.GRPCForwards.WithLabelValues("ok")), counter(m.GRPCForwards.WithLabelValues("retried_ok")),
				counter(m.GRPCForwards.WithLabelValues("failed")), counter(m.GRPCForwards.WithLabelValues("breaker_open")))
		})
	}
}

// unaryOnlyServer is a pod from before PushStream: it serves Push alone
// and answers len(payload) per event.
type unaryOnlyServer struct {
	forwardpb.UnimplementedForwardServer
	calls atomic.Int64
	mu    sync.Mutex
	got   []string
}

func (u *unaryOnlyServer) Push(_ context.Context, req *forwardpb.PushRequest) (*forwardpb.PushResponse, error) {
	u.calls.Add(1)
	resp := &forwardpb.PushResponse{Accepted: make([]uint32, len(req.GetEvents()))}
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, ev := range req.GetEvents() {
		u.got = append(u.got, string(ev.GetPayload()))
		resp.Accepted[i] = uint32(len(ev.GetPayload()))
	}
	return resp, nil
}

func TestForwardClient_PodWithoutPushStream_FallsBackToUnaryPush(t *testing.T) {
	t.Parallel()
	old := &unaryOnlyServer{}
	srv := grpc.NewServer()
	forwardpb.RegisterForwardServer(srv, old)
	addr := serveGRPC(t, srv)
	meter := &windowMeter{}
	m := metrics.New()
	cfg := testGRPC()
	cfg.BatchMax = 3
	c := NewForwardClient(cfg, m, meter.option())
	t.Cleanup(func() { _ = c.Close() })

	const n = 200
	out := pushAllAccepted(t, c, addr, n)
	// The batches the stream had in flight went again by Push, in order.
	old.mu.Lock()
	got := slices.Clone(old.got)
	old.mu.Unlock()
	if len(got) != n {
		t.Fatalf("old pod got %d events, want %d", len(got), n)
	}
	for i, p := range got {
		if want := string(chatsEvent(i).Payload); p != want || out.acc[i] != uint32(len(want)) {
			t.Fatalf("event %d: delivered %s answered %d, want %s answered %d", i, p, out.acc[i], want, len(want))
		}
	}
	// Later pushes use Push straight away: the stream was tried once.
	if _, err := c.Push(context.Background(), addr, chatsEvent(0)); err != nil {
		t.Fatal(err)
	}
	if meter.opens.Load() != 1 {
		t.Fatalf("%d PushStream attempts, want 1", meter.opens.Load())
	}
	if ok, calls := counter(m.GRPCForwards.WithLabelValues("ok")), old.calls.Load(); ok != float64(calls) {
		t.Fatalf("forwards{ok} = %v, want one per forwarded batch, here each a unary Push call (%d)", ok, calls)
	}
	for _, r := range []string{"retried_ok", "failed", "breaker_open"} {
		if v := counter(m.GRPCForwards.WithLabelValues(r)); v != 0 {
			t.Fatalf("forwards{%s} = %v, want 0: the fallback is neither a failure nor a retry", r, v)
		}
	}
}

func TestForwardClient_PodDownOrStalled_BreakerOpensAfterStreamFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		addr     func(t *testing.T) string
		wantCode codes.Code
	}{
		{"nothing listens", deadAddr, codes.Unavailable},
		{"never answers", func(t *testing.T) string {
			release := make(chan struct{})
			addr, _, _ := pushServer(t, delivererFunc(func(session.Route, []byte, reactor.Meta) int {
				<-release
				return 1
			}))
			t.Cleanup(func() { close(release) })
			return addr
		}, codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := tt.addr(t)
			cfg := testGRPC()
			cfg.CallTimeout = 100 * time.Millisecond
			cfg.BreakerFailures = 2
			cfg.BreakerOpen = time.Minute
			m := metrics.New()
			attempts := &attemptCounter{n: map[string]int{}}
			c := NewForwardClient(cfg, m, attempts.options())
			t.Cleanup(func() { _ = c.Close() })

			// The first event's stream fails, and its retry's: two
			// stream failures open the breaker.
			_, err := c.Push(context.Background(), addr, chatsEvent(1))
			if status.Code(err) != tt.wantCode {
				t.Fatalf("first push: %v, want %v", err, tt.wantCode)
			}
			start := time.Now()
			_, err = c.Push(context.Background(), addr, chatsEvent(2))
			if err == nil || !strings.Contains(err.Error(), "circuit breaker open") {
				t.Fatalf("second push: %v, want the open breaker", err)
			}
			if took := time.Since(start); took > cfg.CallTimeout {
				t.Fatalf("an open breaker took %v to refuse; want at once", took)
			}
			if got := attempts.get(addr); got != 2 {
				t.Fatalf("%d streams opened, want 2 (one retry, then none)", got)
			}
			for r, want := range map[string]float64{"failed": 1, "breaker_open": 1, "ok": 0} {
				if v := counter(m.GRPCForwards.WithLabelValues(r)); v != want {
					t.Fatalf("forwards{%s} = %v, want %v", r, v, want)
				}
			}
			if v := counter(m.BreakerStateChanges.WithLabelValues("open")); v != 1 {
				t.Fatalf("breaker opened %v times, want 1", v)
			}
			// The failed batch is timed even when it never got onto a
			// stream (nothing listens); the refused one is not.
			if n, _ := histogram(m.GRPCForwardDuration); n != 1 {
				t.Fatalf("forward duration has %d samples, want 1 (the failed batch)", n)
			}
		})
	}
}

func TestForwardServer_Stop_EndsOpenPushStreamPromptly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		stop func(s *ForwardServer) error
	}{
		{"GracefulStop", func(s *ForwardServer) error { s.GracefulStop(); return nil }},
		{"Shutdown", func(s *ForwardServer) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return s.Shutdown(ctx)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(1)
			s := NewForwardServer(rec, metrics.New())
			addr := serveForward(t, s)
			st, err := forwardpb.NewForwardClient(rawConn(t, addr)).PushStream(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&forwardpb.PushRequest{Events: []*forwardpb.Event{chatsEvent(1)}}); err != nil {
				t.Fatal(err)
			}
			if resp, err := st.Recv(); err != nil || fmt.Sprint(resp.Accepted) != "[1]" {
				t.Fatalf("answer = %v, %v", resp, err)
			}
			// The stream stays open, idle: a stop must not wait for the
			// sender to close it.
			start := time.Now()
			if err := tt.stop(s); err != nil {
				t.Fatalf("%s = %v, want nil", tt.name, err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("%s with an idle PushStream took %v", tt.name, took)
			}
			if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
				t.Fatalf("stream after the stop: %v, want Unavailable", err)
			}
		})
	}
}

// slowCompletion takes its time on the first call, past the call timeout.
type slowCompletion struct {
	Completion
	once *sync.Once
	d    time.Duration
}

func (s slowCompletion) Forwarded(pod string, n uint32, err error) {
	s.once.Do(func() { time.Sleep(s.d) })
	s.Completion.Forwarded(pod, n, err)
}

// The answer deadline of a batch runs only while it is the pod's to answer
// and this client is reading: a full window behind a slow but live pod, or
// behind a slow completion here, is no timeout.
func TestForwardClient_FullWindowBehindSlowWork_NoFalseTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 150 * time.Millisecond
	tests := []struct {
		name       string
		deliver    time.Duration // per batch (BatchMax 1)
		completion time.Duration // the first completion only
	}{
		{"slow pod", timeout / 3, 0},
		{"slow completion", 0, 3 * timeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := &orderedDeliverer{delay: tt.deliver}
			addr, batches, _ := pushServer(t, d)
			cfg := testGRPC()
			cfg.BatchMax = 1
			cfg.CallTimeout = timeout
			m := metrics.New()
			c := NewForwardClient(cfg, m)
			t.Cleanup(func() { _ = c.Close() })

			// 2 × window batches: the tail waits ~16 × deliver > timeout.
			const n = 2 * streamWindow
			out := newOutcomes(n)
			once := &sync.Once{}
			for i := 0; i < n; i++ {
				c.PushAsync(addr, chatsEvent(i), slowCompletion{out.of(i), once, tt.completion})
			}
			if ok := out.waitOnce(t, 20*time.Second, 2*timeout); ok != n {
				t.Fatalf("%d of %d accepted; errors %v", ok, n, out.errs)
			}
			if b := batches.Load(); b != n {
				t.Fatalf("pod got %d batches, want %d: something was re-sent", b, n)
			}
			if v := counter(m.GRPCForwards.WithLabelValues("ok")); v != n {
				t.Fatalf("forwards{ok} = %v, want %d", v, n)
			}
		})
	}
}
