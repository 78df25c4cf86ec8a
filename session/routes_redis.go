package session

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/logx"
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
	io      sync.Mutex // serializes this pod's writes to the member
	refs    int        // local sockets on the route
	inRedis bool       // our member was written (and not removed since)
	dirty   bool       // joined while Redis was down: not yet written
	// removing: a ZREM of our member is decided or in flight (set under
	// s.mu with io held; cleared just before io is released). inRedis
	// still reads true until the ZREM's reply is applied, so without this
	// a Join racing the removal would trust inRedis, skip the write and
	// leave a connected socket's route unregistered until the next
	// refresh (issue 9 finding 5).
	removing   bool
	assertedAt time.Time // last successful ZADD
}

// Join implements Routes: the first local socket on a route registers
// this pod before Join returns (one round trip, routeAssertScript); later
// sockets on the route cost nothing. A Join that finds the member being
// removed (the previous last socket's Leave) waits for the removal under
// the entry's io lock and writes the member again.
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
	need := !e.inRedis || e.dirty || e.removing
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
	// Under io no removal is in flight: its reply, if it came, has been
	// applied (inRedis false), so this re-check is exact.
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
// of waiting out a timeout per event. After Redis lost its data it fails
// the same way until the recovery window closes (see podsScript): until
// every pod re-registered, a member list would silently miss pods and
// their sockets would lose the event.
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
		pods  []string
		state int64
		err   error
	)
	if s.leaseInScript {
		pods, state, err = s.podsScripted(cctx, key, now)
	} else {
		pods, state, err = s.podsCluster(cctx, key, now)
	}
	if err != nil {
		s.fail(ctx, "pods", err)
		return nil, fmt.Errorf("route lookup: %w", err)
	}
	if state != 0 {
		if state == podsRecoveryStarted {
			logx.From(ctx).Warn("route registry lost its data (Redis restarted or flushed); lookups wait for every pod to re-register",
				slog.String("pod_id", s.opt.PodID), slog.Duration("window", s.recoveryWindow))
		}
		return nil, errRegistryRecovering
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

// errRegistryRecovering is a store-down error: the dispatcher treats it as
// Redis being unreachable (NAK with a delay).
var errRegistryRecovering = fmt.Errorf("%w: route registry recovering after Redis lost its data", errStoreDown)

// podsScripted is Pods in one podsScript round trip; state is 0 or one of
// the podsRecovery* replies.
func (s *RedisStore) podsScripted(ctx context.Context, key, now string) (pods []string, state int64, err error) {
	res, err := s.run(ctx, podsScript, []string{key, s.keys.registryAlive(), s.keys.registryRecovering()},
		now, s.keys.podPrefix(), s.opt.PodID, s.recoveryWindow.Milliseconds(), registryAliveTTL.Milliseconds()).Result()
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
func (s *RedisStore) podsCluster(ctx context.Context, key, now string) (pods []string, state int64, err error) {
	var (
		alive, recovering *redis.IntCmd
		members           *redis.StringSliceCmd
	)
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		alive = p.Exists(ctx, s.keys.registryAlive())
		recovering = p.Exists(ctx, s.keys.registryRecovering())
		members = p.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: now, Max: "+inf"})
		return nil
	}); err != nil {
		return nil, 0, err
	}
	switch {
	case alive.Val() == 0:
		// Same order as podsScript: recovering before alive.
		if err := s.rdb.Set(ctx, s.keys.registryRecovering(), "1", s.recoveryWindow).Err(); err != nil {
			return nil, 0, err
		}
		if err := s.rdb.Set(ctx, s.keys.registryAlive(), "1", registryAliveTTL).Err(); err != nil {
			return nil, 0, err
		}
		return nil, podsRecoveryStarted, nil
	case recovering.Val() == 1:
		return nil, podsRecovering, nil
	}
	list := members.Val()
	if len(list) == 0 {
		return nil, 0, nil
	}
	cmds := make([]*redis.IntCmd, len(list))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range list {
			cmds[i] = p.Exists(ctx, s.keys.pod(m))
		}
		return nil
	}); err != nil {
		return nil, 0, err
	}
	out := list[:0]
	for i, m := range list {
		if m == s.opt.PodID || cmds[i].Val() == 1 {
			out = append(out, m)
		}
	}
	return out, 0, nil
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
	if send && op != routeReassert {
		e.removing = true
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
	if h := s.beforeRouteRemove; h != nil {
		h(key)
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
		// unlock runs whether or not done did (an outage skips it), so
		// removing never outlives the io lock: a Join waiting on io then
		// re-checks inRedis, and one arriving later trusts inRedis again.
		unlock: func() {
			s.mu.Lock()
			e.removing = false
			s.mu.Unlock()
			e.io.Unlock()
		},
	}, true, false
}

// dropRoute forgets an entry; s.mu held.
func (s *RedisStore) dropRoute(key string, e *routeEntry) {
	if s.routes[key] == e {
		delete(s.routes, key)
	}
}
