package session

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/internal/safego"
)

// RedisOptions configure RedisStores. Zero values take the SPEC defaults.
// They are plain values: the app maps its configuration onto them (as it
// does for reactor.Limits), so this package does not know the config file.
type RedisOptions struct {
	// PodID is this pod's routable gRPC address (SPEC §1); required.
	PodID string
	// KeyPrefix is prepended to every key and channel (redis.key_prefix).
	KeyPrefix string
	// RefreshInterval is session.refresh_interval; the pod lease lives
	// 3 × this (SPEC §4).
	RefreshInterval time.Duration
	// OnStoreDown is session.on_store_down: reject, or accept_local (the
	// default, and what any other value means; config validation is the
	// place to refuse typos).
	OnStoreDown string
	// RefreshBatch is session.refresh_batch: keys per refresh pipeline.
	RefreshBatch int
	// OpTimeout bounds one Redis round trip (default 1 s).
	OpTimeout time.Duration
	// GCTTL is session.gc_ttl: the Redis TTL of lock keys and route
	// members (default 24 h; never below 10 × session.ttl, 10 × route.ttl
	// for routes). Their liveness is the pod lease (DESIGN "Redis cost at
	// fleet scale"), so this TTL only bounds how long a crashed pod's keys
	// stay in Redis memory; each owned key is re-written once per a third
	// of it, the one refresh cost that grows with sockets.
	GCTTL time.Duration
	// Metrics receives the session counters; nil = a private catalogue.
	Metrics *metrics.Metrics
	// Locks are the single-session lock's own settings.
	Locks RedisLockOptions
	// Routes are the route registry's own settings.
	Routes RedisRouteOptions
}

// RedisLockOptions configure the single-session lock (SPEC §4).
type RedisLockOptions struct {
	// SessionTTL is session.ttl: a crashed owner's locks are free within it.
	SessionTTL time.Duration
	// KillWait is session.kill_wait: how long a newcomer waits for a live
	// holder to let go before a forced takeover.
	KillWait time.Duration
}

// RedisRouteOptions configure the route registry (SPEC §5).
type RedisRouteOptions struct {
	// TTL is route.ttl.
	TTL time.Duration
}

// RedisStores are the cluster implementations of the session stores on one
// Redis (SPEC §3–5): the single-session lock, the route registry, the
// token cache and the replay guard, each its own type over one shared core
// (client, scripts, health, release queue), plus the pod lease that makes
// this pod's locks and route members count. RedisStores builds them and
// starts and stops their background work together: the refresher (lease
// and lazy re-asserts), the kill-notice listener and the release worker.
// All methods are safe for concurrent use.
type RedisStores struct {
	core     *redisCore
	registry *redisRegistry
	locks    *redisLocker
	routes   *redisRoutes
	tokens   *redisTokenCache
	replay   *redisReplayGuard

	life    sync.Mutex // guards cancel, started, closed
	cancel  context.CancelFunc
	started bool
	closed  bool
	wg      sync.WaitGroup
}

// NewRedisStores returns the stores over client; call Start before use and
// Close on shutdown. It does not own client: closing it is the caller's.
func NewRedisStores(client redis.UniversalClient, opts RedisOptions) *RedisStores {
	c := newRedisCore(client, opts)
	reg := newRedisRegistry(c)
	return &RedisStores{
		core:     c,
		registry: reg,
		locks:    newRedisLocker(c, reg, opts.Locks),
		routes:   newRedisRoutes(c, reg, opts.Routes),
		tokens:   &redisTokenCache{c: c},
		replay:   &redisReplayGuard{c: c},
	}
}

// Locker returns the single-session lock.
func (s *RedisStores) Locker() Locker { return s.locks }

// Routes returns the route registry.
func (s *RedisStores) Routes() Routes { return s.routes }

// TokenCache returns the cluster-wide token cache.
func (s *RedisStores) TokenCache() TokenCache { return s.tokens }

// ReplayGuard returns the cluster-wide replay guard.
func (s *RedisStores) ReplayGuard() ReplayGuard { return s.replay }

// SetEvictor installs what closes local sockets on a takeover. The reactor
// is built after the stores, hence a setter.
func (s *RedisStores) SetEvictor(e Evictor) { s.locks.setEvictor(e) }

// Healthy reports whether Redis is reachable: false from the first outage
// error until a refresher probe succeeds and every owned key has been
// re-asserted (degraded mode); for /ready.
func (s *RedisStores) Healthy() bool { return s.core.isHealthy() }

// PodID returns the pod id the stores act for.
func (s *RedisStores) PodID() string { return s.core.opt.PodID }

// SetOnStoreDown changes session.on_store_down on running stores (SIGHUP):
// reject or accept_local; anything else means accept_local.
func (s *RedisStores) SetOnStoreDown(mode string) { s.core.setOnStoreDown(mode) }

// Start loads the scripts, takes the pod lease, subscribes to kill notices
// and starts the refresher and the release worker. They run until Close or
// until ctx ends; ending ctx without Close is a crash as far as Redis can
// tell (nothing is cleaned up, the lease lapses). If Redis is unreachable,
// Start still succeeds in degraded mode and the refresher keeps probing.
func (s *RedisStores) Start(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.started {
		return errors.New("session: redis store already started")
	}
	if s.core.opt.PodID == "" {
		return errors.New("session: redis store needs a pod id")
	}
	s.started = true
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel = cancel

	c := s.core
	cctx, ccancel := c.opCtx(ctx)
	err := c.loadScripts(cctx)
	if err == nil {
		err = s.registry.register(cctx)
	}
	ccancel()
	if err != nil && !c.fail(ctx, "start", err) {
		cancel()
		return err
	}
	var ps *redis.PubSub
	if c.isHealthy() {
		if ps, err = s.locks.subscribe(runCtx); err != nil {
			c.fail(ctx, "subscribe", err)
		}
	}
	if !c.isHealthy() {
		c.needFull.Store(true)
	}
	s.wg.Add(3)
	safego.Go(runCtx, "session.refresher", func(ctx context.Context) { defer s.wg.Done(); s.refresher(ctx) })
	safego.Go(runCtx, "session.kill_listener", func(ctx context.Context) { defer s.wg.Done(); s.locks.listen(ctx, ps) })
	safego.Go(runCtx, "session.release_worker", func(ctx context.Context) { defer s.wg.Done(); c.worker(ctx) })
	return nil
}

// Close stops the background work and gives up everything this pod holds:
// every session lock it owns (compare-and-delete), every route membership
// and its pod lease, so an idle cluster leaves no keys behind (SPEC §4, §6).
// Call it after the sockets are closed.
func (s *RedisStores) Close(ctx context.Context) error {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	s.life.Unlock()
	s.locks.closeSubscription() // unblocks the listener's read
	done := make(chan struct{})
	safego.Go(ctx, "session.close_wait", func(context.Context) { s.wg.Wait(); close(done) })
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.sweep(ctx)
}

// sweep deletes every key this pod wrote, in pipelined batches, then its
// lease.
func (s *RedisStores) sweep(ctx context.Context) error {
	s.core.dropJobs()
	ops := append(s.locks.sweepOps(), s.routes.sweepOps()...)
	var errs []error
	for len(ops) > 0 {
		n := min(len(ops), s.core.opt.RefreshBatch)
		if !s.core.runBatch(ctx, "close", ops[:n]) {
			errs = append(errs, errors.New("session: releasing keys on close failed"))
		}
		ops = ops[n:]
	}
	if err := s.registry.release(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
