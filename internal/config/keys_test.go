package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEnvName_EveryKey_DerivedAndUnique(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for _, k := range Keys() {
		want := "DWS_" + strings.ToUpper(strings.ReplaceAll(k.Name, ".", "_"))
		if k.Env != want {
			t.Errorf("%s: env %q, want %q", k.Name, k.Env, want)
		}
		if other, dup := seen[k.Env]; dup {
			t.Errorf("%s and %s share env name %s", k.Name, other, k.Env)
		}
		seen[k.Env] = k.Name
		// A name like DWS_GRPC_TLS_CERT_FILE (SPEC's grpc.tls_cert_file) is
		// fine as long as stripping the suffix names no secret key: only
		// then would it be read as that secret's file.
		if base, ok := strings.CutSuffix(k.Env, FileSuffix); ok {
			for _, o := range Keys() {
				if o.Env == base && o.Secret {
					t.Errorf("%s: env name %s would be read as the file of secret %s", k.Name, k.Env, o.Name)
				}
			}
		}
	}
	for _, k := range Keys() {
		if other, clash := seen[k.Env+FileSuffix]; clash {
			t.Errorf("%s%s is the env name of %s", k.Env, FileSuffix, other)
		}
	}
	// SPEC §9's worked example and the keys it names.
	for key, env := range map[string]string{
		"auth.token_aes_key":       "DWS_AUTH_TOKEN_AES_KEY",
		"auth.admin_token_aes_key": "DWS_AUTH_ADMIN_TOKEN_AES_KEY",
		"server.ws_addr":           "DWS_SERVER_WS_ADDR",
		"server.pod_id":            "DWS_SERVER_POD_ID",
		"redis.addrs":              "DWS_REDIS_ADDRS",
		"nats.url":                 "DWS_NATS_URL",
		"nats.stream":              "DWS_NATS_STREAM",
		"nats.consumer":            "DWS_NATS_CONSUMER",
	} {
		k, ok := Lookup(key)
		if !ok || k.Env != env {
			t.Errorf("Lookup(%q) = %+v, %v; want env %s", key, k, ok, env)
		}
	}
	if n := len(Keys()); n != 87 {
		t.Errorf("%d keys; update this count when adding a key (and regenerate docs)", n)
	}
}

func TestKeys_SecretAndHotSets_MatchSpec(t *testing.T) {
	t.Parallel()
	wantSecret := []string{"auth.api_key", "auth.admin_api_key", "auth.token_aes_key", "auth.admin_token_aes_key", "redis.password", "auth.issuer_api_key", "grpc.auth_token"}
	wantHot := []string{
		"auth.clock_skew", "auth.max_token_age",
		"websocket.handshake_timeout", "websocket.allowed_origins", "websocket.ping_interval",
		"websocket.max_missed_pongs", "websocket.max_message_bytes", "websocket.outbound_ring_bytes",
		"websocket.outbound_ring_messages", "websocket.slow_consumer_grace",
		"ratelimit.handshakes_per_ip", "ratelimit.handshake_burst", "ratelimit.messages_per_second",
		"ratelimit.message_burst", "ratelimit.close_after",
		"ratelimit.handshake_pace_lag", "ratelimit.handshake_pace_max_wait",
		"session.on_store_down", "log.level",
	}
	var secret, hot []string
	for _, k := range Keys() {
		if k.Secret {
			secret = append(secret, k.Name)
		}
		if k.Hot {
			hot = append(hot, k.Name)
		}
		if k.Doc == "" {
			t.Errorf("%s has no doc", k.Name)
		}
		if strings.HasPrefix(k.Name, "ratelimit.") && !k.Hot {
			t.Errorf("%s: every ratelimit key is hot", k.Name)
		}
	}
	slices.Sort(secret)
	slices.Sort(wantSecret)
	slices.Sort(hot)
	slices.Sort(wantHot)
	if !slices.Equal(secret, wantSecret) {
		t.Errorf("secret keys %v, want %v", secret, wantSecret)
	}
	if !slices.Equal(hot, wantHot) {
		t.Errorf("hot keys %v, want %v", hot, wantHot)
	}
	if _, ok := Lookup("auth.dev"); ok {
		t.Error("auth.dev is set by dev mode, never configured; it must not be a key")
	}
}

func TestDefaults_FromTags_MatchSpec(t *testing.T) {
	t.Parallel()
	c := Defaults()
	checks := []struct {
		key       string
		got, want any
	}{
		{"server.ws_addr", c.Server.WSAddr, ":8080"},
		{"server.ops_addr", c.Server.OpsAddr, ":8081"},
		{"server.grpc_addr", c.Server.GRPCAddr, ":50051"},
		{"server.pod_id", c.Server.PodID, ""},
		{"server.workers", c.Server.Workers, 64},
		{"server.worker_queue", c.Server.WorkerQueue, 4096},
		{"auth.clock_skew", c.Auth.ClockSkew, 30 * time.Second},
		{"auth.token_cache_size", c.Auth.TokenCacheSize, 100000},
		{"websocket.max_handshake_bytes", c.WebSocket.MaxHandshakeBytes, 8192},
		{"websocket.outbound_ring_bytes", c.WebSocket.OutboundRingBytes, 1 << 20},
		{"websocket.ping_interval", c.WebSocket.PingInterval, 20 * time.Second},
		{"websocket.max_missed_pongs", c.WebSocket.MaxMissedPongs, 2},
		{"websocket.subprotocol", c.WebSocket.Subprotocol, "json.v1"},
		{"ratelimit.handshakes_per_ip", c.RateLimit.HandshakesPerIP, 0.0},
		{"ratelimit.messages_per_second", c.RateLimit.MessagesPerSecond, 10.0},
		{"ratelimit.handshake_pace_lag", c.RateLimit.HandshakePaceLag, 2 * time.Millisecond},
		{"ratelimit.handshake_pace_max_wait", c.RateLimit.HandshakePaceMaxWait, 6 * time.Second},
		{"session.ttl", c.Session.TTL, 30 * time.Second},
		{"session.refresh_interval", c.Session.RefreshInterval, 10 * time.Second},
		{"session.gc_ttl", c.Session.GCTTL, 24 * time.Hour},
		{"session.on_store_down", c.Session.OnStoreDown, "accept_local"},
		{"nats.stream", c.NATS.Stream, "wa_stream"},
		{"nats.consumer", c.NATS.Consumer, "ws_fanout"},
		{"nats.create_stream", c.NATS.CreateStream, true},
		{"nats.max_ack_pending", c.NATS.MaxAckPending, 5000},
		{"nats.embedded_port", c.NATS.EmbeddedPort, 14222},
		{"shutdown.close_grace", c.Shutdown.CloseGrace, 2 * time.Second},
		{"shutdown.timeout", c.Shutdown.Timeout, 20 * time.Second},
		{"log.level", c.Log.Level, "info"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s default = %v, want %v", ch.key, ch.got, ch.want)
		}
	}
	if c.Redis.Addrs != nil || c.WebSocket.AllowedOrigins != nil {
		t.Errorf("list defaults must be empty, got %v %v", c.Redis.Addrs, c.WebSocket.AllowedOrigins)
	}
	// Defaults() hands out copies: mutating one must not touch the next.
	c.WebSocket.AllowedOrigins = append(c.WebSocket.AllowedOrigins, "https://x")
	if Defaults().WebSocket.AllowedOrigins != nil {
		t.Error("Defaults shares list storage between calls")
	}
}
