package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// prodConfig is a pod with every key production needs.
func prodConfig() *Config {
	c := validConfig()
	c.Auth.TokenAESKey = strings.Repeat("ab", 32)
	c.Auth.AdminTokenAESKey = strings.Repeat("cd", 32)
	c.Auth.APIKey = "browser-key"
	c.Auth.AdminAPIKey = "admin-browser-key"
	c.Auth.IssuerAPIKey = "issuer-key"
	c.GRPC.AuthToken = "fleet-secret"
	return c
}

func TestValidate_Security_Rules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pem := filepath.Join(dir, "c.pem")
	if err := os.WriteFile(pem, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		mutate func(c *Config)
		want   string // "" = valid
	}{
		{"production keys complete", func(*Config) {}, ""},
		{"no api key", func(c *Config) { c.Auth.APIKey = "" }, "auth.api_key: required outside dev mode"},
		{"no api key, opted out", func(c *Config) { c.Auth.APIKey = ""; c.Auth.AllowNoAPIKey = true }, ""},
		{"no grpc token", func(c *Config) { c.GRPC.AuthToken = "" }, "grpc.auth_token: required outside dev mode"},
		{"no issuer key = minting disabled", func(c *Config) { c.Auth.IssuerAPIKey = "" }, ""},
		{"issuer = api key", func(c *Config) { c.Auth.IssuerAPIKey = c.Auth.APIKey }, "auth.issuer_api_key: must differ from auth.api_key"},
		{"issuer = admin api key", func(c *Config) { c.Auth.IssuerAPIKey = c.Auth.AdminAPIKey }, "auth.issuer_api_key: must differ from auth.admin_api_key"},
		{"tls cert without key", func(c *Config) { c.GRPC.TLSCertFile = pem }, "grpc.tls_cert_file: grpc.tls_cert_file and grpc.tls_key_file go together"},
		{"tls ca without pair", func(c *Config) { c.GRPC.TLSCAFile = pem }, "grpc.tls_ca_file: needs grpc.tls_cert_file"},
		{"tls full", func(c *Config) { c.GRPC.TLSCertFile, c.GRPC.TLSKeyFile, c.GRPC.TLSCAFile = pem, pem, pem }, ""},
		{"tls missing file", func(c *Config) {
			c.GRPC.TLSCertFile, c.GRPC.TLSKeyFile = pem, filepath.Join(dir, "nope.pem")
		}, "grpc.tls_key_file: cannot read"},
		{"dev mode with redis", func(c *Config) {
			c.Auth.TokenAESKey, c.Auth.AdminTokenAESKey = "", ""
			c.Redis.Addrs = []string{"127.0.0.1:6379"}
		}, "redis.addrs: dev mode (no auth.token_aes_key) cannot share Redis"},
		{"dev mode needs no production key", func(c *Config) {
			c.Auth.TokenAESKey, c.Auth.AdminTokenAESKey, c.Auth.APIKey, c.GRPC.AuthToken = "", "", "", ""
		}, ""},
		{"wildcard origin", func(c *Config) { c.WebSocket.AllowedOrigins = []string{"https://*.example.com", "*"} }, ""},
		{"wildcard inside a label", func(c *Config) { c.WebSocket.AllowedOrigins = []string{"https://app*.example.com"} },
			"websocket.allowed_origins[0]: a wildcard must be the whole leftmost label"},
		{"two wildcards", func(c *Config) { c.WebSocket.AllowedOrigins = []string{"https://*.*.example.com"} },
			"a wildcard must be the whole leftmost label"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := prodConfig()
			tc.mutate(c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("want %q, got %v", tc.want, err)
			}
			if err != nil {
				for _, secret := range []string{c.Auth.APIKey, c.Auth.IssuerAPIKey, c.GRPC.AuthToken} {
					if secret != "" && strings.Contains(err.Error(), secret) {
						t.Fatalf("error shows a secret: %v", err)
					}
				}
			}
		})
	}
}

func TestApplyDevKeys_LoopbackAndGeneratedSecrets(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.Server.WSAddr, c.Server.OpsAddr, c.Server.GRPCAddr = ":8080", "0.0.0.0:8081", "[::]:50051"
	c.ApplyDevKeys()
	if c.Server.WSAddr != "127.0.0.1:8080" || c.Server.OpsAddr != "127.0.0.1:8081" || c.Server.GRPCAddr != "127.0.0.1:50051" {
		t.Fatalf("dev listeners %s %s %s, want 127.0.0.1", c.Server.WSAddr, c.Server.OpsAddr, c.Server.GRPCAddr)
	}
	if c.Auth.IssuerAPIKey == "" || c.GRPC.AuthToken == "" || c.Auth.IssuerAPIKey == c.Auth.APIKey {
		t.Fatal("dev mode must generate a distinct issuer key and a gRPC token")
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("dev config must validate: %v", err)
	}

	// A host given on purpose that other machines reach is refused.
	c.Server.OpsAddr = "10.1.2.3:8081"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "server.ops_addr: dev mode listens on 127.0.0.1 only") {
		t.Fatalf("non-loopback dev listener: %v", err)
	}
}

func TestValidate_Partitions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		parts    int
		failover string
		want     string
	}{
		{64, "5s", ""},
		{1, "1s", ""},
		{0, "5s", "nats.partitions: must be 1-1024, got 0"},
		{1025, "5s", "nats.partitions: must be 1-1024, got 1025"},
		{64, "500ms", "nats.failover: must be at least 1s, got 500ms"},
	} {
		c := prodConfig()
		c.NATS.Partitions = tc.parts
		c.NATS.Failover, _ = time.ParseDuration(tc.failover)
		err := c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("partitions %d failover %s: got %v, want %q", tc.parts, tc.failover, err, tc.want)
		}
	}
}
