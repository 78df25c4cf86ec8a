package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/logx"
)

// RedisClientOptions say how to reach Redis (the redis.* config keys but
// key_prefix, which is the stores' RedisOptions.KeyPrefix). Zero timeouts
// take the defaults of NewRedisClient.
type RedisClientOptions struct {
	// Addrs are host:port seeds: Sentinel addresses when MasterName is
	// set, Cluster seeds when there are several, else one node.
	Addrs []string
	// MasterName is the Sentinel master name; empty = no Sentinel.
	MasterName string
	// Username and Password are the Redis ACL credentials.
	Username, Password string
	// DB is the database number (only 0 on a Cluster).
	DB int
	// PoolSize is the connection pool size; 0 = the go-redis default.
	PoolSize int
	// DialTimeout, ReadTimeout and WriteTimeout bound the socket waits
	// (defaults 2 s, 1 s, 1 s).
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
}

// NewRedisClient builds the go-redis client for cfg (DESIGN "Where it runs at
// scale"): Sentinel when MasterName is set, Cluster when Addrs holds several
// seeds or its one address answers INFO with cluster_enabled:1 (a managed
// service's configuration endpoint, or one node named by hand), a single
// node otherwise. Socket timeouts come from cfg and
// ContextTimeoutEnabled makes each operation's context deadline (the store's
// per-operation timeout) bound the socket wait as well. Errors never carry
// the password.
func NewRedisClient(cfg RedisClientOptions) (redis.UniversalClient, error) {
	quietRedisLog.Do(func() { redis.SetLogger(redisLogger{}) })
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("redis: no addrs configured (empty redis.addrs means in-memory stores)")
	}
	if cfg.MasterName == "" && len(cfg.Addrs) > 1 && cfg.DB != 0 {
		return nil, fmt.Errorf("redis: db %d set with %d addrs: Redis Cluster has only db 0", cfg.DB, len(cfg.Addrs))
	}
	cluster := false
	if cfg.MasterName == "" && len(cfg.Addrs) == 1 {
		cluster = probeClusterNode(cfg)
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 cfg.Addrs,
		IsClusterMode:         cluster,
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

// probeClusterNode asks the one configured node whether it runs in cluster
// mode. A plain client on a cluster node would fail every key outside the
// node's slots with MOVED — a fleet that works in a test on one master and
// breaks on the real cluster. An unreachable node (Redis is down at start)
// counts as not a cluster; the MOVED error then names the fix (movedHint).
func probeClusterNode(cfg RedisClientOptions) bool {
	c := redis.NewClient(&redis.Options{
		Addr: cfg.Addrs[0], Username: cfg.Username, Password: cfg.Password,
		DialTimeout: orDefault(cfg.DialTimeout, 2*time.Second), ReadTimeout: orDefault(cfg.ReadTimeout, time.Second),
		MaxRetries: -1, DialerRetries: 1, PoolSize: 1,
	})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), orDefault(cfg.DialTimeout, 2*time.Second)+orDefault(cfg.ReadTimeout, time.Second))
	defer cancel()
	info, err := c.Info(ctx, "cluster").Result()
	if err != nil {
		logx.From(ctx).Warn("redis: cluster-mode probe failed; using a single-node client", "addr", cfg.Addrs[0], "err", err)
		return false
	}
	on := strings.Contains(info, "cluster_enabled:1")
	if on {
		logx.From(ctx).Info("redis: the one address in redis.addrs is a Redis Cluster node; using the cluster client", "addr", cfg.Addrs[0])
	}
	return on
}

// movedHint turns a MOVED/ASK redirection seen by a single-node client into
// the configuration error it is: the node joined a cluster after start, or
// was unreachable when probed.
func movedHint(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := redis.IsMovedError(err); ok {
		return fmt.Errorf("%w (redis.addrs names a Redis Cluster node but the pod uses a single-node client: list several cluster seeds, or restart the pod once the node is reachable)", err)
	}
	return err
}

var quietRedisLog sync.Once

// redisLogger sends go-redis's own messages (one per failed dial, and so
// on) to logx at debug level: the store already logs each outage once.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	logx.From(ctx).Debug("go-redis: " + fmt.Sprintf(format, v...))
}
