package reactor

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/session"
)

func TestHandshake_ValidUser_GetsReadyAndProtocol(t *testing.T) {
	p := startPod(t, nil)
	c := dial(t, p.userURL("acme", "a1", "u1"))
	c.ready()
	eventually(t, 2*time.Second, "open count", func() bool { return p.srv.Open() == 1 })
}

func TestHandshake_Failures_AnswerStatusAndJSON(t *testing.T) {
	p := startPod(t, func(o *Options) {
		o.Limits.AllowedOrigins = []string{"https://app.example"}
	})
	good := url.Values{"user": {"u1"}, "token": {p.userToken("acme", "a1", "u1", time.Hour)}, "x-api-key": {testAPIKey}}
	q := func(mod func(v url.Values)) string {
		v := url.Values{}
		for k, x := range good {
			v[k] = append([]string(nil), x...)
		}
		mod(v)
		return v.Encode()
	}
	origin := "Origin: https://app.example"
	cases := []struct {
		name   string
		req    string
		status int
		code   codec.ErrorCode
	}{
		{"unknown path", upgradeReq("/nope?"+q(func(url.Values) {}), origin), 404, codec.CodeNotFound},
		{"too many segments", upgradeReq("/ws/acme/a1/x?"+q(func(url.Values) {}), origin), 404, codec.CodeNotFound},
		{"bad id", upgradeReq("/ws/ac.me/a1?"+q(func(url.Values) {}), origin), 400, codec.CodeBadRequest},
		{"method", strings.Replace(upgradeReq("/ws/acme/a1?"+q(func(url.Values) {}), origin), "GET", "POST", 1), 405, codec.CodeMethodNotAllowed},
		{"version", strings.Replace(upgradeReq("/ws/acme/a1?"+q(func(url.Values) {}), origin), "Version: 13", "Version: 8", 1), 426, codec.CodeUpgradeRequired},
		{"no key", strings.Replace(upgradeReq("/ws/acme/a1?"+q(func(url.Values) {}), origin), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1), 400, codec.CodeBadRequest},
		{"not upgrade", strings.Replace(upgradeReq("/ws/acme/a1?"+q(func(url.Values) {}), origin), "Upgrade: websocket\r\n", "", 1), 400, codec.CodeBadRequest},
		{"head too large", upgradeReq("/ws/acme/a1?"+q(func(url.Values) {}), origin, "X-Pad: "+strings.Repeat("a", 9000)), 431, codec.CodeHeaderTooLarge},
		{"bad origin", upgradeReq("/ws/acme/a1?"+q(func(url.Values) {}), "Origin: https://evil.example"), 403, codec.CodeForbidden},
		{"wrong api key", upgradeReq("/ws/acme/a1?"+q(func(v url.Values) { v.Set("x-api-key", "nope") }), origin), 401, codec.CodeInvalidAPIKey},
		{"missing api key", upgradeReq("/ws/acme/a1?"+q(func(v url.Values) { v.Del("x-api-key") }), origin), 401, codec.CodeInvalidAPIKey},
		{"missing token", upgradeReq("/ws/acme/a1?"+q(func(v url.Values) { v.Del("token") }), origin), 403, codec.CodeInvalidToken},
		{"garbage token", upgradeReq("/ws/acme/a1?"+q(func(v url.Values) { v.Set("token", "abc") }), origin), 403, codec.CodeInvalidToken},
		{"expired token", upgradeReq("/ws/acme/a1?"+q(func(v url.Values) { v.Set("token", p.userToken("acme", "a1", "u1", -time.Minute)) }), origin), 403, codec.CodeInvalidToken},
		{"user mismatch", upgradeReq("/ws/acme/a1?"+q(func(v url.Values) { v.Set("user", "u2") }), origin), 403, codec.CodeInvalidToken},
		{"agent mismatch", upgradeReq("/ws/acme/a2?"+q(func(url.Values) {}), origin), 403, codec.CodeInvalidToken},
		{"admin token on user path", upgradeReq("/ws/admin?"+q(func(url.Values) {}), origin), 403, codec.CodeInvalidToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, e := rawRequest(t, p.addr, tc.req)
			if status != tc.status || e.Code != tc.code || e.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", status, e, tc.status, tc.code)
			}
			if tc.status == 426 && hdr.Get("Sec-WebSocket-Version") != "13" {
				t.Fatalf("426 without Sec-WebSocket-Version: 13")
			}
		})
	}
	// The server kept serving through all of that.
	status, _, _ := rawRequest(t, p.addr, upgradeReq("/ws/acme/a1?"+q(func(url.Values) {}), origin))
	if status != 101 {
		t.Fatalf("valid handshake after the bad ones: status %d", status)
	}
}

