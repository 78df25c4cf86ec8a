package app

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dws-gateway/dws/internal/config"
)

// fuzzApp is a pod built but never started: the mint handlers need only
// its Minter and keys.
func fuzzApp(f *testing.F) (*App, http.Handler) {
	f.Helper()
	cfg, err := config.Load(config.LoadOptions{File: "", Env: []string{}, Flags: map[string]string{
		"server.ws_addr": "127.0.0.1:0", "server.ops_addr": "127.0.0.1:0", "server.grpc_addr": "127.0.0.1:0",
	}})
	if err != nil {
		f.Fatal(err)
	}
	cfg.ApplyDevKeys()
	a, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	return a, a.newOpsServer(true).Handler
}

// FuzzOpsMintBody: whatever the body, the mint endpoints never panic and
// answer only a documented status — 200 with a token, 400 BadRequest or
// 413 — in the SPEC §7 error shape.
func FuzzOpsMintBody(f *testing.F) {
	a, h := fuzzApp(f)
	for _, seed := range []string{
		`{"company_id":"demo","agent_id":"agent1","user_id":"u2","expires_in_seconds":3600}`,
		`{"admin_id":"adm","expires_in_seconds":60,"company_id_restriction":"demo"}`,
		`{"company_id":"demo","agent_id":"agent1"}`,
		`{"company_id":1,"agent_id":[],"user_id":{},"expires_in_seconds":"x"}`,
		`{"company_id":"c","agent_id":"a","user_id":"u","expires_in_seconds":9223372036854775807}`,
		`{"company_id":"c","agent_id":"a","user_id":"u","expires_in_seconds":-1}`,
		`{"company_id":"c\u0000","agent_id":"a b","user_id":"\xff\xfe","expires_in_seconds":1}`,
		`null`, `[]`, `{`, ``, `"str"`, `{"a":` + strings.Repeat("[", 5000),
		strings.Repeat(" ", opsMaxBodyBytes+1),
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, admin bool) {
		path := "/generate-token"
		if admin {
			path = "/admin/generate-token"
		}
		req := httptest.NewRequest("POST", path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", a.Cfg.Auth.IssuerAPIKey)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%d: body is not JSON: %q", rec.Code, rec.Body.Bytes())
		}
		switch rec.Code {
		case 200:
			if tok, _ := m["token"].(string); tok == "" {
				t.Fatalf("200 without a token: %v", m)
			}
		case 400, 413:
			if m["code"] != "BadRequest" || m["message"] == "" {
				t.Fatalf("%d not in the SPEC §7 shape: %v", rec.Code, m)
			}
			if (rec.Code == 413) != (len(body) > opsMaxBodyBytes) {
				t.Fatalf("%d for a body of %d bytes", rec.Code, len(body))
			}
		default:
			t.Fatalf("undocumented status %d: %v", rec.Code, m)
		}
	})
}
