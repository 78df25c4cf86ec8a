package bridge

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/session"
)

func TestDispatch_EachSubjectKind_ReachesDelivererWithItsRoute(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		subject string
		route   session.Route // as Deliver must see it
		key     session.Route // as registered in the route registry
	}{
		{"chats", "websocket.acme.a1.chats",
			session.Route{Kind: session.RouteChats, Company: "acme", Agent: "a1"},
			session.Route{Kind: session.RouteChats, Company: "acme", Agent: "a1"}},
		{"messages", "websocket.acme.a1.messages.x7",
			session.Route{Kind: session.RouteMessages, Company: "acme", Agent: "a1", Chat: "x7"},
			session.Route{Kind: session.RouteMessages, Company: "acme", Agent: "a1", Chat: "x7"}},
		{"agents", "websocket.acme.a1.agents",
			session.Route{Kind: session.RouteAdmin, Company: "acme", Agent: "a1"},
			session.Route{Kind: session.RouteAdmin}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, url := startNATS(t)
			nc := connect(t, url)
			routes := newMemRoutes()
			p := startPod(t, nc, routes, defaultPodOptions())
			routes.add(tt.key, p.id)

			payload := `{"event_id":"e1","company_id":"acme","row_data":{"n":1}}`
			before := time.Now()
			publish(t, nc, tt.subject, payload, "req-"+tt.name)
			got := p.rec.waitN(t, 1, 5*time.Second)[0]

			if got.Route != tt.route {
				t.Errorf("route = %+v, want %+v", got.Route, tt.route)
			}
			if got.Payload != payload {
				t.Errorf("payload = %q, want the published bytes %q", got.Payload, payload)
			}
			if got.Meta.RequestID != "req-"+tt.name {
				t.Errorf("request id = %q", got.Meta.RequestID)
			}
			if pt := got.Meta.PublishedAt; pt.Before(before.Add(-time.Second)) || pt.After(time.Now()) {
				t.Errorf("published at %s, want the JetStream store time (~%s)", pt, before)
			}
			eventually(t, 5*time.Second, "ack", func() bool {
				return counter(p.m.Acks.WithLabelValues("ack", "delivered")) == 1
			})
			if n := counter(p.m.NATSMessages.WithLabelValues(tt.route.Kind.String())); n != 1 {
				t.Errorf("nats messages{%s} = %v", tt.route.Kind, n)
			}
		})
	}
}

func TestDispatch_NoRequestIDHeader_GetsAFreshOne(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	p := startPod(t, nc, routes, defaultPodOptions())
	r := session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}
	routes.add(r, p.id)

	js := newJS(t, nc)
	if _, err := EnsureStream(context.Background(), js, testNATS()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := js.Publish(context.Background(), "websocket.c.a.chats", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	got := p.rec.waitN(t, 2, 5*time.Second)
	if got[0].Meta.RequestID == "" || got[0].Meta.RequestID == got[1].Meta.RequestID {
		t.Fatalf("request ids %q, %q: want two distinct fresh ids", got[0].Meta.RequestID, got[1].Meta.RequestID)
	}
}

func TestDispatch_NoPodHoldsRoute_AckedAndCountedAsDrop(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	p := startPod(t, nc, newMemRoutes(), defaultPodOptions())

	for i := 0; i < 3; i++ {
		publish(t, nc, "websocket.c.nobody.chats", "{}", "")
	}
	publish(t, nc, "websocket.c.nobody.messages.x", "{}", "")
	eventually(t, 5*time.Second, "4 no_route drops", func() bool {
		return counter(p.m.Drops.WithLabelValues("no_route")) == 4
	})
	if n := counter(p.m.Acks.WithLabelValues("ack", "no_route")); n != 4 {
		t.Fatalf("acks{ack,no_route} = %v, want 4", n)
	}
	eventually(t, 5*time.Second, "nothing pending", func() bool {
		return allSettled(t, nc, testNATS())
	})
	if got := p.rec.snapshot(); len(got) != 0 {
		t.Fatalf("deliverer called for unrouted events: %+v", got)
	}
}

func TestDispatch_AdminEventNotYetRegistered_StillTriesLocalSockets(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	p := startPod(t, nc, newMemRoutes(), defaultPodOptions())

	publish(t, nc, "websocket.acme.a1.agents", `{"x":1}`, "")
	got := p.rec.waitN(t, 1, 5*time.Second)
	if got[0].Route != (session.Route{Kind: session.RouteAdmin, Company: "acme", Agent: "a1"}) {
		t.Fatalf("route %+v", got[0].Route)
	}
	if n := counter(p.m.Drops.WithLabelValues("no_route")); n != 0 {
		t.Fatalf("an admin event a local admin socket took counted as no_route")
	}
}

func TestDispatch_RegistryDown_HeldThenDeliveredInOrderOnRecovery(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	p := startPod(t, nc, routes, defaultPodOptions())
	r := session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}
	routes.add(r, p.id)
	routes.setDown(true)

	for i := 0; i < 3; i++ {
		publish(t, nc, "websocket.c.a.chats", fmt.Sprintf(`{"n":%d}`, i), "")
	}
	// Held (in progress) and retried every nak_delay while down, never
	// NAKed: a NAK would let later events overtake it.
	eventually(t, 5*time.Second, "repeated lookups", func() bool {
		return counter(p.m.Acks.WithLabelValues("in_progress", "route_lookup")) >= 6
	})
	if v := counter(p.m.Acks.WithLabelValues("nak", "route_lookup")); v != 0 {
		t.Fatalf("%v NAKs while the registry was down; want the message held", v)
	}
	if got := p.rec.snapshot(); len(got) != 0 {
		t.Fatalf("delivered while the registry was down: %d", len(got))
	}
	routes.setDown(false)

	got := p.rec.waitN(t, 3, 5*time.Second)
	time.Sleep(3 * testNATS().NakDelay) // a duplicate would show by now
	got = p.rec.snapshot()
	seen := map[string]int{}
	for _, d := range got {
		seen[d.Payload]++
	}
	for i := 0; i < 3; i++ {
		if n := seen[fmt.Sprintf(`{"n":%d}`, i)]; n != 1 {
			t.Fatalf("event %d delivered %d times after recovery; all: %v", i, n, seen)
		}
		if got[i].Payload != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("delivery %d is %s: out of publish order", i, got[i].Payload)
		}
	}
	eventually(t, 5*time.Second, "all acked", func() bool {
		return allSettled(t, nc, testNATS())
	})
}

