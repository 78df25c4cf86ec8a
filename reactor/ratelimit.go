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
