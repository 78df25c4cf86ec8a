package reactor

import (
	"context"
	"testing"

	"github.com/panjf2000/gnet/v2"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/session"
)

// sinkConn stands in for a gnet socket whose kernel buffer always has room:
// the benchmark measures dws's own per-socket cost (ring push, one writev
// hand-off), not the loopback syscall.
type sinkConn struct {
	gnet.Conn
	written int
}

func (s *sinkConn) OutboundBuffered() int { return 0 }
func (s *sinkConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		n += len(b)
	}
	s.written += n
	return n, nil
}

// BenchmarkDeliver_10kSockets delivers one event to 10 000 open sockets of
// one route: the frame is encoded once (codec.EventFrame) and shared; the
// per-socket cost is ns/op / 10 000.
func BenchmarkDeliver_10kSockets(b *testing.B) {
	const sockets = 10000
	srv, err := New(Options{Loops: 1, APIKeys: session.NewAPIKeyGuard("", ""), Tokens: nopTokens{},
		Locker: session.NewMemoryLocker(), Routes: session.NewMemoryRoutes("p"), Metrics: metrics.New()})
	if err != nil {
		b.Fatal(err)
	}
	l := newLoop(srv, nil, 0)
	r := session.Route{Kind: session.RouteChats, Company: "acme", Agent: "a1"}
	it := &ident{company: "acme", agent: "a1"}
	for i := 0; i < sockets; i++ {
		c := &conn{gc: &sinkConn{}, lp: l, state: stOpen, ident: it, wheel: -1}
		l.join(c, r)
	}
	payload := []byte(`{"event_id":"0f8fad5b-d9cb-469f-a165-70867728950e","company_id":"acme","agent_id":"a1","row_data":{"id":42,"status":"open","assignee":"u17"}}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := task{route: r, frame: codec.EventFrame(payload)}
		l.deliver(&t)
		l.flushDirty()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/sockets, "ns/socket")
}

type ctxT = context.Context

type nopTokens struct{}

func (nopTokens) ValidateUser(_ ctxT, _, _, _, _ string) (session.Identity, *codec.Error) {
	return session.Identity{}, nil
}
func (nopTokens) ValidateAdmin(_ ctxT, _ string) (session.Identity, *codec.Error) {
	return session.Identity{}, nil
}
