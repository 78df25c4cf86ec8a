package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestSecrets_NeverInErrorsPrintOrLogs feeds distinctive, invalid secret
// values through every path that produces text and looks for them.
func TestSecrets_NeverInErrorsPrintOrLogs(t *testing.T) {
	t.Parallel()
	const (
		apiKey   = "sekrit-api-KEY"
		adminKey = "sekrit-admin-KEY"
		tokenKey = "sekrit-token-KEY-not-hex"
		adminAES = "SEKRITADMINAES"
		redisPW  = "sekrit-redis-PW"
	)
	secrets := []string{apiKey, adminKey, tokenKey, adminAES, redisPW}
	var texts []string

	// Load: bad values elsewhere in the same layers, secrets alongside.
	env := []string{
		"DWS_AUTH_API_KEY=" + apiKey, "DWS_AUTH_ADMIN_API_KEY=" + adminKey,
		"DWS_AUTH_TOKEN_AES_KEY=" + tokenKey, "DWS_AUTH_ADMIN_TOKEN_AES_KEY=" + adminAES,
		"DWS_REDIS_PASSWORD=" + redisPW,
	}
	_, err := Load(LoadOptions{Env: append(env, "DWS_SERVER_WORKERS=x")})
	if err == nil {
		t.Fatal("Load accepted a bad integer")
	}
	texts = append(texts, err.Error())
	// A secret given a wrong shape in YAML.
	_, err = Load(LoadOptions{Env: []string{}, File: writeYAML(t,
		"auth:\n  api_key: ["+apiKey+"]\n  admin_api_key: {k: "+adminKey+"}\nredis:\n  password: 12345\n")})
	if err == nil {
		t.Fatal("Load accepted secrets of the wrong type")
	}
	texts = append(texts, err.Error())

	c := mustLoad(t, LoadOptions{Env: env})
	err = c.Validate()
	if err == nil {
		t.Fatal("Validate accepted malformed AES keys")
	}
	texts = append(texts, err.Error())

	var printed bytes.Buffer
	if err := Print(&printed, c); err != nil {
		t.Fatal(err)
	}
	texts = append(texts, printed.String(), fmt.Sprint(Masked(c)))

	changed := validConfig()
	d := Diff(changed, c)
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).LogAttrs(t.Context(), slog.LevelInfo, "config reloaded", d.Describe()...)
	texts = append(texts, logged.String(), fmt.Sprintf("%+v", d))

	for _, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("secret %q appears in:\n%s", s, text)
			}
		}
	}
	if !strings.Contains(logged.String(), `"auth.api_key"`) {
		t.Errorf("a changed secret must still be reported by name: %s", logged.String())
	}
}
