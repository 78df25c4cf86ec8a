package session

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dws-gateway/dws/codec"
)

// wantReason fails t unless err is InvalidToken with the given reason.
func wantReason(t *testing.T, err *codec.Error, reason string) {
	t.Helper()
	if reason == "" {
		if err != nil {
			t.Fatalf("want success, got %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("want InvalidToken %q, got success", reason)
	}
	if err.Code != codec.CodeInvalidToken || err.Message != "invalid token" || err.Details != reason {
		t.Fatalf("got %v, want InvalidToken: invalid token: %s", err, reason)
	}
}

// flipChar replaces the base64 character at i with another one of the
// alphabet, so the string still decodes but to different bytes.
func flipChar(tok string, i int) string {
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

func TestValidate_EveryFailureReason(t *testing.T) {
	f := newTokenFixture(t)
	now := tokenEpoch
	hour := time.Hour
	// sealUser seals an arbitrary plaintext with the user key, for
	// plaintexts the Minter refuses to produce.
	sealUser := func(plain string) string {
		aead, err := newAEAD(f.userKey)
		if err != nil {
			t.Fatal(err)
		}
		return seal(aead, []byte(plain))
	}
	user := func(mut func(*UserClaims)) string {
		c := userClaims()
		if mut != nil {
			mut(&c)
		}
		return f.mintUser(t, c)
	}
	good := user(nil)
	otherKey, err := NewMinter(randomTokenKey(t), randomTokenKey(t))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherKey.MintUser(userClaims())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		token  string
		opts   ValidatorOptions
		path   [3]string // company, agent, user; zero = c1, a1, u1
		reason string
	}{
		{name: "valid", token: good},
		{name: "empty token is missing", token: "", reason: ReasonMissing},
		{name: "not base64", token: "!!!!not*base64!!!!" + good, reason: ReasonMalformed},
		{name: "standard alphabet is not the URL one", token: strings.NewReplacer("-", "+", "_", "/").Replace(good) + "+/", reason: ReasonMalformed},
		{name: "shorter than nonce plus tag", token: good[:36], reason: ReasonMalformed},
		{name: "truncated by one quantum fails the tag", token: good[:len(good)/4*4-4], reason: ReasonDecrypt},
		{name: "one character inside the ciphertext changed", token: flipChar(good, len(good)/2), reason: ReasonDecrypt},
		{name: "nonce changed", token: flipChar(good, 0), reason: ReasonDecrypt},
		{name: "wrong key", token: foreign, reason: ReasonDecrypt},
		{name: "padding on a token that needs none", token: good + "====", reason: ReasonMalformed},
		{name: "a newline inside (base64 would skip it)", token: good[:10] + "\n" + good[10:], reason: ReasonMalformed},
		{name: "longer than any real token", token: good + strings.Repeat("A", maxTokenLen), reason: ReasonMalformed},
		{name: "plaintext not JSON", token: sealUser("company_id=c1"), reason: ReasonMalformed},
		{name: "plaintext JSON array", token: sealUser(`["c1","a1","u1"]`), reason: ReasonMalformed},
		{name: "user_id missing", token: sealUser(`{"company_id":"c1","agent_id":"a1","expires_at":"2030-06-01T13:00:00Z"}`), reason: ReasonMalformed},
		{name: "user_id empty", token: sealUser(`{"company_id":"c1","agent_id":"a1","user_id":"","expires_at":"2030-06-01T13:00:00Z"}`), reason: ReasonMalformed},
		{name: "expires_at missing", token: sealUser(`{"company_id":"c1","agent_id":"a1","user_id":"u1"}`), reason: ReasonMalformed},
		{name: "expires_at not RFC 3339", token: sealUser(`{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_at":"1906030800"}`), reason: ReasonMalformed},
		{name: "expires_at a number", token: sealUser(`{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_at":1906030800}`), reason: ReasonMalformed},
		{name: "issued_at not RFC 3339", token: sealUser(`{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_at":"2030-06-01T13:00:00Z","issued_at":"yesterday"}`), reason: ReasonMalformed},
		{name: "company_id a number", token: sealUser(`{"company_id":1,"agent_id":"a1","user_id":"u1","expires_at":"2030-06-01T13:00:00Z"}`), reason: ReasonMalformed},
		{name: "control character in an id", token: sealUser("{\"company_id\":\"c1\",\"agent_id\":\"a1\",\"user_id\":\"u\x01\",\"expires_at\":\"2030-06-01T13:00:00Z\"}"), path: [3]string{"c1", "a1", "u\x01"}, reason: ReasonMalformed},
		{name: "unknown fields and an offset time are fine", token: sealUser(`{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_at":"2030-06-01T15:00:00+02:00","extra":{"x":[1]}}`)},
		{name: "fractional seconds are fine", token: sealUser(`{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_at":"2030-06-01T12:00:00.5Z"}`)},
		{name: "expired a second ago", token: user(func(c *UserClaims) { c.ExpiresAt = now.Add(-time.Second) }), reason: ReasonExpired},
		{name: "expires this very second is still valid", token: user(func(c *UserClaims) { c.ExpiresAt = now })},
		{name: "issued beyond the skew", token: user(func(c *UserClaims) { c.IssuedAt = now.Add(31 * time.Second) }), opts: ValidatorOptions{ClockSkew: 30 * time.Second}, reason: ReasonNotYetValid},
		{name: "issued in the future within the skew", token: user(func(c *UserClaims) { c.IssuedAt = now.Add(30 * time.Second) }), opts: ValidatorOptions{ClockSkew: 30 * time.Second}},
		{name: "issued a second ahead with no skew", token: user(func(c *UserClaims) { c.IssuedAt = now.Add(time.Second) }), reason: ReasonNotYetValid},
		{name: "older than max age", token: user(func(c *UserClaims) { c.IssuedAt = now.Add(-2 * hour) }), opts: ValidatorOptions{MaxTokenAge: hour}, reason: ReasonTooOld},
		{name: "exactly max age", token: user(func(c *UserClaims) { c.IssuedAt = now.Add(-hour) }), opts: ValidatorOptions{MaxTokenAge: hour}},
		{name: "old token, max age unset", token: user(func(c *UserClaims) { c.IssuedAt = now.Add(-1000 * hour) })},
		{name: "no issued_at is not checked for age", token: good, opts: ValidatorOptions{MaxTokenAge: time.Nanosecond}},
		{name: "expired wins over mismatch", token: user(func(c *UserClaims) { c.ExpiresAt = now.Add(-time.Second) }), path: [3]string{"other", "a1", "u1"}, reason: ReasonExpired},
		{name: "company differs from the path", token: good, path: [3]string{"c2", "a1", "u1"}, reason: ReasonMismatch},
		{name: "agent differs from the path", token: good, path: [3]string{"c1", "a2", "u1"}, reason: ReasonMismatch},
		{name: "user differs from the param", token: good, path: [3]string{"c1", "a1", "u2"}, reason: ReasonMismatch},
		{name: "ids are case-sensitive", token: good, path: [3]string{"C1", "a1", "u1"}, reason: ReasonMismatch},
		{name: "admin token on the user endpoint", token: f.mintAdmin(t, adminClaims()), reason: ReasonDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := f.validator(t, tt.opts)
			p := tt.path
			if p == [3]string{} {
				p = [3]string{"c1", "a1", "u1"}
			}
			id, err := v.ValidateUser(t.Context(), tt.token, p[0], p[1], p[2])
			wantReason(t, err, tt.reason)
			if err != nil && id != (Identity{}) {
				t.Fatalf("failure returned a non-zero identity %+v", id)
			}
		})
	}
}

func TestValidateAdmin_FailureReasons(t *testing.T) {
	f := newTokenFixture(t)
	v := f.validator(t, ValidatorOptions{})
	aead, err := newAEAD(f.adminKey)
	if err != nil {
		t.Fatal(err)
	}
	expired := adminClaims()
	expired.ExpiresAt = tokenEpoch.Add(-time.Minute)
	tests := []struct {
		name, token, reason string
	}{
		{"valid", f.mintAdmin(t, adminClaims()), ""},
		{"missing", "", ReasonMissing},
		{"malformed", "%%%", ReasonMalformed},
		{"user token on the admin endpoint", f.mintUser(t, userClaims()), ReasonDecrypt},
		{"admin_id missing", seal(aead, []byte(`{"expires_at":"2030-06-01T13:00:00Z"}`)), ReasonMalformed},
		{"expired", f.mintAdmin(t, expired), ReasonExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.ValidateAdmin(t.Context(), tt.token)
			wantReason(t, err, tt.reason)
		})
	}
}

