package reactor

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/session"
)

func chats(c, a string) session.Route {
	return session.Route{Kind: session.RouteChats, Company: c, Agent: a}
}

func messages(c, a, x string) session.Route {
	return session.Route{Kind: session.RouteMessages, Company: c, Agent: a, Chat: x}
}

// expectNothing asserts no text frame arrives within d.
func (c *client) expectNothing(d time.Duration) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	h, err := ws.ReadHeader(c.r)
	if err == nil {
		c.t.Fatalf("unexpected frame %v", h.OpCode)
	}
}

func TestDeliver_Chats_ReachEveryUserOfCompanyAgentOnly(t *testing.T) {
	p := startPod(t, nil)
	u1 := dial(t, p.userURL("acme", "a1", "u1")).ready()
	u2 := dial(t, p.userURL("acme", "a1", "u2")).ready()
	other := dial(t, p.userURL("acme", "a2", "u3")).ready()
	payload := []byte(`{"event_id":"e1","company_id":"acme","row_data":{"n":1}}`)
	if n := p.srv.Deliver(chats("acme", "a1"), payload, Meta{}); n != 2 {
		t.Fatalf("Deliver reached %d sockets", n)
	}
	for _, c := range []*client{u1, u2} {
		_, raw := c.frame(3 * time.Second)
		want := `{"type":"event","payload":` + string(payload) + `}`
		if string(raw) != want {
			t.Fatalf("got %s want %s", raw, want)
		}
	}
	other.expectNothing(200 * time.Millisecond)
}

func TestDeliver_Messages_OnlySelectedChat_AndSwitchMoves(t *testing.T) {
	p := startPod(t, nil)
	u1 := dial(t, p.userURL("acme", "a1", "u1")).ready()
	u2 := dial(t, p.userURL("acme", "a1", "u2")).ready()
	u1.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x1"}`))
	u2.send(ws.OpText, []byte(`{"type":"select_chat","payload":{"chat_id":"x2"}}`))
	eventually(t, 3*time.Second, "selects", func() bool {
		return p.srv.index.owner("acme:a1:u1") != nil && countOn(p, messages("acme", "a1", "x1")) == 1 && countOn(p, messages("acme", "a1", "x2")) == 1
	})
	p.srv.Deliver(messages("acme", "a1", "x1"), []byte(`{"event_id":"m1"}`), Meta{})
	if m := u1.next(3 * time.Second); m["type"] != "event" {
		t.Fatalf("u1 got %v", m)
	}
	u2.expectNothing(200 * time.Millisecond)

	// Switching chats moves delivery; chat-list events keep flowing.
	u1.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x2"}`))
	eventually(t, 3*time.Second, "switch", func() bool {
		return countOn(p, messages("acme", "a1", "x1")) == 0 && countOn(p, messages("acme", "a1", "x2")) == 2
	})
	if n := p.srv.Deliver(messages("acme", "a1", "x1"), []byte(`{"event_id":"m2"}`), Meta{}); n != 0 {
		t.Fatalf("old chat still routed to %d", n)
	}
	p.srv.Deliver(messages("acme", "a1", "x2"), []byte(`{"event_id":"m3"}`), Meta{})
	p.srv.Deliver(chats("acme", "a1"), []byte(`{"event_id":"c1"}`), Meta{})
	for _, c := range []*client{u1, u2} {
		for _, want := range []string{"m3", "c1"} {
			m := c.next(3 * time.Second)
			pl, _ := m["payload"].(map[string]any)
			if pl["event_id"] != want {
				t.Fatalf("got %v want %s", m, want)
			}
		}
	}
}

func countOn(p *pod, r session.Route) int {
	_, n := p.srv.index.socketsFor(r, nil)
	return n
}

func TestDeliver_Admin_FilteredBySubscription(t *testing.T) {
	p := startPod(t, nil)
	all := dial(t, p.adminURL("adm-all", "", "")).ready()
	acme := dial(t, p.adminURL("adm-acme", "acme", "")).ready()
	acmeA2 := dial(t, p.adminURL("adm-a2", "acme", "a2")).ready()
	r := session.Route{Kind: session.RouteAdmin, Company: "acme", Agent: "a1"}
	if n := p.srv.Deliver(r, []byte(`{"event_id":"g1"}`), Meta{}); n != 2 {
		t.Fatalf("Deliver reported %d admin sockets, want 2", n)
	}
	for _, c := range []*client{all, acme} {
		if m := c.next(3 * time.Second); m["type"] != "event" {
			t.Fatalf("got %v", m)
		}
	}
	acmeA2.expectNothing(200 * time.Millisecond)
}

