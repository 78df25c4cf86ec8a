package session

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"
)

// With CacheOnRepeat a token's first success is not cached, its second
// is, and the third is served from the cache; a burst of fresh tokens
// leaves the cache empty.
func TestValidateUser_CacheOnRepeat_AdmitsSecondSighting(t *testing.T) {
	f := newTokenFixture(t)
	cache := newRecordingCache(t, f.clock)
	v := f.validator(t, ValidatorOptions{Cache: cache, CacheTTL: 30 * time.Second, CacheOnRepeat: true})
	tok := f.mintUser(t, userClaims())
	for i, want := range []struct{ puts, hits int64 }{{0, 0}, {1, 0}, {1, 1}} {
		_, err := v.ValidateUser(t.Context(), tok, "c1", "a1", "u1")
		wantReason(t, err, "")
		if cache.puts.Load() != want.puts || cache.hits.Load() != want.hits {
			t.Fatalf("validation %d: puts %d hits %d, want %d %d", i+1, cache.puts.Load(), cache.hits.Load(), want.puts, want.hits)
		}
	}

	burst := newRecordingCache(t, f.clock)
	v = f.validator(t, ValidatorOptions{Cache: burst, CacheTTL: 30 * time.Second, CacheOnRepeat: true})
	for i := range 200 {
		c := userClaims()
		c.UserID = fmt.Sprintf("u%d", i)
		_, err := v.ValidateUser(t.Context(), f.mintUser(t, c), "c1", "a1", c.UserID)
		wantReason(t, err, "")
	}
	if n := burst.Len(); n != 0 {
		t.Fatalf("a burst of 200 fresh tokens left %d cache entries, want 0", n)
	}
}

func TestDoorkeeper_SeenBefore(t *testing.T) {
	var d doorkeeper
	a, b := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	// b shares a's slot with another fingerprint: it takes the slot over.
	copy(b[0:4], a[0:4])
	for i, tc := range []struct {
		sum  *[sha256.Size]byte
		want bool
	}{{&a, false}, {&a, true}, {&b, false}, {&a, false}, {&a, true}} {
		if got := d.seenBefore(tc.sum); got != tc.want {
			t.Fatalf("step %d: seenBefore = %v, want %v", i, got, tc.want)
		}
	}
}

func BenchmarkDoorkeeper(b *testing.B) {
	var d doorkeeper
	sums := make([][sha256.Size]byte, 1024)
	for i := range sums {
		sums[i] = sha256.Sum256([]byte{byte(i), byte(i >> 8)})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d.seenBefore(&sums[i&1023])
		i++
	}
}