// With one key for both kinds (a deployment reusing auth.token_aes_key),
// a token of the other kind decrypts but lacks the required fields.
func TestValidate_SameKeyForBothKinds_OtherKindIsMalformed(t *testing.T) {
	key := randomTokenKey(t)
	m, err := NewMinter(key, key)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewValidator(key, key, ValidatorOptions{Now: newTestClock(tokenEpoch).Now})
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := m.MintAdmin(adminClaims())
	user, _ := m.MintUser(userClaims())
	_, e := v.ValidateUser(t.Context(), admin, "c1", "a1", "u1")
	wantReason(t, e, ReasonMalformed)
	_, e = v.ValidateAdmin(t.Context(), user)
	wantReason(t, e, ReasonMalformed)
}

func TestValidateAdmin_NoAdminKey_EveryTokenUndecryptable(t *testing.T) {
	f := newTokenFixture(t)
	v, err := NewValidator(f.userKey, nil, ValidatorOptions{Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	_, e := v.ValidateAdmin(t.Context(), f.mintAdmin(t, adminClaims()))
	wantReason(t, e, ReasonDecrypt)
}

func TestNewValidator_RejectsBadOptionsAndKeys(t *testing.T) {
	k := randomTokenKey(t)
	for name, tc := range map[string]struct {
		user, admin []byte
		opts        ValidatorOptions
	}{
		"short user key":     {user: k[:16]},
		"short admin key":    {user: k, admin: k[:8]},
		"negative skew":      {user: k, opts: ValidatorOptions{ClockSkew: -time.Second}},
		"negative max age":   {user: k, opts: ValidatorOptions{MaxTokenAge: -time.Second}},
		"negative cache ttl": {user: k, opts: ValidatorOptions{CacheTTL: -time.Second}},
	} {
		if _, err := NewValidator(tc.user, tc.admin, tc.opts); err == nil {
			t.Errorf("%s: NewValidator succeeded", name)
		}
	}
}

// recordingCache wraps a MemoryTokenCache and counts what the validator
// asks of it.
type recordingCache struct {
	*MemoryTokenCache
	gets, hits, puts atomic.Int64
	lastTTL          atomic.Int64
}

func newRecordingCache(t testing.TB, clock *testClock) *recordingCache {
	t.Helper()
	mc, err := NewMemoryTokenCache(1024)
	if err != nil {
		t.Fatal(err)
	}
	mc.now = clock.Now
	return &recordingCache{MemoryTokenCache: mc}
}

func (c *recordingCache) Get(ctx context.Context, sum [sha256.Size]byte) (Identity, bool) {
	c.gets.Add(1)
	id, ok := c.MemoryTokenCache.Get(ctx, sum)
	if ok {
		c.hits.Add(1)
	}
	return id, ok
}

func (c *recordingCache) Put(ctx context.Context, sum [sha256.Size]byte, id Identity, ttl time.Duration) {
	c.puts.Add(1)
	c.lastTTL.Store(int64(ttl))
	c.MemoryTokenCache.Put(ctx, sum, id, ttl)
}

func TestValidateUser_CacheHit_StillChecksExpiryAndBinding(t *testing.T) {
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{Cache: cache, CacheTTL: 30 * time.Second})
	c := userClaims()
	c.ExpiresAt = tokenEpoch.Add(10 * time.Second) // shorter than CacheTTL
	tok := f.mintUser(t, c)

	_, err := v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	if cache.puts.Load() != 1 || time.Duration(cache.lastTTL.Load()) != 10*time.Second {
		t.Fatalf("puts = %d, ttl = %v; want 1 put capped at expires_at (10s)", cache.puts.Load(), time.Duration(cache.lastTTL.Load()))
	}

	// Hit, right path: accepted without another put.
	_, err = v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	// Hit, wrong path: the binding is checked on the cached identity.
	_, err = v.ValidateUser(t.Context(), tok, "c1", "a1", "someone-else")
	wantReason(t, err, ReasonMismatch)
	if cache.hits.Load() != 2 || cache.puts.Load() != 1 {
		t.Fatalf("hits = %d, puts = %d; want 2 hits, 1 put", cache.hits.Load(), cache.puts.Load())
	}

	// Past expires_at (the entry itself also lapsed): expired.
	f.clock.Advance(11 * time.Second)
	_, err = v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, ReasonExpired)
}