func TestHandshake_FutureToken_Returns403(t *testing.T) {
	p := startPod(t, nil)
	tok, err := p.minter.MintUser(session.UserClaims{CompanyID: "acme", AgentID: "a1", UserID: "u1",
		ExpiresAt: time.Now().Add(2 * time.Hour), IssuedAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	v := url.Values{"user": {"u1"}, "token": {tok}, "x-api-key": {testAPIKey}}
	status, _, e := rawRequest(t, p.addr, upgradeReq("/ws/acme/a1?"+v.Encode()))
	if status != 403 || e.Details != session.ReasonNotYetValid {
		t.Fatalf("got %d %+v", status, e)
	}
}

func TestHandshake_APIKeyHeader_Accepted(t *testing.T) {
	p := startPod(t, nil)
	v := url.Values{"user": {"u1"}, "token": {p.userToken("acme", "a1", "u1", time.Hour)}}
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte(upgradeReq("/ws/acme/a1?"+v.Encode(), "X-API-Key: "+testAPIKey)))
	buf := make([]byte, 512)
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _ := conn.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 101") {
		t.Fatalf("got %q", buf[:n])
	}
}

func TestHandshake_FloodFromOneIP_Returns429(t *testing.T) {
	p := startPod(t, func(o *Options) {
		o.Limits.HandshakesPerIP = 1
		o.Limits.HandshakeBurst = 3
	})
	got429 := 0
	for i := 0; i < 10; i++ {
		status, _, e := rawRequest(t, p.addr, upgradeReq("/ws/acme/a1?user=u1&token=x&x-api-key="+testAPIKey))
		if status == 429 && e.Code == codec.CodeRateLimitExceeded {
			got429++
		}
	}
	if got429 < 6 {
		t.Fatalf("only %d of 10 handshakes limited", got429)
	}
}