func TestSession_SecondSocketSameUser_ReplacesFirstWith4402(t *testing.T) {
	p := startPod(t, nil)
	first := dial(t, p.userURL("acme", "a1", "u1")).ready()
	second := dial(t, p.userURL("acme", "a1", "u1")).ready()
	m := first.next(3 * time.Second)
	pl, _ := m["payload"].(map[string]any)
	if m["type"] != "error" || pl["code"] != string(codec.CodeSessionConflict) {
		t.Fatalf("first got %v", m)
	}
	if code := first.closeCode(3 * time.Second); code != 4402 {
		t.Fatalf("first closed with %d", code)
	}
	// The survivor still owns the session and gets events.
	eventually(t, 2*time.Second, "one open", func() bool { return p.srv.Open() == 1 })
	p.srv.Deliver(chats("acme", "a1"), []byte(`{"event_id":"e"}`), Meta{})
	if m := second.next(3 * time.Second); m["type"] != "event" {
		t.Fatalf("second got %v", m)
	}
	if !p.locker.Held("acme:a1:u1") {
		t.Fatal("lock released although the survivor holds it")
	}
}

func TestSession_Close_ReleasesLockAndRoutes(t *testing.T) {
	p := startPod(t, nil)
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	c.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x1"}`))
	eventually(t, 2*time.Second, "select", func() bool { return countOn(p, messages("acme", "a1", "x1")) == 1 })
	_ = c.conn.Close()
	eventually(t, 3*time.Second, "release", func() bool {
		pods, _ := p.routes.Pods(t.Context(), chats("acme", "a1"))
		mp, _ := p.routes.Pods(t.Context(), messages("acme", "a1", "x1"))
		return !p.locker.Held("acme:a1:u1") && len(pods) == 0 && len(mp) == 0 && p.srv.Open() == 0
	})
}

func TestDeliver_SlowConsumer_DropsThenCloses4408(t *testing.T) {
	p := startPod(t, func(o *Options) {
		o.Limits.OutboundRingBytes = 512 << 10
		o.Limits.OutboundRingMessages = 64
		o.Limits.SlowConsumerGrace = 500 * time.Millisecond
	})
	slow := dial(t, p.userURL("acme", "a1", "slow")).ready()
	fast := dial(t, p.userURL("acme", "a1", "fast")).ready()
	_ = slow
	payload := []byte(`{"event_id":"big","row_data":"` + string(make([]byte, 0)) + stringsRepeat("x", 16<<10) + `"}`)
	got := make(chan int, 1)
	go func() {
		n := 0
		for {
			_ = fast.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			h, err := ws.ReadHeader(fast.r)
			if err != nil {
				got <- n
				return
			}
			buf := make([]byte, h.Length)
			if _, err := fastRead(fast, buf); err != nil {
				got <- n
				return
			}
			if h.OpCode == ws.OpText {
				n++
				if n == 400 {
					got <- n
					return
				}
			}
		}
	}()
	// The slow client never reads: its kernel buffers fill, then its ring.
	for i := 0; i < 400; i++ {
		p.srv.Deliver(chats("acme", "a1"), payload, Meta{})
		time.Sleep(2 * time.Millisecond)
	}
	if n := <-got; n != 400 {
		t.Fatalf("healthy socket got %d of 400", n)
	}
	eventually(t, 5*time.Second, "slow consumer closed", func() bool {
		return testutil.ToFloat64(p.m.SlowConsumerCloses) == 1
	})
	if d := testutil.ToFloat64(p.m.Drops.WithLabelValues("slow_consumer")); d == 0 {
		t.Fatal("no drops counted")
	}
	if p.srv.Open() != 1 {
		t.Fatalf("open = %d", p.srv.Open())
	}
}

