package session

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisReplayGuard is the cluster-wide ReplayGuard (SPEC §3,
// auth.reject_replay): SET jti:<jti> NX with expiry at the token's
// expires_at, so of two presentations on any pods exactly one is first.
// Safe for concurrent use.
type redisReplayGuard struct{ c *redisCore }

var _ ReplayGuard = (*redisReplayGuard)(nil)

// Seen implements ReplayGuard. A token already expired is not recorded
// (it is refused before this check). While Redis is down it returns an
// error without a round trip: whether to let an unchecked jti through is
// the validator's decision.
func (g *redisReplayGuard) Seen(ctx context.Context, jti string, until time.Time) (bool, error) {
	if until.Before(time.Now()) {
		return false, nil
	}
	if !g.c.isHealthy() {
		return false, errStoreDown
	}
	cctx, cancel := g.c.opCtx(ctx)
	defer cancel()
	// Keep the marker through the expires_at instant itself (a token is
	// valid while now ≤ expires_at), plus a second for the round trip. The
	// TTL is relative and measured on this pod's clock, the one the
	// validator judged expires_at by: an absolute EXAT would be read on
	// Redis's clock (and go-redis sends it in whole seconds), so a Redis
	// clock running ahead would drop the marker while the token still
	// validates here, re-opening the replay window.
	ttl := time.Until(until) + time.Second
	err := g.c.rdb.SetArgs(cctx, g.c.keys.jti(jti), 1, redis.SetArgs{Mode: "NX", TTL: ttl}).Err()
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, redis.Nil):
		return true, nil
	default:
		g.c.fail(ctx, "replay", err)
		return false, err
	}
}
