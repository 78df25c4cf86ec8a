package app

import (
	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/session"
)

// RedisClientOptions maps the redis.* keys onto the session client's
// options (session does not know the config file, as reactor does not).
func RedisClientOptions(r config.Redis) session.RedisClientOptions {
	return session.RedisClientOptions{
		Addrs:        r.Addrs,
		MasterName:   r.MasterName,
		Username:     r.Username,
		Password:     r.Password,
		DB:           r.DB,
		PoolSize:     r.PoolSize,
		DialTimeout:  r.DialTimeout,
		ReadTimeout:  r.ReadTimeout,
		WriteTimeout: r.WriteTimeout,
	}
}

// RedisOptions maps the session.*, route.* and redis.* keys onto the Redis
// stores' options for the pod cfg.Server.PodID.
func RedisOptions(cfg *config.Config, m *metrics.Metrics) session.RedisOptions {
	s := cfg.Session
	return session.RedisOptions{
		PodID:           cfg.Server.PodID,
		KeyPrefix:       cfg.Redis.KeyPrefix,
		RefreshInterval: s.RefreshInterval,
		OnStoreDown:     s.OnStoreDown,
		RefreshBatch:    s.RefreshBatch,
		GCTTL:           s.GCTTL,
		// One round trip is a write and a read.
		OpTimeout: cfg.Redis.ReadTimeout + cfg.Redis.WriteTimeout,
		Metrics:   m,
		Locks:     session.RedisLockOptions{SessionTTL: s.TTL, KillWait: s.KillWait},
		Routes:    session.RedisRouteOptions{TTL: cfg.Route.TTL},
	}
}
