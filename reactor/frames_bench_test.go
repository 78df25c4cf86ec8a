package reactor

import (
	"testing"

	"github.com/gobwas/ws"

	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/session"
)

// inboundConn stands in for a gnet socket whose inbound buffer holds one
// batch of client frames and whose kernel send buffer always has room: the
// benchmark measures dws's own per-frame cost (parse, unmask, rate limit,
// answer), not the loopback syscalls.
type inboundConn struct {
	sinkConn
	in  []byte
	off int
}

func (c *inboundConn) Peek(n int) ([]byte, error) {
	if n < 0 || n > len(c.in)-c.off {
		return c.in[c.off:], nil
	}
	return c.in[c.off : c.off+n], nil
}

func (c *inboundConn) Discard(n int) (int, error) {
	c.off += n
	return n, nil
}

func (c *inboundConn) InboundBuffered() int { return len(c.in) - c.off }

func (c *inboundConn) Write(b []byte) (int, error) {
	c.written += len(b)
	return len(b), nil
}

// BenchmarkReadFrames parses one read of 64 client frames, half 16-byte
// pings (answered with pongs) and half {"type":"ping"} text messages: the
// inbound frame loop a chatty client costs. ns/frame is the per-frame cost.
func BenchmarkReadFrames(b *testing.B) {
	const frames = 64
	lim := DefaultLimits()
	lim.MessagesPerSecond = 1e9 // the bucket runs, but never refuses
	lim.MessageBurst = 1e9
	srv, err := New(Options{Loops: 1, Limits: lim, APIKeys: session.NewAPIKeyGuard("", ""), Tokens: nopTokens{},
		Locker: session.NewMemoryLocker(), Routes: session.NewMemoryRoutes("p"), Metrics: metrics.New()})
	if err != nil {
		b.Fatal(err)
	}
	l := newLoop(srv, nil, 0)
	var batch []byte
	for i := 0; i < frames; i++ {
		if i%2 == 0 {
			batch = append(batch, clientFrame(ws.OpPing, true, []byte("0123456789abcdef"))...)
		} else {
			batch = append(batch, clientFrame(ws.OpText, true, []byte(`{"type":"ping"}`))...)
		}
	}
	gc := &inboundConn{in: make([]byte, len(batch))}
	c := &conn{gc: gc, lp: l, state: stOpen, ident: &ident{company: "acme", agent: "a1"}, wheel: -1}
	b.ReportAllocs()
	b.SetBytes(int64(len(batch)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(gc.in, batch) // frames are unmasked in place
		gc.off = 0
		srv.readFrames(c)
		if c.state != stOpen || gc.off != len(batch) {
			b.Fatalf("state %d, consumed %d of %d", c.state, gc.off, len(batch))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/frames, "ns/frame")
}
