package session

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/logx"
)

// redisRoutes is the route registry of SPEC §5 on Redis: each route is a
// sorted set of pod ids. A member counts while its pod lease lives and its
// score (a long garbage-collection expiry, unix ms) has not passed, so a
// crashed pod drops out within its lease TTL even while other pods keep
// refreshing the same route (DESIGN invariant 6).
//
// Contract with the caller: Leave is called once per successful Join; a
// Join that returned an error is not left. All methods are safe for
// concurrent use.
type redisRoutes struct {
	c   *redisCore
	reg *redisRegistry // members' leases and the recovery markers

	gcTTL time.Duration // long GC TTL (score) of route members (session.gc_ttl)
	// reassertEvery is the lazy re-assert period of a member: a third of
	// the GC TTL leaves two more tries before a member lapses.
	reassertEvery time.Duration

	mu      sync.Mutex
	entries map[string]*routeEntry // by route key

	// beforeRemove is a test seam: when set (before Start, in tests only)
	// it is called with a route key once a ZREM of this pod's member is
	// decided (the entry's io lock held, the member still in Redis) and
	// before the ZREM is sent, so a test can hold a removal in flight.
	beforeRemove func(key string)
}

// newRedisRoutes applies the route defaults to opts.
func newRedisRoutes(c *redisCore, reg *redisRegistry, opts RedisRouteOptions) *redisRoutes {
	gc := c.gcTTL(orDefault(opts.TTL, defaultRouteTTL))
	return &redisRoutes{
		c:             c,
		reg:           reg,
		gcTTL:         gc,
		reassertEvery: gc / 3,
		entries:       make(map[string]*routeEntry),
	}
}

// routeEntry is this pod's membership of one route.
type routeEntry struct {
	io      sync.Mutex // serializes this pod's writes to the member
	refs    int        // local sockets on the route
	inRedis bool       // our member was written (and not removed since)
	dirty   bool       // joined while Redis was down: not yet written
	// removing: a ZREM of our member is decided or in flight (set under
	// r.mu with io held; cleared just before io is released). inRedis
	// still reads true until the ZREM's reply is applied, so without this
	// a Join racing the removal would trust inRedis, skip the write and
	// leave a connected socket's route unregistered until the next
	// refresh (issue 9 finding 5).
	removing bool
	due      time.Time // next lazy re-assert (nextDue); zero: never written
}

// Join implements Routes: the first local socket on a route registers
// this pod before Join returns (one round trip, routeAssertScript); later
// sockets on the route cost nothing. A Join that finds the member being
// removed (the previous last socket's Leave) waits for the removal under
// the entry's io lock and writes the member again.
func (r *redisRoutes) Join(ctx context.Context, rt Route) error {
	key := r.c.keys.route(rt)
	r.mu.Lock()
	e := r.entries[key]
	if e == nil {
		e = &routeEntry{}
		r.entries[key] = e
	}
	e.refs++
	need := !e.inRedis || e.dirty || e.removing
	r.mu.Unlock()
	if !need {
		return nil
	}
	if !r.c.isHealthy() {
		r.markRouteDirty(e)
		return nil
	}
	e.io.Lock()
	defer e.io.Unlock()
	// Under io no removal is in flight: its reply, if it came, has been
	// applied (inRedis false), so this re-check is exact.
	r.mu.Lock()
	need = (!e.inRedis || e.dirty) && e.refs > 0
	r.mu.Unlock()
	if !need {
		return nil
	}
	cctx, cancel := r.c.opCtx(ctx)
	defer cancel()
	if err := r.c.run(cctx, routeAssertScript, []string{key}, r.routeAssertArgs()...).Err(); err != nil {
		if r.c.fail(ctx, "join", err) {
			// Existing and new sockets keep working while Redis is down;
			// the refresher writes the member after recovery.
			r.markRouteDirty(e)
			return nil
		}
		r.mu.Lock()
		e.refs--
		idle := e.refs == 0
		r.mu.Unlock()
		if idle {
			r.c.enqueue(r.job(key))
		}
		return codec.NewError(codec.CodeSubscriptionFailure, "route registration failed")
	}
	r.mu.Lock()
	e.inRedis, e.dirty = true, false
	e.due = nextDue(r.c.now(), e.due, r.reassertEvery)
	r.mu.Unlock()
	return nil
}

func (r *redisRoutes) markRouteDirty(e *routeEntry) {
	r.mu.Lock()
	e.dirty = true
	r.mu.Unlock()
}

// routeAssertArgs are routeAssertScript's arguments for a write now.
func (r *redisRoutes) routeAssertArgs() []any {
	now := time.Now()
	return []any{r.c.opt.PodID, now.Add(r.gcTTL).UnixMilli(), now.UnixMilli(), r.gcTTL.Milliseconds()}
}

// Leave implements Routes. Non-blocking: the last local socket's ZREM runs
// on the background worker.
func (r *redisRoutes) Leave(rt Route) {
	key := r.c.keys.route(rt)
	r.mu.Lock()
	e := r.entries[key]
	if e == nil || e.refs == 0 {
		r.mu.Unlock()
		return
	}
	e.refs--
	idle := e.refs == 0
	r.mu.Unlock()
	if idle {
		r.c.enqueue(r.job(key))
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
	if !r.c.isHealthy() {
		return nil, errStoreDown
	}
	key := r.c.keys.route(rt)
	cctx, cancel := r.c.opCtx(ctx)
	defer cancel()
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	var (
		pods  []string
		state int64
		err   error
	)
	if r.c.leaseInScript {
		pods, state, err = r.podsScripted(cctx, key, now)
	} else {
		pods, state, err = r.podsCluster(cctx, key, now)
	}
	if err != nil {
		r.c.fail(ctx, "pods", err)
		return nil, fmt.Errorf("route lookup: %w", err)
	}
	if state == 0 && r.reg.switchSuspect() {
		// The reply may come from a new master that lacks writes the old
		// one acknowledged (failover.go): hold the event, like a recovery.
		state = podsRecovering
	}
	if state != 0 {
		if state == podsRecoveryStarted {
			logx.From(ctx).Warn("route registry lost its data (Redis restarted or flushed); lookups wait for every pod to re-register",
				slog.String("pod_id", r.c.opt.PodID), slog.Duration("window", r.reg.recoveryWindow))
		}
		return nil, errRegistryRecovering
	}
	r.mu.Lock()
	e := r.entries[key]
	local := e != nil && e.refs > 0
	r.mu.Unlock()
	if local {
		pods = addPod(pods, r.c.opt.PodID)
	}
	return pods, nil
}
