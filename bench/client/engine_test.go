package client

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dws-gateway/dws/bench/benchtest"
	"github.com/dws-gateway/dws/codec"
)

// sources returns 127.0.0.{from}..127.0.0.{to}.
func sources(from, to byte) []netip.Addr {
	var s []netip.Addr
	for i := from; i <= to; i++ {
		s = append(s, netip.AddrFrom4([4]byte{127, 0, 0, i}))
	}
	return s
}

func startServer(t *testing.T, opts benchtest.Options) *benchtest.Server {
	t.Helper()
	srv, err := benchtest.Start("127.0.0.1:0", opts)
	if err != nil {
		t.Fatalf("start test server: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func startEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.Start()
	t.Cleanup(e.Stop)
	return e
}

func target(id int) string {
	return fmt.Sprintf("/ws/c%d/a%d?user=u%d&token=t&x-api-key=k", id%7, id%7, id)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder is a Handler that keeps what the tests assert on.
type recorder struct {
	mu       sync.Mutex
	opened   map[int]bool
	events   map[int]int64 // id → seq
	subjects map[string]int
	closes   map[int]CloseInfo
	done     atomic.Int64
}

func newRecorder() *recorder {
	return &recorder{opened: map[int]bool{}, events: map[int]int64{}, subjects: map[string]int{}, closes: map[int]CloseInfo{}}
}

func (r *recorder) OnOpen(id int, _ time.Duration) {
	r.mu.Lock()
	r.opened[id] = true
	r.mu.Unlock()
}

func (r *recorder) OnEvent(id int, ev *Event) {
	r.mu.Lock()
	r.events[id] = ev.Seq
	r.subjects[string(ev.Subject)]++
	r.mu.Unlock()
}

func (r *recorder) OnClose(id int, info CloseInfo) {
	r.mu.Lock()
	r.closes[id] = info
	r.mu.Unlock()
	r.done.Add(1)
}

func TestEngine_ScriptedServer_PongEventAndCloseCodeRecorded(t *testing.T) {
	const n = 200
	srv := startServer(t, benchtest.Options{APIKey: "k", Script: true, CloseCode: codec.CloseSlowConsumer})
	rec := newRecorder()
	e := startEngine(t, Config{
		Server:  srv.Addr,
		Sources: sources(2, 5),
		Target:  target,
		Loops:   2,
		Handler: rec,
	})
	for id := range n {
		e.Dial(id)
	}
	waitFor(t, 15*time.Second, "every socket to close", func() bool { return rec.done.Load() == n })

	st := e.Snapshot()
	if st.Dials != n || st.Opened != n || st.Failed != 0 || st.Closed != n || st.Connected != 0 {
		t.Errorf("dials/opened/failed/closed/connected = %d/%d/%d/%d/%d, want %d/%d/0/%d/0",
			st.Dials, st.Opened, st.Failed, st.Closed, st.Connected, n, n, n)
	}
	if st.Pings != n || st.PongsSent != n {
		t.Errorf("pings/pongs sent = %d/%d, want %d/%d", st.Pings, st.PongsSent, n, n)
	}
	if st.Events != n || st.CloseCodes[codec.CloseSlowConsumer] != n || len(st.Errors) != 0 {
		t.Errorf("events = %d, close codes = %v, errors = %v; want %d events, %d×4408, no errors",
			st.Events, st.CloseCodes, st.Errors, n, n)
	}
	if got := st.Handshake.TotalCount(); got != n {
		t.Errorf("handshake histogram holds %d values, want %d", got, n)
	}
	if got := st.EventLatency.TotalCount(); got != n || st.EventLatency.Max() <= 0 {
		t.Errorf("event latency histogram: %d values, max %d µs; want %d values > 0", got, st.EventLatency.Max(), n)
	}

	ss := srv.Stats()
	if ss.Upgrades != n || ss.Pongs != n || ss.ClosesEchoed != n {
		t.Errorf("server saw upgrades/pongs/close echoes = %d/%d/%d, want %d each", ss.Upgrades, ss.Pongs, ss.ClosesEchoed, n)
	}
	peers := srv.Peers()
	for _, src := range sources(2, 5) {
		if peers[src] != n/4 {
			t.Errorf("server saw %d connections from %s, want %d (peers %v)", peers[src], src, n/4, peers)
		}
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for id := range n {
		if rec.events[id] != 1 {
			t.Fatalf("socket %d: event seq %d, want 1", id, rec.events[id])
		}
		if c := rec.closes[id]; c.Code != codec.CloseSlowConsumer || !c.Opened || c.ByClient || c.Err != "" {
			t.Fatalf("socket %d: close info %+v, want code 4408 from the server", id, c)
		}
	}
	if rec.subjects["websocket.c0.a0.chats"] == 0 {
		t.Errorf("subjects %v: want websocket.c0.a0.chats among them", rec.subjects)
	}
}

func TestEngine_ClientClose_EchoedAndReported(t *testing.T) {
	const n = 50
	srv := startServer(t, benchtest.Options{})
	rec := newRecorder()
	e := startEngine(t, Config{Server: srv.Addr, Sources: sources(6, 7), Target: target, Handler: rec})
	for id := range n {
		e.Dial(id)
	}
	waitFor(t, 10*time.Second, "all sockets open", func() bool { return e.Connected() == n })
	for id := range n {
		e.Close(id)
	}
	waitFor(t, 10*time.Second, "all closes echoed", func() bool { return rec.done.Load() == n })
	st := e.Snapshot()
	if st.CloseCodes[codec.CloseNormal] != n || st.Connected != 0 || len(st.Errors) != 0 {
		t.Errorf("close codes %v, connected %d, errors %v; want %d×1000, 0, none", st.CloseCodes, st.Connected, st.Errors, n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for id := range n {
		if c := rec.closes[id]; !c.ByClient || c.Code != codec.CloseNormal {
			t.Fatalf("socket %d: close info %+v, want ByClient with 1000", id, c)
		}
	}
	if got := srv.Stats().ClosesEchoed; got != n {
		t.Errorf("server echoed %d closes, want %d", got, n)
	}

	// A closed id may be dialled again: churn reconnects this way.
	e.Dial(0)
	waitFor(t, 5*time.Second, "socket 0 to reopen", func() bool { return e.Connected() == 1 })
}

func TestEngine_Failures_CountedByKind(t *testing.T) {
	srv := startServer(t, benchtest.Options{APIKey: "right"})

	// A port nobody listens on: take one, then free it.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()

	// A listener that accepts (the kernel does, via the backlog) but never
	// answers the upgrade.
	mute, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mute.Close() })

	cases := []struct {
		name   string
		server netip.AddrPort
		kind   string
	}{
		{"wrong api key gets its HTTP status", srv.Addr, "http_401"},
		{"closed port is refused", closedPort, ErrConnectRefused},
		{"silent server times out waiting for the 101", mute.Addr().(*net.TCPAddr).AddrPort(), ErrTimeoutUpgrade},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const n = 10
			rec := newRecorder()
			e := startEngine(t, Config{
				Server: tc.server, Target: target, Sources: sources(8, 8),
				HandshakeTimeout: 300 * time.Millisecond, Handler: rec,
			})
			for id := range n {
				e.Dial(id)
			}
			waitFor(t, 5*time.Second, "all sockets to fail", func() bool { return rec.done.Load() == n })
			st := e.Snapshot()
			if st.Failed != n || st.Errors[tc.kind] != n || st.Opened != 0 {
				t.Errorf("failed %d, errors %v, opened %d; want %d×%s", st.Failed, st.Errors, st.Opened, n, tc.kind)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if c := rec.closes[0]; c.Err != tc.kind || c.Opened {
				t.Errorf("close info %+v, want Err %s", c, tc.kind)
			}
		})
	}
}
