package session

import (
	"context"
	"testing"
	"time"
)

// BenchmarkValidateUser measures the handshake's token step (SPEC: the
// ≥ 20 000 handshakes/s path). miss: base64 + AES-GCM open + JSON parse +
// checks, the cost of a first connection; hit: SHA-256 + LRU lookup +
// checks, a reconnect within auth.token_cache_ttl.
func BenchmarkValidateUser(b *testing.B) {
	f := newTokenFixture(b)
	now := time.Now()
	c := UserClaims{
		CompanyID: "company-0001", AgentID: "agent-000000001", UserID: "user-0000000000001",
		ExpiresAt: now.Add(time.Hour), IssuedAt: now.Add(-time.Minute),
		JTI: "7f0c2d7e-4a59-4a61-9a55-5c1f0b3a7e21",
	}
	tok := f.mintUser(b, c)
	cache, err := NewMemoryTokenCache(1024)
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name string
		opts ValidatorOptions
	}{
		{"miss", ValidatorOptions{ClockSkew: 30 * time.Second}},
		{"hit", ValidatorOptions{ClockSkew: 30 * time.Second, Cache: cache, CacheTTL: 30 * time.Second}},
	}
	for _, bc := range cases {
		v, err := NewValidator(f.userKey, f.adminKey, bc.opts)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.ValidateUser(ctx, tok, c.CompanyID, c.AgentID, c.UserID); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := v.ValidateUser(ctx, tok, c.CompanyID, c.AgentID, c.UserID); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkMintUser is the cost of POST /generate-token's crypto and JSON.
func BenchmarkMintUser(b *testing.B) {
	f := newTokenFixture(b)
	c := userClaims()
	c.JTI = "7f0c2d7e-4a59-4a61-9a55-5c1f0b3a7e21"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.minter.MintUser(c); err != nil {
			b.Fatal(err)
		}
	}
}