func fastRead(c *client, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := c.r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func stringsRepeat(s string, n int) string {
	b := make([]byte, 0, len(s)*n)
	for i := 0; i < n; i++ {
		b = append(b, s...)
	}
	return string(b)
}

// goneLoop is an event loop whose engine has stopped: Execute fails.
type goneLoop struct{ gnet.EventLoop }

func (goneLoop) Execute(context.Context, gnet.Runnable) error { return errors.New("engine stopped") }

// heldLoop is an event loop that accepts work but runs it only when the
// test says so, to act between Deliver and the loop's turn.
type heldLoop struct {
	gnet.EventLoop
	queued []gnet.Runnable
}

func (h *heldLoop) Execute(_ context.Context, r gnet.Runnable) error {
	h.queued = append(h.queued, r)
	return nil
}

func (h *heldLoop) run() {
	for _, r := range h.queued {
		_ = r.Run(context.Background())
	}
	h.queued = nil
}

// unitServer is a Server with one loop on el, not listening: Deliver and
// the loop's delivery run in the test's goroutine.
func unitServer(t *testing.T, el gnet.EventLoop) (*Server, *loop, *metrics.Metrics) {
	t.Helper()
	m := metrics.New()
	srv, err := New(Options{Loops: 1, APIKeys: session.NewAPIKeyGuard("", ""), Tokens: nopTokens{},
		Locker: session.NewMemoryLocker(), Routes: session.NewMemoryRoutes("p"), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	l := newLoop(srv, el, 0)
	srv.loops.Store(&[]*loop{l})
	return srv, l, m
}

func openConn(l *loop, r session.Route, it *ident) *conn {
	c := &conn{gc: &sinkConn{}, lp: l, state: stOpen, ident: it, wheel: -1}
	l.join(c, r)
	return c
}

// Deliver returns what the loops took (issue 9 finding 6): an event for a
// loop whose engine is gone is not reported as accepted, and is counted.
func TestDeliver_LoopGone_NotCountedAsAccepted_DroppedLoopClosed(t *testing.T) {
	srv, l, m := unitServer(t, goneLoop{})
	openConn(l, chats("acme", "a1"), &ident{company: "acme", agent: "a1"})
	openConn(l, chats("acme", "a1"), &ident{company: "acme", agent: "a1"})
	if n := srv.Deliver(chats("acme", "a1"), []byte(`{}`), Meta{RequestID: "r1"}); n != 0 {
		t.Fatalf("Deliver reported %d sockets on a stopped loop", n)
	}
	if d := testutil.ToFloat64(m.Drops.WithLabelValues("loop_closed")); d != 2 {
		t.Fatalf("loop_closed drops = %.0f, want 2", d)
	}
}

// Sockets Deliver counted that are closing, or that left the route before
// the loop's turn, drop the frame with reason socket_closing.
func TestDeliver_SocketsClosingOrGone_DroppedSocketClosing(t *testing.T) {
	el := &heldLoop{}
	srv, l, m := unitServer(t, el)
	r := chats("acme", "a1")
	it := &ident{company: "acme", agent: "a1"}
	open, closing, leaving := openConn(l, r, it), openConn(l, r, it), openConn(l, r, it)
	if n := srv.Deliver(r, []byte(`{}`), Meta{}); n != 3 {
		t.Fatalf("Deliver reported %d, want 3", n)
	}
	closing.state = stClosing
	l.leave(leaving, r)
	el.run()
	if d := testutil.ToFloat64(m.Drops.WithLabelValues("socket_closing")); d != 2 {
		t.Fatalf("socket_closing drops = %.0f, want 2", d)
	}
	if got := open.gc.(*sinkConn).written; got == 0 {
		t.Fatal("the open socket got nothing")
	}
	if d := testutil.ToFloat64(m.Deliveries.WithLabelValues("local")); d != 1 {
		t.Fatalf("deliveries = %.0f, want 1", d)
	}
}

// For admin events Deliver counts only the admins whose subscription
// matches, as the loops will; before issue 9 it counted every admin.
func TestDeliver_AdminCount_MatchesSubscriptions(t *testing.T) {
	el := &heldLoop{}
	srv, l, m := unitServer(t, el)
	admin := session.Route{Kind: session.RouteAdmin}
	for _, sub := range [][2]string{{"", ""}, {"acme", ""}, {"acme", "a1"}, {"", "a1"}, {"acme", "a2"}, {"other", ""}, {"", "a2"}} {
		openConn(l, admin, &ident{subCompany: sub[0], subAgent: sub[1]})
	}
	cases := []struct {
		company, agent string
		want           int
	}{
		{"acme", "a1", 4}, // all, acme, acme/a1, */a1
		{"acme", "a2", 4}, // all, acme, acme/a2, */a2
		{"other", "a1", 3},
		{"nobody", "a9", 1},
		{"", "", 1},
	}
	for _, tc := range cases {
		r := session.Route{Kind: session.RouteAdmin, Company: tc.company, Agent: tc.agent}
		if n := srv.Deliver(r, []byte(`{}`), Meta{}); n != tc.want {
			t.Errorf("admin event %s/%s: Deliver reported %d, want %d", tc.company, tc.agent, n, tc.want)
		}
		// The loop reaches exactly the sockets Deliver counted.
		before := testutil.ToFloat64(m.Deliveries.WithLabelValues("local"))
		el.run()
		if reached := int(testutil.ToFloat64(m.Deliveries.WithLabelValues("local")) - before); reached != tc.want {
			t.Errorf("admin event %s/%s: the loop reached %d sockets, Deliver said %d", tc.company, tc.agent, reached, tc.want)
		}
	}
	// Leaving uncounts under the same key.
	for _, c := range append([]*conn(nil), l.members[admin].conns...) {
		l.leave(c, admin)
	}
	if n := srv.Deliver(session.Route{Kind: session.RouteAdmin, Company: "acme", Agent: "a1"}, []byte(`{}`), Meta{}); n != 0 {
		t.Fatalf("Deliver reported %d after every admin left", n)
	}
}
