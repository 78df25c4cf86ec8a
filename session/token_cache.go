package session

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// TokenCache remembers successful token validations (SPEC §3), keyed by the
// SHA-256 of the token string so the cache never holds a usable token.
// Implementations are safe for concurrent use; the Redis one
// (token_cache_redis.go) may block, so call them off the event loop.
type TokenCache interface {
	// Get returns the identity cached under sum, if any and not expired.
	// Store errors read as a miss: the validator then decrypts.
	Get(ctx context.Context, sum [sha256.Size]byte) (Identity, bool)
	// Put caches id under sum for ttl (> 0), which the validator already
	// bounded by the token's expires_at.
	Put(ctx context.Context, sum [sha256.Size]byte, id Identity, ttl time.Duration)
}

// MemoryTokenCache is the in-process TokenCache: a size-bounded LRU whose
// entries carry their own deadline, since every entry's TTL differs (each is
// capped by its token's expires_at). Safe for concurrent use; never blocks
// on I/O.
type MemoryTokenCache struct {
	lru *expirable.LRU[[sha256.Size]byte, cachedIdentity]
	now func() time.Time // time.Now; tests move it
}

type cachedIdentity struct {
	id       Identity
	deadline time.Time
}

var _ TokenCache = (*MemoryTokenCache)(nil)

// NewMemoryTokenCache returns a cache of at most size entries
// (auth.token_cache_size); size must be positive. Expired entries leave
// only when looked up or pushed out; NewExpiringTokenCache also purges.
func NewMemoryTokenCache(size int) (*MemoryTokenCache, error) {
	return NewExpiringTokenCache(size, 0)
}

// NewExpiringTokenCache is NewMemoryTokenCache whose entries are also
// purged in the background once maxTTL (auth.token_cache_ttl) has passed,
// so the memory of a connect burst is given back within maxTTL instead of
// staying until size newer tokens push it out: the cache must not become
// part of what every idle socket costs. maxTTL 0 = no purging.
func NewExpiringTokenCache(size int, maxTTL time.Duration) (*MemoryTokenCache, error) {
	if size <= 0 {
		return nil, fmt.Errorf("token cache: size must be positive, got %d", size)
	}
	c := expirable.NewLRU[[sha256.Size]byte, cachedIdentity](size, nil, maxTTL)
	return &MemoryTokenCache{lru: c, now: time.Now}, nil
}

// Get returns the live entry under sum. An expired entry is removed, so it
// neither answers nor is moved to the front of the LRU.
func (c *MemoryTokenCache) Get(_ context.Context, sum [sha256.Size]byte) (Identity, bool) {
	e, ok := c.lru.Get(sum)
	if !ok {
		return Identity{}, false
	}
	if !c.now().Before(e.deadline) {
		c.lru.Remove(sum)
		return Identity{}, false
	}
	return e.id, true
}

// Put stores id under sum until now+ttl; a non-positive ttl stores nothing.
func (c *MemoryTokenCache) Put(_ context.Context, sum [sha256.Size]byte, id Identity, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	c.lru.Add(sum, cachedIdentity{id: id, deadline: c.now().Add(ttl)})
}

// Len returns the number of entries, expired ones not yet evicted included.
func (c *MemoryTokenCache) Len() int { return c.lru.Len() }

// tieredTokenCache puts a small in-process cache in front of a shared one.
type tieredTokenCache struct {
	local, remote TokenCache
	fillTTL       time.Duration
	now           func() time.Time
}

// NewTieredTokenCache returns a TokenCache that reads local first, then
// remote (in cluster mode the Redis cache, so a token validated on one pod
// is not decrypted again on the next), and copies a remote hit into local
// for at most fillTTL (auth.token_cache_ttl) and never past the token's
// expires_at. Put writes both. Safe for concurrent use if both are.
func NewTieredTokenCache(local, remote TokenCache, fillTTL time.Duration) TokenCache {
	return &tieredTokenCache{local: local, remote: remote, fillTTL: fillTTL, now: time.Now}
}

func (t *tieredTokenCache) Get(ctx context.Context, sum [sha256.Size]byte) (Identity, bool) {
	if id, ok := t.local.Get(ctx, sum); ok {
		return id, true
	}
	id, ok := t.remote.Get(ctx, sum)
	if !ok {
		return Identity{}, false
	}
	if ttl := min(t.fillTTL, id.ExpiresAt.Sub(t.now())); ttl > 0 {
		t.local.Put(ctx, sum, id, ttl)
	}
	return id, true
}

func (t *tieredTokenCache) Put(ctx context.Context, sum [sha256.Size]byte, id Identity, ttl time.Duration) {
	t.local.Put(ctx, sum, id, ttl)
	t.remote.Put(ctx, sum, id, ttl)
}
