package session

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// registryAliveTTL bounds the shared registry:alive marker once no pod
// runs (Close cannot delete it: other pods rely on it). Every refresher
// tick pushes it back, so it never lapses under a running cluster.
const registryAliveTTL = 24 * time.Hour

// redisRegistry is pod liveness on Redis (SPEC §4, DESIGN "Redis cost at
// fleet scale"): this pod's lease `pod:{id}`, which makes its locks and
// route members count, the liveness checks of other pods' leases, and the
// registry markers that tell a lost data set (Redis restarted or flushed)
// from an intact one. Safe for concurrent use.
type redisRegistry struct {
	c *redisCore

	leaseValue string // this pod's start time, the lease's value
	leaseTTL   time.Duration
	// recoveryWindow is registry:recovering's TTL: long enough for every
	// pod's refresher (one tick, or one capped backoff probe, plus the
	// probe itself) to find its lease gone and re-register.
	recoveryWindow time.Duration
	// announce: this pod found Redis's data lost and has not finished its
	// full re-assert; each attempt (re)opens the recovery window first.
	announce atomic.Bool
	// master counts the master switches seen by the dial hook; settled is
	// its count when this pod last opened the recovery window (failover.go).
	master          masterWatch
	settledSwitches atomic.Uint64
	onSwitch        atomic.Pointer[func(uint64)] // setOnSwitch
}

// newRedisRegistry derives the lease timings from the core's refresh
// interval: the lease lives 3 × session.refresh_interval (SPEC §4).
func newRedisRegistry(c *redisCore) *redisRegistry {
	every := c.opt.RefreshInterval
	g := &redisRegistry{
		c:              c,
		leaseValue:     time.Now().UTC().Format(time.RFC3339Nano),
		leaseTTL:       3 * every,
		recoveryWindow: every + max(every/2, c.opt.OpTimeout),
	}
	g.watchMaster()
	return g
}

// register takes the pod lease at start. registry:alive is set only if
// absent: on a fresh data set this start is no recovery, and a running
// cluster's marker is left as it is.
func (g *redisRegistry) register(ctx context.Context) error {
	_, err := g.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, g.c.keys.pod(g.c.opt.PodID), g.leaseValue, g.leaseTTL)
		p.SetArgs(ctx, g.c.keys.registryAlive(), "1", redis.SetArgs{Mode: "NX", TTL: registryAliveTTL})
		return nil
	})
	if errors.Is(err, redis.Nil) { // SET NX found the marker: fine
		err = nil
	}
	return err
}

// renew is one refresher tick of the lease: leaseMissing reports a lease
// that was gone (Redis lost its data, or this pod stalled past its TTL),
// dataLost a missing registry:alive (Redis lost its data).
func (g *redisRegistry) renew(ctx context.Context) (leaseMissing, dataLost bool, err error) {
	var (
		lease *redis.StatusCmd
		alive *redis.BoolCmd
	)
	cctx, cancel := g.c.opCtx(ctx)
	defer cancel()
	_, err = g.c.rdb.Pipelined(cctx, func(p redis.Pipeliner) error {
		lease = p.SetArgs(cctx, g.c.keys.pod(g.c.opt.PodID), g.leaseValue, redis.SetArgs{TTL: g.leaseTTL, Get: true})
		// PEXPIRE, not SET: it must never recreate the marker, or a
		// restart would go unnoticed by the route lookups.
		alive = p.PExpire(cctx, g.c.keys.registryAlive(), registryAliveTTL)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, false, err
	}
	return errors.Is(lease.Err(), redis.Nil), !alive.Val(), nil
}

// openRecovery (re)opens the recovery window (markRecovering), counting a
// failure as a failed refresh.
func (g *redisRegistry) openRecovery(ctx context.Context) bool {
	cctx, cancel := g.c.opCtx(ctx)
	defer cancel()
	if err := g.markRecovering(cctx); err != nil {
		g.c.m.RefreshBatches.WithLabelValues("error").Inc()
		g.c.fail(ctx, "lease", err)
		return false
	}
	return true
}

// markRecovering sets registry:recovering first, then registry:alive, one
// after the other, so no lookup can see the data set as intact in between
// (on a Redis Cluster the two keys live on different nodes, where one
// pipeline has no order). podsScript does the same on a single node.
func (g *redisRegistry) markRecovering(ctx context.Context) error {
	if err := g.c.rdb.Set(ctx, g.c.keys.registryRecovering(), "1", g.recoveryWindow).Err(); err != nil {
		return err
	}
	return g.c.rdb.Set(ctx, g.c.keys.registryAlive(), "1", registryAliveTTL).Err()
}

// podDead reports whether a pod's lease has lapsed (the Redis Cluster path,
// where the acquire script cannot read the lease itself).
func (g *redisRegistry) podDead(ctx context.Context, podID string) (bool, error) {
	cctx, cancel := g.c.opCtx(ctx)
	defer cancel()
	n, err := g.c.rdb.Exists(cctx, g.c.keys.pod(podID)).Result()
	return n == 0, err
}

// livePods keeps the pods of list whose lease lives, this pod included (it
// is the one asking), in one pipelined round trip (the Redis Cluster path
// of a route lookup; podsScript does it in Lua on a single node).
func (g *redisRegistry) livePods(ctx context.Context, list []string) ([]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.IntCmd, len(list))
	if _, err := g.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range list {
			cmds[i] = p.Exists(ctx, g.c.keys.pod(m))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	out := list[:0]
	for i, m := range list {
		if m == g.c.opt.PodID || cmds[i].Val() == 1 {
			out = append(out, m)
		}
	}
	return out, nil
}

// release deletes this pod's lease (Close): its locks and members stop
// counting at once instead of after the lease TTL.
func (g *redisRegistry) release(ctx context.Context) error {
	cctx, cancel := g.c.opCtx(ctx)
	defer cancel()
	err := g.c.rdb.Del(cctx, g.c.keys.pod(g.c.opt.PodID)).Err()
	if err != nil {
		g.c.fail(ctx, "close", err)
	}
	return err
}
