// Package benchtest is a small real json.v1 WebSocket server for the bench
// suite's own tests and calibration runs: gobwas/ws over net.Listener with a
// goroutine per connection. It is not dws; it exists so the client engine
// and the scenarios can be tested against a real peer while dws is built,
// and so the client's own ceiling can be measured against a server that does
// almost nothing.
package benchtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/safego"
	"github.com/dws-gateway/dws/session"
	"github.com/gobwas/ws"
)

// Options shape the server's behaviour.
type Options struct {
	// APIKey, when set, must be the x-api-key query parameter (401).
	APIKey string
	// TokenKey, when set (32 bytes), has session.Validator check the token
	// (SPEC §3): it must decrypt, be unexpired and name the path's company
	// and agent and the user param (else 403).
	TokenKey []byte
	// Script runs, after ready: ping "bench" → wait for the pong → one
	// event with row_data seq 1, ts now, subject websocket.{C}.{A}.chats
	// → close with CloseCode → wait for the echo. Without it the server
	// holds the socket until the client closes it.
	Script bool
	// CloseCode is the code the script closes with; default 1000.
	CloseCode uint16
}

// Stats counts what the server saw. Read it with Server.Stats.
type Stats struct {
	Upgrades, Rejected, Pongs, EventsSent, ClosesEchoed, ClosesSent int64
}

// Server is a running test server.
type Server struct {
	// Addr is where it listens.
	Addr netip.AddrPort

	opts                                            Options
	tokens                                          *session.Validator // nil: tokens not checked
	ln                                              net.Listener
	wg                                              sync.WaitGroup
	mu                                              sync.Mutex
	conns                                           map[net.Conn]struct{}
	closed                                          bool
	upgrades, rejected, pongs, events, echoed, sent atomic.Int64
	peers                                           sync.Map // netip.Addr → *atomic.Int64
}

// Start listens on addr ("127.0.0.1:0" for any port) and serves until Close.
func Start(addr string, opts Options) (*Server, error) {
	if opts.CloseCode == 0 {
		opts.CloseCode = codec.CloseNormal
	}
	s := &Server{opts: opts, conns: make(map[net.Conn]struct{})}
	if opts.TokenKey != nil {
		v, err := session.NewValidator(opts.TokenKey, nil, session.ValidatorOptions{})
		if err != nil {
			return nil, fmt.Errorf("benchtest: %w", err)
		}
		s.tokens = v
	}
	lc := net.ListenConfig{}
	ln, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.Addr = ln.Addr().(*net.TCPAddr).AddrPort()
	s.wg.Add(1)
	safego.Go(context.Background(), "benchtest.accept", func(context.Context) {
		defer s.wg.Done()
		s.accept()
	})
	return s, nil
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	return Stats{
		Upgrades: s.upgrades.Load(), Rejected: s.rejected.Load(), Pongs: s.pongs.Load(),
		EventsSent: s.events.Load(), ClosesEchoed: s.echoed.Load(), ClosesSent: s.sent.Load(),
	}
}

// Peers returns how many connections each client address opened.
func (s *Server) Peers() map[netip.Addr]int64 {
	m := make(map[netip.Addr]int64)
	s.peers.Range(func(k, v any) bool {
		m[k.(netip.Addr)] = v.(*atomic.Int64).Load()
		return true
	})
	return m
}

// Close stops listening, drops every connection and waits for its
// goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

func (s *Server) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		n, _ := s.peers.LoadOrStore(ip, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		s.mu.Unlock()
		safego.Go(context.Background(), "benchtest.conn", func(context.Context) {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serve(c)
		})
	}
}

