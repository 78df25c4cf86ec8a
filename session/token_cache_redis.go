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
// Put it behind the in-process cache (NewTieredTokenCache). It is the
// RedisStore itself seen through the TokenCache interface.
type redisTokenCache RedisStore

var _ TokenCache = (*redisTokenCache)(nil)

// TokenCache returns the Redis token cache of this store.
func (s *RedisStore) TokenCache() TokenCache { return (*redisTokenCache)(s) }

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
func (c *redisTokenCache) Get(ctx context.Context, sum [sha256.Size]byte) (Identity, bool) {
	s := (*RedisStore)(c)
	if !s.Healthy() {
		return Identity{}, false
	}
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	b, err := s.rdb.Get(cctx, s.keys.tokenCache(sum)).Bytes()
	if err != nil {
		s.fail(ctx, "token_cache_get", err)
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
func (c *redisTokenCache) Put(ctx context.Context, sum [sha256.Size]byte, id Identity, ttl time.Duration) {
	s := (*RedisStore)(c)
	ttl = min(ttl, time.Until(id.ExpiresAt))
	if ttl < time.Millisecond || !s.Healthy() {
		return
	}
	b, err := json.Marshal(cachedIdentityJSON(id))
	if err != nil {
		return
	}
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.rdb.Set(cctx, s.keys.tokenCache(sum), b, ttl).Err(); err != nil {
		s.fail(ctx, "token_cache_put", err)
	}
}
