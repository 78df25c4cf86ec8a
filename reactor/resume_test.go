package reactor

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dws-gateway/dws/session"
)

// scriptedReplayer stands for the stream: it records the request, emits
// the scripted events once the test says go, and answers resync.
type scriptedReplayer struct {
	reqs   chan ReplayRequest
	go_    chan struct{}
	events []ReplayEvent
	resync string
}

func newScripted(resync string, events ...ReplayEvent) *scriptedReplayer {
	return &scriptedReplayer{reqs: make(chan ReplayRequest, 4), go_: make(chan struct{}), events: events, resync: resync}
}

func (r *scriptedReplayer) Replay(ctx context.Context, req ReplayRequest, emit func([]ReplayEvent) bool) (string, error) {
	r.reqs <- req
	select {
	case <-r.go_:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if r.resync != "" {
		return r.resync, nil
	}
	for i := 0; i < len(r.events); i += 2 { // two per batch
		if !emit(r.events[i:min(i+2, len(r.events))]) {
			return "", nil
		}
	}
	return "", nil
}

func replayed(seq uint64, r session.Route) ReplayEvent {
	return ReplayEvent{Seq: seq, Route: r, Payload: []byte(`{"event_id":"r"}`), Meta: Meta{Seq: seq}}
}

func resumeURL(p *pod, since, chat string) string {
	u := p.userURL("acme", "a1", "u1") + "&since=" + since + "&epoch=e1"
	if chat != "" {
		u += "&chat_id=" + url.QueryEscape(chat)
	}
	return u
}

// SPEC §5a hand-over: live events that arrive while the replay runs wait,
// the replay comes first in seq order, and what both carry is written
// once.
func TestResume_ReplayThenLive_NoGapNoDuplicate(t *testing.T) {
	chats, msgs := chats("acme", "a1"), messages("acme", "a1", "x1")
	rp := newScripted("", replayed(5, chats), replayed(6, msgs), replayed(7, chats), replayed(8, chats))
	p := startPod(t, func(o *Options) { o.Replayer = rp })
	c := dial(t, resumeURL(p, "4", "x1")).ready()
	req := <-rp.reqs
	if req != (ReplayRequest{Company: "acme", Agent: "a1", Chat: "x1", Since: 4, Epoch: "e1"}) {
		t.Fatalf("replay request %+v", req)
	}
	// Live events during the replay: 7 and 8 overlap it, 9 and 10 follow.
	for _, ev := range []struct {
		r   session.Route
		seq uint64
	}{{chats, 7}, {chats, 8}, {msgs, 9}, {chats, 10}} {
		if n := p.srv.Deliver(ev.r, []byte(`{"event_id":"live"}`), Meta{Seq: ev.seq}); n != 1 {
			t.Fatalf("live seq %d handed to %d sockets", ev.seq, n)
		}
	}
	c.expectNothing(200 * time.Millisecond) // held while the replay waits
	close(rp.go_)
	for _, want := range []float64{5, 6, 7, 8, 9, 10} {
		if m := c.next(3 * time.Second); m["type"] != "event" || m["seq"] != want {
			t.Fatalf("got %v, want event seq %v", m, want)
		}
	}
	c.expectNothing(200 * time.Millisecond)
	// Back to live: the next event goes straight through.
	p.srv.Deliver(chats, []byte(`{"event_id":"after"}`), Meta{Seq: 11})
	if m := c.next(3 * time.Second); m["seq"] != float64(11) {
		t.Fatalf("after the replay got %v", m)
	}
}

func TestResume_Impossible_ResyncThenLive(t *testing.T) {
	for _, reason := range []string{ResyncTooOld, ResyncEpochChanged, ResyncTooMany} {
		t.Run(reason, func(t *testing.T) {
			rp := newScripted(reason)
			p := startPod(t, func(o *Options) { o.Replayer = rp })
			c := dial(t, resumeURL(p, "4", "")).ready()
			<-rp.reqs
			p.srv.Deliver(chats("acme", "a1"), []byte(`{"event_id":"live"}`), Meta{Seq: 20})
			close(rp.go_)
			m := c.next(3 * time.Second)
			payload, _ := m["payload"].(map[string]any)
			if m["type"] != "resync" || payload["reason"] != reason {
				t.Fatalf("got %v, want resync %s", m, reason)
			}
			if m := c.next(3 * time.Second); m["type"] != "event" || m["seq"] != float64(20) {
				t.Fatalf("after resync got %v", m)
			}
		})
	}
}

func TestResume_SelectChatWithSince_ReplaysThatChatOnly(t *testing.T) {
	msgs := messages("acme", "a1", "x2")
	rp := newScripted("", replayed(3, msgs), replayed(4, msgs))
	p := startPod(t, func(o *Options) { o.Replayer = rp })
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	c.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x2","since":2}`))
	req := <-rp.reqs
	if req != (ReplayRequest{Company: "acme", Agent: "a1", Chat: "x2", ChatOnly: true, Since: 2}) {
		t.Fatalf("replay request %+v", req)
	}
	close(rp.go_)
	for _, want := range []float64{3, 4} {
		if m := c.next(3 * time.Second); m["seq"] != want {
			t.Fatalf("got %v, want seq %v", m, want)
		}
	}
}

// Re-selecting the chat already selected with a since replays its
// messages after since, even ones this socket already had (the client
// asked); without since it does nothing.
func TestResume_ReselectSameChatWithSince_ReplaysAgain(t *testing.T) {
	msgs := messages("acme", "a1", "x2")
	rp := newScripted("", replayed(3, msgs), replayed(4, msgs))
	p := startPod(t, func(o *Options) { o.Replayer = rp })
	c := dial(t, p.userURL("acme", "a1", "u1")+"&chat_id=x2").ready()
	for _, seq := range []uint64{3, 4} {
		p.srv.Deliver(msgs, []byte(`{"event_id":"live"}`), Meta{Seq: seq})
		if m := c.next(3 * time.Second); m["seq"] != float64(seq) {
			t.Fatalf("live: got %v, want seq %d", m, seq)
		}
	}
	c.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x2"}`))
	c.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x2","since":2}`))
	select {
	case req := <-rp.reqs:
		if req != (ReplayRequest{Company: "acme", Agent: "a1", Chat: "x2", ChatOnly: true, Since: 2}) {
			t.Fatalf("replay request %+v", req)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("select_chat of the selected chat with since started no replay")
	}
	p.srv.Deliver(msgs, []byte(`{"event_id":"live"}`), Meta{Seq: 5}) // held, then after the replay
	close(rp.go_)
	for _, want := range []float64{3, 4, 5} {
		if m := c.next(3 * time.Second); m["seq"] != want {
			t.Fatalf("got %v, want seq %v", m, want)
		}
	}
	c.expectNothing(200 * time.Millisecond)
	select {
	case r := <-rp.reqs:
		t.Fatalf("select_chat without since started a replay: %+v", r)
	default:
	}
}

// Replays past resume.max_concurrent wait in the reactor's queue, and
// dws_resume_waiting counts them there.
func TestResume_WaitingReplaysShowInTheGauge(t *testing.T) {
	rp := newScripted("")
	p := startPod(t, func(o *Options) { o.Replayer = rp; o.ReplayWorkers = 1 })
	for _, u := range []string{"u1", "u2", "u3"} {
		dial(t, p.userURL("acme", "a1", u)+"&since=4&epoch=e1").ready()
	}
	<-rp.reqs // the one worker is busy with the first
	waiting := func() float64 { return testutil.ToFloat64(p.srv.m.ResumeWaiting) }
	eventually(t, 3*time.Second, "2 replays waiting", func() bool { return waiting() == 2 })
	close(rp.go_)
	eventually(t, 3*time.Second, "none waiting", func() bool { return waiting() == 0 })
}

func TestResume_BadParameters_400(t *testing.T) {
	p := startPod(t, func(o *Options) { o.Replayer = newScripted("") })
	for _, tc := range []struct{ query, msg string }{
		{"since=-1", "since must be a non-negative integer"},
		{"since=abc", "since must be a non-negative integer"},
		{"since=1.5", "since must be a non-negative integer"},
		{"since=1&chat_id=a.b", "chat_id contains invalid characters"},
	} {
		u, _ := url.Parse(p.userURL("acme", "a1", "u1") + "&" + tc.query)
		status, _, e := rawRequest(t, p.addr, upgradeReq(u.RequestURI()))
		if status != 400 || e.Message != tc.msg {
			t.Errorf("%s: %d %+v, want 400 %q", tc.query, status, e, tc.msg)
		}
	}
}

// Without since nothing changes for old clients, even with a Replayer.
func TestResume_NoSince_NoReplay(t *testing.T) {
	rp := newScripted("")
	p := startPod(t, func(o *Options) { o.Replayer = rp })
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	p.srv.Deliver(chats("acme", "a1"), []byte(`{"event_id":"live"}`), Meta{Seq: 1})
	if m := c.next(3 * time.Second); m["seq"] != float64(1) {
		t.Fatalf("got %v", m)
	}
	select {
	case r := <-rp.reqs:
		t.Fatalf("replay requested without since: %+v", r)
	default:
	}
}

// While a socket catches up, the live frames held for it stay within its
// ring caps (SPEC §6 bounded memory per socket): past them they are
// dropped and counted as for a slow consumer, never queued without bound.
func TestResume_HeldFramesBoundedByRingCaps(t *testing.T) {
	const ringCap = 8
	rp := newScripted("")
	p := startPod(t, func(o *Options) {
		o.Replayer = rp
		o.Limits.OutboundRingMessages = ringCap
		o.Limits.SlowConsumerGrace = time.Minute
	})
	c := dial(t, resumeURL(p, "1", "")).ready()
	<-rp.reqs
	slow := testutil.ToFloat64(p.m.Drops.WithLabelValues("slow_consumer"))
	const live = 20
	for i := range live {
		p.srv.Deliver(chats("acme", "a1"), []byte(`{"event_id":"live"}`), Meta{Seq: uint64(10 + i)})
	}
	eventually(t, 3*time.Second, "overflow counted", func() bool {
		return testutil.ToFloat64(p.m.Drops.WithLabelValues("slow_consumer"))-slow == live-ringCap
	})
	close(rp.go_)
	for i := range ringCap {
		if m := c.next(3 * time.Second); m["seq"] != float64(10+i) {
			t.Fatalf("held frame %d: got %v", i, m)
		}
	}
	c.expectNothing(200 * time.Millisecond)
}
