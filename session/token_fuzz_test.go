package session

import (
	"context"
	"strings"
	"testing"
	"time"
)

// fuzzKey is fixed so fuzz seeds minted with it stay meaningful across runs.
var fuzzKey = []byte("0123456789abcdef0123456789abcdef")

// FuzzValidateToken: no input panics, and the only strings that validate
// are the spellings (padded or not) of the one genuine token — GCM makes
// forging another infeasible, and base64 decoding is canonical.
func FuzzValidateToken(f *testing.F) {
	now := tokenEpoch
	// The genuine tokens are sealed under a fixed nonce: each fuzz worker
	// process runs this setup, and a randomly minted seed from the
	// coordinator would be a genuine token the worker does not know.
	user := fixedNonceToken(f, &UserClaims{CompanyID: "c", AgentID: "a", UserID: "u", ExpiresAt: now.Add(time.Hour)}, nil)
	admin := fixedNonceToken(f, nil, &AdminClaims{AdminID: "root", ExpiresAt: now.Add(time.Hour)})
	for _, s := range []string{"", "A", "====", user, admin, padded(user), user[:len(user)-1],
		flipChar(user, 5), user + "=", strings.Repeat("A", 40), "\n" + user, user[:28]} {
		f.Add(s)
	}
	cache, err := NewMemoryTokenCache(64)
	if err != nil {
		f.Fatal(err)
	}
	v, err := NewValidator(fuzzKey, fuzzKey, ValidatorOptions{
		Now: func() time.Time { return now }, Cache: cache, CacheTTL: time.Minute, ClockSkew: time.Second,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		ctx := context.Background()
		unpadded := strings.TrimRight(tok, "=")
		if _, err := v.ValidateUser(ctx, tok, "c", "a", "u"); err == nil && unpadded != user {
			t.Fatalf("forged user token validated: %q", tok)
		}
		if _, err := v.ValidateAdmin(ctx, tok); err == nil && unpadded != admin {
			t.Fatalf("forged admin token validated: %q", tok)
		}
	})
}

// fixedNonceToken seals user or admin claims with fuzzKey and an all-zero
// nonce. Only for tests: a real token's nonce must be random.
func fixedNonceToken(tb testing.TB, u *UserClaims, a *AdminClaims) string {
	tb.Helper()
	var plain []byte
	var err error
	if u != nil {
		plain, err = encodeUserClaims(u)
	} else {
		plain, err = encodeAdminClaims(a)
	}
	if err != nil {
		tb.Fatal(err)
	}
	aead, err := newAEAD(fuzzKey)
	if err != nil {
		tb.Fatal(err)
	}
	nonce := make([]byte, nonceSize)
	return tokenEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, nil))
}

// FuzzDecodeClaims: no plaintext panics the claims decoder; whatever
// decodes has its required fields, and re-minting it gives the same
// identity back (to the second, which is what tokens carry).
func FuzzDecodeClaims(f *testing.F) {
	for _, s := range []string{
		`{"company_id":"c","agent_id":"a","user_id":"u","expires_at":"2030-06-01T13:00:00Z"}`,
		`{"company_id":"c","agent_id":"a","user_id":"u","expires_at":"2030-06-01T13:00:00.123+05:30","issued_at":"2030-06-01T12:00:00Z","jti":"j"}`,
		`{"admin_id":"r","expires_at":"2030-06-01T13:00:00Z","subscribed_company_id":"c","subscribed_agent_id":"a","company_id_restriction":"c"}`,
		`{"company_id":"\u00e9\"","agent_id":"a","user_id":"u","expires_at":"0000-01-01T00:00:00+01:00"}`,
		`{"admin_id":null,"expires_at":"2030-06-01T13:00:00Z"}`,
		`{}`, `[]`, `null`, `{"company_id":`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		if id, ok := decodeUserClaims(append([]byte(nil), plain...)); ok {
			if id.Kind != KindUser || id.CompanyID == "" || id.AgentID == "" || id.UserID == "" {
				t.Fatalf("decoded user identity lacks a required field: %+v", id)
			}
			again, err := encodeUserClaims(&UserClaims{id.CompanyID, id.AgentID, id.UserID, id.ExpiresAt, id.IssuedAt, id.JTI})
			if err == nil {
				back, ok := decodeUserClaims(again)
				if !ok || !identityEqual(back, truncated(id)) {
					t.Fatalf("round trip: %+v → %s → %+v", id, again, back)
				}
			} else if remintable(id) {
				t.Fatalf("decoded identity cannot be re-minted: %v (%+v)", err, id)
			}
		}
		if id, ok := decodeAdminClaims(append([]byte(nil), plain...)); ok {
			if id.Kind != KindAdmin || id.AdminID == "" {
				t.Fatalf("decoded admin identity lacks a required field: %+v", id)
			}
			again, err := encodeAdminClaims(&AdminClaims{id.AdminID, id.ExpiresAt, id.SubscribedCompanyID,
				id.SubscribedAgentID, id.CompanyIDRestriction, id.IssuedAt, id.JTI})
			if err == nil {
				back, ok := decodeAdminClaims(again)
				if !ok || !identityEqual(back, truncated(id)) {
					t.Fatalf("round trip: %+v → %s → %+v", id, again, back)
				}
			} else if remintable(id) {
				t.Fatalf("decoded identity cannot be re-minted: %v (%+v)", err, id)
			}
		}
	})
}

// truncated is id with its times cut to the second, as minting writes them.
func truncated(id Identity) Identity {
	id.ExpiresAt = id.ExpiresAt.Truncate(time.Second)
	if !id.IssuedAt.IsZero() {
		id.IssuedAt = id.IssuedAt.Truncate(time.Second)
	}
	return id
}

// remintable reports whether the Minter should accept id's times: an
// expires_at of "0001-01-01T00:00:00Z" parses to the zero time (which the
// Minter reads as absent; the validator refuses it as expired), and an
// offset can push a parsed "0000-01-01" into year -1, which RFC 3339 cannot
// spell.
func remintable(id Identity) bool {
	if id.ExpiresAt.IsZero() {
		return false
	}
	for _, tm := range []time.Time{id.ExpiresAt, id.IssuedAt} {
		if tm.IsZero() {
			continue
		}
		if y := tm.UTC().Year(); y < 0 || y > 9999 {
			return false
		}
	}
	return true
}
