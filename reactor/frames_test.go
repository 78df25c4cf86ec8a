package reactor

import (
	"context"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/session"
)

var testMask = [4]byte{1, 2, 3, 4}

func clientFrame(op ws.OpCode, fin bool, p []byte) []byte {
	return codec.AppendClientFrame(nil, op, fin, testMask, p)
}

func TestFrames_Violations_CloseWithCode(t *testing.T) {
	p := startPod(t, func(o *Options) { o.Limits.MaxMessageBytes = 1024 })
	unmasked := codec.AppendFrame(nil, ws.OpText, []byte(`{"type":"ping"}`))
	rsv := clientFrame(ws.OpText, true, []byte("x"))
	rsv[0] |= 0x40
	unknownOp := clientFrame(ws.OpCode(0x3), true, []byte("x"))
	fragPing := clientFrame(ws.OpPing, false, []byte("x"))
	bigPing := clientFrame(ws.OpPing, true, make([]byte, 126))
	badUTF8 := clientFrame(ws.OpText, true, []byte{0xff, 0xfe})
	tooBig := clientFrame(ws.OpText, true, make([]byte, 2048))
	orphanCont := clientFrame(ws.OpContinuation, true, []byte("x"))
	badUTF8Frag := append(clientFrame(ws.OpText, false, []byte{0xe2, 0x82}), clientFrame(ws.OpContinuation, true, []byte{0x28})...)
	tooBigFrag := append(clientFrame(ws.OpText, false, make([]byte, 800)), clientFrame(ws.OpContinuation, true, make([]byte, 800))...)
	badClose := clientFrame(ws.OpClose, true, []byte{0x03, 0xed}) // 1005 may not be sent
	cases := []struct {
		name string
		raw  []byte
		code int
	}{
		{"unmasked", unmasked, 1002},
		{"reserved bits", rsv, 1002},
		{"unknown opcode", unknownOp, 1002},
		{"fragmented control", fragPing, 1002},
		{"oversized control", bigPing, 1002},
		{"continuation without start", orphanCont, 1002},
		{"invalid utf-8", badUTF8, 1007},
		{"invalid utf-8 across fragments", badUTF8Frag, 1007},
		{"message too big", tooBig, 1009},
		{"reassembled too big", tooBigFrag, 1009},
		{"close with reserved code", badClose, 1002},
		{"close echoed", clientFrame(ws.OpClose, true, []byte{0x03, 0xe8}), 1000},
		{"close 4000 echoed", clientFrame(ws.OpClose, true, []byte{0x0f, 0xa0, 'b', 'y', 'e'}), 4000},
	}
	bystander := dial(t, p.userURL("acme", "a1", "bystander")).ready()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, p.userURL("acme", "a1", "u"+string(rune('a'+i)))).ready()
			c.sendRaw(tc.raw)
			if got := c.closeCode(3 * time.Second); got != tc.code {
				t.Fatalf("close code %d, want %d", got, tc.code)
			}
		})
	}
	// Other sockets are undisturbed: the bystander still gets events.
	p.srv.Deliver(session.Route{Kind: session.RouteChats, Company: "acme", Agent: "a1"}, []byte(`{"event_id":"e1"}`), Meta{})
	if m := bystander.next(3 * time.Second); m["type"] != "event" {
		t.Fatalf("bystander got %v", m)
	}
}