func TestDispatch_UnknownSubjectOnUpstreamStream_Terminated(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	cfg := testNATS()
	// An upstream-owned stream with broader subjects than dws creates.
	if _, err := newJS(t, nc).CreateStream(context.Background(), jetstream.StreamConfig{Name: cfg.Stream, Subjects: []string{"websocket.>"}}); err != nil {
		t.Fatal(err)
	}
	p := startPod(t, nc, newMemRoutes(), defaultPodOptions())
	if _, err := newJS(t, nc).Publish(context.Background(), "websocket.c.a.unknown.kind", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "term", func() bool {
		return counter(p.m.Acks.WithLabelValues("term", "bad_subject")) == 1
	})
	if counter(p.m.Drops.WithLabelValues("bad_subject")) != 1 || counter(p.m.NATSMessages.WithLabelValues("unknown")) != 1 {
		t.Fatal("bad subject not counted as drop and unknown message")
	}
}

func TestDispatch_DelivererPanics_RetriedInPlaceThenDelivered(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	p := startPod(t, nc, routes, defaultPodOptions())
	routes.add(session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}, p.id)
	panics := 2
	p.rec.setHook(func(d delivery) {
		if panics > 0 { // only the dispatch worker of this subject runs the hook
			panics--
			panic("reactor bug (test)")
		}
	})

	publish(t, nc, "websocket.c.a.chats", "{}", "req-panic")
	got := p.rec.waitN(t, 1, 5*time.Second)
	if got[0].Meta.RequestID != "req-panic" {
		t.Fatalf("request id %q", got[0].Meta.RequestID)
	}
	// Retried in place (a NAK would let later events overtake it).
	if n := counter(p.m.Acks.WithLabelValues("in_progress", "panic")); n != 2 {
		t.Fatalf("acks{in_progress,panic} = %v, want 2", n)
	}
	eventually(t, 5*time.Second, "acked", func() bool {
		return counter(p.m.Acks.WithLabelValues("ack", "delivered")) == 1
	})
}

func TestDispatch_OneSubject_DeliveredInPublishOrder(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	routesKey := session.Route{Kind: session.RouteMessages, Company: "c", Agent: "a", Chat: "x"}
	o := defaultPodOptions()
	p := startPod(t, nil, routes, o)
	routes.add(routesKey, p.id)
	routes.add(session.Route{Kind: session.RouteMessages, Company: "c", Agent: "a", Chat: "y"}, p.id)
	// A backlog first, so workers are busy and messages queue up.
	const n = 1000
	publishBacklog(t, nc, o.nats, "websocket.c.a.messages.x", n)
	p.startBridge(t, nc, routes, o)
	for i := 0; i < n; i++ { // and more while it consumes
		publish(t, nc, "websocket.c.a.messages.x", strconv.Itoa(n+i), "")
		if i%100 == 0 { // other subjects interleaved on other workers
			publish(t, nc, "websocket.c.a.messages.y", `"other"`, "")
		}
	}
	got := p.rec.waitN(t, 2*n+10, 10*time.Second)
	assertInOrder(t, got, routesKey, 2*n)
}

// assertInOrder checks the deliveries for r carry 0..n-1 in order.
func assertInOrder(t *testing.T, got []delivery, r session.Route, n int) {
	t.Helper()
	next := 0
	for _, d := range got {
		if d.Route != r {
			continue
		}
		if d.Payload != strconv.Itoa(next) {
			t.Fatalf("delivery %d carries %q: out of publish order", next, d.Payload)
		}
		next++
	}
	if next != n {
		t.Fatalf("got %d deliveries for %+v, want %d", next, r, n)
	}
}

