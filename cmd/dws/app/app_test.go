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

	"github.com/dws-gateway/dws/internal/config"
)

// startApp runs one pod on free loopback ports in dev mode.
func startApp(t *testing.T, flags map[string]string) *App {
	t.Helper()
	f := map[string]string{
		"server.ws_addr":  "127.0.0.1:0",
		"server.ops_addr": "127.0.0.1:0",
	}
	for k, v := range flags {
		f[k] = v
	}
	// The pod id is the routable gRPC address: one free port serves both.
	if f["server.pod_id"] == "" {
		f["server.pod_id"] = freeAddr(t)
	}
	f["server.grpc_addr"] = f["server.pod_id"]
	if f["nats.url"] == "" && f["nats.embedded_port"] == "" {
		f["nats.embedded_port"] = "-1"
	}
	cfg, err := config.Load(config.LoadOptions{File: "", Env: []string{}, Flags: f})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NeedsDevKeys() {
		cfg.ApplyDevKeys()
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg)
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

func post(t *testing.T, u, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func TestOps_GenerateToken_ThenConnect(t *testing.T) {
	a := startApp(t, nil)
	base := "http://" + a.OpsAddr()
	issuer := a.Cfg.Auth.IssuerAPIKey
	cases := []struct {
		name   string
		key    string
		body   string
		status int
		code   string
	}{
		{"wrong key", "nope", `{"company_id":"c","agent_id":"a","user_id":"u","expires_in_seconds":60}`, 401, "InvalidAPIKey"},
		{"bad json", issuer, `{`, 400, "BadRequest"},
		{"missing user", issuer, `{"company_id":"c","agent_id":"a","expires_in_seconds":60}`, 400, "BadRequest"},
		{"zero ttl", issuer, `{"company_id":"c","agent_id":"a","user_id":"u"}`, 400, "BadRequest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, m := post(t, base+"/generate-token", tc.key, tc.body)
			if status != tc.status || m["code"] != tc.code {
				t.Fatalf("got %d %v", status, m)
			}
		})
	}
	status, m := post(t, base+"/generate-token", issuer, `{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_in_seconds":60}`)
	if status != 200 || m["token"] == "" {
		t.Fatalf("got %d %v", status, m)
	}
	q := url.Values{"user": {"u1"}, "token": {m["token"].(string)}, "x-api-key": {a.Cfg.Auth.APIKey}}
	conn := wsDial(t, fmt.Sprintf("ws://127.0.0.1:%d/ws/c1/a1?%s", a.WSPort(), q.Encode()))
	msg, err := wsutil.ReadServerText(conn)
	if err != nil || !strings.HasPrefix(string(msg), `{"type":"ready"`) {
		t.Fatalf("got %q %v", msg, err)
	}

	// Admin tokens take the same issuer key.
	if status, _ := post(t, base+"/admin/generate-token", "nope", `{"admin_id":"adm","expires_in_seconds":60}`); status != 401 {
		t.Fatalf("admin mint with a wrong key: %d", status)
	}
	status, m = post(t, base+"/admin/generate-token", issuer, `{"admin_id":"adm","expires_in_seconds":60}`)
	if status != 200 || m["token"] == "" {
		t.Fatalf("admin: got %d %v", status, m)
	}
}

func TestOps_HealthReadyMetrics(t *testing.T) {
	a := startApp(t, nil)
	base := "http://" + a.OpsAddr()
	for _, tc := range []struct {
		path   string
		status int
		want   string
	}{
		{"/healthz", 200, `"ok"`},
		{"/ready", 200, `"ready"`},
		{"/metrics", 200, "dws_connections_active"},
		{"/nope", 404, "NotFound"},
	} {
		resp, err := http.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !bytes.Contains(b, []byte(tc.want)) {
			t.Fatalf("%s: %d %.200s", tc.path, resp.StatusCode, b)
		}
	}
	// The histogram buckets SPEC §8 fixes.
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	seen := 0
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "# TYPE dws_connection_duration_seconds histogram") {
			seen++
		}
	}
	if seen != 1 {
		t.Fatal("dws_connection_duration_seconds histogram not exported")
	}
}

func TestShutdown_Closes1001AndRefusesUpgrades(t *testing.T) {
	a := startApp(t, nil)
	tok, _ := a.Minter.MintUser(userClaims("c1", "a1", "u1"))
	q := url.Values{"user": {"u1"}, "token": {tok}, "x-api-key": {a.Cfg.Auth.APIKey}}
	u := fmt.Sprintf("ws://127.0.0.1:%d/ws/c1/a1?%s", a.WSPort(), q.Encode())
	conn := wsDial(t, u)
	if _, err := wsutil.ReadServerText(conn); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- a.Shutdown(ctx)
	}()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := wsutil.ReadServerText(conn)
	ce, ok := err.(wsutil.ClosedError)
	if !ok || ce.Code != 1001 {
		t.Fatalf("want close 1001, got %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// bufConn reads through the dialer's buffer: the ready frame often arrives
// in the same packet as the 101.
type bufConn struct {
	net.Conn
	r io.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func wsDial(t *testing.T, u string) net.Conn {
	t.Helper()
	conn, err := tryWSDial(t, u)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func tryWSDial(t *testing.T, u string) (net.Conn, error) {
	conn, br, _, err := ws.Dialer{Protocols: []string{"json.v1"}, Timeout: 5 * time.Second}.Dial(context.Background(), u)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if br != nil {
		return bufConn{conn, io.MultiReader(br, conn)}, nil
	}
	return conn, nil
}
