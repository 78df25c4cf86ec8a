package session

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/codec"
)

// redisRoutes is the route registry of SPEC §5 on Redis: each route is a
// sorted set of pod ids. A member counts while its pod lease lives and its
// score (a long garbage-collection expiry, unix ms) has not passed, so a
// crashed pod drops out within its lease TTL even while other pods keep
// refreshing the same route (DESIGN invariant 6). It is the RedisStore
// itself seen through the Routes interface.
//
// Contract with the caller: Leave is called once per successful Join; a
// Join that returned an error is not left.
type redisRoutes RedisStore

// routeEntry is this pod's membership of one route.
type routeEntry struct {
	io         sync.Mutex // serializes this pod's writes to the member
	refs       int        // local sockets on the route
	inRedis    bool       // our member was written (and not removed since)
	dirty      bool       // joined while Redis was down: not yet written
	assertedAt time.Time  // last successful ZADD
}

// Join implements Routes: the first local socket on a route registers
// this pod before Join returns (one round trip, routeAssertScript); later
// sockets on the route cost nothing.
func (r *redisRoutes) Join(ctx context.Context, rt Route) error {
	s := (*RedisStore)(r)
	key := s.keys.route(rt)
	s.mu.Lock()
	e := s.routes[key]
	if e == nil {
		e = &routeEntry{}
		s.routes[key] = e
	}
	e.refs++
	need := !e.inRedis || e.dirty
	s.mu.Unlock()
	if !need {
		return nil
	}
	if !s.Healthy() {
		s.markRouteDirty(e)
		return nil
	}
	e.io.Lock()
	defer e.io.Unlock()
	s.mu.Lock()
	need = (!e.inRedis || e.dirty) && e.refs > 0
	s.mu.Unlock()
	if !need {
		return nil
	}
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.run(cctx, routeAssertScript, []string{key}, s.routeAssertArgs()...).Err(); err != nil {
		if s.fail(ctx, "join", err) {
			// Existing and new sockets keep working while Redis is down;
			// the refresher writes the member after recovery.
			s.markRouteDirty(e)
			return nil
		}
		s.mu.Lock()
		e.refs--
		idle := e.refs == 0
		s.mu.Unlock()
		if idle {
			s.enqueue(job{kind: jobLeaveRoute, key: key})
		}
		return codec.NewError(codec.CodeSubscriptionFailure, "route registration failed")
	}
	s.mu.Lock()
	e.inRedis, e.dirty, e.assertedAt = true, false, time.Now()
	s.mu.Unlock()
	return nil
}

func (s *RedisStore) markRouteDirty(e *routeEntry) {
	s.mu.Lock()
	e.dirty = true
	s.mu.Unlock()
}

// routeAssertArgs are routeAssertScript's arguments for a write now.
func (s *RedisStore) routeAssertArgs() []any {
	now := time.Now()
	return []any{s.opt.PodID, now.Add(s.routeGCTTL).UnixMilli(), now.UnixMilli(), s.routeGCTTL.Milliseconds()}
}

// Leave implements Routes. Non-blocking: the last local socket's ZREM runs
// on the background worker.
func (r *redisRoutes) Leave(rt Route) {
	s := (*RedisStore)(r)
	key := s.keys.route(rt)
	s.mu.Lock()
	e := s.routes[key]
	if e == nil || e.refs == 0 {
		s.mu.Unlock()
		return
	}
	e.refs--
	idle := e.refs == 0
	s.mu.Unlock()
	if idle {
		s.enqueue(job{kind: jobLeaveRoute, key: key})
	}
}

