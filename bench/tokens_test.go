package bench

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

const testKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

// openToken decrypts a token the way SPEC §3 describes, independently of
// tokenMinter.
func openToken(t *testing.T, keyHex, tok string) map[string]string {
	t.Helper()
	key, _ := hex.DecodeString(keyHex)
	blk, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(blk)
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatalf("token is not unpadded base64url: %v", err)
	}
	plain, err := aead.Open(nil, raw[:12], raw[12:], nil)
	if err != nil {
		t.Fatalf("token does not decrypt: %v", err)
	}
	var claims map[string]string
	if err := json.Unmarshal(plain, &claims); err != nil {
		t.Fatalf("claims: %v", err)
	}
	return claims
}

func TestMintUser_DecryptsToTheSpecClaims(t *testing.T) {
	m, err := newTokenMinter(testKeyHex)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tok, err := m.mintUser("c1", "a1", "u7", exp)
	if err != nil {
		t.Fatal(err)
	}
	got := openToken(t, testKeyHex, tok)
	want := map[string]string{"company_id": "c1", "agent_id": "a1", "user_id": "u7", "expires_at": "2030-01-02T03:04:05Z"}
	// The Minter adds a random jti; issued_at stays out, so reconnects can
	// reuse a token whatever auth.max_token_age says.
	if _, ok := got["issued_at"]; ok || len(got) != len(want)+1 || got["jti"] == "" {
		t.Errorf("claims %v, want exactly %v and a jti (no issued_at: reconnects reuse tokens)", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("claim %s = %q, want %q", k, got[k], v)
		}
	}
	tok2, _ := m.mintUser("c1", "a1", "u7", exp)
	if tok2 == tok {
		t.Error("two tokens are identical: the nonce must be random")
	}
}

func TestNewTokenMinter_BadKeyErrorHidesTheKey(t *testing.T) {
	for _, k := range []string{"", "zz" + testKeyHex[2:], testKeyHex[:62], testKeyHex + "00"} {
		_, err := newTokenMinter(k)
		if err == nil {
			t.Errorf("key of %d chars accepted", len(k))
			continue
		}
		if k != "" && strings.Contains(err.Error(), k) {
			t.Errorf("error %q contains the key", err)
		}
	}
}

func TestBuildTargets_DistinctUsersSpreadOverGroups(t *testing.T) {
	targets, err := buildTargets(10, 14, 3, testKeyHex, "k&y", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	wantPrefix := []string{"/ws/c1/a1?user=u10&token=", "/ws/c2/a2?user=u11&token=", "/ws/c0/a0?user=u12&token=", "/ws/c1/a1?user=u13&token="}
	for i, tg := range targets {
		if !strings.HasPrefix(tg, wantPrefix[i]) || !strings.HasSuffix(tg, "&x-api-key=k%26y") {
			t.Errorf("target %d = %q, want prefix %q and the escaped API key", i, tg, wantPrefix[i])
		}
	}
}
