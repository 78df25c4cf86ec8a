package config

import (
	"crypto/rand"
	"encoding/hex"
	"net"
)

// NeedsDevKeys reports whether no token key is configured, in which case
// dws runs in dev mode with ephemeral keys (SPEC §10).
func (c *Config) NeedsDevKeys() bool {
	return c.Auth.TokenAESKey == "" && c.Auth.AdminTokenAESKey == ""
}

// devGenerated remembers which secrets ApplyDevKeys made up, so a reload of
// a file that still configures none keeps them instead of reporting them as
// changed (and, for the token keys, invalidating every token).
type devGenerated struct {
	apiKey, issuerKey, grpcToken bool
}

// ApplyDevKeys fills both token keys, and the API, issuer and gRPC keys when
// unset, with fresh random values, binds every listener to 127.0.0.1, sets
// Auth.Dev and returns the token and API keys so the caller can print a dev
// token. The keys live only in this process: tokens minted with them die
// with it, which is the point of dev mode. The issuer key and gRPC token are
// generated rather than left empty so that the mint endpoints and the Push
// port are authenticated even in dev mode; Auth.IssuerAPIKey is printed by
// the dev banner.
func (c *Config) ApplyDevKeys() (userKeyHex, adminKeyHex, apiKey string) {
	if c.Auth.TokenAESKey == "" {
		c.Auth.TokenAESKey = randomHex(32)
	}
	if c.Auth.AdminTokenAESKey == "" {
		c.Auth.AdminTokenAESKey = randomHex(32)
	}
	if c.Auth.APIKey == "" {
		c.Auth.APIKey = rand.Text()
		c.dev.apiKey = true
	}
	if c.Auth.IssuerAPIKey == "" {
		c.Auth.IssuerAPIKey = "issuer-" + rand.Text()
		c.dev.issuerKey = true
	}
	if c.GRPC.AuthToken == "" {
		c.GRPC.AuthToken = rand.Text()
		c.dev.grpcToken = true
	}
	c.Server.WSAddr = loopback(c.Server.WSAddr)
	c.Server.OpsAddr = loopback(c.Server.OpsAddr)
	c.Server.GRPCAddr = loopback(c.Server.GRPCAddr)
	c.Auth.Dev = true
	return c.Auth.TokenAESKey, c.Auth.AdminTokenAESKey, c.Auth.APIKey
}

// loopback rewrites a wildcard listen address (":8080", "0.0.0.0:8080",
// "[::]:8080") to 127.0.0.1: dev mode runs with made-up keys and must not be
// reachable from other machines (SPEC §5). A specific host is left for
// Validate to judge.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// isLoopbackHost reports whether a listener bound to host is reachable from
// this machine only.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// keepDevKeys carries old's generated keys into a reloaded config whose
// file still configures none, so a SIGHUP in dev mode neither invalidates
// every token nor reports the keys as changed.
func keepDevKeys(old, new *Config) {
	if !old.Auth.Dev || !new.NeedsDevKeys() {
		return
	}
	new.Auth.TokenAESKey = old.Auth.TokenAESKey
	new.Auth.AdminTokenAESKey = old.Auth.AdminTokenAESKey
	new.Auth.Dev = true
	if old.dev.apiKey && new.Auth.APIKey == "" {
		new.Auth.APIKey = old.Auth.APIKey
		new.dev.apiKey = true
	}
	if old.dev.issuerKey && new.Auth.IssuerAPIKey == "" {
		new.Auth.IssuerAPIKey = old.Auth.IssuerAPIKey
		new.dev.issuerKey = true
	}
	if old.dev.grpcToken && new.GRPC.AuthToken == "" {
		new.GRPC.AuthToken = old.GRPC.AuthToken
		new.dev.grpcToken = true
	}
	new.Server.WSAddr = loopback(new.Server.WSAddr)
	new.Server.OpsAddr = loopback(new.Server.OpsAddr)
	new.Server.GRPCAddr = loopback(new.Server.GRPCAddr)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
