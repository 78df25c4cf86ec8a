package reactor

import (
	"fmt"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dws-gateway/dws/session"
)

// The exactly-once rule of SPEC §5 end to end on one pod: a frame carries
// its seq, a redelivered or older seq never reaches a socket twice and is
// counted as a duplicate, and chats and messages are separate
// subscriptions.
func TestDeliver_Seq_DuplicatesDroppedPerSubscription(t *testing.T) {
	p := startPod(t, nil)
	u := dial(t, p.userURL("acme", "a1", "u1")).ready()
	u.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x1"}`))
	eventually(t, 3*time.Second, "select", func() bool { return countOn(p, messages("acme", "a1", "x1")) == 1 })
	dups := testutil.ToFloat64(p.srv.m.Drops.WithLabelValues("duplicate"))

	steps := []struct {
		r    session.Route
		seq  uint64
		want bool
	}{
		{chats("acme", "a1"), 10, true},
		{messages("acme", "a1", "x1"), 11, true},
		{chats("acme", "a1"), 10, false}, // redelivery
		{chats("acme", "a1"), 9, false},  // older: a handover overlap
		{messages("acme", "a1", "x1"), 11, false},
		{chats("acme", "a1"), 12, true},
		{messages("acme", "a1", "x1"), 12, true}, // own subscription
	}
	wantDups := 0
	for _, s := range steps {
		n := p.srv.Deliver(s.r, []byte(`{"event_id":"e"}`), Meta{Seq: s.seq})
		if n != 1 {
			t.Fatalf("Deliver seq %d handed to %d sockets", s.seq, n)
		}
		if !s.want {
			wantDups++
		}
	}
	for _, s := range steps {
		if !s.want {
			continue
		}
		m := u.next(3 * time.Second)
		if m["type"] != "event" || m["seq"] != float64(s.seq) {
			t.Fatalf("got %v, want event seq %d", m, s.seq)
		}
	}
	u.expectNothing(200 * time.Millisecond)
	eventually(t, 2*time.Second, "duplicates counted", func() bool {
		return testutil.ToFloat64(p.srv.m.Drops.WithLabelValues("duplicate"))-dups == float64(wantDups)
	})
}

// A newly selected chat is a new subscription: its first event is written
// whatever the last seq of the previous chat was.
func TestDeliver_Seq_SelectChatResetsMessages(t *testing.T) {
	p := startPod(t, nil)
	u := dial(t, p.userURL("acme", "a1", "u1")).ready()
	u.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x1"}`))
	eventually(t, 3*time.Second, "select x1", func() bool { return countOn(p, messages("acme", "a1", "x1")) == 1 })
	p.srv.Deliver(messages("acme", "a1", "x1"), []byte(`{"event_id":"m1"}`), Meta{Seq: 50})
	if m := u.next(3 * time.Second); m["seq"] != float64(50) {
		t.Fatalf("got %v", m)
	}
	u.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x2"}`))
	eventually(t, 3*time.Second, "select x2", func() bool { return countOn(p, messages("acme", "a1", "x2")) == 1 })
	p.srv.Deliver(messages("acme", "a1", "x2"), []byte(`{"event_id":"m2"}`), Meta{Seq: 20})
	if m := u.next(3 * time.Second); m["seq"] != float64(20) {
		t.Fatalf("after switching chats got %v, want seq 20", m)
	}
}

// Admins keep a last seq per (company, agent): another pair's older seq
// is not a duplicate.
func TestDeliver_Seq_AdminPerPair(t *testing.T) {
	p := startPod(t, nil)
	a := dial(t, p.adminURL("adm", "", "")).ready()
	r1 := session.Route{Kind: session.RouteAdmin, Company: "acme", Agent: "a1"}
	r2 := session.Route{Kind: session.RouteAdmin, Company: "acme", Agent: "a2"}
	p.srv.Deliver(r1, []byte(`{"event_id":"g1"}`), Meta{Seq: 30})
	p.srv.Deliver(r2, []byte(`{"event_id":"g2"}`), Meta{Seq: 20})
	p.srv.Deliver(r1, []byte(`{"event_id":"g3"}`), Meta{Seq: 30})
	for _, want := range []float64{30, 20} {
		if m := a.next(3 * time.Second); m["seq"] != want {
			t.Fatalf("got %v, want seq %v", m, want)
		}
	}
	a.expectNothing(200 * time.Millisecond)
}

func TestReady_CarriesStreamEpoch(t *testing.T) {
	p := startPod(t, nil)
	p.srv.SetStreamEpoch("k2x9")
	c := dial(t, p.userURL("acme", "a1", "u1"))
	if m := c.next(3 * time.Second); m["type"] != "ready" || m["epoch"] != "k2x9" {
		t.Fatalf("got %v, want ready with epoch k2x9", m)
	}
}

// The ready frame names the stream position set before the socket's
// routes were joined; a later position reaches later sockets only.
func TestReady_CarriesStreamPosition(t *testing.T) {
	p := startPod(t, nil)
	for _, seq := range []uint64{0, 42, 43} {
		p.srv.SetStreamPosition("k2x9", seq)
		c := dial(t, p.userURL("acme", "a1", fmt.Sprintf("u%d", seq)))
		m := c.next(3 * time.Second)
		if m["type"] != "ready" || m["epoch"] != "k2x9" || m["seq"] != float64(seq) {
			t.Fatalf("got %v, want ready with epoch k2x9 and seq %d", m, seq)
		}
	}
}