func TestValidateUser_CacheHit_RechecksExpiryEvenIfEntryOutlivesToken(t *testing.T) {
	// A remote (shared) cache could hand back an entry past its token's
	// expiry (clock drift between pods): the hit must still fail.
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{Cache: cache, CacheTTL: time.Minute})
	tok := f.mintUser(t, userClaims())
	id, err := v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	cache.MemoryTokenCache.Put(t.Context(), sha256.Sum256([]byte(tok)), id, 24*time.Hour)
	f.clock.Set(id.ExpiresAt.Add(time.Second))
	cache.MemoryTokenCache.now = newTestClock(tokenEpoch).Now // the cache thinks it is still early
	_, err = v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, ReasonExpired)
	if cache.hits.Load() != 1 {
		t.Fatalf("hits = %d, want the expired token to come from the cache", cache.hits.Load())
	}
}

func TestValidateUser_CacheHit_AgesPastMaxTokenAge(t *testing.T) {
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{Cache: cache, CacheTTL: time.Hour, MaxTokenAge: 10 * time.Minute})
	c := userClaims()
	c.IssuedAt = tokenEpoch.Add(-9 * time.Minute)
	tok := f.mintUser(t, c)
	_, err := v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	f.clock.Advance(2 * time.Minute)
	_, err = v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, ReasonTooOld)
	if cache.hits.Load() != 1 {
		t.Fatalf("hits = %d, want the second call served from the cache", cache.hits.Load())
	}
}

