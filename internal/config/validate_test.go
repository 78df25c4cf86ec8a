package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidate_Defaults_Pass(t *testing.T) {
	t.Parallel()
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("defaults must validate: %v", err)
	}
	c := validConfig()
	c.Auth.TokenAESKey = strings.Repeat("0123456789abcdef", 4)
	c.Auth.AdminTokenAESKey = strings.Repeat("0123456789ABCDEF", 4)
	c.Redis.Addrs = []string{"redis-a:6379", "[::1]:6380"}
	c.Redis.MasterName = "mymaster"
	c.NATS.URL = "nats://a:4222, tls://user:pw@b:4222,c:4222"
	c.WebSocket.AllowedOrigins = []string{"https://app.example.com", "http://localhost:3000"}
	c.Session.OnStoreDown = "reject"
	c.Log.Level = "DEBUG"
	c.Auth.APIKey = "browser-key"
	c.Auth.IssuerAPIKey = "issuer-key"
	c.GRPC.AuthToken = "fleet-secret"
	if err := c.Validate(); err != nil {
		t.Fatalf("a full production config must validate: %v", err)
	}
}

func TestValidate_EachRule_NamesKeyAndRule(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		{"aes key short", func(c *Config) { c.Auth.TokenAESKey = "0123456789" },
			"auth.token_aes_key: must be 64 hex characters (32 bytes), got 10 characters"},
		{"admin aes key not hex", func(c *Config) { c.Auth.AdminTokenAESKey = strings.Repeat("zz", 32) },
			"auth.admin_token_aes_key: must be 64 hex characters (32 bytes), got non-hex characters"},
		{"ws addr", func(c *Config) { c.Server.WSAddr = "8080" }, `server.ws_addr: must be host:port`},
		{"ops addr port range", func(c *Config) { c.Server.OpsAddr = ":70000" }, `server.ops_addr: must be host:port`},
		{"grpc addr", func(c *Config) { c.Server.GRPCAddr = "localhost" }, `server.grpc_addr: must be host:port`},
		{"pod id no host", func(c *Config) { c.Server.PodID = ":50051" }, `server.pod_id: must be host:port with a host and a port 1-65535, got ":50051"`},
		{"pod id empty", func(c *Config) { c.Server.PodID = "" }, `server.pod_id: must be host:port`},
		{"pod id port 0", func(c *Config) { c.Server.PodID = "10.0.0.1:0" }, `server.pod_id: must be host:port`},
		{"loops negative", func(c *Config) { c.Server.Loops = -1 }, "server.loops: must be at least 0, got -1"},
		{"workers zero", func(c *Config) { c.Server.Workers = 0 }, "server.workers: must be at least 1, got 0"},
		{"worker queue negative", func(c *Config) { c.Server.WorkerQueue = -1 }, "server.worker_queue: must be at least 0"},
		{"clock skew negative", func(c *Config) { c.Auth.ClockSkew = -time.Second }, "auth.clock_skew: must not be negative, got -1s"},
		{"max token age negative", func(c *Config) { c.Auth.MaxTokenAge = -time.Second }, "auth.max_token_age: must not be negative"},
		{"token cache ttl negative", func(c *Config) { c.Auth.TokenCacheTTL = -time.Second }, "auth.token_cache_ttl: must not be negative"},
		{"token cache size negative", func(c *Config) { c.Auth.TokenCacheSize = -1 }, "auth.token_cache_size: must be at least 0"},
		{"handshake bytes tiny", func(c *Config) { c.WebSocket.MaxHandshakeBytes = 100 }, "websocket.max_handshake_bytes: must be at least 1024, got 100"},
		{"handshake timeout zero", func(c *Config) { c.WebSocket.HandshakeTimeout = 0 }, "websocket.handshake_timeout: must be greater than 0, got 0s"},
		{"origin without scheme", func(c *Config) { c.WebSocket.AllowedOrigins = []string{"https://ok.example", "app.example.com"} },
			`websocket.allowed_origins[1]: must be an origin like https://app.example.com, got "app.example.com"`},
		{"origin with path", func(c *Config) { c.WebSocket.AllowedOrigins = []string{"https://a.example/x"} }, "websocket.allowed_origins[0]: must be an origin"},
		{"ping interval zero", func(c *Config) { c.WebSocket.PingInterval = 0 }, "websocket.ping_interval: must be greater than 0"},
		{"missed pongs zero", func(c *Config) { c.WebSocket.MaxMissedPongs = 0 }, "websocket.max_missed_pongs: must be at least 1, got 0"},
		{"max message zero", func(c *Config) { c.WebSocket.MaxMessageBytes = 0 }, "websocket.max_message_bytes: must be at least 1"},
		{"ring bytes under 1 KiB", func(c *Config) { c.WebSocket.OutboundRingBytes = 1023 }, "websocket.outbound_ring_bytes: must be at least 1024, got 1023"},
		{"ring messages zero", func(c *Config) { c.WebSocket.OutboundRingMessages = 0 }, "websocket.outbound_ring_messages: must be at least 1, got 0"},
		{"slow consumer grace negative", func(c *Config) { c.WebSocket.SlowConsumerGrace = -1 }, "websocket.slow_consumer_grace: must not be negative"},
		{"subprotocol empty", func(c *Config) { c.WebSocket.Subprotocol = "" }, `websocket.subprotocol: must be one non-empty token, got ""`},
		{"handshake rate negative", func(c *Config) { c.RateLimit.HandshakesPerIP = -1 }, "ratelimit.handshakes_per_ip: must not be negative (0 = off), got -1"},
		{"handshake burst zero when on", func(c *Config) { c.RateLimit.HandshakesPerIP = 5; c.RateLimit.HandshakeBurst = 0 }, "ratelimit.handshake_burst: must be at least 1"},
		{"message rate negative", func(c *Config) { c.RateLimit.MessagesPerSecond = -0.5 }, "ratelimit.messages_per_second: must not be negative"},
		{"message burst zero when on", func(c *Config) { c.RateLimit.MessageBurst = 0 }, "ratelimit.message_burst: must be at least 1"},
		{"close after zero", func(c *Config) { c.RateLimit.CloseAfter = 0 }, "ratelimit.close_after: must be at least 1"},
		{"session ttl zero", func(c *Config) { c.Session.TTL = 0 }, "session.ttl: must be greater than 0"},
		{"refresh not below ttl", func(c *Config) { c.Session.RefreshInterval = 30 * time.Second },
			"session.refresh_interval: must be less than session.ttl (30s), got 30s"},
		{"refresh zero", func(c *Config) { c.Session.RefreshInterval = 0 }, "session.refresh_interval: must be greater than 0"},
		{"kill wait zero", func(c *Config) { c.Session.KillWait = 0 }, "session.kill_wait: must be greater than 0"},
		{"on store down", func(c *Config) { c.Session.OnStoreDown = "panic" }, `session.on_store_down: must be accept_local or reject, got "panic"`},
		{"refresh batch zero", func(c *Config) { c.Session.RefreshBatch = 0 }, "session.refresh_batch: must be at least 1"},
		{"gc ttl below 10 × route.ttl", func(c *Config) { c.Route.TTL = time.Minute; c.Session.GCTTL = 5 * time.Minute },
			"session.gc_ttl: must be at least 10 × session.ttl and 10 × route.ttl (10m0s), got 5m0s"},
		{"route ttl zero", func(c *Config) { c.Route.TTL = 0 }, "route.ttl: must be greater than 0"},
		{"route cache negative", func(c *Config) { c.Route.CacheTTL = -1 }, "route.cache_ttl: must not be negative"},
		{"redis addr", func(c *Config) { c.Redis.Addrs = []string{"ok:6379", "redis"} }, `redis.addrs[1]: must be host:port with a host and a port 1-65535, got "redis"`},
		{"redis url with credentials", func(c *Config) { c.Redis.Addrs = []string{"redis://:hunter2@h:6379"} }, "redis.addrs[0]: must be host:port"},
		{"sentinel without addrs", func(c *Config) { c.Redis.MasterName = "m" }, "redis.master_name: needs redis.addrs"},
		{"redis db negative", func(c *Config) { c.Redis.DB = -1 }, "redis.db: must be at least 0"},
		{"redis pool negative", func(c *Config) { c.Redis.PoolSize = -1 }, "redis.pool_size: must be at least 0"},
		{"redis dial timeout", func(c *Config) { c.Redis.DialTimeout = 0 }, "redis.dial_timeout: must be greater than 0"},
		{"redis read timeout", func(c *Config) { c.Redis.ReadTimeout = 0 }, "redis.read_timeout: must be greater than 0"},
		{"redis write timeout", func(c *Config) { c.Redis.WriteTimeout = 0 }, "redis.write_timeout: must be greater than 0"},
		{"nats scheme", func(c *Config) { c.NATS.URL = "http://a:4222" }, `nats.url: scheme must be nats, tls, ws or wss, got "http"`},
		{"nats no host", func(c *Config) { c.NATS.URL = "nats://:4222" }, "nats.url: needs a host"},
		{"stream with dot", func(c *Config) { c.NATS.Stream = "wa.stream" }, `nats.stream: must be a non-empty name`},
		{"consumer empty", func(c *Config) { c.NATS.Consumer = "" }, `nats.consumer: must be a non-empty name`},
		{"max ack pending zero", func(c *Config) { c.NATS.MaxAckPending = 0 }, "nats.max_ack_pending: must be at least 1"},
		{"ack wait zero", func(c *Config) { c.NATS.AckWait = 0 }, "nats.ack_wait: must be greater than 0"},
		{"nak delay negative", func(c *Config) { c.NATS.NakDelay = -1 }, "nats.nak_delay: must not be negative"},
		{"fetch batch zero", func(c *Config) { c.NATS.FetchBatch = 0 }, "nats.fetch_batch: must be at least 1"},
		{"embedded port", func(c *Config) { c.NATS.EmbeddedPort = -2 }, "nats.embedded_port: must be -1 (random) or a port 0-65535, got -2"},
		{"grpc call timeout", func(c *Config) { c.GRPC.CallTimeout = 0 }, "grpc.call_timeout: must be greater than 0"},
		{"grpc batch max", func(c *Config) { c.GRPC.BatchMax = 0 }, "grpc.batch_max: must be at least 1"},
		{"grpc batch wait", func(c *Config) { c.GRPC.BatchWait = -1 }, "grpc.batch_wait: must not be negative"},
		{"breaker failures", func(c *Config) { c.GRPC.BreakerFailures = 0 }, "grpc.breaker_failures: must be at least 1"},
		{"breaker open", func(c *Config) { c.GRPC.BreakerOpen = 0 }, "grpc.breaker_open: must be greater than 0"},
		{"dispatch workers", func(c *Config) { c.Dispatch.Workers = 0 }, "dispatch.workers: must be at least 1"},
		{"dispatch queue", func(c *Config) { c.Dispatch.Queue = -1 }, "dispatch.queue: must be at least 0"},
		{"nats replicas", func(c *Config) { c.NATS.Replicas = 0 }, "nats.replicas: must be 1 to 5"},
		{"resume max events", func(c *Config) { c.Resume.MaxEvents = -1 }, "resume.max_events: must be at least 0"},
		{"resume max age", func(c *Config) { c.Resume.MaxAge = -time.Second }, "resume.max_age"},
		{"resume concurrency", func(c *Config) { c.Resume.MaxConcurrent = 0 }, "resume.max_concurrent: must be at least 1"},
		{"resume cache", func(c *Config) { c.Resume.CacheBytes = -1 }, "resume.cache_bytes: must be at least 0"},
		{"close grace negative", func(c *Config) { c.Shutdown.CloseGrace = -1 }, "shutdown.close_grace: must not be negative"},
		{"close grace not below timeout", func(c *Config) { c.Shutdown.CloseGrace = 20 * time.Second }, "shutdown.close_grace: must be less than shutdown.timeout (20s), got 20s"},
		{"shutdown timeout", func(c *Config) { c.Shutdown.Timeout = 0 }, "shutdown.timeout: must be greater than 0"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, `log.level: must be debug, info, warn or error, got "loud"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			tc.mutate(c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v\nwant it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks a password: %v", err)
			}
		})
	}
}

func TestValidate_RatesOff_BurstsNotChecked(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.RateLimit.HandshakesPerIP, c.RateLimit.HandshakeBurst = 0, 0
	c.RateLimit.MessagesPerSecond, c.RateLimit.MessageBurst = 0, 0
	if err := c.Validate(); err != nil {
		t.Fatalf("a burst is irrelevant while its rate is off: %v", err)
	}
}

func TestValidate_ManyProblems_AllJoined(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.Server.Workers = 0
	c.WebSocket.PingInterval = 0
	c.Session.OnStoreDown = "x"
	err := c.Validate()
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 3 {
		t.Fatalf("want 3 joined errors, got %v", err)
	}
	for _, w := range []string{"server.workers", "websocket.ping_interval", "session.on_store_down"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %s", err, w)
		}
	}
}
