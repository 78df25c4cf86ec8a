package config

import (
	"strings"
	"testing"
)

func TestDevKeys_NoTokenKeys_FillsRandomValidKeys(t *testing.T) {
	t.Parallel()
	c := validConfig()
	if !c.NeedsDevKeys() {
		t.Fatal("defaults configure no token key: dev mode expected")
	}
	user, admin, api := c.ApplyDevKeys()
	if !c.Auth.Dev || c.NeedsDevKeys() {
		t.Fatal("ApplyDevKeys must set Auth.Dev and both keys")
	}
	if user != c.Auth.TokenAESKey || admin != c.Auth.AdminTokenAESKey || api != c.Auth.APIKey || api == "" {
		t.Fatal("returned keys differ from the config's")
	}
	if user == admin {
		t.Error("user and admin keys must differ")
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("dev keys must validate: %v", err)
	}
	other := validConfig()
	if u2, _, a2 := other.ApplyDevKeys(); u2 == user || a2 == api {
		t.Error("dev keys must be fresh each time")
	}

	// A configured API key is kept; dev mode only fills what is missing.
	c = validConfig()
	c.Auth.APIKey = "configured"
	if _, _, api := c.ApplyDevKeys(); api != "configured" {
		t.Errorf("api key = %q, want the configured one", api)
	}
	c = validConfig()
	c.Auth.TokenAESKey = strings.Repeat("ab", 32)
	if c.NeedsDevKeys() {
		t.Error("a configured token key means no dev mode")
	}
}