func TestValidateUser_CacheHit_SkipsDecrypt(t *testing.T) {
	// Planting an identity under the hash of a string that is no token
	// at all proves that a hit does not decrypt (and that the cache is
	// keyed by the token's SHA-256).
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{Cache: cache, CacheTTL: time.Minute})
	planted := Identity{Kind: KindUser, CompanyID: "c1", AgentID: "a1", UserID: "u1", ExpiresAt: tokenEpoch.Add(time.Minute)}
	cache.Put(t.Context(), sha256.Sum256([]byte("not-a-token")), planted, time.Minute)
	id, err := v.ValidateUser(t.Context(), "not-a-token", "c1", "a1", "u1")
	wantReason(t, err, "")
	if !identityEqual(id, planted) {
		t.Fatalf("identity = %+v", id)
	}
}

func TestValidate_CachedIdentityOfOtherKind_IsIgnored(t *testing.T) {
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{Cache: cache, CacheTTL: time.Minute})
	admin := f.mintAdmin(t, adminClaims())
	_, err := v.ValidateAdmin(t.Context(), admin)
	wantReason(t, err, "")
	// The admin identity is cached under this token's hash; the user
	// endpoint must not accept it from there.
	_, err = v.ValidateUser(t.Context(), admin, "", "", "")
	wantReason(t, err, ReasonDecrypt)
}

