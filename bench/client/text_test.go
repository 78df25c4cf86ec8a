package client

import (
	"bufio"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/dws-gateway/dws/codec"
)

// resumeServer answers every upgrade with 101, a ready frame naming an
// epoch and then the frames of its script, and records each request
// target: enough of dws's resume handshake (SPEC §5a) to test the client
// side without a broker.
type resumeServer struct {
	ln      net.Listener
	epoch   string
	frames  [][]byte // text frame bodies sent after ready
	mu      sync.Mutex
	targets []string
}

func startResumeServer(t *testing.T, epoch string, frames ...string) *resumeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &resumeServer{ln: ln, epoch: epoch}
	for _, f := range frames {
		s.frames = append(s.frames, []byte(f))
	}
	t.Cleanup(func() { ln.Close() })
	go s.accept()
	return s
}

func (s *resumeServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.serve(c)
	}
}

func (s *resumeServer) serve(c net.Conn) {
	defer c.Close()
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	s.mu.Lock()
	s.targets = append(s.targets, req.RequestURI)
	s.mu.Unlock()
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + codec.AcceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n" +
		"Sec-WebSocket-Protocol: json.v1\r\n\r\n"
	out := append([]byte(resp), codec.ReadyFrameEpoch(s.epoch)...)
	for _, f := range s.frames {
		out = codec.AppendFrame(out, ws.OpText, f)
	}
	if _, err := c.Write(out); err != nil {
		return
	}
	// Hold until the client goes: its close frame or a reset ends the read.
	var b [512]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			return
		}
	}
}

func (s *resumeServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.targets...)
}

func TestText_SeesReadyAndOtherFramesNotEvents(t *testing.T) {
	cases := []struct {
		name      string
		frames    []string
		wantTexts []string
		wantEvent int64
	}{
		{"ready only", nil, []string{`{"type":"ready","epoch":"E7"}`}, 0},
		{"resync after ready", []string{`{"type":"resync","payload":{"reason":"too_many"}}`},
			[]string{`{"type":"ready","epoch":"E7"}`, `{"type":"resync","payload":{"reason":"too_many"}}`}, 0},
		{"events and errors are not text frames", []string{
			`{"type":"event","seq":5,"payload":{"row_data":{"seq":1}}}`,
			`{"type":"error","payload":{"code":"BadRequest"}}`,
		}, []string{`{"type":"ready","epoch":"E7"}`}, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startResumeServer(t, "E7", tc.frames...)
			var mu sync.Mutex
			var texts []string
			var opened atomic.Bool
			var serverSeq atomic.Int64
			e := startEngine(t, Config{
				Server: netip.MustParseAddrPort(srv.ln.Addr().String()),
				Target: target,
				Loops:  1,
				Text: func(id int, p []byte) {
					if opened.Load() && strings.Contains(string(p), `"ready"`) {
						t.Errorf("ready seen after OnOpen")
					}
					mu.Lock()
					texts = append(texts, string(p))
					mu.Unlock()
				},
				Handler: Funcs{
					Open:  func(int, time.Duration) { opened.Store(true) },
					Event: func(_ int, ev *Event) { serverSeq.Store(ev.ServerSeq) },
				},
			})
			e.Dial(0)
			// Ready and every scripted frame received: the handlers ran.
			waitFor(t, 5*time.Second, "frames", func() bool { return e.Snapshot().FramesIn == int64(1+len(tc.frames)) })
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(texts, "\n") != strings.Join(tc.wantTexts, "\n") {
				t.Errorf("texts %q, want %q", texts, tc.wantTexts)
			}
			if got := serverSeq.Load(); got != tc.wantEvent {
				t.Errorf("event server seq %d, want %d", got, tc.wantEvent)
			}
		})
	}
}

// TestDial_ReconnectsWithTheTargetOfTheMoment is how a resume reconnects:
// close, then Dial the same id again, Target now adding since and epoch.
func TestDial_ReconnectsWithTheTargetOfTheMoment(t *testing.T) {
	srv := startResumeServer(t, "E1")
	var resume atomic.Pointer[string]
	var opens, closes atomic.Int64
	e := startEngine(t, Config{
		Server: netip.MustParseAddrPort(srv.ln.Addr().String()),
		Target: func(id int) string {
			if q := resume.Load(); q != nil {
				return target(id) + *q
			}
			return target(id)
		},
		Loops: 1,
		Handler: Funcs{
			Open:  func(int, time.Duration) { opens.Add(1) },
			Close: func(int, CloseInfo) { closes.Add(1) },
		},
	})
	e.Dial(3)
	waitFor(t, 5*time.Second, "first open", func() bool { return opens.Load() == 1 })
	e.Close(3)
	// The test server never echoes the close: the client's close timeout
	// (3 s by default) would end it; a second Close is a no-op, so wait.
	waitFor(t, 10*time.Second, "close", func() bool { return closes.Load() == 1 })
	q := "&since=42&epoch=E1"
	resume.Store(&q)
	e.Dial(3)
	waitFor(t, 5*time.Second, "second open", func() bool { return opens.Load() == 2 })
	got := srv.seen()
	want := []string{target(3), target(3) + "&since=42&epoch=E1"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("targets %q, want %q", got, want)
	}
}
