package app

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
)

// openTestToken decrypts a token with the hex AES key (SPEC §3 layout:
// nonce ‖ ciphertext ‖ tag, base64url) and returns its claims.
func openTestToken(t *testing.T, keyHex, tok string) map[string]any {
	t.Helper()
	key, err := hex.DecodeString(keyHex)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(tok, "="))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], nil)
	if err != nil {
		t.Fatalf("token does not open with the pod's key: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(plain, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// Issue 9 finding 2: the general API key travels in browser URLs, so it
// must not mint; only auth.issuer_api_key does, and its tokens carry a
// jti so reject_replay can protect them.
func TestOps_Mint_OnlyTheIssuerKey(t *testing.T) {
	a := startApp(t, map[string]string{"auth.admin_api_key": "admin-browser-key"})
	base := "http://" + a.OpsAddr()
	user := `{"company_id":"c","agent_id":"a","user_id":"u","expires_in_seconds":60}`
	admin := `{"admin_id":"adm","expires_in_seconds":60}`
	for _, tc := range []struct {
		name, path, key, body string
		status                int
		code                  string
	}{
		{"user: no key", "/generate-token", "", user, 401, "InvalidAPIKey"},
		{"user: general API key", "/generate-token", a.Cfg.Auth.APIKey, user, 401, "InvalidAPIKey"},
		{"user: admin API key", "/generate-token", "admin-browser-key", user, 401, "InvalidAPIKey"},
		{"user: issuer key", "/generate-token", a.Cfg.Auth.IssuerAPIKey, user, 200, ""},
		{"admin: no key", "/admin/generate-token", "", admin, 401, "InvalidAPIKey"},
		{"admin: general API key", "/admin/generate-token", a.Cfg.Auth.APIKey, admin, 401, "InvalidAPIKey"},
		{"admin: admin API key", "/admin/generate-token", "admin-browser-key", admin, 401, "InvalidAPIKey"},
		{"admin: issuer key", "/admin/generate-token", a.Cfg.Auth.IssuerAPIKey, admin, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := post(t, base+tc.path, tc.key, tc.body)
			if status != tc.status || (tc.code != "" && m["code"] != tc.code) {
				t.Fatalf("got %d %v, want %d %s", status, m, tc.status, tc.code)
			}
			if status != 200 {
				return
			}
			keyHex := a.Cfg.Auth.TokenAESKey
			if strings.HasPrefix(tc.path, "/admin") {
				keyHex = a.Cfg.Auth.AdminTokenAESKey
			}
			claims := openTestToken(t, keyHex, m["token"].(string))
			if jti, _ := claims["jti"].(string); jti == "" {
				t.Fatalf("minted token has no jti: %v", claims)
			}
		})
	}
	// Two mints of the same claims get different jtis.
	_, m1 := post(t, base+"/generate-token", a.Cfg.Auth.IssuerAPIKey, user)
	_, m2 := post(t, base+"/generate-token", a.Cfg.Auth.IssuerAPIKey, user)
	j1 := openTestToken(t, a.Cfg.Auth.TokenAESKey, m1["token"].(string))["jti"]
	j2 := openTestToken(t, a.Cfg.Auth.TokenAESKey, m2["token"].(string))["jti"]
	if j1 == j2 {
		t.Fatalf("two tokens share jti %v", j1)
	}
}

// SPEC §3: with no issuer key the endpoints answer 403 "token minting
// disabled", whatever key is presented.
func TestOps_Mint_NoIssuerKey_Disabled403(t *testing.T) {
	a := startApp(t, map[string]string{
		"auth.token_aes_key": strings.Repeat("ab", 32),
		"auth.api_key":       "general-key",
		"grpc.auth_token":    "grpc-token",
	})
	if a.Cfg.Auth.Dev || a.Cfg.Auth.IssuerAPIKey != "" {
		t.Fatal("want a production-shaped pod without an issuer key")
	}
	base := "http://" + a.OpsAddr()
	for _, tc := range []struct{ path, key, body string }{
		{"/generate-token", "general-key", `{"company_id":"c","agent_id":"a","user_id":"u","expires_in_seconds":60}`},
		{"/generate-token", "", `{"company_id":"c","agent_id":"a","user_id":"u","expires_in_seconds":60}`},
		{"/admin/generate-token", "general-key", `{"admin_id":"adm","expires_in_seconds":60}`},
	} {
		status, m := post(t, base+tc.path, tc.key, tc.body)
		if status != 403 || m["code"] != "Forbidden" || m["message"] != "token minting disabled" {
			t.Fatalf("%s with key %q: %d %v", tc.path, tc.key, status, m)
		}
	}
}

// A body missing fields names the first one missing, before judging the
// lifetime (the newcomer's path of issue 9).
func TestOps_Mint_MissingFieldNamedFirst(t *testing.T) {
	a := startApp(t, nil)
	base := "http://" + a.OpsAddr()
	for _, tc := range []struct{ path, body, want string }{
		{"/generate-token", `{"company_id":"demo","agent_id":"agent1"}`, "user_id is required"},
		{"/generate-token", `{"agent_id":"agent1","user_id":"u"}`, "company_id is required"},
		{"/generate-token", `{"company_id":"demo","user_id":"u","expires_in_seconds":60}`, "agent_id is required"},
		{"/generate-token", `{"company_id":"demo","agent_id":"agent1","user_id":"u"}`, "expires_in_seconds must be between 1 and 604800"},
		{"/generate-token", `{"company_id":"demo","agent_id":"agent1","user_id":"u","expires_in_seconds":604801}`, "expires_in_seconds must be between 1 and 604800"},
		{"/admin/generate-token", `{"expires_in_seconds":60}`, "admin_id is required"},
		{"/admin/generate-token", `[]`, "invalid JSON body"},
	} {
		status, m := post(t, base+tc.path, a.Cfg.Auth.IssuerAPIKey, tc.body)
		if status != 400 || m["code"] != "BadRequest" || m["message"] != tc.want {
			t.Fatalf("%s %s: %d %v, want 400 %q", tc.path, tc.body, status, m, tc.want)
		}
	}
}