func TestValidate_CacheDisabled_WhenTTLZero(t *testing.T) {
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{Cache: cache})
	tok := f.mintUser(t, userClaims())
	for range 2 {
		_, err := v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
		wantReason(t, err, "")
	}
	if cache.gets.Load()+cache.puts.Load() != 0 {
		t.Fatalf("cache used with CacheTTL 0: %d gets, %d puts", cache.gets.Load(), cache.puts.Load())
	}
}

func TestValidate_RejectReplay_SecondUseOfJTIRefused(t *testing.T) {
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{RejectReplay: true, Cache: cache, CacheTTL: time.Minute})
	c := userClaims()
	c.JTI = "once"
	tok := f.mintUser(t, c)

	// A refusal for another reason does not burn the jti.
	_, err := v.ValidateUser(t.Context(), tok, "c1", "a1", "intruder")
	wantReason(t, err, ReasonMismatch)
	_, err = v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	_, err = v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, ReasonReplay)
	// The padded spelling is the same token.
	_, err = v.ValidateUser(t.Context(), padded(tok), "c1", "a1", "u1")
	wantReason(t, err, ReasonReplay)
	// Another token with the same jti is a replay too.
	_, err = v.ValidateUser(t.Context(), f.mintUser(t, c), "c1", "a1", "u1")
	wantReason(t, err, ReasonReplay)
	if cache.puts.Load() != 0 {
		t.Fatalf("a jti token was cached under replay protection (%d puts)", cache.puts.Load())
	}

	// Admin tokens follow the same rule.
	a := adminClaims()
	a.JTI = "admin-once"
	at := f.mintAdmin(t, a)
	_, err = v.ValidateAdmin(t.Context(), at)
	wantReason(t, err, "")
	_, err = v.ValidateAdmin(t.Context(), at)
	wantReason(t, err, ReasonReplay)
}

func TestValidate_RejectReplay_CachedJTIHitIsNotTrusted(t *testing.T) {
	// A shared cache filled by a pod without replay protection must not
	// let a jti token through twice here.
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	lax := f.validator(t, ValidatorOptions{Cache: cache, CacheTTL: time.Minute})
	strict := f.validator(t, ValidatorOptions{RejectReplay: true, Cache: cache, CacheTTL: time.Minute})
	c := userClaims()
	c.JTI = "j-1"
	tok := f.mintUser(t, c)
	_, err := lax.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	_, err = strict.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, "")
	_, err = strict.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
	wantReason(t, err, ReasonReplay)
}

func TestValidate_RejectReplay_TokensWithoutJTIStayCachedAndReusable(t *testing.T) {
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{RejectReplay: true, Cache: cache, CacheTTL: time.Minute})
	tok := f.mintUserNoJTI(t, userClaims())
	for range 3 {
		_, err := v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
		wantReason(t, err, "")
	}
	if cache.puts.Load() != 1 || cache.hits.Load() != 2 {
		t.Fatalf("puts = %d, hits = %d; want 1 and 2", cache.puts.Load(), cache.hits.Load())
	}
}

func TestValidate_ReplayOff_SameJTIAcceptedTwice(t *testing.T) {
	f := newTokenFixture(t)
	v := f.validator(t, ValidatorOptions{})
	c := userClaims()
	c.JTI = "j"
	tok := f.mintUser(t, c)
	for range 2 {
		_, err := v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
		wantReason(t, err, "")
	}
}

