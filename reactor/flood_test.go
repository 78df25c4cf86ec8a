package reactor

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dws-gateway/dws/codec"
)

// heapInuse is the live heap after a collection: what the pod (and the
// test's clients, which reuse their buffers) really hold.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// pingChunk is about 1 MiB of 125-byte masked client pings, written in one
// go so the flood is not limited by the test's syscalls.
func pingChunk() []byte {
	payload := make([]byte, 125)
	for i := range payload {
		payload[i] = 'p'
	}
	frame := clientFrame(ws.OpPing, true, payload)
	chunk := make([]byte, 0, 1<<20+len(frame))
	for len(chunk) < 1<<20 {
		chunk = append(chunk, frame...)
	}
	return chunk
}

// TestFlood_PingsWithoutReading_MemoryBoundedAnd4408 is finding 3 of issue
// 9: a client that writes pings and never reads made the server queue a pong
// per ping in gnet's buffer, outside every budget (41 MB → 540 MB RSS).
// Pongs now go through the socket's ring and its byte budget: the pod's
// heap stays within the per-socket caps, the flooder is a slow consumer
// (its extra pongs are dropped and counted) and is closed 4408, and sockets
// on the same pod keep getting their events throughout.
//
// The rate limit is off here: with it on (the default 10/s) the flooder is
// closed 4429 within its first frames (TestFlood_RateLimit_CountsPings),
// long before 100 MB; this test is about what a client within its rate
// costs when it does not read. The slow-consumer grace starts long, so the
// whole 100 MB flows through an open socket, and is then shortened (a
// SIGHUP reload, as an operator would) to see the 4408 without waiting.
func TestFlood_PingsWithoutReading_MemoryBoundedAnd4408(t *testing.T) {
	const flood = 100 << 20
	p := startPod(t, func(o *Options) {
		o.Limits.MessagesPerSecond = 0
		o.Limits.SlowConsumerGrace = time.Minute
	})
	lim := *p.srv.limits()

	// Bystanders on both loops (gnet spreads sockets round-robin).
	var bys []*client
	for i := 0; i < 2; i++ {
		bys = append(bys, dial(t, p.userURL("acme", "a2", fmt.Sprintf("bystander%d", i))).ready())
	}
	flooder := dial(t, p.userURL("acme", "a1", "flooder")).ready()
	base := heapInuse()

	// Events for the bystanders every 20 ms for the whole flood.
	stop := make(chan struct{})
	var sent int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				sent++
				p.srv.Deliver(chats("acme", "a2"), []byte(fmt.Sprintf(`{"event_id":"e%d"}`, sent)), Meta{})
			}
		}
	}()
	got := make([]chan int, len(bys))
	for i, b := range bys {
		got[i] = make(chan int, 1)
		go func(b *client, out chan int) {
			n := 0
			defer func() { out <- n }()
			for {
				_ = b.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				h, err := ws.ReadHeader(b.r)
				if err != nil {
					return
				}
				pl := make([]byte, h.Length)
				if _, err := fastRead(b, pl); err != nil {
					return
				}
				if h.OpCode != ws.OpText {
					continue
				}
				if stringsContains(string(pl), `"event_id":"end"`) {
					return
				}
				n++
				if want := fmt.Sprintf(`"event_id":"e%d"`, n); !stringsContains(string(pl), want) {
					t.Errorf("bystander event %d: %s", n, pl)
					return
				}
			}
		}(b, got[i])
	}

	// The flood: ≥ 100 MB of pings, never reading a byte.
	chunk := pingChunk()
	start := time.Now()
	written := 0
	_ = flooder.conn.SetWriteDeadline(time.Now().Add(25 * time.Second))
	for written < flood {
		n, err := flooder.conn.Write(chunk)
		written += n
		if err != nil {
			t.Fatalf("flood write failed after %d MB in %v: %v", written>>20, time.Since(start), err)
		}
	}
	took := time.Since(start)
	// The loop may still hold the tail of the flood; let it finish.
	time.Sleep(200 * time.Millisecond)
	grown := int64(heapInuse()) - int64(base)
	// Per-socket caps: the flooder's ring and gnet's buffer share one
	// outbound budget; the bystanders hold at most theirs.
	allowed := int64(3*lim.OutboundRingBytes) + 32<<20
	t.Logf("flood: %d MB in %v; heap in use grew %d KiB (allowed %d KiB); ring gauge %.0f B; control frames dropped %.0f",
		written>>20, took, grown>>10, allowed>>10, testutil.ToFloat64(p.m.OutboundRingBytes),
		testutil.ToFloat64(p.m.Drops.WithLabelValues("control_frame")))
	if grown > allowed {
		t.Fatalf("heap grew %d MiB during a %d MB ping flood, allowed %d MiB", grown>>20, written>>20, allowed>>20)
	}
	if g := testutil.ToFloat64(p.m.OutboundRingBytes); g > float64(3*lim.OutboundRingBytes) {
		t.Fatalf("outbound ring bytes %.0f over the caps", g)
	}
	if d := testutil.ToFloat64(p.m.Drops.WithLabelValues("control_frame")); d == 0 {
		t.Fatal("no pong counted as dropped although the flooder never read")
	}
	if p.srv.Open() != 3 {
		t.Fatalf("open = %d before the grace ran out", p.srv.Open())
	}

	// Shorten the grace: the flooder, a slow consumer since its ring
	// first overflowed, is closed 4408 on the next tick.
	lim.SlowConsumerGrace = 100 * time.Millisecond
	p.srv.SetLimits(lim)
	eventually(t, 5*time.Second, "flooder closed 4408", func() bool {
		return testutil.ToFloat64(p.m.SlowConsumerCloses) == 1 &&
			testutil.ToFloat64(p.m.ProtocolCloses.WithLabelValues("4408")) == 1 && p.srv.Open() == 2
	})
	if n := testutil.ToFloat64(p.m.RateLimitedFrames); n != 0 {
		t.Fatalf("%.0f frames rate limited with the limit off", n)
	}
	// The flooder's socket is gone: its next writes fail.
	_ = flooder.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	var err error
	for i := 0; i < 64 && err == nil; i++ {
		_, err = flooder.conn.Write(chunk)
	}
	if err == nil {
		t.Fatal("flooder can still write after its close")
	}

	close(stop)
	wg.Wait()
	p.srv.Deliver(chats("acme", "a2"), []byte(`{"event_id":"end"}`), Meta{})
	for i := range bys {
		n := <-got[i]
		if n != sent {
			t.Fatalf("bystander %d got %d of %d events during the flood", i, n, sent)
		}
	}
	if sent < 5 {
		t.Fatalf("only %d events sent during the flood", sent)
	}
}