func TestHandshake_Healthz_OnWSPort(t *testing.T) {
	p := startPod(t, nil)
	status, _, _ := rawRequest(t, p.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if status != 200 {
		t.Fatalf("status %d", status)
	}
}

func TestHandshake_SilentClient_ClosedAtTimeout(t *testing.T) {
	p := startPod(t, nil) // handshake timeout 2 s
	for _, slow := range []bool{false, true} {
		conn, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if slow {
			// One head byte every 300 ms never completes in time.
			go func() {
				for _, b := range []byte("GET /ws/acme/a1 HTTP/1.1\r\nHost: x\r\n") {
					if _, err := conn.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(300 * time.Millisecond)
				}
			}()
		}
		_ = conn.SetReadDeadline(time.Now().Add(6 * time.Second))
		buf := make([]byte, 1024)
		for {
			if _, err := conn.Read(buf); err != nil {
				break
			}
		}
		if el := time.Since(start); el < 1500*time.Millisecond || el > 5*time.Second {
			t.Fatalf("slow=%v: closed after %v, want ~2s", slow, el)
		}
		conn.Close()
	}
}

func TestHandshake_Admin_GetsReady(t *testing.T) {
	p := startPod(t, nil)
	dial(t, p.adminURL("adm1", "", "")).ready()
}

func TestOriginAllowed_Table(t *testing.T) {
	allowed := []string{"https://App.Example.org", "https://*.example.com", "http://*.dev.test:8080"}
	cases := []struct {
		origin string
		want   bool
	}{
		{"https://app.example.org", true}, // plain entries ignore case
		{"https://app.example.org:8443", false},
		{"https://a.example.com", true},
		{"https://A-1.Example.COM", true},
		{"https://a.example.com:443", true}, // the default port is the same origin
		{"https://a.b.example.com", false},  // exactly one label
		{"https://example.com", false},
		{"https://.example.com", false},
		{"https://aexample.com", false},
		{"http://a.example.com", false}, // scheme must match
		{"https://a.example.com:8443", false},
		{"https://a.example.com.evil.net", false},
		{"https://evil.net/.example.com", false},
		{"https://user@a.example.com", false},
		{"https://*.example.com", false},
		{"http://x.dev.test:8080", true},
		{"http://x.dev.test", false}, // port must match
		{"http://x.dev.test:80", false},
		{"null", false},
		{"", false},
	}
	for _, tc := range cases {
		if got := originAllowed(allowed, tc.origin); got != tc.want {
			t.Errorf("originAllowed(%q) = %v, want %v", tc.origin, got, tc.want)
		}
	}
	if !originAllowed([]string{"*"}, "https://anything.example") {
		t.Error(`"*" does not allow any origin`)
	}
}

func TestValidUserID_Table(t *testing.T) {
	cases := []struct {
		id   string
		want bool
	}{
		{"u1", true},
		{"ann.lee@example.com", true},
		{"tenant:ann", true},
		{"a*b>c/d", true},
		{"jürgen", true},
		{strings.Repeat("u", maxIDLen), true},
		{strings.Repeat("u", maxIDLen+1), false},
		{"", false},
		{"ann lee", false},
		{"ann\tlee", false},
		{"ann\x00", false},
		{"ann\x7f", false},
		{"ann\u00a0lee", false}, // no-break space is a space
		{"ann\u200blee", false}, // zero-width space is not printable
		{"\xff\xfe", false},     // not UTF-8
	}
	for _, tc := range cases {
		if got := validUserID(tc.id); got != tc.want {
			t.Errorf("validUserID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

// Company and agent ids become NATS subject tokens: separators and
// wildcards stay refused.
func TestValidID_CompanyAgent_Table(t *testing.T) {
	cases := []struct {
		id   string
		want bool
	}{
		{"acme", true},
		{"acme-1_x", true},
		{"ac.me", false},
		{"ac*", false},
		{"a>", false},
		{"a:b", false},
		{"a/b", false},
		{"a b", false},
		{"", false},
		{strings.Repeat("a", maxIDLen+1), false},
	}
	for _, tc := range cases {
		if got := validID(tc.id); got != tc.want {
			t.Errorf("validID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

// A user id that is an e-mail address (finding 8 of issue 9) connects and
// gets its events; one with a space is refused 400.
func TestHandshake_EmailUserID_ConnectsAndGetsEvents(t *testing.T) {
	p := startPod(t, nil)
	for _, u := range []string{"ann.lee@example.com", "tenant:bob"} {
		c := dial(t, p.userURL("acme", "a1", u)).ready()
		eventually(t, 2*time.Second, "session "+u, func() bool { return p.srv.index.owner("acme:a1:"+u) != nil })
		p.srv.Deliver(chats("acme", "a1"), []byte(`{"event_id":"e1"}`), Meta{})
		if m := c.next(3 * time.Second); m["type"] != "event" {
			t.Fatalf("%s got %v", u, m)
		}
		_ = c.conn.Close()
		eventually(t, 2*time.Second, "released "+u, func() bool { return !p.locker.Held("acme:a1:" + u) })
	}
	v := url.Values{"user": {"ann lee"}, "token": {p.userToken("acme", "a1", "ann lee", time.Hour)}, "x-api-key": {testAPIKey}}
	if status, _, e := rawRequest(t, p.addr, upgradeReq("/ws/acme/a1?"+v.Encode())); status != 400 || e.Code != codec.CodeBadRequest {
		t.Fatalf("user id with a space: %d %+v", status, e)
	}
}

// websocket.allowed_origins "https://*.example.com" matches one label.
func TestHandshake_WildcardOrigin(t *testing.T) {
	p := startPod(t, func(o *Options) { o.Limits.AllowedOrigins = []string{"https://*.example.com"} })
	cases := []struct {
		origin string
		status int
	}{
		{"https://a.example.com", 101},
		{"https://a.b.example.com", 403},
		{"https://example.com", 403},
		{"http://a.example.com", 403},
	}
	for i, tc := range cases {
		u := fmt.Sprintf("u%d", i)
		v := url.Values{"user": {u}, "token": {p.userToken("acme", "a1", u, time.Hour)}, "x-api-key": {testAPIKey}}
		status, _, _ := rawRequest(t, p.addr, upgradeReq("/ws/acme/a1?"+v.Encode(), "Origin: "+tc.origin))
		if status != tc.status {
			t.Errorf("Origin %s: status %d, want %d", tc.origin, status, tc.status)
		}
	}
}
