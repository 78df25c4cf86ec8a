package reactor

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/session"
)

const testAPIKey = "test-api-key"

// pod is one in-process dws reactor on the memory stores, as `make run`
// starts it, on a free loopback port.
type pod struct {
	t      *testing.T
	srv    *Server
	minter *session.Minter
	m      *metrics.Metrics
	locker *session.MemoryLocker
	routes *session.MemoryRoutes
	addr   string
}

func startPod(t *testing.T, tweak func(*Options)) *pod {
	t.Helper()
	userKey, adminKey := randKey(t), randKey(t)
	minter, err := session.NewMinter(userKey, adminKey)
	if err != nil {
		t.Fatal(err)
	}
	val, err := session.NewValidator(userKey, adminKey, session.ValidatorOptions{ClockSkew: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p := &pod{t: t, minter: minter, m: metrics.New(), locker: session.NewMemoryLocker(), routes: session.NewMemoryRoutes("pod-a")}
	lim := DefaultLimits()
	lim.HandshakeTimeout = 2 * time.Second
	opts := Options{
		Addr:        "127.0.0.1:0",
		Loops:       2,
		Workers:     8,
		Subprotocol: "json.v1",
		Limits:      lim,
		APIKeys:     session.NewAPIKeyGuard(testAPIKey, testAPIKey),
		Tokens:      val,
		Locker:      p.locker,
		Routes:      p.routes,
		Metrics:     p.m,
	}
	if tweak != nil {
		tweak(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	p.srv = srv
	p.addr = fmt.Sprintf("127.0.0.1:%d", srv.Port())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	})
	return p
}

func randKey(t *testing.T) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func (p *pod) userToken(c, a, u string, exp time.Duration) string {
	tok, err := p.minter.MintUser(session.UserClaims{CompanyID: c, AgentID: a, UserID: u, ExpiresAt: time.Now().Add(exp)})
	if err != nil {
		p.t.Fatal(err)
	}
	return tok
}

func (p *pod) userURL(c, a, u string) string {
	q := url.Values{"user": {u}, "token": {p.userToken(c, a, u, time.Hour)}, "x-api-key": {testAPIKey}}
	return fmt.Sprintf("ws://%s/ws/%s/%s?%s", p.addr, c, a, q.Encode())
}

func (p *pod) adminURL(id, subCompany, subAgent string) string {
	tok, err := p.minter.MintAdmin(session.AdminClaims{AdminID: id, ExpiresAt: time.Now().Add(time.Hour), SubscribedCompanyID: subCompany, SubscribedAgentID: subAgent})
	if err != nil {
		p.t.Fatal(err)
	}
	q := url.Values{"token": {tok}, "x-api-key": {testAPIKey}}
	return fmt.Sprintf("ws://%s/ws/admin?%s", p.addr, q.Encode())
}

// client is a real WebSocket client (gobwas dialer) with helpers to read
// json.v1 frames.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, u string) *client {
	t.Helper()
	c, err := tryDial(t, u)
	if err != nil {
		t.Fatalf("dial %s: %v", redact(u), err)
	}
	return c
}

func tryDial(t *testing.T, u string) (*client, error) {
	d := ws.Dialer{Protocols: []string{"json.v1"}, Timeout: 5 * time.Second}
	conn, br, _, err := d.Dial(context.Background(), u)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	if br == nil {
		br = bufio.NewReader(conn)
	}
	c := &client{t: t, conn: conn, r: br}
	return c, nil
}

func redact(u string) string {
	if i := strings.Index(u, "?"); i > 0 {
		return u[:i]
	}
	return u
}

// frame reads the next frame, answering nothing; it fails the test on
// timeout.
func (c *client) frame(timeout time.Duration) (ws.Header, []byte) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		c.t.Fatalf("read header: %v", err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.r, p); err != nil {
		c.t.Fatalf("read payload: %v", err)
	}
	return h, p
}

// next returns the next text message, skipping pings (answered) .
func (c *client) next(timeout time.Duration) map[string]any {
	c.t.Helper()
	for {
		h, p := c.frame(timeout)
		switch h.OpCode {
		case ws.OpPing:
			c.send(ws.OpPong, p)
			continue
		case ws.OpText:
			var m map[string]any
			if err := json.Unmarshal(p, &m); err != nil {
				c.t.Fatalf("bad json %q: %v", p, err)
			}
			return m
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(p)
			c.t.Fatalf("unexpected close %d %q", code, reason)
		default:
			c.t.Fatalf("unexpected opcode %v", h.OpCode)
		}
	}
}

// ready asserts the first message is {"type":"ready"}.
func (c *client) ready() *client {
	c.t.Helper()
	if m := c.next(3 * time.Second); m["type"] != "ready" {
		c.t.Fatalf("want ready, got %v", m)
	}
	return c
}

// closeCode reads until a close frame and returns its code.
func (c *client) closeCode(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		h, p := c.frame(time.Until(deadline))
		if h.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(p)
			return int(code)
		}
	}
	c.t.Fatal("no close frame")
	return 0
}

func (c *client) send(op ws.OpCode, p []byte) {
	c.t.Helper()
	if err := wsutil.WriteClientMessage(c.conn, op, p); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// httpGet sends a raw request and returns the status and JSON body.
func rawRequest(t *testing.T, addr, req string) (int, http.Header, codec.Error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	var e codec.Error
	body, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(body, &e)
	return resp.StatusCode, resp.Header, e
}

func upgradeReq(path string, extra ...string) string {
	h := "GET " + path + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + "\r\n"
}

// eventually polls cond until it holds or fails the test.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