// Pods implements Routes: the live members of rt, this pod included while
// it has a local socket on rt. One round trip. While Redis is known to be
// down it fails at once (the dispatcher NAKs with a delay, SPEC §5) instead
// of waiting out a timeout per event.
func (r *redisRoutes) Pods(ctx context.Context, rt Route) ([]string, error) {
	s := (*RedisStore)(r)
	if !s.Healthy() {
		return nil, errStoreDown
	}
	key := s.keys.route(rt)
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	var (
		pods []string
		err  error
	)
	if s.leaseInScript {
		pods, err = s.run(cctx, podsScript, []string{key}, now, s.keys.podPrefix(), s.opt.PodID).StringSlice()
	} else {
		pods, err = s.podsCluster(cctx, key, now)
	}
	if err != nil {
		s.fail(ctx, "pods", err)
		return nil, fmt.Errorf("route lookup: %w", err)
	}
	s.mu.Lock()
	e := s.routes[key]
	local := e != nil && e.refs > 0
	s.mu.Unlock()
	if local {
		pods = addPod(pods, s.opt.PodID)
	}
	return pods, nil
}

// podsCluster is Pods on a Redis Cluster: the members' leases live in other
// slots, so they are checked in a second, pipelined round trip.
func (s *RedisStore) podsCluster(ctx context.Context, key, now string) ([]string, error) {
	members, err := s.rdb.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: now, Max: "+inf"}).Result()
	if err != nil || len(members) == 0 {
		return nil, err
	}
	cmds := make([]*redis.IntCmd, len(members))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			cmds[i] = p.Exists(ctx, s.keys.pod(m))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	out := members[:0]
	for i, m := range members {
		if m == s.opt.PodID || cmds[i].Val() == 1 {
			out = append(out, m)
		}
	}
	return out, nil
}

func addPod(pods []string, id string) []string {
	for _, p := range pods {
		if p == id {
			return pods
		}
	}
	return append(pods, id)
}

// Route operations prepared by prepRoute.
type routeOp uint8

const (
	routeLeave    routeOp = iota // last local socket gone: ZREM
	routeReassert                // refresher: ZADD with a fresh expiry
	routeSweep                   // Close: ZREM whatever the state
)

// prepRoute is prepLock for routes.
func (s *RedisStore) prepRoute(key string, op routeOp, block bool) (b batchOp, ok, busy bool) {
	s.mu.Lock()
	e := s.routes[key]
	s.mu.Unlock()
	if e == nil {
		return b, false, false
	}
	if block {
		e.io.Lock()
	} else if !e.io.TryLock() {
		return b, false, true
	}
	s.mu.Lock()
	send := false
	switch op {
	case routeLeave:
		if e.refs == 0 {
			if e.inRedis || e.dirty {
				send = true
			} else {
				s.dropRoute(key, e)
			}
		}
	case routeReassert:
		send = e.refs > 0
	case routeSweep:
		send = true
	}
	s.mu.Unlock()
	if !send {
		e.io.Unlock()
		return b, false, false
	}
	if op == routeReassert {
		return batchOp{
			fill: func(p redis.Pipeliner) redis.Cmder {
				return routeAssertScript.EvalSha(context.Background(), p, []string{key}, s.routeAssertArgs()...)
			},
			done: func(c redis.Cmder) {
				if c.Err() != nil {
					return
				}
				s.mu.Lock()
				e.inRedis, e.dirty, e.assertedAt = true, false, time.Now()
				s.mu.Unlock()
			},
			unlock: e.io.Unlock,
		}, true, false
	}
	return batchOp{
		fill: func(p redis.Pipeliner) redis.Cmder {
			return p.ZRem(context.Background(), key, s.opt.PodID)
		},
		done: func(c redis.Cmder) {
			if c.Err() != nil {
				return
			}
			s.mu.Lock()
			e.inRedis, e.dirty = false, false
			if e.refs == 0 || op == routeSweep {
				s.dropRoute(key, e)
			}
			s.mu.Unlock()
		},
		unlock: e.io.Unlock,
	}, true, false
}

// dropRoute forgets an entry; s.mu held.
func (s *RedisStore) dropRoute(key string, e *routeEntry) {
	if s.routes[key] == e {
		delete(s.routes, key)
	}
}
