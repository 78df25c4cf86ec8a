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
	it := &ident{company: "acme", agent: "a1"}
	benchDeliver10k(b, func() *ident { return it }, func(i int) task {
		return task{frame: codec.EventFrame(benchPayload)}
	})
}

// BenchmarkDeliver_10kSockets_Seq is the same with the SPEC §5 seq rule
// at work: every event carries a newer seq and every socket its own
// ident, so each socket checks and records its last seq.
func BenchmarkDeliver_10kSockets_Seq(b *testing.B) {
	benchDeliver10k(b, func() *ident { return &ident{company: "acme", agent: "a1"} }, func(i int) task {
		seq := uint64(i + 1)
		return task{frame: codec.EventFrameSeq(seq, benchPayload), meta: Meta{Seq: seq}}
	})
}

var benchPayload = []byte(`{"event_id":"0f8fad5b-d9cb-469f-a165-70867728950e","company_id":"acme","agent_id":"a1","row_data":{"id":42,"status":"open","assignee":"u17"}}`)

// benchDeliver10k joins 10 000 sinks to one chats route on one loop and
// delivers b.N tasks made by next (route filled in), reporting ns/socket.
func benchDeliver10k(b *testing.B, identFor func() *ident, next func(i int) task) {
	const sockets = 10000
	srv, err := New(Options{Loops: 1, APIKeys: session.NewAPIKeyGuard("", ""), Tokens: nopTokens{},
		Locker: session.NewMemoryLocker(), Routes: session.NewMemoryRoutes("p"), Metrics: metrics.New()})
	if err != nil {
		b.Fatal(err)
	}
	l := newLoop(srv, nil, 0)
	r := session.Route{Kind: session.RouteChats, Company: "acme", Agent: "a1"}
	for i := 0; i < sockets; i++ {
		c := &conn{gc: &sinkConn{}, lp: l, state: stOpen, ident: identFor(), wheel: -1}
		l.join(c, r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := next(i)
		t.route = r
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
