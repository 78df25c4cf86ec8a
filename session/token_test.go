package session

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tokenEpoch is the fixed "now" of token tests: whole seconds, as minted
// times are.
var tokenEpoch = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// testClock is a settable clock, safe for the concurrent tests.
type testClock struct{ ns atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *testClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }

// tokenFixture is a pair of fresh keys, a minter and a clock.
type tokenFixture struct {
	userKey, adminKey []byte
	minter            *Minter
	clock             *testClock
}

func randomTokenKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	_, _ = rand.Read(k)
	return k
}

func newTokenFixture(t testing.TB) *tokenFixture {
	t.Helper()
	f := &tokenFixture{userKey: randomTokenKey(t), adminKey: randomTokenKey(t), clock: newTestClock(tokenEpoch)}
	m, err := NewMinter(f.userKey, f.adminKey)
	if err != nil {
		t.Fatalf("NewMinter: %v", err)
	}
	f.minter = m
	return f
}

// validator returns a Validator over the fixture's keys and clock; opts.Now
// is always the fixture clock.
func (f *tokenFixture) validator(t testing.TB, opts ValidatorOptions) *Validator {
	t.Helper()
	opts.Now = f.clock.Now
	v, err := NewValidator(f.userKey, f.adminKey, opts)
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	return v
}

// userClaims are valid claims for company c1, agent a1, user u1, expiring
// an hour after tokenEpoch.
func userClaims() UserClaims {
	return UserClaims{CompanyID: "c1", AgentID: "a1", UserID: "u1", ExpiresAt: tokenEpoch.Add(time.Hour)}
}

func adminClaims() AdminClaims {
	return AdminClaims{AdminID: "root", ExpiresAt: tokenEpoch.Add(time.Hour)}
}

func (f *tokenFixture) mintUser(t testing.TB, c UserClaims) string {
	t.Helper()
	tok, err := f.minter.MintUser(c)
	if err != nil {
		t.Fatalf("MintUser: %v", err)
	}
	return tok
}

// mintUserNoJTI seals c as given, without the jti MintUser adds: a token
// from another issuer, or minted before dws added jtis.
func (f *tokenFixture) mintUserNoJTI(t testing.TB, c UserClaims) string {
	t.Helper()
	c.JTI = ""
	plain, err := encodeUserClaims(&c)
	if err != nil {
		t.Fatalf("encodeUserClaims: %v", err)
	}
	return seal(f.minter.user, plain)
}

func (f *tokenFixture) mintAdmin(t testing.TB, c AdminClaims) string {
	t.Helper()
	tok, err := f.minter.MintAdmin(c)
	if err != nil {
		t.Fatalf("MintAdmin: %v", err)
	}
	return tok
}

// padded re-spells an unpadded token with '=' padding.
func padded(tok string) string {
	for len(tok)%4 != 0 {
		tok += "="
	}
	return tok
}

// ParseKey must accept exactly what config validation accepts (64 hex
// characters, either case, nothing trimmed), so a key that passes
// `dws config check` is the key the pod runs with.
func TestParseKey_AcceptsExactlySixtyFourHexCharacters(t *testing.T) {
	good := hex.EncodeToString(randomTokenKey(t))
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{"64 lower-case hex", good, false},
		{"upper-case hex", strings.ToUpper(good), false},
		{"mixed-case hex", strings.ToUpper(good[:32]) + good[32:], false},
		{"trailing newline from a secrets file", good + "\n", true},
		{"trailing CRLF", good + "\r\n", true},
		{"trailing space", good + " ", true},
		{"leading space", " " + good, true},
		{"tab inside", good[:30] + "\t" + good[31:], true},
		{"63 characters plus a newline", good[:63] + "\n", true},
		{"empty", "", true},
		{"63 characters", good[:63], true},
		{"62 characters", good[:62], true},
		{"65 characters", good + "0", true},
		{"66 characters", good + "00", true},
		{"not hex", "zz" + good[2:], true},
		{"non-hex last character", good[:63] + "g", true},
		{"0x prefix", "0x" + good[:62], true},
		{"32 raw bytes, not hex", good[:32], true},
		{"non-ASCII", good[:62] + "é", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ParseKey(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseKey accepted %q", tt.in)
				}
				// The error may be logged: it must not carry the
				// key, nor any 8-character piece of it.
				for i := 0; i+8 <= len(tt.in); i++ {
					if strings.Contains(err.Error(), tt.in[i:i+8]) {
						t.Fatalf("error %q contains key fragment %q", err, tt.in[i:i+8])
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			if hex.EncodeToString(key) != strings.ToLower(tt.in) {
				t.Fatalf("key bytes differ from input")
			}
		})
	}
}

