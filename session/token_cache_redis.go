package session

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"time"
)

// redisTokenCache is the cluster-wide TokenCache (SPEC §3): the identity as
// JSON under token_cache:<hex sha256> with a TTL no longer than the token's
// life, so a token validated on one pod is not decrypted again on the next.
// Put it behind the in-process cache (NewTieredTokenCache). Safe for
// concurrent use.
type redisTokenCache struct{ c *redisCore }

var _ TokenCache = (*redisTokenCache)(nil)

// cachedIdentityJSON is the stored form of an Identity: short, stable field
// names that do not change if Identity grows json tags of its own.
type cachedIdentityJSON struct {
	Kind                 Kind      `json:"k"`
	CompanyID            string    `json:"c,omitempty"`
	AgentID              string    `json:"a,omitempty"`
	UserID               string    `json:"u,omitempty"`
	AdminID              string    `json:"ad,omitempty"`
	SubscribedCompanyID  string    `json:"sc,omitempty"`
	SubscribedAgentID    string    `json:"sa,omitempty"`
	CompanyIDRestriction string    `json:"cr,omitempty"`
	ExpiresAt            time.Time `json:"exp"`
	IssuedAt             time.Time `json:"iat,omitzero"`
	JTI                  string    `json:"jti,omitempty"`
}

// Get implements TokenCache. Errors and a Redis outage read as a miss (the
// validator decrypts instead); an entry past its expires_at never answers.
func (t *redisTokenCache) Get(ctx context.Context, sum [sha256.Size]byte) (Identity, bool) {
	if !t.c.isHealthy() {
		return Identity{}, false
	}
	cctx, cancel := t.c.opCtx(ctx)
	defer cancel()
	b, err := t.c.rdb.Get(cctx, t.c.keys.tokenCache(sum)).Bytes()
	if err != nil {
		t.c.fail(ctx, "token_cache_get", err)
		return Identity{}, false
	}
	var j cachedIdentityJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Identity{}, false
	}
	if !time.Now().Before(j.ExpiresAt) {
		return Identity{}, false
	}
	return Identity(j), true
}

// Put implements TokenCache; the TTL is clipped to the token's expires_at.
func (t *redisTokenCache) Put(ctx context.Context, sum [sha256.Size]byte, id Identity, ttl time.Duration) {
	ttl = min(ttl, time.Until(id.ExpiresAt))
	if ttl < time.Millisecond || !t.c.isHealthy() {
		return
	}
	b, err := json.Marshal(cachedIdentityJSON(id))
	if err != nil {
		return
	}
	cctx, cancel := t.c.opCtx(ctx)
	defer cancel()
	if err := t.c.rdb.Set(cctx, t.c.keys.tokenCache(sum), b, ttl).Err(); err != nil {
		t.c.fail(ctx, "token_cache_put", err)
	}
}
