package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPrint_SecretsMasked_UnsetShownEmpty(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.Auth.APIKey = "api-SECRET-1"
	c.Auth.TokenAESKey = strings.Repeat("5e", 32)
	c.Redis.Password = "redis-SECRET-2"
	var b bytes.Buffer
	if err := Print(&b, c); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, s := range []string{"api-SECRET-1", strings.Repeat("5e", 32), "redis-SECRET-2"} {
		if strings.Contains(out, s) {
			t.Errorf("Print leaks a secret:\n%s", out)
		}
	}
	for _, want := range []string{
		`api_key: '***' # secret`,
		`admin_api_key: "" # secret`,
		`token_aes_key: '***' # secret`,
		`password: '***' # secret`,
		"ping_interval: 20s",
		"allowed_origins: []",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Print output lacks %q:\n%s", want, out)
		}
	}
	m := Masked(c)
	auth := m["auth"].(map[string]any)
	if auth["api_key"] != SecretMask || auth["admin_api_key"] != "" || auth["clock_skew"] != "30s" {
		t.Errorf("Masked auth = %v", auth)
	}
}

func TestPrint_Output_LoadsBackToSameConfig(t *testing.T) {
	t.Parallel()
	c := mustLoad(t, LoadOptions{Env: []string{
		"DWS_REDIS_ADDRS=a:1,b:2", "DWS_SESSION_TTL=1m30s", "DWS_RATELIMIT_HANDSHAKES_PER_IP=2.5",
		"DWS_NATS_CREATE_STREAM=false", "DWS_SERVER_POD_ID=10.1.2.3:50051", "DWS_REDIS_KEY_PREFIX=007",
	}})
	var b bytes.Buffer
	if err := Print(&b, c); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "printed.yaml")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	back := mustLoad(t, LoadOptions{File: p})
	if d := Diff(c, back); len(d) != 0 {
		t.Errorf("printed config loads back with differences in %v\n%s", d.Keys(), b.String())
	}
	if back.Session.TTL != 90*time.Second || back.Redis.KeyPrefix != "007" {
		t.Errorf("round trip: ttl %s prefix %q", back.Session.TTL, back.Redis.KeyPrefix)
	}
}

func TestMasked_NATSURL_CredentialsRedacted(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.NATS.URL = "nats://user:natsSECRET@a:4222,nats://tokenSECRET@b:4222,c:4222"
	got := Masked(c)["nats"].(map[string]any)["url"].(string)
	if strings.Contains(got, "SECRET") {
		t.Fatalf("nats.url printed with credentials: %s", got)
	}
	if !strings.Contains(got, "nats://user:xxxxx@a:4222") || !strings.Contains(got, "c:4222") {
		t.Errorf("redacted nats.url = %s", got)
	}
}
