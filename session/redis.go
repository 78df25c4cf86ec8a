package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/internal/safego"
)

// NewRedisClient builds the go-redis client for cfg (DESIGN "Where it runs at
// scale"): Sentinel when MasterName is set, Cluster when Addrs holds several
// seeds, a single node otherwise. Socket timeouts come from cfg and
// ContextTimeoutEnabled makes each operation's context deadline (the store's
// per-operation timeout) bound the socket wait as well. Errors never carry
// the password.
func NewRedisClient(cfg config.Redis) (redis.UniversalClient, error) {
	quietRedisLog.Do(func() { redis.SetLogger(redisLogger{}) })
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("redis: no addrs configured (empty redis.addrs means in-memory stores)")
	}
	if cfg.MasterName == "" && len(cfg.Addrs) > 1 && cfg.DB != 0 {
		return nil, fmt.Errorf("redis: db %d set with %d addrs: Redis Cluster has only db 0", cfg.DB, len(cfg.Addrs))
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 cfg.Addrs,
		MasterName:            cfg.MasterName,
		Username:              cfg.Username,
		Password:              cfg.Password,
		DB:                    cfg.DB,
		PoolSize:              cfg.PoolSize,
		DialTimeout:           orDefault(cfg.DialTimeout, 2*time.Second),
		ReadTimeout:           orDefault(cfg.ReadTimeout, time.Second),
		WriteTimeout:          orDefault(cfg.WriteTimeout, time.Second),
		ContextTimeoutEnabled: true,
		// One retry hides a dropped pooled connection; more (and go-redis's
		// default five dial attempts 100 ms apart) would only delay noticing
		// an outage: the store degrades and probes with its own backoff.
		MaxRetries:    1,
		DialerRetries: 1,
	}), nil
}

var quietRedisLog sync.Once

// redisLogger sends go-redis's own messages (one per failed dial, and so
// on) to logx at debug level: the store already logs each outage once.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	logx.From(ctx).Debug("go-redis: " + fmt.Sprintf(format, v...))
}

// Defaults of SPEC §4–5 and config; see RedisOptions.
const (
	defaultSessionTTL      = 30 * time.Second
	defaultRefreshInterval = 10 * time.Second
	defaultRouteTTL        = 30 * time.Second
	defaultKillWait        = 3 * time.Second
	defaultRefreshBatch    = 500
	defaultOpTimeout       = time.Second
	// minGCTTL is the floor of the long garbage-collection TTL of locks and
	// route members (DESIGN "Redis cost at fleet scale"): liveness comes
	// from the pod lease, so this TTL only bounds litter.
	minGCTTL = 5 * time.Minute
	// registryAliveTTL bounds the shared registry:alive marker once no pod
	// runs (Close cannot delete it: other pods rely on it). Every refresher
	// tick pushes it back, so it never lapses under a running cluster.
	registryAliveTTL = 24 * time.Hour
)

// On-store-down policies (config session.on_store_down).
const (
	// OnStoreDownAcceptLocal accepts new sockets with local-only
	// enforcement while Redis is unreachable.
	OnStoreDownAcceptLocal = "accept_local"
	// OnStoreDownReject answers new sockets 503 while Redis is unreachable.
	OnStoreDownReject = "reject"
)

// RedisOptions configure a RedisStore. Zero values take the SPEC defaults.
type RedisOptions struct {
	// PodID is this pod's routable gRPC address (SPEC §1); required.
	PodID string
	// KeyPrefix is prepended to every key and channel (redis.key_prefix).
	KeyPrefix string
	// SessionTTL is session.ttl: a crashed owner's locks are free within it.
	SessionTTL time.Duration
	// RefreshInterval is session.refresh_interval; the pod lease lives
	// 3 × this (SPEC §4).
	RefreshInterval time.Duration
	// RouteTTL is route.ttl.
	RouteTTL time.Duration
	// KillWait is session.kill_wait: how long a newcomer waits for a live
	// holder to let go before a forced takeover.
	KillWait time.Duration
	// OnStoreDown is session.on_store_down: reject, or accept_local (the
	// default, and what any other value means; config validation is the
	// place to refuse typos).
	OnStoreDown string
	// RefreshBatch is session.refresh_batch: keys per refresh pipeline.
	RefreshBatch int
	// OpTimeout bounds one Redis round trip (default 1 s).
	OpTimeout time.Duration
	// Metrics receives the session counters; nil = a private catalogue.
	Metrics *metrics.Metrics
}

// NewRedisOptions maps the configuration sections onto RedisOptions.
func NewRedisOptions(podID string, r config.Redis, s config.Session, rt config.Route, m *metrics.Metrics) RedisOptions {
	return RedisOptions{
		PodID:           podID,
		KeyPrefix:       r.KeyPrefix,
		SessionTTL:      s.TTL,
		RefreshInterval: s.RefreshInterval,
		RouteTTL:        rt.TTL,
		KillWait:        s.KillWait,
		OnStoreDown:     s.OnStoreDown,
		RefreshBatch:    s.RefreshBatch,
		OpTimeout:       r.ReadTimeout + r.WriteTimeout,
		Metrics:         m,
	}
}

