package app

import (
	"bufio"
	"bytes"
	"context"
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
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/bridge/forwardpb"
	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// errorShape is SPEC §7's one error shape. Decoding is strict: a field
// beyond code, message and details fails the walk.
type errorShape struct {
	Code    codec.ErrorCode `json:"code"`
	Message string          `json:"message"`
	Details string          `json:"details,omitempty"`
}

func decodeErrorShape(t *testing.T, where string, b []byte) errorShape {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e errorShape
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("%s: body %q is not {code,message,details?}: %v", where, b, err)
	}
	if dec.More() {
		t.Fatalf("%s: trailing data after the error object: %q", where, b)
	}
	if e.Code == "" || e.Message == "" {
		t.Fatalf("%s: code and message are required: %q", where, b)
	}
	return e
}

// Keys the error walk uses; the AES keys stay ephemeral (dev mode).
const (
	walkUserKey   = "walk-user-key"
	walkAdminKey  = "walk-admin-key"
	walkIssuerKey = "walk-issuer-key"
	walkOrigin    = "https://app.example"
)

func TestErrors_OpsListener_EveryErrorPathHasTheOneShape(t *testing.T) {
	a := startApp(t, map[string]string{"auth.api_key": walkUserKey, "auth.admin_api_key": walkAdminKey, "auth.issuer_api_key": walkIssuerKey})
	base := "http://" + a.OpsAddr()
	user := `{"company_id":"c","agent_id":"a","user_id":"u","expires_in_seconds":60}`
	cases := []struct {
		name         string
		method, path string
		key, ctype   string
		body         string
		status       int
		code         codec.ErrorCode
	}{
		{"unknown path", "GET", "/nope", "", "", "", 404, codec.CodeNotFound},
		{"unknown path, POST", "POST", "/v2/generate-token", walkUserKey, "application/json", user, 404, codec.CodeNotFound},
		{"mint without key", "POST", "/generate-token", "", "application/json", user, 401, codec.CodeInvalidAPIKey},
		{"mint with a wrong key", "POST", "/generate-token", "nope", "application/json", user, 401, codec.CodeInvalidAPIKey},
		{"mint with the admin key", "POST", "/generate-token", walkAdminKey, "application/json", user, 401, codec.CodeInvalidAPIKey},
		{"mint with the general key", "POST", "/generate-token", walkUserKey, "application/json", user, 401, codec.CodeInvalidAPIKey},
		{"mint, not JSON content type", "POST", "/generate-token", walkIssuerKey, "text/plain", user, 400, codec.CodeBadRequest},
		{"mint, malformed JSON", "POST", "/generate-token", walkIssuerKey, "application/json", `{"company_id":`, 400, codec.CodeBadRequest},
		{"mint, body over 16 KiB", "POST", "/generate-token", walkIssuerKey, "application/json", `{"company_id":"` + strings.Repeat("c", 17<<10) + `"}`, 413, codec.CodeBadRequest},
		{"mint, missing user_id", "POST", "/generate-token", walkIssuerKey, "application/json", `{"company_id":"c","agent_id":"a","expires_in_seconds":60}`, 400, codec.CodeBadRequest},
		{"mint, zero lifetime", "POST", "/generate-token", walkIssuerKey, "application/json", `{"company_id":"c","agent_id":"a","user_id":"u"}`, 400, codec.CodeBadRequest},
		{"mint, lifetime over a week", "POST", "/generate-token", walkIssuerKey, "application/json", `{"company_id":"c","agent_id":"a","user_id":"u","expires_in_seconds":604801}`, 400, codec.CodeBadRequest},
		{"admin mint without key", "POST", "/admin/generate-token", "", "application/json", `{"admin_id":"x","expires_in_seconds":60}`, 401, codec.CodeInvalidAPIKey},
		{"admin mint with the user key", "POST", "/admin/generate-token", walkUserKey, "application/json", `{"admin_id":"x","expires_in_seconds":60}`, 401, codec.CodeInvalidAPIKey},
		{"admin mint with the admin key", "POST", "/admin/generate-token", walkAdminKey, "application/json", `{"admin_id":"x","expires_in_seconds":60}`, 401, codec.CodeInvalidAPIKey},
		{"admin mint, malformed JSON", "POST", "/admin/generate-token", walkIssuerKey, "application/json", `[`, 400, codec.CodeBadRequest},
		{"admin mint, missing admin_id", "POST", "/admin/generate-token", walkIssuerKey, "application/json", `{"expires_in_seconds":60}`, 400, codec.CodeBadRequest},
		{"admin mint, negative lifetime", "POST", "/admin/generate-token", walkIssuerKey, "application/json", `{"admin_id":"x","expires_in_seconds":-1}`, 400, codec.CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			if tc.key != "" {
				req.Header.Set("X-API-Key", tc.key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			e := decodeErrorShape(t, tc.name, b)
			// 413 is the one status outside the code table: an oversized
			// body is a BadRequest whose HTTP status says why.
			if e.Code != tc.code || (e.Code.HTTPStatus() != resp.StatusCode && resp.StatusCode != http.StatusRequestEntityTooLarge) {
				t.Fatalf("code %s (table status %d), want %s at %d", e.Code, e.Code.HTTPStatus(), tc.code, tc.status)
			}
			// A rejected request never echoes the key it was given.
			if tc.key != "" && bytes.Contains(b, []byte(tc.key)) {
				t.Fatalf("error body echoes the API key: %s", b)
			}
		})
	}
}

// upgradeHead is a well-formed upgrade request for target, with hdr lines
// added; a hdr line "-Name" drops that default header instead.
func upgradeHead(method, target string, hdr ...string) string {
	lines := map[string]string{
		"Host":                  "127.0.0.1",
		"Upgrade":               "websocket",
		"Connection":            "Upgrade",
		"Sec-WebSocket-Key":     "dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Version": "13",
		"Origin":                walkOrigin,
	}
	order := []string{"Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Origin"}
	for _, h := range hdr {
		if name, ok := strings.CutPrefix(h, "-"); ok {
			delete(lines, name)
			continue
		}
		name, val, _ := strings.Cut(h, ": ")
		if _, known := lines[name]; !known {
			order = append(order, name)
		}
		lines[name] = val
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", method, target)
	for _, name := range order {
		if v, ok := lines[name]; ok {
			fmt.Fprintf(&b, "%s: %s\r\n", name, v)
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// rawHTTP sends head to the WebSocket port and reads the HTTP answer.
func rawHTTP(t *testing.T, port int, head string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no HTTP answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

// wsRejection is one row of the WebSocket-port walk.
type wsRejection struct {
	name   string
	head   string
	status int
	code   codec.ErrorCode
	header string // "Name: value" the answer must carry
	detail string // expected details, when it matters
}

func checkRejection(t *testing.T, port int, tc wsRejection) {
	t.Helper()
	resp, b := rawHTTP(t, port, tc.head)
	if resp.StatusCode != tc.status {
		t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	e := decodeErrorShape(t, tc.name, b)
	if e.Code != tc.code {
		t.Fatalf("code %s, want %s (%s)", e.Code, tc.code, b)
	}
	if tc.detail != "" && e.Details != tc.detail {
		t.Fatalf("details %q, want %q", e.Details, tc.detail)
	}
	if tc.header != "" {
		name, val, _ := strings.Cut(tc.header, ": ")
		if resp.Header.Get(name) != val {
			t.Fatalf("header %s = %q, want %q", name, resp.Header.Get(name), val)
		}
	}
}

func TestErrors_WSPort_EveryRejectionHasTheOneShape(t *testing.T) {
	a := startApp(t, map[string]string{
		"auth.api_key":              walkUserKey,
		"auth.admin_api_key":        walkAdminKey,
		"websocket.allowed_origins": walkOrigin,
	})
	mint := func(c session.UserClaims) string {
		tok, err := a.Minter.MintUser(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mint(userClaims("c1", "a1", "u1"))
	expired := mint(session.UserClaims{CompanyID: "c1", AgentID: "a1", UserID: "u1", ExpiresAt: time.Now().Add(-time.Minute)})
	q := func(user, tok, key string) string {
		v := url.Values{}
		for k, s := range map[string]string{"user": user, "token": tok, "x-api-key": key} {
			if s != "" {
				v.Set(k, s)
			}
		}
		return "?" + v.Encode()
	}
	cases := []wsRejection{
		{name: "unknown path", head: upgradeHead("GET", "/chat"), status: 404, code: codec.CodeNotFound},
		{name: "path without agent", head: upgradeHead("GET", "/ws/c1"), status: 404, code: codec.CodeNotFound},
		{name: "path too deep", head: upgradeHead("GET", "/ws/c1/a1/x"), status: 404, code: codec.CodeNotFound},
		{name: "dot in company id", head: upgradeHead("GET", "/ws/c.1/a1"+q("u1", good, walkUserKey)), status: 400, code: codec.CodeBadRequest},
		{name: "not GET", head: upgradeHead("POST", "/ws/c1/a1"+q("u1", good, walkUserKey)), status: 405, code: codec.CodeMethodNotAllowed},
		{name: "plain HTTP GET", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", good, walkUserKey), "-Upgrade", "-Connection"), status: 400, code: codec.CodeBadRequest},
		{name: "no Sec-WebSocket-Key", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", good, walkUserKey), "-Sec-WebSocket-Key"), status: 400, code: codec.CodeBadRequest},
		{name: "version 8", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", good, walkUserKey), "Sec-WebSocket-Version: 8"), status: 426, code: codec.CodeUpgradeRequired, header: "Sec-WebSocket-Version: 13"},
		{name: "head over max_handshake_bytes", head: upgradeHead("GET", "/ws/c1/a1", "X-Pad: "+strings.Repeat("p", 9<<10)), status: 431, code: codec.CodeHeaderTooLarge},
		{name: "malformed request line", head: "GARBAGE\r\n\r\n", status: 400, code: codec.CodeBadRequest},
		{name: "origin not allowed", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", good, walkUserKey), "Origin: https://evil.example"), status: 403, code: codec.CodeForbidden},
		{name: "no origin while origins are restricted", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", good, walkUserKey), "-Origin"), status: 403, code: codec.CodeForbidden},
		{name: "no API key", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", good, "")), status: 401, code: codec.CodeInvalidAPIKey},
		{name: "wrong API key", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", good, "nope")), status: 401, code: codec.CodeInvalidAPIKey},
		{name: "wrong API key in header", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", good, ""), "X-API-Key: nope"), status: 401, code: codec.CodeInvalidAPIKey},
		{name: "admin endpoint with the user key", head: upgradeHead("GET", "/ws/admin"+q("", good, walkUserKey)), status: 401, code: codec.CodeInvalidAPIKey},
		{name: "no token", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", "", walkUserKey)), status: 403, code: codec.CodeInvalidToken, detail: session.ReasonMissing},
		{name: "no user", head: upgradeHead("GET", "/ws/c1/a1"+q("", good, walkUserKey)), status: 400, code: codec.CodeBadRequest},
		{name: "garbage token", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", "not-a-token", walkUserKey)), status: 403, code: codec.CodeInvalidToken},
		{name: "token of another user", head: upgradeHead("GET", "/ws/c1/a1"+q("u2", good, walkUserKey)), status: 403, code: codec.CodeInvalidToken, detail: session.ReasonMismatch},
		{name: "token of another agent", head: upgradeHead("GET", "/ws/c1/a2"+q("u1", good, walkUserKey)), status: 403, code: codec.CodeInvalidToken, detail: session.ReasonMismatch},
		{name: "expired token", head: upgradeHead("GET", "/ws/c1/a1"+q("u1", expired, walkUserKey)), status: 403, code: codec.CodeInvalidToken, detail: session.ReasonExpired},
		{name: "user token on the admin endpoint", head: upgradeHead("GET", "/ws/admin"+q("", good, walkAdminKey)), status: 403, code: codec.CodeInvalidToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkRejection(t, a.WSPort(), tc) })
	}

	// The per-IP limit is hot: turn it on as SIGHUP would, spend the burst
	// of one, and the next upgrade from this address gets 429.
	t.Run("per-IP handshake rate", func(t *testing.T) {
		next := *a.Cfg
		next.RateLimit.HandshakesPerIP, next.RateLimit.HandshakeBurst = 0.001, 1
		a.Apply(&next)
		t.Cleanup(func() { a.Apply(a.Cfg) })
		first := upgradeHead("GET", "/ws/c1/a1"+q("u1", "not-a-token", walkUserKey))
		checkRejection(t, a.WSPort(), wsRejection{name: "burst", head: first, status: 403, code: codec.CodeInvalidToken})
		checkRejection(t, a.WSPort(), wsRejection{name: "over", head: first, status: 429, code: codec.CodeRateLimitExceeded})
	})

	// Last: draining cannot be undone. SPEC §6 fixes 503 with the code
	// InternalServerError although the table maps that code to 500.
	t.Run("draining", func(t *testing.T) {
		a.Server.Drain()
		checkRejection(t, a.WSPort(), wsRejection{name: "draining",
			head:   upgradeHead("GET", "/ws/c1/a1"+q("u1", good, walkUserKey)),
			status: 503, code: codec.CodeInternalServerError})
		resp, err := http.Get("http://" + a.OpsAddr() + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("healthz while the reactor drains: %v %v", resp, err)
		}
		resp.Body.Close()
	})
}

// With session.on_store_down=reject a pod whose Redis is gone refuses
// upgrades with 503 and reports not ready (SPEC §2 step 7, §1).
func TestErrors_StoreDownInRejectMode_503AndNotReady(t *testing.T) {
	rp := startRedis(t, "")
	c := newCluster(t, "127.0.0.1:"+rp.port, 0)
	c.flags["session.on_store_down"] = "reject"
	c.flags["redis.dial_timeout"] = "200ms"
	c.flags["redis.read_timeout"] = "200ms"
	c.flags["redis.write_timeout"] = "200ms"
	p := c.add()
	u := c.userURL(p, "acme", "a1", "u1")
	rp.kill()
	parsed, _ := url.Parse(u)
	head := upgradeHead("GET", parsed.RequestURI(), "-Origin")
	var resp *http.Response
	var body []byte
	eventuallyT(t, 5*time.Second, "503 once Redis is gone", func() bool {
		resp, body = rawHTTP(t, p.WSPort(), head)
		return resp.StatusCode == 503
	})
	e := decodeErrorShape(t, "store down", body)
	if e.Code != codec.CodeServiceUnavailable {
		t.Fatalf("code %s, want ServiceUnavailable", e.Code)
	}
	r, err := http.Get("http://" + p.OpsAddr() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	var ready struct {
		Status       string            `json:"status"`
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(b, &ready); err != nil || r.StatusCode != 503 || ready.Status != "not_ready" || ready.Dependencies["redis"] == "ok" {
		t.Fatalf("/ready with Redis down in reject mode: %d %s", r.StatusCode, b)
	}
	for _, dep := range []string{"nats", "grpc", "listener"} {
		if ready.Dependencies[dep] != "ok" {
			t.Fatalf("/ready: %s = %q, want ok (%s)", dep, ready.Dependencies[dep], b)
		}
	}
}

// readErrorFrame reads server frames until an error envelope and returns
// its payload, failing on a close.
func readErrorFrame(t *testing.T, conn net.Conn) errorShape {
	t.Helper()
	for {
		msg, err := wsutil.ReadServerText(conn)
		if err != nil {
			t.Fatalf("reading an error frame: %v", err)
		}
		var env struct {
			Type    string          `json:"type"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(msg, &env); err != nil {
			t.Fatalf("frame %q is not a json.v1 envelope: %v", msg, err)
		}
		if env.Type == "error" {
			return decodeErrorShape(t, "error frame", env.Payload)
		}
	}
}

// assertAlive pings the socket and waits for the pong: the error left it
// open.
func assertAlive(t *testing.T, conn net.Conn) {
	t.Helper()
	if err := wsutil.WriteClientMessage(conn, ws.OpPing, []byte("alive?")); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := ws.ReadFrame(conn)
		if err != nil {
			t.Fatalf("socket closed after an error frame: %v", err)
		}
		switch f.Header.OpCode {
		case ws.OpPong:
			if string(f.Payload) == "alive?" {
				return
			}
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			t.Fatalf("socket closed %d %q after an error frame", code, reason)
		}
	}
}

func TestErrors_SocketErrorFrames_HaveTheOneShapeAndKeepTheSocket(t *testing.T) {
	a := startApp(t, nil)
	dial := func(t *testing.T, admin bool, user string) net.Conn {
		var u string
		if admin {
			tok, err := a.Minter.MintAdmin(session.AdminClaims{AdminID: user, ExpiresAt: time.Now().Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			key := a.Cfg.Auth.AdminAPIKey
			if key == "" {
				key = a.Cfg.Auth.APIKey
			}
			u = fmt.Sprintf("ws://127.0.0.1:%d/ws/admin?%s", a.WSPort(), url.Values{"token": {tok}, "x-api-key": {key}}.Encode())
		} else {
			tok, _ := a.Minter.MintUser(userClaims("c1", "a1", user))
			u = fmt.Sprintf("ws://127.0.0.1:%d/ws/c1/a1?%s", a.WSPort(), url.Values{"user": {user}, "token": {tok}, "x-api-key": {a.Cfg.Auth.APIKey}}.Encode())
		}
		conn := wsDial(t, u)
		if msg, err := wsutil.ReadServerText(conn); err != nil || !strings.HasPrefix(string(msg), `{"type":"ready"`) {
			t.Fatalf("ready: %q %v", msg, err)
		}
		return conn
	}
	text := func(s string) func(net.Conn) error {
		return func(c net.Conn) error { return wsutil.WriteClientText(c, []byte(s)) }
	}
	cases := []struct {
		name  string
		admin bool
		send  func(net.Conn) error
		code  codec.ErrorCode
	}{
		{"malformed JSON", false, text(`{"type":`), codec.CodeBadRequest},
		{"not an object", false, text(`["select_chat"]`), codec.CodeBadRequest},
		{"no type", false, text(`{"chat_id":"x"}`), codec.CodeBadRequest},
		{"unknown type", false, text(`{"type":"subscribe_all"}`), codec.CodeBadRequest},
		{"select_chat without chat_id", false, text(`{"type":"select_chat"}`), codec.CodeBadRequest},
		{"select_chat with a wildcard id", false, text(`{"type":"select_chat","chat_id":"x.>"}`), codec.CodeBadRequest},
		{"binary frame", false, func(c net.Conn) error { return wsutil.WriteClientBinary(c, []byte(`{}`)) }, codec.CodeBadRequest},
		{"select_chat on an admin socket", true, text(`{"type":"select_chat","chat_id":"x"}`), codec.CodeBadRequest},
		// Default limit: 10/s, burst 20, close after 20 in a row; the 21st
		// frame of one write is over.
		{"over the message rate", false, nil, codec.CodeRateLimitExceeded},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := dial(t, tc.admin, fmt.Sprintf("u%d", i))
			if tc.code == codec.CodeRateLimitExceeded {
				var burst bytes.Buffer
				for range 21 {
					if err := wsutil.WriteClientText(&burst, []byte(`{"type":"ping"}`)); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := conn.Write(burst.Bytes()); err != nil {
					t.Fatal(err)
				}
			} else if err := tc.send(conn); err != nil {
				t.Fatal(err)
			}
			e := readErrorFrame(t, conn)
			if e.Code != tc.code {
				t.Fatalf("error frame %+v, want %s", e, tc.code)
			}
			if tc.code == codec.CodeRateLimitExceeded {
				// Every frame counts against the bucket, control frames
				// included (SPEC §6): let it refill before the ping.
				time.Sleep(500 * time.Millisecond)
			}
			assertAlive(t, conn)
		})
	}
}

// faultyKeys panics while checking one API key: a bug in a gnet callback
// (OnTraffic) of one connection.
type faultyKeys struct {
	reactor.KeyChecker
	trigger string
}

func (k faultyKeys) CheckUser(given string) bool {
	if given == k.trigger {
		panic("injected: API key check bug")
	}
	return k.KeyChecker.CheckUser(given)
}

// faultyRoutes panics in a dispatcher worker (Pods) and in a socket's
// OnClose (Leave) for one company.
type faultyRoutes struct {
	session.Routes
	company string
}

func (r faultyRoutes) Pods(ctx context.Context, route session.Route) ([]string, error) {
	if route.Company == r.company {
		panic("injected: route lookup bug")
	}
	return r.Routes.Pods(ctx, route)
}

func (r faultyRoutes) Leave(route session.Route) {
	if route.Company == r.company {
		panic("injected: route leave bug")
	}
	r.Routes.Leave(route)
}

// startFaultyApp is startApp with faults wired through the reactor's and
// the bridge's own seams (reactor.Options.APIKeys and Routes, the bridge's
// route registry): the pod is the real one otherwise.
func startFaultyApp(t *testing.T, flags map[string]string, keyTrigger, company string) *App {
	t.Helper()
	f := map[string]string{"server.ws_addr": "127.0.0.1:0", "server.ops_addr": "127.0.0.1:0", "nats.embedded_port": "-1"}
	for k, v := range flags {
		f[k] = v
	}
	f["server.pod_id"] = freeAddr(t)
	f["server.grpc_addr"] = f["server.pod_id"]
	cfg, err := config.Load(config.LoadOptions{File: "", Env: []string{}, Flags: f})
	if err != nil {
		t.Fatal(err)
	}
	cfg.ApplyDevKeys()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	userKey, _ := session.ParseKey(cfg.Auth.TokenAESKey)
	adminKey, _ := session.ParseKey(cfg.Auth.AdminTokenAESKey)
	val, err := session.NewValidator(userKey, adminKey, session.ValidatorOptions{ClockSkew: cfg.Auth.ClockSkew})
	if err != nil {
		t.Fatal(err)
	}
	// The bridge is built in Start from a.routes; the reactor is rebuilt
	// here (New only assembles it, nothing runs yet).
	a.routes = faultyRoutes{Routes: a.routes, company: company}
	a.Server, err = reactor.New(reactor.Options{
		Addr: cfg.Server.WSAddr, Loops: 2, Subprotocol: cfg.WebSocket.Subprotocol, Limits: Limits(cfg),
		APIKeys: faultyKeys{KeyChecker: a.keys, trigger: keyTrigger},
		Tokens:  val, Locker: a.locker, Routes: a.routes, Metrics: a.Metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return a
}

// Panic tests are not parallel: safego's panic hook is process-wide and
// points at the App built last.
func TestPanic_InjectedIntoWorkerAndCallbacks_PodKeepsServingAndCounts(t *testing.T) {
	const boomKey, boom = "boom-key", "boom"
	a := startFaultyApp(t, map[string]string{"nats.nak_delay": "50ms"}, boomKey, boom)
	nc, err := nats.Connect(a.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	userURL := func(company, user, key string) string {
		tok, _ := a.Minter.MintUser(userClaims(company, "a1", user))
		return fmt.Sprintf("ws://127.0.0.1:%d/ws/%s/a1?%s", a.WSPort(), company, url.Values{"user": {user}, "token": {tok}, "x-api-key": {key}}.Encode())
	}
	healthy := wsDial(t, userURL("ok", "u1", a.Cfg.Auth.APIKey))
	if _, err := wsutil.ReadServerText(healthy); err != nil {
		t.Fatal(err)
	}
	panics := func(where string) float64 {
		return testutil.ToFloat64(a.Metrics.RecoveredPanics.WithLabelValues(where))
	}
	seq := 0
	// stillServes proves the pod survived: an event reaches the healthy
	// socket and a new upgrade succeeds.
	stillServes := func(t *testing.T) {
		t.Helper()
		seq++
		id := fmt.Sprintf("alive-%d", seq)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := bridge.Publish(ctx, nc, "websocket.ok.a1.chats", []byte(`{"event_id":"`+id+`","company_id":"ok","row_data":{}}`), ""); err != nil {
			t.Fatal(err)
		}
		_ = healthy.SetReadDeadline(time.Now().Add(5 * time.Second))
		msg, err := wsutil.ReadServerText(healthy)
		if err != nil || !bytes.Contains(msg, []byte(id)) {
			t.Fatalf("healthy socket after the panic: %q %v", msg, err)
		}
		conn := wsDial(t, userURL("ok", fmt.Sprintf("fresh%d", seq), a.Cfg.Auth.APIKey))
		if _, err := wsutil.ReadServerText(conn); err != nil {
			t.Fatalf("new upgrade after the panic: %v", err)
		}
	}
	cases := []struct {
		name   string
		where  string
		inject func(t *testing.T)
	}{
		{"dispatcher worker", "dispatch", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := bridge.Publish(ctx, nc, "websocket."+boom+".a1.chats", []byte(`{"event_id":"poison","company_id":"boom","row_data":{}}`), "req-poison"); err != nil {
				t.Fatal(err)
			}
			// A message that panics every time is retried in place (a NAK
			// would let later events of its partition overtake it), then
			// terminated after a bounded number of attempts instead of
			// blocking its partition.
			eventuallyT(t, 5*time.Second, "poison message terminated", func() bool {
				return testutil.ToFloat64(a.Metrics.Drops.WithLabelValues("poison")) == 1
			})
			// Attempts 1 to 4 were retried, and counted as such.
			if n := testutil.ToFloat64(a.Metrics.Acks.WithLabelValues("in_progress", "panic")); n != 4 {
				t.Errorf(`dws_nats_acks_total{result="in_progress",reason="panic"} = %v after 5 attempts, want 4`, n)
			}
		}},
		{"connection callback OnTraffic", "reactor.traffic", func(t *testing.T) {
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", a.WSPort()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			parsed, _ := url.Parse(userURL("ok", "victim", boomKey))
			if _, err := io.WriteString(conn, upgradeHead("GET", parsed.RequestURI())); err != nil {
				t.Fatal(err)
			}
			// The socket whose callback panicked is not left hanging until
			// the handshake timeout (10 s) with a misleading 400: it is
			// answered 500 at once and closed.
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer after a panic in OnTraffic: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if e := decodeErrorShape(t, "panic answer", body); resp.StatusCode != 500 || e.Code != codec.CodeInternalServerError {
				t.Fatalf("answer after a panic: %d %+v", resp.StatusCode, e)
			}
		}},
		{"connection callback OnClose", "reactor.close", func(t *testing.T) {
			conn := wsDial(t, userURL(boom, "u1", a.Cfg.Auth.APIKey))
			if _, err := wsutil.ReadServerText(conn); err != nil {
				t.Fatal(err)
			}
			_ = conn.Close()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := panics(tc.where)
			tc.inject(t)
			eventuallyT(t, 5*time.Second, "dws_recovered_panics_total{where=\""+tc.where+"\"}", func() bool {
				return panics(tc.where) > before
			})
			stillServes(t)
		})
	}
	resp, err := http.Get("http://" + a.OpsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, where := range []string{"dispatch", "reactor.traffic", "reactor.close"} {
		if !bytes.Contains(b, []byte(`dws_recovered_panics_total{where="`+where+`"}`)) {
			t.Errorf("/metrics lacks recovered panics for %s", where)
		}
	}
}

// faultyDeliverer panics for one company: a reactor bug reached through
// the gRPC forward server.
type faultyDeliverer struct{ company string }

func (d faultyDeliverer) Deliver(r session.Route, _ []byte, _ reactor.Meta) int {
	if r.Company == d.company {
		panic("injected: delivery bug")
	}
	return 1
}

func TestPanic_InForwardedDelivery_AnsweredZeroAndCounted(t *testing.T) {
	a := startApp(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := bridge.NewForwardServer(faultyDeliverer{company: "boom"}, a.Metrics)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	client := bridge.NewForwardClient(a.Cfg.GRPC, a.Metrics)
	t.Cleanup(func() { _ = client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	before := testutil.ToFloat64(a.Metrics.RecoveredPanics.WithLabelValues("forward_push"))
	for _, tc := range []struct {
		company string
		want    uint32
	}{{"boom", 0}, {"ok", 1}} {
		n, err := client.Push(ctx, ln.Addr().String(), &forwardpb.Event{Kind: forwardpb.Kind_KIND_CHATS, Company: tc.company, Agent: "a1", Payload: []byte(`{}`)})
		if err != nil || n != tc.want {
			t.Fatalf("push to %s: accepted %d, err %v; want %d, nil", tc.company, n, err, tc.want)
		}
	}
	if got := testutil.ToFloat64(a.Metrics.RecoveredPanics.WithLabelValues("forward_push")); got != before+1 {
		t.Fatalf("recovered panics{forward_push} %v, want %v", got, before+1)
	}
}
