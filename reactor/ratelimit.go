package reactor

import (
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/time/rate"
)

// ipLimiter is the per-IP handshake limit of SPEC §2 step 6. Off by default:
// behind a load balancer every client shares the balancer's address.
type ipLimiter struct {
	perSec float64
	burst  int
	cache  *expirable.LRU[string, *rate.Limiter]
}

// ipLimiterSize bounds memory under a flood from many addresses; an evicted
// address simply starts with a full bucket again.
const ipLimiterSize = 65536

func newIPLimiter(perSec float64, burst int) *ipLimiter {
	if perSec <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	return &ipLimiter{
		perSec: perSec,
		burst:  burst,
		cache:  expirable.NewLRU[string, *rate.Limiter](ipLimiterSize, nil, time.Minute),
	}
}

// allow reports whether ip may start another handshake now. Safe for
// concurrent use (the LRU locks; the limiter locks).
func (l *ipLimiter) allow(ip string) bool {
	if l == nil {
		return true
	}
	lim, ok := l.cache.Get(ip)
	if !ok {
		lim = rate.NewLimiter(rate.Limit(l.perSec), l.burst)
		l.cache.Add(ip, lim)
	}
	return lim.Allow()
}

// frameBucket is the per-socket token bucket of SPEC §6 that every inbound
// frame takes from. It lives inline in conn (8 bytes) instead of a
// *rate.Limiter (a pointer plus an 80-byte allocation with a mutex):
// every socket answers the server's pings, so every socket would carry
// one. Touched only on the socket's loop, so it needs no lock. The limits
// are read at each frame, so a reload (SIGHUP) applies to open sockets.
type frameBucket struct {
	tokens float32 // tokens left at `at`
	// at is the last frame's time on the server's millisecond clock
	// (Server.millis); 0 = no frame yet, the bucket starts full. The clock
	// wraps every 49 days: a socket silent that long may find its bucket
	// under-filled once.
	at uint32
}

// allow takes a token at now (Server.millis) and reports whether there was
// one, refilling perSec tokens a second up to burst.
func (b *frameBucket) allow(now uint32, perSec float64, burst int) bool {
	full := float32(max(burst, 1))
	if b.at == 0 {
		b.tokens = full
	} else if d := now - b.at; d > 0 {
		b.tokens = min(full, b.tokens+float32(float64(d)*perSec/1000))
	}
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}
