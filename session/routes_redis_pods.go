package session

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// errRegistryRecovering is a store-down error: the dispatcher treats it as
// Redis being unreachable (NAK with a delay).
var errRegistryRecovering = fmt.Errorf("%w: route registry recovering after Redis lost its data", errStoreDown)

// podsScripted is Pods in one podsScript round trip; state is 0 or one of
// the podsRecovery* replies.
func (r *redisRoutes) podsScripted(ctx context.Context, key, now string) (pods []string, state int64, err error) {
	res, err := r.c.run(ctx, podsScript, []string{key, r.c.keys.registryAlive(), r.c.keys.registryRecovering()},
		now, r.c.keys.podPrefix(), r.c.opt.PodID, r.reg.recoveryWindow.Milliseconds(), registryAliveTTL.Milliseconds()).Result()
	if err != nil {
		return nil, 0, err
	}
	switch v := res.(type) {
	case int64:
		return nil, v, nil
	case []any:
		pods = make([]string, 0, len(v))
		for _, m := range v {
			p, ok := m.(string)
			if !ok {
				return nil, 0, fmt.Errorf("pods script: member of type %T", m)
			}
			pods = append(pods, p)
		}
		return pods, 0, nil
	}
	return nil, 0, fmt.Errorf("pods script: reply of type %T", res)
}

// podsCluster is Pods on a Redis Cluster: a script reaches only its own
// slot, so the registry markers are read in the same pipeline as the route
// (one round trip, as on a single node) and the members' leases, in other
// slots, in a second pipelined round trip.
func (r *redisRoutes) podsCluster(ctx context.Context, key, now string) (pods []string, state int64, err error) {
	var (
		alive, recovering *redis.IntCmd
		members           *redis.StringSliceCmd
	)
	if _, err := r.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		alive = p.Exists(ctx, r.c.keys.registryAlive())
		recovering = p.Exists(ctx, r.c.keys.registryRecovering())
		members = p.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: now, Max: "+inf"})
		return nil
	}); err != nil {
		return nil, 0, err
	}
	switch {
	case alive.Val() == 0:
		if err := r.reg.markRecovering(ctx); err != nil {
			return nil, 0, err
		}
		return nil, podsRecoveryStarted, nil
	case recovering.Val() == 1:
		return nil, podsRecovering, nil
	}
	pods, err = r.reg.livePods(ctx, members.Val())
	return pods, 0, err
}

func addPod(pods []string, id string) []string {
	for _, p := range pods {
		if p == id {
			return pods
		}
	}
	return append(pods, id)
}
