package app

import (
	"reflect"
	"testing"
	"time"

	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/session"
)

// Every redis.*, session.* and route.ttl key reaches the session options
// field that means it: session knows no config, so a key mapped to the
// wrong field (two durations swapped) would only show as odd timing.
func TestRedisOptions_EveryKeyLandsInItsField(t *testing.T) {
	cfg := config.Defaults()
	cfg.Server.PodID = "10.0.0.7:9000"
	cfg.Redis = config.Redis{
		Addrs: []string{"r1:6379", "r2:6379"}, MasterName: "mymaster", Username: "dws", Password: "secret",
		DB: 2, KeyPrefix: "dws:", PoolSize: 9,
		DialTimeout: 3 * time.Second, ReadTimeout: 4 * time.Second, WriteTimeout: 5 * time.Second,
	}
	cfg.Session = config.Session{
		TTL: 31 * time.Second, RefreshInterval: 11 * time.Second, KillWait: 7 * time.Second,
		OnStoreDown: session.OnStoreDownReject, RefreshBatch: 123,
	}
	cfg.Route.TTL = 41 * time.Second
	m := metrics.New()

	tests := []struct {
		name      string
		got, want any
	}{
		{
			name: "client",
			got:  RedisClientOptions(cfg.Redis),
			want: session.RedisClientOptions{
				Addrs: []string{"r1:6379", "r2:6379"}, MasterName: "mymaster", Username: "dws", Password: "secret",
				DB: 2, PoolSize: 9,
				DialTimeout: 3 * time.Second, ReadTimeout: 4 * time.Second, WriteTimeout: 5 * time.Second,
			},
		},
		{
			name: "stores",
			got:  RedisOptions(cfg, m),
			want: session.RedisOptions{
				PodID: "10.0.0.7:9000", KeyPrefix: "dws:",
				RefreshInterval: 11 * time.Second, OnStoreDown: session.OnStoreDownReject, RefreshBatch: 123,
				OpTimeout: 9 * time.Second, // read + write timeout: one round trip
				Metrics:   m,
				Locks:     session.RedisLockOptions{SessionTTL: 31 * time.Second, KillWait: 7 * time.Second},
				Routes:    session.RedisRouteOptions{TTL: 41 * time.Second},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", tt.got, tt.want)
			}
		})
	}
}
