package app

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawOps sends head (and bodyLen bytes of filler, when > 0) on a fresh
// connection to addr and returns the answer. The request is written from
// a goroutine: a server that refuses it early stops reading, and the
// answer must be read while the client is still pushing bytes.
func rawOps(t *testing.T, addr, head string, body []byte) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		_, _ = io.WriteString(conn, head)
		_, _ = conn.Write(body)
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

// Issue 9 finding 7: a 900 KB header used to be accepted.
func TestOps_OneMiBHeader_Refused431(t *testing.T) {
	a := startApp(t, nil)
	big := strings.Repeat("a", 1<<20)
	resp, _ := rawOps(t, a.OpsAddr(), "GET /healthz HTTP/1.1\r\nHost: ops\r\nX-Filler: "+big+"\r\n\r\n", nil)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("1 MiB header: %d, want 431", resp.StatusCode)
	}
	// A normal request on a fresh connection is still served.
	resp, _ = rawOps(t, a.OpsAddr(), "GET /healthz HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("healthz after the refusal: %d", resp.StatusCode)
	}
}

// Issue 9 finding 7: bodies over 16 KiB were cut and answered "invalid
// JSON"; now they are refused whole with 413 in the SPEC §7 shape, while
// a body just under the cap is read in full.
func TestOps_BodyOverCap_Refused413(t *testing.T) {
	a := startApp(t, nil)
	// valid is a well-formed body of exactly size bytes for path.
	valid := func(path string, size int) []byte {
		prefix := `{"company_id":"c","agent_id":"a","user_id":"u","expires_in_seconds":60,"pad":"`
		if path == "/admin/generate-token" {
			prefix = `{"admin_id":"adm","expires_in_seconds":60,"pad":"`
		}
		return []byte(prefix + strings.Repeat("x", size-len(prefix)-2) + `"}`)
	}
	for _, tc := range []struct {
		name   string
		size   int
		status int
		code   string
	}{
		{"1 MiB", 1 << 20, 413, "BadRequest"},
		{"one byte over the cap", opsMaxBodyBytes + 1, 413, "BadRequest"},
		{"exactly the cap", opsMaxBodyBytes, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/generate-token", "/admin/generate-token"} {
				body := valid(path, tc.size)
				head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: ops\r\nContent-Type: application/json\r\nX-API-Key: %s\r\n"+
					"Content-Length: %d\r\nConnection: close\r\n\r\n", path, a.Cfg.Auth.IssuerAPIKey, len(body))
				resp, b := rawOps(t, a.OpsAddr(), head, body)
				var m map[string]any
				_ = json.Unmarshal(b, &m)
				if resp.StatusCode != tc.status || (tc.code != "" && m["code"] != tc.code) {
					t.Fatalf("%s: %d %s, want %d %s", path, resp.StatusCode, b, tc.status, tc.code)
				}
				if tc.status == 413 && !strings.Contains(fmt.Sprint(m["message"]), "too large") {
					t.Fatalf("%s: message %q does not say the body is too large", path, m["message"])
				}
			}
		})
	}
}

// The limits a slow or greedy client meets on the ops port.
func TestOps_ServerLimits_Set(t *testing.T) {
	a := startApp(t, nil)
	s := a.ops
	for _, tc := range []struct {
		name string
		got  time.Duration
	}{
		{"ReadHeaderTimeout", s.ReadHeaderTimeout},
		{"ReadTimeout", s.ReadTimeout},
		{"IdleTimeout", s.IdleTimeout},
	} {
		if tc.got <= 0 || tc.got > time.Minute {
			t.Errorf("%s = %v, want a bound within a minute", tc.name, tc.got)
		}
	}
	if s.MaxHeaderBytes <= 0 || s.MaxHeaderBytes > 64<<10 {
		t.Errorf("MaxHeaderBytes = %d", s.MaxHeaderBytes)
	}
}