// RedisStore is the cluster implementation of the session stores: locks,
// routes, pod lease, token cache and replay guard on one Redis (SPEC §3–5).
//
// Liveness follows the pod-lease design of DESIGN "Redis cost at fleet
// scale": lock keys and route members name their pod and count only while
// that pod's lease `pod:{id}` lives; their own TTLs are long and refreshed
// lazily, so refresh traffic grows with pods, not sockets. All methods are
// safe for concurrent use.
type RedisStore struct {
	rdb  redis.UniversalClient
	opt  RedisOptions
	keys keyspace
	m    *metrics.Metrics
	// storeDown overrides opt.OnStoreDown after a reload (a string).
	storeDown atomic.Value

	leaseValue    string // this pod's start time, the lease's value
	leaseTTL      time.Duration
	lockTTL       time.Duration // long GC TTL of lock keys
	routeGCTTL    time.Duration // long GC TTL (score) of route members
	reassertLocks time.Duration // lazy re-assert period of a lock key
	reassertRoute time.Duration // lazy re-assert period of a route member
	// recoveryWindow is registry:recovering's TTL: long enough for every
	// pod's refresher (one tick, or one capped backoff probe, plus the
	// probe itself) to find its lease gone and re-register.
	recoveryWindow time.Duration
	// leaseInScript: scripts may read pod leases themselves (not on a
	// Redis Cluster, where a script only reaches its own slot).
	leaseInScript bool

	evictor  atomic.Pointer[evictorBox]
	ps       atomic.Pointer[redis.PubSub] // the kill-notice subscription, closed by Close
	healthy  atomic.Bool
	needFull atomic.Bool // next refresh re-asserts every owned key
	// announce: this pod found Redis's data lost and has not finished its
	// full re-assert; each attempt (re)opens the recovery window first.
	announce atomic.Bool
	kick     chan struct{} // wakes the refresher early (cap 1)

	mu     sync.Mutex
	locks  map[string]*lockEntry  // by session suffix
	acqGen uint64                 // successful Acquires so far (lockEntry.acqGen)
	routes map[string]*routeEntry // by route key
	jobs   []job                  // background releases, see worker
	jobSig chan struct{}          // cap 1

	// beforeRouteRemove is a test seam: when set (before Start, in tests
	// only) it is called with a route key once a ZREM of this pod's member
	// is decided — the entry's io lock held, the member still in Redis —
	// and before the ZREM is sent, so a test can hold a removal in flight.
	beforeRouteRemove func(key string)

	life    sync.Mutex // guards cancel, started, closed
	cancel  context.CancelFunc
	started bool
	closed  bool
	wg      sync.WaitGroup
}

type evictorBox struct{ e Evictor }

// NewRedisStore returns a store over client; call Start before use and
// Close on shutdown. It does not own client: closing it is the caller's.
func NewRedisStore(client redis.UniversalClient, opts RedisOptions) *RedisStore {
	opts.SessionTTL = orDefault(opts.SessionTTL, defaultSessionTTL)
	opts.RefreshInterval = orDefault(opts.RefreshInterval, defaultRefreshInterval)
	opts.RouteTTL = orDefault(opts.RouteTTL, defaultRouteTTL)
	opts.KillWait = orDefault(opts.KillWait, defaultKillWait)
	opts.OpTimeout = orDefault(opts.OpTimeout, defaultOpTimeout)
	if opts.RefreshBatch <= 0 {
		opts.RefreshBatch = defaultRefreshBatch
	}
	if opts.OnStoreDown != OnStoreDownReject {
		opts.OnStoreDown = OnStoreDownAcceptLocal
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	_, cluster := client.(*redis.ClusterClient)
	s := &RedisStore{
		rdb:           client,
		opt:           opts,
		keys:          keyspace{prefix: opts.KeyPrefix},
		m:             opts.Metrics,
		leaseValue:    time.Now().UTC().Format(time.RFC3339Nano),
		leaseTTL:      3 * opts.RefreshInterval,
		lockTTL:       max(10*opts.SessionTTL, minGCTTL),
		routeGCTTL:    max(10*opts.RouteTTL, minGCTTL),
		leaseInScript: !cluster,
		kick:          make(chan struct{}, 1),
		locks:         make(map[string]*lockEntry),
		routes:        make(map[string]*routeEntry),
		jobSig:        make(chan struct{}, 1),
	}
	// A third of the GC TTL leaves two more tries before a key lapses.
	s.reassertLocks = s.lockTTL / 3
	s.reassertRoute = s.routeGCTTL / 3
	s.recoveryWindow = opts.RefreshInterval + max(opts.RefreshInterval/2, opts.OpTimeout)
	s.healthy.Store(true)
	return s
}

// Locker returns the single-session lock backed by this store.
func (s *RedisStore) Locker() Locker { return (*redisLocker)(s) }

// Routes returns the route registry backed by this store.
func (s *RedisStore) Routes() Routes { return (*redisRoutes)(s) }

// SetEvictor installs what closes local sockets on a takeover. The reactor
// is built after the store, hence a setter. Safe for concurrent use.
func (s *RedisStore) SetEvictor(e Evictor) { s.evictor.Store(&evictorBox{e}) }

// Healthy reports whether the store is connected: false from the first
// outage error until a refresher probe succeeds and every owned key has
// been re-asserted (degraded mode); for /ready.
func (s *RedisStore) Healthy() bool { return s.healthy.Load() }

// PodID returns the pod id this store acts for.
func (s *RedisStore) PodID() string { return s.opt.PodID }

func (s *RedisStore) evict(key string) {
	if b := s.evictor.Load(); b != nil && b.e != nil {
		b.e.Evict(key)
	}
}

// opCtx bounds one Redis round trip.
func (s *RedisStore) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opt.OpTimeout)
}