// TestFlood_RateLimit_CountsPings: pings take tokens from the socket's
// bucket like data messages (SPEC §6). Over the burst they are answered
// with RateLimitExceeded instead of a pong; sustained, the socket is closed
// 4429. Before issue 9 every ping got its pong, however many.
func TestFlood_RateLimit_CountsPings(t *testing.T) {
	const burst, closeAfter = 5, 4
	p := startPod(t, func(o *Options) {
		o.Limits.MessagesPerSecond = 0.1 // no refill while the frames are parsed
		o.Limits.MessageBurst = burst
		o.Limits.RateLimitCloseAfter = closeAfter
	})
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	var raw []byte
	for i := 0; i < burst+2*closeAfter; i++ {
		raw = append(raw, clientFrame(ws.OpPing, true, []byte(fmt.Sprintf("p%d", i)))...)
	}
	c.sendRaw(raw) // one write: the bucket cannot refill in between
	pongs, limited := 0, 0
	for {
		h, pl := c.frame(3 * time.Second)
		switch h.OpCode {
		case ws.OpPong:
			if limited > 0 {
				t.Fatalf("pong %q after a RateLimitExceeded", pl)
			}
			if want := fmt.Sprintf("p%d", pongs); string(pl) != want {
				t.Fatalf("pong %q, want %q", pl, want)
			}
			pongs++
		case ws.OpText:
			if !containsCode(pl, codec.CodeRateLimitExceeded) {
				t.Fatalf("unexpected message %s", pl)
			}
			limited++
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(pl)
			if code != 4429 {
				t.Fatalf("closed %d", code)
			}
			if pongs != burst || limited != closeAfter-1 {
				t.Fatalf("%d pongs and %d RateLimitExceeded before 4429, want %d and %d", pongs, limited, burst, closeAfter-1)
			}
			if n := testutil.ToFloat64(p.m.RateLimitedFrames); n != closeAfter {
				t.Fatalf("rate limited frames = %.0f, want %d", n, closeAfter)
			}
			return
		default:
			t.Fatalf("unexpected opcode %v", h.OpCode)
		}
	}
}