func TestBridge_Drain_FinishesAndAcksInFlightMessages(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	o := defaultPodOptions()
	p := startPod(t, nil, routes, o)
	routes.add(session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}, p.id)
	p.rec.setHook(func(delivery) { time.Sleep(3 * time.Millisecond) }) // slow sockets

	// A backlog larger than one pull, so Drain finds messages received and
	// queued but not yet dispatched, and others never fetched.
	const n = 600
	publishBacklog(t, nc, o.nats, "websocket.c.a.chats", n)
	p.startBridge(t, nc, routes, o)
	p.rec.waitN(t, 10, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.bridge.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	handled := len(p.rec.snapshot())
	if handled <= 10 || handled >= n {
		t.Fatalf("handled %d of %d: want Drain to finish what was received and fetch no more", handled, n)
	}
	// The derived stream is a work queue: exactly the handled messages
	// were acked and left it; the rest wait for the next owner.
	if b := settledState(t, nc, o.nats); int(b.unsettled) != n-handled {
		t.Fatalf("after Drain %d messages unsettled; handled %d of %d", b.unsettled, handled, n)
	}
	if d := gauge(p.m.DispatchQueueDepth); d != 0 {
		t.Fatalf("queue depth after drain = %v", d)
	}
	if err := p.bridge.Drain(ctx); err != nil {
		t.Fatalf("second Drain: %v", err)
	}
}

// publishBacklog stores n events on subject (payloads "0".."n-1") before
// any pod consumes, creating the streams as a pod would.
func publishBacklog(t testing.TB, nc *nats.Conn, cfg config.NATS, subject string, n int) {
	publishBacklogFn(t, nc, cfg, n, func(i int) (string, []byte) { return subject, []byte(strconv.Itoa(i)) })
}

// publishBacklogFn stores n events (subject and payload of event i from
// ev) before any pod consumes, and waits until the partition stream holds
// them all.
func publishBacklogFn(t testing.TB, nc *nats.Conn, cfg config.NATS, n int, ev func(i int) (string, []byte)) {
	t.Helper()
	js := newJS(t, nc)
	ctx := context.Background()
	s, err := EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The derived stream starts at the present: create it before the
	// backlog, as a running fleet would have.
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := PartitionLayout{Source: cfg.Stream, Consumer: cfg.Consumer, Partitions: cfg.Partitions}
	if _, err := EnsurePartitionStream(ctx, js, l, info); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		subject, data := ev(i)
		if _, err := js.PublishAsync(subject, data); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 { // stay under the async publish window
			waitAsync(t, js)
		}
	}
	waitAsync(t, js)
	eventually(t, 30*time.Second, "backlog sourced into the partition stream", func() bool {
		return settledState(t, nc, cfg).unsettled == uint64(n)
	})
}

func waitAsync(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("async publish did not complete")
	}
}

func TestBridge_CloseWithoutDrain_StopsAndLeavesTheRestToRedelivery(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	o := defaultPodOptions()
	p := startPod(t, nil, routes, o)
	routes.add(session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}, p.id)
	p.rec.setHook(func(delivery) { time.Sleep(time.Millisecond) })
	const n = 500
	publishBacklog(t, nc, o.nats, "websocket.c.a.chats", n)
	p.startBridge(t, nc, routes, o)
	p.rec.waitN(t, 5, 5*time.Second)

	start := time.Now()
	if err := p.bridge.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > closeWait {
		t.Fatalf("Close took %s", d)
	}
	if err := p.bridge.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := p.bridge.Start(context.Background()); err == nil {
		t.Fatal("Start after Close succeeded")
	}
	// Whatever was not handled stays on the stream for another pod.
	eventually(t, 5*time.Second, "fetched messages given back", func() bool {
		return gauge(p.m.DispatchQueueDepth) == 0
	})
	handled := len(p.rec.snapshot())
	if b := settledState(t, nc, o.nats); handled >= n || int(b.unsettled) < n-handled {
		t.Fatalf("handled %d of %d; %d left on the partition stream", handled, n, b.unsettled)
	}
}

func TestDispatch_RouteCacheOn_RepeatLookupsSkipTheRegistry(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	o := defaultPodOptions()
	o.cacheTTL = time.Minute
	p := startPod(t, nc, routes, o)
	routes.add(session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}, p.id)

	publish(t, nc, "websocket.c.a.chats", "1", "")
	p.rec.waitN(t, 1, 5*time.Second)
	routes.setDown(true) // a cached route does not notice
	publish(t, nc, "websocket.c.a.chats", "2", "")
	publish(t, nc, "websocket.c.a.chats", "3", "")
	got := p.rec.waitN(t, 3, 5*time.Second)
	if got[2].Payload != "3" {
		t.Fatalf("deliveries %+v", got)
	}
	routes.mu.Lock()
	calls := routes.calls
	routes.mu.Unlock()
	if calls != 1 {
		t.Fatalf("registry asked %d times for one route within the cache TTL, want 1", calls)
	}
}
