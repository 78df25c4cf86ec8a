package client

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/dws-gateway/dws/codec"
	"github.com/gobwas/ws"
)

// openLoop returns a loop (not running) holding one open socket in slot 0
// with no file behind it: enough to drive consume directly.
func openLoop(t testing.TB, h Handler) *loop {
	t.Helper()
	e, err := New(Config{
		Server: netip.MustParseAddrPort("127.0.0.1:1"),
		Target: func(int) string { return "/" },
		Loops:  1, Handler: h,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	l := e.loops[0]
	slot := l.allocSlot()
	l.conns[slot] = conn{fd: -1, state: stOpen}
	return l
}

func eventFrame(seq int) []byte {
	p := []byte(`{"event_id":"e","company_id":"c","row_data":{"seq":` + strconv.Itoa(seq) + `,"ts":1,"subject":"websocket.c.a.chats"}}`)
	return codec.EventFrame(p)
}

func TestConsume_FramesSplitAnywhere_EachSeenOnce(t *testing.T) {
	var seqs []int64
	l := openLoop(t, Funcs{Event: func(_ int, ev *Event) { seqs = append(seqs, ev.Seq) }})
	var stream []byte
	for i := 1; i <= 3; i++ {
		stream = append(stream, eventFrame(i)...)
	}
	stream = append(stream, codec.AppendFrame(nil, ws.OpBinary, []byte{1, 2, 3})...)
	// Feed the stream in every split: the first piece alone, then the rest
	// with the unconsumed tail carried over, as readable does.
	for cut := 0; cut <= len(stream); cut++ {
		seqs = seqs[:0]
		used, alive := l.consume(0, stream[:cut])
		if !alive {
			t.Fatalf("cut %d: socket closed", cut)
		}
		rest := append(append([]byte(nil), stream[used:cut]...), stream[cut:]...)
		used2, alive := l.consume(0, rest)
		if !alive || used2 != len(rest) {
			t.Fatalf("cut %d: second part used %d of %d (alive %v)", cut, used2, len(rest), alive)
		}
		if len(seqs) != 3 || seqs[0] != 1 || seqs[1] != 2 || seqs[2] != 3 {
			t.Fatalf("cut %d: saw seqs %v, want [1 2 3]", cut, seqs)
		}
	}
}

func BenchmarkConsume_EventFrame(b *testing.B) {
	l := openLoop(b, nil)
	f := eventFrame(42)
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		if _, alive := l.consume(0, f); !alive {
			b.Fatal("closed")
		}
	}
}
