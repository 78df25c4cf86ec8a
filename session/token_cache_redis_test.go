package session

import (
	"context"
	"crypto/sha256"
	"strconv"
	"testing"
	"time"
)

func TestRedisTokenCache_PutOnOnePod_HitOnAnother(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	a := startStore(t, c, fastOptions("pod-a", prefix))
	b := startStore(t, c, fastOptions("pod-b", prefix))
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	ids := []Identity{
		{Kind: KindUser, CompanyID: "acme", AgentID: "a1", UserID: "u7", ExpiresAt: exp, IssuedAt: exp.Add(-time.Minute), JTI: "j1"},
		{Kind: KindAdmin, AdminID: "root", SubscribedCompanyID: "acme", SubscribedAgentID: "a1", CompanyIDRestriction: "acme", ExpiresAt: exp},
	}
	for i, id := range ids {
		t.Run(id.Kind.String(), func(t *testing.T) {
			sum := sha256.Sum256([]byte("token-" + strconv.Itoa(i)))
			a.TokenCache().Put(ctx, sum, id, 30*time.Second)
			got, ok := b.TokenCache().Get(ctx, sum)
			if !ok {
				t.Fatal("miss on the other pod")
			}
			if !got.ExpiresAt.Equal(id.ExpiresAt) || !got.IssuedAt.Equal(id.IssuedAt) {
				t.Fatalf("times differ: %+v vs %+v", got, id)
			}
			got.ExpiresAt, got.IssuedAt = id.ExpiresAt, id.IssuedAt
			if got != id {
				t.Fatalf("got %+v, want %+v", got, id)
			}
		})
	}
}

func TestRedisTokenCache_NeverPastExpiresAt(t *testing.T) {
	t.Parallel()
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	a := startStore(t, c, fastOptions("pod-a", prefix))
	ctx := context.Background()
	sum := sha256.Sum256([]byte("short-lived"))
	id := Identity{CompanyID: "acme", AgentID: "a1", UserID: "u7", ExpiresAt: time.Now().Add(300 * time.Millisecond)}
	a.TokenCache().Put(ctx, sum, id, 30*time.Second)
	if ttl := c.PTTL(ctx, a.core.keys.tokenCache(sum)).Val(); ttl <= 0 || ttl > 300*time.Millisecond {
		t.Fatalf("TTL %v, want clipped to expires_at", ttl)
	}
	if _, ok := a.TokenCache().Get(ctx, sum); !ok {
		t.Fatal("miss before expiry")
	}
	// Even an entry that outlives its expires_at in Redis never answers.
	c.Set(ctx, a.core.keys.tokenCache(sum), `{"k":0,"c":"acme","exp":"2000-01-01T00:00:00Z"}`, time.Minute)
	if _, ok := a.TokenCache().Get(ctx, sum); ok {
		t.Fatal("hit on an expired identity")
	}
	expired := sha256.Sum256([]byte("expired"))
	a.TokenCache().Put(ctx, expired, Identity{ExpiresAt: time.Now().Add(-time.Second)}, time.Minute)
	if n := c.Exists(ctx, a.core.keys.tokenCache(expired)).Val(); n != 0 {
		t.Fatal("an expired identity was cached")
	}
}

func TestRedisTokenCache_RedisDown_ReadsAsMiss(t *testing.T) {
	t.Parallel()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	a := startStore(t, newClient(t, addr), fastOptions("pod-a", ""))
	sum := sha256.Sum256([]byte("x"))
	a.TokenCache().Put(context.Background(), sum, Identity{ExpiresAt: time.Now().Add(time.Hour)}, time.Minute)
	if _, ok := a.TokenCache().Get(context.Background(), sum); ok {
		t.Fatal("hit without Redis")
	}
}