// run runs a script by SHA; after a Redis restart (NOSCRIPT) it reloads
// every script once and retries, so later calls stay one round trip.
func (s *RedisStore) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := sc.EvalSha(ctx, s.rdb, keys, args...)
	if isNoScript(c.Err()) {
		if err := s.loadScripts(ctx); err != nil {
			return sc.Eval(ctx, s.rdb, keys, args...)
		}
		c = sc.EvalSha(ctx, s.rdb, keys, args...)
	}
	return c
}

func (s *RedisStore) loadScripts(ctx context.Context) error {
	for _, sc := range allScripts {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return err
		}
	}
	return nil
}

// pipe executes fill's commands as one pipeline; when a script was missing
// (Redis restarted) it reloads the scripts and runs the batch once more;
// every command the refresher pipelines is idempotent.
func (s *RedisStore) pipe(ctx context.Context, fill func(p redis.Pipeliner)) ([]redis.Cmder, error) {
	fn := func(p redis.Pipeliner) error { fill(p); return nil }
	cmds, err := s.rdb.Pipelined(ctx, fn)
	if err != nil && anyNoScript(cmds) {
		if lerr := s.loadScripts(ctx); lerr == nil {
			cmds, err = s.rdb.Pipelined(ctx, fn)
		}
	}
	return cmds, err
}

func anyNoScript(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if isNoScript(c.Err()) {
			return true
		}
	}
	return false
}

func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

// fail records a failed Redis operation: it is counted under op and, when
// it means Redis is unreachable, the store degrades (SPEC §4, issue 3 §6).
// It reports whether err was an outage.
func (s *RedisStore) fail(ctx context.Context, op string, err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return false
	}
	if ctx.Err() != nil {
		// The caller's own context ended (a handshake deadline, Close):
		// not Redis's fault. Our per-operation timeout is a child context,
		// so its expiry still counts below.
		return false
	}
	s.m.RedisErrors.WithLabelValues(op).Inc()
	if !isOutage(err) {
		logx.From(ctx).Error("redis operation failed", slog.String("op", op), slog.String("error", err.Error()))
		return false
	}
	s.setHealthy(ctx, false, op, err)
	return true
}

// setHealthy flips the degraded state, logging each change once
// (issue 3 §6); going down wakes the refresher to probe.
func (s *RedisStore) setHealthy(ctx context.Context, up bool, op string, err error) {
	if s.healthy.Swap(up) == up {
		return
	}
	if up {
		// Only the refresher brings the store up, after it re-asserted
		// every owned key: nothing left to wake it for.
		s.m.Degraded.Set(0)
		logx.From(ctx).Warn("session store reachable again; owned keys re-asserted",
			slog.String("pod_id", s.opt.PodID))
		return
	}
	s.m.Degraded.Set(1)
	logx.From(ctx).Warn("session store unreachable; degraded mode",
		slog.String("pod_id", s.opt.PodID), slog.String("op", op),
		slog.String("error", err.Error()), slog.String("on_store_down", s.onStoreDown()))
	s.wake()
}

func (s *RedisStore) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// isOutage tells "Redis is unreachable or not serving" from a bug (a script
// error, a wrong type): only the former degrades the store.
func isOutage(err error) bool {
	var ne net.Error
	switch {
	case errors.As(err, &ne),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout),
		redis.IsLoadingError(err), redis.IsReadOnlyError(err),
		redis.IsClusterDownError(err), redis.IsTryAgainError(err),
		redis.IsMasterDownError(err), redis.IsMaxClientsError(err):
		return true
	}
	return false
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// jobKind says what a background job gives up.
type jobKind uint8