func (s *Server) serve(c net.Conn) {
	var company, agent string
	u := ws.Upgrader{
		Protocol: func(p []byte) bool { return string(p) == "json.v1" },
		OnRequest: func(uri []byte) error {
			var err error
			company, agent, err = s.check(string(uri))
			return err
		},
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := u.Upgrade(c); err != nil {
		s.rejected.Add(1)
		return
	}
	_ = c.SetDeadline(time.Time{})
	s.upgrades.Add(1)
	if _, err := c.Write(codec.ReadyFrame); err != nil {
		return
	}
	if s.opts.Script {
		s.script(c, company, agent)
		return
	}
	s.hold(c)
}

// check validates the request target, returning a gobwas rejection (its
// status and reason become the HTTP response) on failure.
func (s *Server) check(uri string) (company, agent string, err error) {
	reject := func(status int, reason string) error {
		return ws.RejectConnectionError(ws.RejectionStatus(status), ws.RejectionReason(reason))
	}
	u, perr := url.ParseRequestURI(uri)
	if perr != nil {
		return "", "", reject(400, "bad request target")
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 3 || parts[0] != "ws" {
		return "", "", reject(404, "not found")
	}
	company, agent = parts[1], parts[2]
	q := u.Query()
	if s.opts.APIKey != "" && q.Get("x-api-key") != s.opts.APIKey {
		return "", "", reject(401, "InvalidAPIKey")
	}
	if s.tokens != nil && !s.validToken(q.Get("token"), company, agent, q.Get("user")) {
		return "", "", reject(403, "InvalidToken")
	}
	return company, agent, nil
}

// validToken checks a user token with dws's own validator (SPEC §3).
func (s *Server) validToken(tok, company, agent, user string) bool {
	_, err := s.tokens.ValidateUser(context.Background(), tok, company, agent, user)
	return err == nil
}

// script: ping → pong → event → close → echo.
func (s *Server) script(c net.Conn, company, agent string) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if ws.WriteFrame(c, ws.NewPingFrame([]byte("bench"))) != nil {
		return
	}
	for {
		f, err := readClientFrame(c)
		if err != nil {
			return
		}
		if f.Header.OpCode == ws.OpPong {
			if string(f.Payload) == "bench" {
				s.pongs.Add(1)
			}
			break
		}
	}
	payload := fmt.Sprintf(`{"event_id":"e-1","company_id":%q,"row_data":{"seq":1,"ts":%d,"subject":"websocket.%s.%s.chats"}}`,
		company, time.Now().UnixNano(), company, agent)
	if _, err := c.Write(codec.EventFrame([]byte(payload))); err != nil {
		return
	}
	s.events.Add(1)
	if ws.WriteFrame(c, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(s.opts.CloseCode), "bye"))) != nil {
		return
	}
	s.sent.Add(1)
	for {
		f, err := readClientFrame(c)
		if err != nil {
			return
		}
		if f.Header.OpCode == ws.OpClose {
			s.echoed.Add(1)
			return
		}
	}
}

// hold answers pings and a client close until the client goes away.
func (s *Server) hold(c net.Conn) {
	for {
		f, err := readClientFrame(c)
		if err != nil {
			return
		}
		switch f.Header.OpCode {
		case ws.OpPong:
			s.pongs.Add(1)
		case ws.OpPing:
			_ = ws.WriteFrame(c, ws.NewPongFrame(f.Payload))
		case ws.OpClose:
			// RFC 6455 §5.5.1: echo the status, then close the TCP
			// connection (the server closes first, §7.1.1).
			body := f.Payload
			if len(body) > 2 {
				body = body[:2]
			}
			_ = ws.WriteFrame(c, ws.NewCloseFrame(body))
			s.echoed.Add(1)
			return
		}
	}
}

// readClientFrame reads one frame, which a client must mask (RFC 6455
// §5.1), and unmasks it.
func readClientFrame(r io.Reader) (ws.Frame, error) {
	f, err := ws.ReadFrame(r)
	if err != nil {
		return f, err
	}
	if !f.Header.Masked {
		return f, errors.New("benchtest: unmasked client frame")
	}
	ws.Cipher(f.Payload, f.Header.Mask, 0)
	return f, nil
}
