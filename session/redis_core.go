package session

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/metrics"
)

// Defaults of SPEC §4–5 and config; see RedisOptions.
const (
	defaultSessionTTL      = 30 * time.Second
	defaultRefreshInterval = 10 * time.Second
	defaultRouteTTL        = 30 * time.Second
	defaultKillWait        = 3 * time.Second
	defaultRefreshBatch    = 500
	defaultOpTimeout       = time.Second
	// defaultGCTTL is the garbage-collection TTL of lock keys and route
	// members (session.gc_ttl). Liveness comes from the pod lease, so this
	// TTL only bounds a crashed pod's litter, and each owned key is
	// re-written once per a third of it: at 24 h that is 42 000 keys per
	// 8 h, ~1.5 commands/s per pod of 20 000 sockets (perf/redis-cost.md),
	// against ~420/s at the former max(10 × ttl, 5 min).
	defaultGCTTL = 24 * time.Hour
	// gcTTLPerTTL is the floor of the GC TTL in units of session.ttl
	// (route.ttl for routes): the re-assert period, a third of the GC TTL,
	// stays several refresh intervals long.
	gcTTLPerTTL = 10
)

// redisCore is what every Redis store of a pod shares (centrifuge's
// broker_redis and presence_redis share a core the same way): the client,
// script loading, pipelines, the health state and the background release
// queue. It knows no store; the stores and RedisStores sit on top of it.
// All methods are safe for concurrent use.
type redisCore struct {
	rdb  redis.UniversalClient
	opt  RedisOptions // the shared fields, defaults applied
	keys keyspace
	m    *metrics.Metrics
	// leaseInScript: scripts may read pod leases themselves (not on a
	// Redis Cluster, where a script only reaches its own slot).
	leaseInScript bool

	// storeDown overrides opt.OnStoreDown after a reload (a string).
	storeDown atomic.Value
	healthy   atomic.Bool
	needFull  atomic.Bool   // next refresh re-asserts every owned key
	kick      chan struct{} // wakes the refresher early (cap 1)
	// now is the clock of re-assert due times (a test seam; time.Now).
	// Route member scores and Redis TTLs use real time regardless.
	now func() time.Time

	jobsMu sync.Mutex
	jobs   []job         // background releases, see worker
	jobSig chan struct{} // cap 1
}

// newRedisCore applies the defaults of the shared options and builds the
// core over client (which it does not own).
func newRedisCore(client redis.UniversalClient, opts RedisOptions) *redisCore {
	opts.RefreshInterval = orDefault(opts.RefreshInterval, defaultRefreshInterval)
	opts.OpTimeout = orDefault(opts.OpTimeout, defaultOpTimeout)
	opts.GCTTL = orDefault(opts.GCTTL, defaultGCTTL)
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
	c := &redisCore{
		rdb:           client,
		opt:           opts,
		keys:          keyspace{prefix: opts.KeyPrefix},
		m:             opts.Metrics,
		leaseInScript: !cluster,
		kick:          make(chan struct{}, 1),
		jobSig:        make(chan struct{}, 1),
		now:           time.Now,
	}
	c.healthy.Store(true)
	return c
}

// opCtx bounds one Redis round trip.
func (c *redisCore) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opt.OpTimeout)
}

// run runs a script by SHA; after a Redis restart (NOSCRIPT) it reloads
// every script once and retries, so later calls stay one round trip.
func (c *redisCore) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	cmd := sc.EvalSha(ctx, c.rdb, keys, args...)
	if isNoScript(cmd.Err()) {
		if err := c.loadScripts(ctx); err != nil {
			return sc.Eval(ctx, c.rdb, keys, args...)
		}
		cmd = sc.EvalSha(ctx, c.rdb, keys, args...)
	}
	return cmd
}

func (c *redisCore) loadScripts(ctx context.Context) error {
	for _, sc := range allScripts {
		if err := sc.Load(ctx, c.rdb).Err(); err != nil {
			return err
		}
	}
	return nil
}

// pipe executes fill's commands as one pipeline; when a script was missing
// (Redis restarted) it reloads the scripts and runs the batch once more;
// every command the refresher pipelines is idempotent.
func (c *redisCore) pipe(ctx context.Context, fill func(p redis.Pipeliner)) ([]redis.Cmder, error) {
	fn := func(p redis.Pipeliner) error { fill(p); return nil }
	cmds, err := c.rdb.Pipelined(ctx, fn)
	if err != nil && anyNoScript(cmds) {
		if lerr := c.loadScripts(ctx); lerr == nil {
			cmds, err = c.rdb.Pipelined(ctx, fn)
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

// gcTTL is the GC TTL of keys whose liveness TTL is ttl: session.gc_ttl,
// never below gcTTLPerTTL × ttl.
func (c *redisCore) gcTTL(ttl time.Duration) time.Duration {
	return max(c.opt.GCTTL, gcTTLPerTTL*ttl)
}

// nextDue is when a key written at now is next re-asserted, every being
// the re-assert period and due the time the key was due (zero: never
// written). A key re-written because it was due keeps its phase: one
// period on. A key written early — by Acquire or Join, by the full
// re-assert after a Redis restart, or as a write owed since an outage —
// gets a uniformly random point within one period, so keys written
// together (a reconnect wave after a deploy, a full re-assert) do not come
// due together: each tick re-asserts about owned keys × interval / period
// of them, never all of them at once. Any point within the period is safe:
// the key's TTL is three periods.
func nextDue(now, due time.Time, every time.Duration) time.Time {
	if !due.IsZero() && !now.Before(due) {
		return now.Add(every)
	}
	if every <= 0 {
		return now
	}
	return now.Add(rand.N(every))
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