func TestFrames_BadMessages_ErrorFrameAndStayOpen(t *testing.T) {
	p := startPod(t, nil)
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	cases := []struct {
		name string
		op   ws.OpCode
		body string
	}{
		{"invalid json", ws.OpText, `{"type":`},
		{"unknown type", ws.OpText, `{"type":"dance"}`},
		{"missing chat_id", ws.OpText, `{"type":"select_chat"}`},
		{"binary", ws.OpBinary, `{"type":"select_chat","chat_id":"x"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.send(tc.op, []byte(tc.body))
			m := c.next(3 * time.Second)
			pl, _ := m["payload"].(map[string]any)
			if m["type"] != "error" || pl["code"] != string(codec.CodeBadRequest) {
				t.Fatalf("got %v", m)
			}
		})
	}
	// Still open: a client ping gets its pong.
	c.send(ws.OpPing, []byte("hi"))
	h, pl := c.frame(3 * time.Second)
	if h.OpCode != ws.OpPong || string(pl) != "hi" {
		t.Fatalf("got %v %q", h.OpCode, pl)
	}
}

func TestFrames_FragmentedSelectChat_Reassembled(t *testing.T) {
	p := startPod(t, nil)
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	msg := []byte(`{"type":"select_chat","chat_id":"x9"}`)
	raw := clientFrame(ws.OpText, false, msg[:10])
	raw = append(raw, clientFrame(ws.OpPing, true, nil)...) // control frames may interleave
	raw = append(raw, clientFrame(ws.OpContinuation, false, msg[10:20])...)
	raw = append(raw, clientFrame(ws.OpContinuation, true, msg[20:])...)
	c.sendRaw(raw)
	if h, _ := c.frame(3 * time.Second); h.OpCode != ws.OpPong {
		t.Fatalf("want pong, got %v", h.OpCode)
	}
	r := session.Route{Kind: session.RouteMessages, Company: "acme", Agent: "a1", Chat: "x9"}
	eventually(t, 3*time.Second, "select applied", func() bool {
		return p.srv.Deliver(r, []byte(`{"event_id":"m1"}`), Meta{}) == 1
	})
	if m := c.next(3 * time.Second); m["type"] != "event" {
		t.Fatalf("got %v", m)
	}
}

func TestFrames_PipelinedAfterHandshake_Processed(t *testing.T) {
	p := startPod(t, nil)
	c := dial(t, p.userURL("acme", "a1", "u1"))
	// Bytes sent before ready arrives wait in the buffer, then run.
	c.send(ws.OpPing, []byte("early"))
	c.ready()
	if h, pl := c.frame(3 * time.Second); h.OpCode != ws.OpPong || string(pl) != "early" {
		t.Fatalf("got %v %q", h.OpCode, pl)
	}
}

func TestFrames_RateLimit_ErrorThenClose4429(t *testing.T) {
	p := startPod(t, func(o *Options) {
		o.Limits.MessagesPerSecond = 1
		o.Limits.MessageBurst = 2
		o.Limits.RateLimitCloseAfter = 5
	})
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	// One write: the server may close before a later write would land.
	var burst []byte
	for i := 0; i < 10; i++ {
		burst = append(burst, clientFrame(ws.OpText, true, []byte(`{"type":"ping"}`))...)
	}
	c.sendRaw(burst)
	sawLimit := false
	for {
		h, pl := c.frame(3 * time.Second)
		if h.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(pl)
			if code != 4429 || !sawLimit {
				t.Fatalf("close %d, saw limit error %v", code, sawLimit)
			}
			return
		}
		if h.OpCode == ws.OpText && string(pl) != "" {
			sawLimit = sawLimit || containsCode(pl, codec.CodeRateLimitExceeded)
		}
	}
}

func containsCode(p []byte, code codec.ErrorCode) bool {
	return len(p) > 0 && (string(p) != "" && stringsContains(string(p), `"code":"`+string(code)+`"`))
}

func stringsContains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestPing_MissedPongs_Closed1001(t *testing.T) {
	p := startPod(t, func(o *Options) {
		o.Limits.PingInterval = time.Second
		o.Limits.MaxMissedPongs = 2
	})
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	pings := 0
	start := time.Now()
	for {
		h, pl := c.frame(6 * time.Second)
		if h.OpCode == ws.OpPing {
			pings++
			continue
		}
		if h.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(pl)
			if code != 1001 || pings != 2 {
				t.Fatalf("close %d after %d pings", code, pings)
			}
			if el := time.Since(start); el < 2*time.Second || el > 5*time.Second {
				t.Fatalf("closed after %v", el)
			}
			return
		}
	}
}

func TestPing_Answered_StaysOpen(t *testing.T) {
	p := startPod(t, func(o *Options) { o.Limits.PingInterval = time.Second })
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	deadline := time.Now().Add(4 * time.Second)
	pings := 0
	for time.Now().Before(deadline) {
		h, pl := c.frame(3 * time.Second)
		if h.OpCode == ws.OpClose {
			t.Fatal("closed although pongs were sent")
		}
		if h.OpCode == ws.OpPing {
			pings++
			c.send(ws.OpPong, pl)
		}
	}
	if pings < 3 {
		t.Fatalf("only %d pings in 4 s", pings)
	}
}

// gatedRoutes holds Join of one chat's route until released: a select
// that is still joining when the client changes its mind.
type gatedRoutes struct {
	session.Routes
	chat   string
	gate   chan struct{}
	joined chan struct{}
}

func (g *gatedRoutes) Join(ctx context.Context, r session.Route) error {
	if r.Chat != g.chat {
		return g.Routes.Join(ctx, r)
	}
	<-g.gate
	defer close(g.joined)
	return g.Routes.Join(ctx, r)
}

// select_chat X, then Y (slow to join), then X again: the socket ends on
// X, and Y's late join is undone.
func TestSelectChat_XYX_EndsOnX(t *testing.T) {
	var g *gatedRoutes
	p := startPod(t, func(o *Options) {
		g = &gatedRoutes{Routes: o.Routes, chat: "y", gate: make(chan struct{}), joined: make(chan struct{})}
		o.Routes = g
	})
	c := dial(t, p.userURL("acme", "a1", "u1")+"&chat_id=x").ready()
	c.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"y"}`))
	c.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x"}`))
	time.Sleep(100 * time.Millisecond) // both reached the loop
	close(g.gate)
	<-g.joined
	eventually(t, 3*time.Second, "y's late join undone", func() bool {
		pods, _ := p.routes.Pods(context.Background(), messages("acme", "a1", "y"))
		return len(pods) == 0
	})
	if n := p.srv.Deliver(messages("acme", "a1", "x"), []byte(`{"event_id":"x"}`), Meta{Seq: 1}); n != 1 {
		t.Fatalf("messages of x reached %d sockets, want 1", n)
	}
	if n := p.srv.Deliver(messages("acme", "a1", "y"), []byte(`{"event_id":"y"}`), Meta{Seq: 2}); n != 0 {
		t.Fatalf("messages of y reached %d sockets, want 0", n)
	}
	if m := c.next(3 * time.Second); m["seq"] != float64(1) {
		t.Fatalf("got %v, want x's event", m)
	}
}