// TestFlood_RateLimit_CloseStillHonoured: a client over its rate may still
// close; the close is echoed, not answered with RateLimitExceeded.
func TestFlood_RateLimit_CloseStillHonoured(t *testing.T) {
	p := startPod(t, func(o *Options) {
		o.Limits.MessagesPerSecond = 1
		o.Limits.MessageBurst = 2
		o.Limits.RateLimitCloseAfter = 100
	})
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	var raw []byte
	for i := 0; i < 5; i++ {
		raw = append(raw, clientFrame(ws.OpPong, true, nil)...)
	}
	raw = append(raw, clientFrame(ws.OpClose, true, []byte{0x03, 0xe8})...)
	c.sendRaw(raw)
	limited := 0
	for {
		h, pl := c.frame(3 * time.Second)
		if h.OpCode == ws.OpText && containsCode(pl, codec.CodeRateLimitExceeded) {
			limited++
			continue
		}
		if h.OpCode != ws.OpClose {
			t.Fatalf("unexpected %v %q", h.OpCode, pl)
		}
		if code, _ := ws.ParseCloseFrameData(pl); code != 1000 || limited < 2 {
			t.Fatalf("close %d after %d RateLimitExceeded", code, limited)
		}
		return
	}
}

// TestFlood_RateLimit_FragmentOverRateDropsMessage: a fragment over the
// rate drops its whole message, but the sequence stays valid (no 1002), so
// the next message is handled.
func TestFlood_RateLimit_FragmentOverRateDropsMessage(t *testing.T) {
	p := startPod(t, func(o *Options) {
		o.Limits.MessagesPerSecond = 0.5
		o.Limits.MessageBurst = 2
		o.Limits.RateLimitCloseAfter = 100
	})
	c := dial(t, p.userURL("acme", "a1", "u1")).ready()
	msg := []byte(`{"type":"select_chat","chat_id":"x1"}`)
	raw := clientFrame(ws.OpText, false, msg[:10])
	raw = append(raw, clientFrame(ws.OpContinuation, false, msg[10:20])...)
	raw = append(raw, clientFrame(ws.OpContinuation, true, msg[20:])...) // over the rate
	c.sendRaw(raw)
	if m := c.next(3 * time.Second); m["type"] != "error" {
		t.Fatalf("got %v", m)
	}
	time.Sleep(300 * time.Millisecond)
	if n := countOn(p, messages("acme", "a1", "x1")); n != 0 {
		t.Fatal("a message with a fragment over the rate was applied")
	}
	// Two seconds later the bucket has a token again: the socket is
	// healthy, the next (single-frame) message works.
	eventually(t, 5*time.Second, "select after refill", func() bool {
		c.send(ws.OpText, []byte(`{"type":"select_chat","chat_id":"x2"}`))
		time.Sleep(500 * time.Millisecond)
		return countOn(p, messages("acme", "a1", "x2")) == 1
	})
}

// TestDrops_SocketClosedWithQueuedFrames_CountedSocketClosing: frames that
// wait in a socket's ring when it closes are counted as dropped (DESIGN
// invariant 5); before issue 9 they vanished.
func TestDrops_SocketClosedWithQueuedFrames_CountedSocketClosing(t *testing.T) {
	p := startPod(t, func(o *Options) {
		o.Limits.SlowConsumerGrace = time.Minute
	})
	slow := dial(t, p.userURL("acme", "a1", "slow")).ready()
	payload := []byte(`{"event_id":"big","row_data":"` + stringsRepeat("x", 16<<10) + `"}`)
	// The client reads nothing: the kernel buffers fill, then gnet's, then
	// frames wait in the ring.
	eventually(t, 10*time.Second, "frames waiting in the ring", func() bool {
		for i := 0; i < 16; i++ {
			p.srv.Deliver(chats("acme", "a1"), payload, Meta{})
		}
		return testutil.ToFloat64(p.m.OutboundRingBytes) > 0
	})
	if d := testutil.ToFloat64(p.m.Drops.WithLabelValues("socket_closing")); d != 0 {
		t.Fatalf("socket_closing drops = %.0f before the close", d)
	}
	_ = slow.conn.Close()
	eventually(t, 5*time.Second, "drops counted", func() bool {
		return testutil.ToFloat64(p.m.Drops.WithLabelValues("socket_closing")) >= 1 &&
			testutil.ToFloat64(p.m.OutboundRingBytes) == 0 && p.srv.Open() == 0
	})
}
