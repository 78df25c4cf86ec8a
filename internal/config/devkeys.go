package config

import (
	"crypto/rand"
	"encoding/hex"
)

// NeedsDevKeys reports whether no token key is configured, in which case
// dws runs in dev mode with ephemeral keys (SPEC §10).
func (c *Config) NeedsDevKeys() bool {
	return c.Auth.TokenAESKey == "" && c.Auth.AdminTokenAESKey == ""
}

// ApplyDevKeys fills both token keys (and the API key when unset) with
// fresh random values, sets Auth.Dev and returns them so the caller can
// print a dev token. The keys live only in this process: tokens minted with
// them die with it, which is the point of dev mode.
func (c *Config) ApplyDevKeys() (userKeyHex, adminKeyHex, apiKey string) {
	if c.Auth.TokenAESKey == "" {
		c.Auth.TokenAESKey = randomHex(32)
	}
	if c.Auth.AdminTokenAESKey == "" {
		c.Auth.AdminTokenAESKey = randomHex(32)
	}
	if c.Auth.APIKey == "" {
		c.Auth.APIKey = rand.Text()
		c.devAPIKey = true
	}
	c.Auth.Dev = true
	return c.Auth.TokenAESKey, c.Auth.AdminTokenAESKey, c.Auth.APIKey
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
	if old.devAPIKey && new.Auth.APIKey == "" {
		new.Auth.APIKey = old.Auth.APIKey
		new.devAPIKey = true
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
