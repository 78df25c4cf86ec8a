package app

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func get(t *testing.T, u, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Issue 9 finding 7: pprof was open to anyone reaching the ops port and
// showed `--set auth.*` secrets in cmdline. Now cmdline is gone, and off
// loopback every pprof path needs the issuer key.
func TestOps_Pprof_LoopbackOpen_ElsewhereIssuerKey_NoCmdline(t *testing.T) {
	prod := map[string]string{
		"server.pprof":        "true",
		"auth.token_aes_key":  strings.Repeat("cd", 32),
		"auth.api_key":        "general-key",
		"auth.issuer_api_key": "issuer-key",
		"grpc.auth_token":     "grpc-token",
		"server.ops_addr":     "0.0.0.0:0",
	}
	for _, tc := range []struct {
		name     string
		flags    map[string]string
		loopback bool
	}{
		{"loopback listener", map[string]string{"server.pprof": "true"}, true},
		{"wildcard listener", prod, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startApp(t, tc.flags)
			_, port, _ := net.SplitHostPort(a.OpsAddr())
			base := "http://127.0.0.1:" + port
			if status, body := get(t, base+"/debug/pprof/cmdline", a.Cfg.Auth.IssuerAPIKey); status != 404 || strings.Contains(body, a.Cfg.Auth.APIKey) {
				t.Fatalf("cmdline: %d %.200s", status, body)
			}
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
				status, body := get(t, base+path, "")
				if tc.loopback && status != 200 {
					t.Fatalf("%s on loopback: %d %.200s", path, status, body)
				}
				if !tc.loopback {
					if status != 401 {
						t.Fatalf("%s without a key off loopback: %d %.200s", path, status, body)
					}
					if status, _ := get(t, base+path, a.Cfg.Auth.APIKey); status != 401 {
						t.Fatalf("%s with the general API key: %d", path, status)
					}
					if status, body := get(t, base+path, a.Cfg.Auth.IssuerAPIKey); status != 200 {
						t.Fatalf("%s with the issuer key: %d %.200s", path, status, body)
					}
				}
			}
		})
	}
}