func TestValidate_RejectReplay_ConcurrentPresentations_ExactlyOneWins(t *testing.T) {
	f := newTokenFixture(t)
	v := f.validator(t, ValidatorOptions{RejectReplay: true})
	c := userClaims()
	c.JTI = "race"
	tok := f.mintUser(t, c)
	const n = 32
	var ok, replay atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := v.ValidateUser(context.Background(), tok, "c1", "a1", "u1")
			switch {
			case err == nil:
				ok.Add(1)
			case err.Details == ReasonReplay:
				replay.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || replay.Load() != n-1 {
		t.Fatalf("accepted %d, replays %d; want 1 and %d", ok.Load(), replay.Load(), n-1)
	}
}

// failingReplay is a ReplayGuard whose store is down.
type failingReplay struct{}

func (failingReplay) Seen(context.Context, string, time.Time) (bool, error) {
	return false, errors.New("connection refused")
}

func TestValidate_ReplayStoreDown_FailsClosed(t *testing.T) {
	f := newTokenFixture(t)
	v := f.validator(t, ValidatorOptions{RejectReplay: true, Replay: failingReplay{}})
	c := userClaims()
	c.JTI = "j"
	_, err := v.ValidateUser(t.Context(), f.mintUser(t, c), "c1", "a1", "u1")
	if err == nil || err.Code != codec.CodeServiceUnavailable {
		t.Fatalf("err = %v, want ServiceUnavailable", err)
	}
	// Without a jti the store is not asked.
	_, err = v.ValidateUser(t.Context(), f.mintUserNoJTI(t, userClaims()), "c1", "a1", "u1")
	wantReason(t, err, "")
}

func TestValidate_ErrorsNeverContainTheToken(t *testing.T) {
	f := newTokenFixture(t)
	v := f.validator(t, ValidatorOptions{})
	tok := f.mintUser(t, userClaims())
	for _, bad := range []string{tok, flipChar(tok, 20), tok[:40]} {
		_, err := v.ValidateUser(t.Context(), bad, "x", "y", "z")
		if err == nil {
			t.Fatal("want failure")
		}
		if strings.Contains(err.Error(), bad[:16]) {
			t.Fatalf("error %q carries the token", err)
		}
	}
}

// Issue 9 finding 8: company_id_restriction was parsed and ignored. The
// validator folds it into SubscribedCompanyID — what the reactor filters
// admin sockets on (reactor/conn.go: empty = every company) — so a
// restricted admin with no subscription receives only its company's agent
// events, and a subscription outside the restriction is refused.
func TestValidateAdmin_CompanyIDRestriction(t *testing.T) {
	f := newTokenFixture(t)
	aead, err := newAEAD(f.adminKey)
	if err != nil {
		t.Fatal(err)
	}
	// sealAdmin bypasses MintAdmin, which refuses contradictory claims.
	sealAdmin := func(sub, restriction string) string {
		return seal(aead, []byte(`{"admin_id":"ops","expires_at":"2030-06-01T13:00:00Z","subscribed_company_id":"`+
			sub+`","company_id_restriction":"`+restriction+`"}`))
	}
	tests := []struct {
		name, sub, restriction string
		wantSub                string // effective subscription
		reason                 string
	}{
		{name: "restriction, no subscription: only the restricted company", restriction: "C1", wantSub: "C1"},
		{name: "restriction and the same subscription", sub: "C1", restriction: "C1", wantSub: "C1"},
		{name: "subscription outside the restriction refused", sub: "C2", restriction: "C1", reason: ReasonOutsideRestriction},
		{name: "ids are case-sensitive", sub: "c1", restriction: "C1", reason: ReasonOutsideRestriction},
		{name: "no restriction, no subscription: every company", wantSub: ""},
		{name: "no restriction, a subscription stands", sub: "C2", wantSub: "C2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Fresh validator and cache per case; the second call is
			// served from the cache and must agree with the first.
			cache := newRecordingCache(t, f.clock)
			v := f.validator(t, ValidatorOptions{Cache: cache, CacheTTL: time.Minute})
			tok := sealAdmin(tt.sub, tt.restriction)
			for range 2 {
				id, err := v.ValidateAdmin(t.Context(), tok)
				if tt.reason != "" {
					if err == nil || err.Code != codec.CodeInvalidToken || err.Details != tt.reason ||
						err.Message != "subscribed_company_id outside company_id_restriction" {
						t.Fatalf("got %v, %+v; want InvalidToken %s", err, id, tt.reason)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if id.SubscribedCompanyID != tt.wantSub || id.CompanyIDRestriction != tt.restriction {
					t.Fatalf("subscribed %q restriction %q; want %q and %q",
						id.SubscribedCompanyID, id.CompanyIDRestriction, tt.wantSub, tt.restriction)
				}
				// The reactor's admin filter (reactor/conn.go, empty =
				// all): C1's agent events only.
				sees := func(company string) bool {
					return id.SubscribedCompanyID == "" || id.SubscribedCompanyID == company
				}
				if tt.restriction != "" && (!sees(tt.restriction) || sees("C2") || sees("C3")) {
					t.Fatalf("restricted to %s, subscription %q sees other companies", tt.restriction, id.SubscribedCompanyID)
				}
			}
			if tt.reason == "" && cache.hits.Load() != 1 {
				t.Fatalf("cache hits = %d, want the second call from the cache", cache.hits.Load())
			}
		})
	}
}

// An entry another pod put in the shared cache without folding the
// restriction in (an older build during a rollout) is still restricted.
func TestValidateAdmin_CompanyIDRestriction_AppliedToCacheHits(t *testing.T) {
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{Cache: cache, CacheTTL: time.Minute})
	for _, tc := range []struct{ sub, wantSub, reason string }{{"", "C1", ""}, {"C2", "", ReasonOutsideRestriction}} {
		tok := f.mintAdmin(t, AdminClaims{AdminID: "ops", ExpiresAt: tokenEpoch.Add(time.Hour), CompanyIDRestriction: "C1"})
		stale := Identity{Kind: KindAdmin, AdminID: "ops", SubscribedCompanyID: tc.sub, CompanyIDRestriction: "C1",
			ExpiresAt: tokenEpoch.Add(time.Hour)}
		cache.MemoryTokenCache.Put(t.Context(), sha256.Sum256([]byte(tok)), stale, time.Minute)
		hits := cache.hits.Load()
		id, err := v.ValidateAdmin(t.Context(), tok)
		if cache.hits.Load() != hits+1 {
			t.Fatal("not served from the cache")
		}
		if tc.reason != "" {
			if err == nil || err.Details != tc.reason {
				t.Fatalf("cached %q: got %v, want %s", tc.sub, err, tc.reason)
			}
			continue
		}
		if err != nil || id.SubscribedCompanyID != tc.wantSub {
			t.Fatalf("cached %q: subscribed %q, %v; want %q", tc.sub, id.SubscribedCompanyID, err, tc.wantSub)
		}
	}
}

// A refusal for the restriction does not spend the token's jti (the replay
// check runs last), and MintAdmin will not produce such a token at all.
func TestValidateAdmin_CompanyIDRestriction_RefusalBurnsNoJTIAndIsNotMinted(t *testing.T) {
	f := newTokenFixture(t)
	_, err := f.minter.MintAdmin(AdminClaims{AdminID: "ops", ExpiresAt: tokenEpoch.Add(time.Hour),
		SubscribedCompanyID: "C2", CompanyIDRestriction: "C1"})
	if !errors.Is(err, ErrOutsideRestriction) {
		t.Fatalf("MintAdmin: err = %v, want ErrOutsideRestriction", err)
	}
	replay := NewMemoryReplayGuard()
	replay.now = f.clock.Now
	v := f.validator(t, ValidatorOptions{RejectReplay: true, Replay: replay})
	aead, err := newAEAD(f.adminKey)
	if err != nil {
		t.Fatal(err)
	}
	bad := seal(aead, []byte(`{"admin_id":"ops","expires_at":"2030-06-01T13:00:00Z","subscribed_company_id":"C2","company_id_restriction":"C1","jti":"j-r"}`))
	_, e := v.ValidateAdmin(t.Context(), bad)
	if e == nil || e.Details != ReasonOutsideRestriction {
		t.Fatalf("got %v, want %s", e, ReasonOutsideRestriction)
	}
	if replay.Len() != 0 {
		t.Fatal("a refused token spent its jti")
	}
}