const (
	jobReleaseLock jobKind = iota // Release or failed Acquire: compare-and-delete
	jobYieldLock                  // kill notice: compare-and-delete unless re-acquired since
	jobStaleLock                  // kill notice for a key we hold no entry for
	jobLeaveRoute                 // last local socket left: ZREM this pod
)

type job struct {
	kind jobKind
	key  string // lock suffix or route key
	seq  uint64 // jobYieldLock: the entry's acqGen at notice time
}

// enqueue hands a release to the background worker; never blocks (Release
// and Leave are called on event loops).
func (s *RedisStore) enqueue(j job) {
	s.mu.Lock()
	s.jobs = append(s.jobs, j)
	s.mu.Unlock()
	select {
	case s.jobSig <- struct{}{}:
	default:
	}
}

// jobRetryDelay spaces retries of a job whose key is busy (an Acquire or
// Join holds it), so the worker never spins.
const jobRetryDelay = 25 * time.Millisecond

// worker completes releases in pipelined batches. A job whose key is busy
// is retried shortly; one that fails because Redis is down stays in the
// tables and the refresher finishes it after recovery.
func (s *RedisStore) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.jobSig:
		}
		for {
			s.mu.Lock()
			batch := s.jobs
			if len(batch) > s.opt.RefreshBatch {
				batch = batch[:s.opt.RefreshBatch]
				s.jobs = append([]job(nil), s.jobs[s.opt.RefreshBatch:]...)
			} else {
				s.jobs = nil
			}
			s.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			safego.Run(ctx, "session.release", func() { s.runJobs(ctx, batch) })
		}
	}
}

func (s *RedisStore) retryLater(j job) {
	time.AfterFunc(jobRetryDelay, func() {
		safego.Run(context.Background(), "session.release_retry", func() { s.enqueue(j) })
	})
}

// batchOp is one key's share of a pipelined batch, prepared while holding
// that key's io mutex (so no Acquire, Join or release of the same key runs
// between the decision and the write).
type batchOp struct {
	fill   func(p redis.Pipeliner) redis.Cmder // queues the command
	done   func(c redis.Cmder)                 // applies the reply (c.Err() may be set)
	unlock func()                              // releases the key's io mutex
}

// runBatch sends ops as one pipeline and applies the replies. On an outage
// the replies are not applied (the entries stay due and are retried) and it
// reports false.
func (s *RedisStore) runBatch(ctx context.Context, op string, ops []batchOp) bool {
	if len(ops) == 0 {
		return true
	}
	defer func() {
		for _, o := range ops {
			o.unlock()
		}
	}()
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	cmds := make([]redis.Cmder, len(ops))
	_, err := s.pipe(cctx, func(p redis.Pipeliner) {
		for i, o := range ops {
			cmds[i] = o.fill(p)
		}
	})
	if err != nil && !errors.Is(err, redis.Nil) && s.fail(ctx, op, err) {
		return false
	}
	for i, o := range ops {
		o.done(cmds[i])
	}
	return err == nil || errors.Is(err, redis.Nil)
}

// runJobs turns queued releases into one pipelined batch.
// While Redis is down the jobs are dropped: their entries stay in the
// tables and the refresher completes them after recovery.
func (s *RedisStore) runJobs(ctx context.Context, batch []job) {
	if !s.Healthy() {
		return
	}
	ops := make([]batchOp, 0, len(batch))
	for _, j := range batch {
		var (
			op       batchOp
			ok, busy bool
		)
		switch j.kind {
		case jobReleaseLock:
			op, ok, busy = s.prepLock(j.key, lockRelease, 0, false)
		case jobYieldLock:
			op, ok, busy = s.prepLock(j.key, lockYield, j.seq, false)
		case jobStaleLock:
			op, ok, busy = s.prepLock(j.key, lockStale, 0, false)
		case jobLeaveRoute:
			op, ok, busy = s.prepRoute(j.key, routeLeave, false)
		}
		if busy {
			s.retryLater(j)
			continue
		}
		if ok {
			ops = append(ops, op)
		}
	}
	s.runBatch(ctx, "release", ops)
}

// onStoreDown is session.on_store_down as last set (SetOnStoreDown).
func (s *RedisStore) onStoreDown() string {
	if v, ok := s.storeDown.Load().(string); ok {
		return v
	}
	return s.opt.OnStoreDown
}

// SetOnStoreDown changes session.on_store_down on a running store (SIGHUP):
// reject or accept_local; anything else means accept_local. Safe for
// concurrent use.
func (s *RedisStore) SetOnStoreDown(mode string) {
	if mode != OnStoreDownReject {
		mode = OnStoreDownAcceptLocal
	}
	s.storeDown.Store(mode)
}