func TestParseKey_InvalidByte_ErrorNamesNoCharacter(t *testing.T) {
	// encoding/hex would say "invalid byte: U+0071 'q'".
	_, err := ParseKey(strings.Repeat("a", 63) + "q")
	if err == nil {
		t.Fatal("ParseKey accepted a non-hex key")
	}
	if strings.Contains(err.Error(), "'q'") || strings.Contains(err.Error(), "U+0071") {
		t.Fatalf("error quotes the key's bad byte: %v", err)
	}
}

func TestNewMinter_RejectsWrongKeyLength(t *testing.T) {
	if _, err := NewMinter(make([]byte, 16), nil); err == nil {
		t.Fatal("16-byte user key accepted")
	}
	if _, err := NewMinter(make([]byte, KeySize), make([]byte, 31)); err == nil {
		t.Fatal("31-byte admin key accepted")
	}
}

func TestMint_MissingRequiredClaims_Refused(t *testing.T) {
	f := newTokenFixture(t)
	users := map[string]func(*UserClaims){
		"no company":    func(c *UserClaims) { c.CompanyID = "" },
		"no agent":      func(c *UserClaims) { c.AgentID = "" },
		"no user":       func(c *UserClaims) { c.UserID = "" },
		"no expires_at": func(c *UserClaims) { c.ExpiresAt = time.Time{} },
		"year 10000":    func(c *UserClaims) { c.ExpiresAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
	}
	for name, mutate := range users {
		c := userClaims()
		mutate(&c)
		if _, err := f.minter.MintUser(c); err == nil {
			t.Errorf("MintUser with %s succeeded", name)
		}
	}
	a := adminClaims()
	a.AdminID = ""
	if _, err := f.minter.MintAdmin(a); err == nil {
		t.Error("MintAdmin without admin_id succeeded")
	}
	noAdmin, err := NewMinter(f.userKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noAdmin.MintAdmin(adminClaims()); !errors.Is(err, ErrNoAdminKey) {
		t.Errorf("MintAdmin without admin key: err = %v, want ErrNoAdminKey", err)
	}
}

func TestMint_TokenIsNonceCiphertextTagInUnpaddedBase64URL(t *testing.T) {
	f := newTokenFixture(t)
	c := userClaims()
	c.JTI = "j-1" // fixed, so the plaintext is known
	tok := f.mintUser(t, c)
	if strings.ContainsAny(tok, "=+/") {
		t.Fatalf("token %q is not unpadded base64url", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := encodeUserClaims(&c)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != nonceSize+len(plain)+tagSize {
		t.Fatalf("len = %d, want nonce %d + plaintext %d + tag %d", len(raw), nonceSize, len(plain), tagSize)
	}
	// Decrypt by hand, as the earlier service (or any client of the
	// format) would.
	aead, err := newAEAD(f.userKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err := aead.Open(nil, raw[:nonceSize], raw[nonceSize:], nil)
	if err != nil {
		t.Fatalf("open by hand: %v", err)
	}
	want := `{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_at":"2030-06-01T13:00:00Z","jti":"j-1"}`
	if string(got) != want {
		t.Fatalf("plaintext = %s, want %s", got, want)
	}
	if tok2 := f.mintUser(t, c); tok2 == tok {
		t.Fatal("two mints of the same claims gave the same token: nonce not random")
	}
}

// Issue 9 finding 8: dws-minted tokens carried no jti, so
// auth.reject_replay never protected them. Every mint without a jti now gets
// a fresh 128-bit one; a caller's own jti is kept.
func TestMint_AddsRandomJTIWhenNoneGiven(t *testing.T) {
	f := newTokenFixture(t)
	v := f.validator(t, ValidatorOptions{})
	seen := map[string]bool{}
	for range 100 {
		id, err := v.ValidateUser(t.Context(), f.mintUser(t, userClaims()), "c1", "a1", "u1")
		if err != nil {
			t.Fatal(err)
		}
		raw, derr := base64.RawURLEncoding.DecodeString(id.JTI)
		if derr != nil || len(raw) != 16 {
			t.Fatalf("jti %q is not 16 bytes of base64url (%v)", id.JTI, derr)
		}
		if seen[id.JTI] {
			t.Fatalf("jti %q minted twice", id.JTI)
		}
		seen[id.JTI] = true
		aid, err := v.ValidateAdmin(t.Context(), f.mintAdmin(t, adminClaims()))
		if err != nil {
			t.Fatal(err)
		}
		if len(aid.JTI) != 22 || seen[aid.JTI] {
			t.Fatalf("admin jti %q: want a fresh 22-character id", aid.JTI)
		}
		seen[aid.JTI] = true
	}
	c := userClaims()
	c.JTI = "caller-chosen"
	id, err := v.ValidateUser(t.Context(), f.mintUser(t, c), "c1", "a1", "u1")
	if err != nil || id.JTI != "caller-chosen" {
		t.Fatalf("jti = %q, %v; want the caller's own", id.JTI, err)
	}
}

// A minted token opens one socket under auth.reject_replay: the second
// presentation is refused although the first was a success (and would have
// been cached without the jti).
func TestMint_RejectReplay_MintedTokenValidatesOnce(t *testing.T) {
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{RejectReplay: true, Cache: cache, CacheTTL: 30 * time.Second})
	tok := f.mintUser(t, userClaims())
	_, err := v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	_, err = v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, ReasonReplay)
	at := f.mintAdmin(t, adminClaims())
	_, err = v.ValidateAdmin(t.Context(), at)
	wantReason(t, err, "")
	_, err = v.ValidateAdmin(t.Context(), at)
	wantReason(t, err, ReasonReplay)
}

func TestValidateUser_RoundTrip_PaddedAndUnpadded(t *testing.T) {
	f := newTokenFixture(t)
	v := f.validator(t, ValidatorOptions{ClockSkew: 30 * time.Second})
	c := UserClaims{
		CompanyID: "acme", AgentID: "a-1", UserID: "ü7 \"quoted\"",
		ExpiresAt: tokenEpoch.Add(time.Hour).Add(999 * time.Millisecond),
		IssuedAt:  tokenEpoch.Add(-time.Minute), JTI: "jti-1",
	}
	tok := f.mintUser(t, c)
	if len(tok)%4 == 0 {
		// Make the padding case meaningful: pick claims whose
		// encoding needs padding.
		c.JTI = "jti-12"
		tok = f.mintUser(t, c)
	}
	if padded(tok) == tok {
		t.Fatal("fixture token needs no padding")
	}
	for _, spelled := range []string{tok, padded(tok)} {
		id, err := v.ValidateUser(t.Context(), spelled, c.CompanyID, c.AgentID, c.UserID)
		if err != nil {
			t.Fatalf("ValidateUser(%q): %v", spelled, err)
		}
		want := Identity{
			Kind: KindUser, CompanyID: c.CompanyID, AgentID: c.AgentID, UserID: c.UserID,
			ExpiresAt: tokenEpoch.Add(time.Hour), IssuedAt: c.IssuedAt, JTI: c.JTI,
		}
		if !identityEqual(id, want) {
			t.Fatalf("identity = %+v, want %+v", id, want)
		}
		if got := id.SessionKey(); got != "acme:a-1:ü7 \"quoted\"" {
			t.Fatalf("SessionKey = %q", got)
		}
	}
}

func TestValidateAdmin_RoundTrip_AllFields(t *testing.T) {
	f := newTokenFixture(t)
	v := f.validator(t, ValidatorOptions{})
	c := AdminClaims{
		AdminID: "ops-1", ExpiresAt: tokenEpoch.Add(2 * time.Hour),
		SubscribedCompanyID: "acme", SubscribedAgentID: "a-9", CompanyIDRestriction: "acme",
		IssuedAt: tokenEpoch.Add(-time.Second), JTI: "j",
	}
	tok := f.mintAdmin(t, c)
	for _, spelled := range []string{tok, padded(tok)} {
		id, err := v.ValidateAdmin(t.Context(), spelled)
		if err != nil {
			t.Fatalf("ValidateAdmin: %v", err)
		}
		want := Identity{
			Kind: KindAdmin, AdminID: "ops-1", SubscribedCompanyID: "acme", SubscribedAgentID: "a-9",
			CompanyIDRestriction: "acme", ExpiresAt: c.ExpiresAt, IssuedAt: c.IssuedAt, JTI: "j",
		}
		if !identityEqual(id, want) {
			t.Fatalf("identity = %+v, want %+v", id, want)
		}
		if id.SessionKey() != "admin:ops-1" {
			t.Fatalf("SessionKey = %q", id.SessionKey())
		}
	}
}

// identityEqual compares identities with time.Equal (parsed times carry a
// location pointer that == would compare).
func identityEqual(a, b Identity) bool {
	ta, tb := a.ExpiresAt, b.ExpiresAt
	ia, ib := a.IssuedAt, b.IssuedAt
	a.ExpiresAt, b.ExpiresAt, a.IssuedAt, b.IssuedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return a == b && ta.Equal(tb) && ia.Equal(ib)
}
