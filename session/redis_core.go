package session

import (
	"context"
	"errors"
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
	// minGCTTL is the floor of the long garbage-collection TTL of locks and
	// route members (DESIGN "Redis cost at fleet scale"): liveness comes
	// from the pod lease, so this TTL only bounds litter.
	minGCTTL = 5 * time.Minute
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

	jobsMu sync.Mutex
	jobs   []job         // background releases, see worker
	jobSig chan struct{} // cap 1
}

// newRedisCore applies the defaults of the shared options and builds the
// core over client (which it does not own).
func newRedisCore(client redis.UniversalClient, opts RedisOptions) *redisCore {
	opts.RefreshInterval = orDefault(opts.RefreshInterval, defaultRefreshInterval)
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
	c := &redisCore{
		rdb:           client,
		opt:           opts,
		keys:          keyspace{prefix: opts.KeyPrefix},
		m:             opts.Metrics,
		leaseInScript: !cluster,
		kick:          make(chan struct{}, 1),
		jobSig:        make(chan struct{}, 1),
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

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
