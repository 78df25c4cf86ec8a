package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Bounds below which a setting cannot work; each says where it comes from.
const (
	// aesKeyHexLen is AES-256's 32-byte key written as hex (SPEC §3).
	aesKeyHexLen = 64
	// minHandshakeBytes: an upgrade head with a token and the usual browser
	// headers is several hundred bytes; below 1 KiB real clients get 431.
	minHandshakeBytes = 1024
	// minRingBytes: a ring smaller than one typical event marks every
	// socket a slow consumer.
	minRingBytes = 1024
	// maxPartitions bounds nats.partitions: one durable consumer each.
	maxPartitions = 1024
	// minFailover: a pod's partition membership lives half of
	// nats.failover, with a heartbeat every sixth of it.
	minFailover = time.Second
)

// Validate checks every rule and returns all problems joined, each naming
// its dotted key and rule. Messages never contain a secret's value.
func (c *Config) Validate() error {
	var v validator

	s := c.Server
	v.listenAddr("server.ws_addr", s.WSAddr)
	v.listenAddr("server.ops_addr", s.OpsAddr)
	v.listenAddr("server.grpc_addr", s.GRPCAddr)
	v.dialAddr("server.pod_id", s.PodID)
	v.atLeast("server.loops", s.Loops, 0)
	v.atLeast("server.procs", s.Procs, -1)
	v.atLeast("server.workers", s.Workers, 1)
	v.atLeast("server.worker_queue", s.WorkerQueue, 0)

	a := c.Auth
	v.aesKey("auth.token_aes_key", a.TokenAESKey)
	v.aesKey("auth.admin_token_aes_key", a.AdminTokenAESKey)
	v.notNegative("auth.clock_skew", a.ClockSkew)
	v.notNegative("auth.max_token_age", a.MaxTokenAge)
	v.notNegative("auth.token_cache_ttl", a.TokenCacheTTL)
	v.atLeast("auth.token_cache_size", a.TokenCacheSize, 0)

	w := c.WebSocket
	v.atLeast("websocket.max_handshake_bytes", w.MaxHandshakeBytes, minHandshakeBytes)
	v.positive("websocket.handshake_timeout", w.HandshakeTimeout)
	for i, o := range w.AllowedOrigins {
		v.origin(fmt.Sprintf("websocket.allowed_origins[%d]", i), o)
	}
	v.positive("websocket.ping_interval", w.PingInterval)
	v.atLeast("websocket.max_missed_pongs", w.MaxMissedPongs, 1)
	v.atLeast("websocket.max_message_bytes", w.MaxMessageBytes, 1)
	v.atLeast("websocket.outbound_ring_bytes", w.OutboundRingBytes, minRingBytes)
	v.atLeast("websocket.outbound_ring_messages", w.OutboundRingMessages, 1)
	v.notNegative("websocket.slow_consumer_grace", w.SlowConsumerGrace)
	if w.Subprotocol == "" || strings.ContainsAny(w.Subprotocol, " \t,") {
		v.add("websocket.subprotocol", "must be one non-empty token, got %s", quoteValue(w.Subprotocol))
	}

	r := c.RateLimit
	v.rate("ratelimit.handshakes_per_ip", r.HandshakesPerIP)
	if r.HandshakesPerIP > 0 {
		v.atLeast("ratelimit.handshake_burst", r.HandshakeBurst, 1)
	}
	v.rate("ratelimit.messages_per_second", r.MessagesPerSecond)
	if r.MessagesPerSecond > 0 {
		v.atLeast("ratelimit.message_burst", r.MessageBurst, 1)
	}
	v.atLeast("ratelimit.close_after", r.CloseAfter, 1)
	v.notNegative("ratelimit.handshake_pace_lag", r.HandshakePaceLag)
	v.notNegative("ratelimit.handshake_pace_max_wait", r.HandshakePaceMaxWait)

	ss := c.Session
	v.positive("session.ttl", ss.TTL)
	v.positive("session.refresh_interval", ss.RefreshInterval)
	if ss.TTL > 0 && ss.RefreshInterval >= ss.TTL {
		// A lock refreshed no faster than it expires lapses between
		// refreshes and another pod takes it over (SPEC §4).
		v.add("session.refresh_interval", "must be less than session.ttl (%s), got %s", ss.TTL, ss.RefreshInterval)
	}
	v.positive("session.kill_wait", ss.KillWait)
	if ss.OnStoreDown != "accept_local" && ss.OnStoreDown != "reject" {
		v.add("session.on_store_down", "must be accept_local or reject, got %s", quoteValue(ss.OnStoreDown))
	}
	v.atLeast("session.refresh_batch", ss.RefreshBatch, 1)

	v.positive("route.ttl", c.Route.TTL)
	if floor := 10 * max(ss.TTL, c.Route.TTL); ss.GCTTL < floor {
		// The re-assert period, a third of it, must span several refresh
		// intervals; the stores would raise it to this floor anyway.
		v.add("session.gc_ttl", "must be at least 10 × session.ttl and 10 × route.ttl (%s), got %s", floor, ss.GCTTL)
	}
	v.notNegative("route.cache_ttl", c.Route.CacheTTL)

	rd := c.Redis
	for i, addr := range rd.Addrs {
		v.dialAddr(fmt.Sprintf("redis.addrs[%d]", i), addr)
	}
	if rd.MasterName != "" && len(rd.Addrs) == 0 {
		v.add("redis.master_name", "needs redis.addrs (the Sentinel addresses)")
	}
	v.atLeast("redis.db", rd.DB, 0)
	v.atLeast("redis.pool_size", rd.PoolSize, 0)
	v.positive("redis.dial_timeout", rd.DialTimeout)
	v.positive("redis.read_timeout", rd.ReadTimeout)
	v.positive("redis.write_timeout", rd.WriteTimeout)

	n := c.NATS
	v.natsURL("nats.url", n.URL)
	v.natsName("nats.stream", n.Stream)
	v.natsName("nats.consumer", n.Consumer)
	v.atLeast("nats.max_ack_pending", n.MaxAckPending, 1)
	v.positive("nats.ack_wait", n.AckWait)
	v.notNegative("nats.nak_delay", n.NakDelay)
	v.atLeast("nats.fetch_batch", n.FetchBatch, 1)
	// The partition number is a subject token chosen by the server's
	// partition() transform; 1024 keeps one consumer per partition cheap.
	if n.Partitions < 1 || n.Partitions > maxPartitions {
		v.add("nats.partitions", "must be 1-%d, got %d", maxPartitions, n.Partitions)
	}
	if n.Failover < minFailover {
		// The membership lives half of it with a heartbeat every sixth:
		// below a second Redis round trips would eat the budget.
		v.add("nats.failover", "must be at least %s, got %s", minFailover, n.Failover)
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		v.add("nats.replicas", "must be 1 to 5 (JetStream's limit), got %d", n.Replicas)
	}
	if n.EmbeddedPort < -1 || n.EmbeddedPort > 65535 {
		v.add("nats.embedded_port", "must be -1 (random) or a port 0-65535, got %d", n.EmbeddedPort)
	}

	g := c.GRPC
	v.positive("grpc.call_timeout", g.CallTimeout)
	v.atLeast("grpc.batch_max", g.BatchMax, 1)
	v.notNegative("grpc.batch_wait", g.BatchWait)
	v.atLeast("grpc.breaker_failures", g.BreakerFailures, 1)
	v.positive("grpc.breaker_open", g.BreakerOpen)

	v.atLeast("dispatch.workers", c.Dispatch.Workers, 1)
	v.atLeast("dispatch.queue", c.Dispatch.Queue, 0)

	v.atLeast("resume.max_events", c.Resume.MaxEvents, 0)
	v.notNegative("resume.max_age", c.Resume.MaxAge)
	v.atLeast("resume.max_concurrent", c.Resume.MaxConcurrent, 1)
	v.atLeast("resume.cache_bytes", c.Resume.CacheBytes, 0)

	sd := c.Shutdown
	v.notNegative("shutdown.close_grace", sd.CloseGrace)
	v.positive("shutdown.timeout", sd.Timeout)
	if sd.Timeout > 0 && sd.CloseGrace >= sd.Timeout {
		v.add("shutdown.close_grace", "must be less than shutdown.timeout (%s), got %s", sd.Timeout, sd.CloseGrace)
	}

	v.security(c)

	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "warning", "error":
	default:
		v.add("log.level", "must be debug, info, warn or error, got %s", quoteValue(c.Log.Level))
	}
	return errors.Join(v.errs...)
}

// validator collects problems. Its helpers are only used for non-secret
// keys except aesKey, which never formats the value.
type validator struct{ errs []error }

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (v *validator) atLeast(key string, n, low int) {
	if n < low {
		v.add(key, "must be at least %d, got %d", low, n)
	}
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.add(key, "must be greater than 0, got %s", d)
	}
}

func (v *validator) notNegative(key string, d time.Duration) {
	if d < 0 {
		v.add(key, "must not be negative, got %s", d)
	}
}

func (v *validator) rate(key string, r float64) {
	if r < 0 {
		v.add(key, "must not be negative (0 = off), got %g", r)
	}
}

// aesKey reports only lengths and character classes: the key is a secret.
func (v *validator) aesKey(key, s string) {
	if s == "" {
		return
	}
	if len(s) != aesKeyHexLen {
		v.add(key, "must be %d hex characters (32 bytes), got %d characters", aesKeyHexLen, len(s))
		return
	}
	if _, err := hex.DecodeString(s); err != nil {
		v.add(key, "must be %d hex characters (32 bytes), got non-hex characters", aesKeyHexLen)
	}
}

// listenAddr accepts host:port with an empty host (all interfaces) and port
// 0 (a random port, used by tests).
func (v *validator) listenAddr(key, s string) {
	if _, _, ok := splitAddr(s); !ok {
		v.add(key, "must be host:port (host may be empty), got %s", quoteValue(s))
	}
}

// dialAddr needs a host and a real port: others connect to it.
func (v *validator) dialAddr(key, s string) {
	host, port, ok := splitAddr(s)
	if !ok || host == "" || port == 0 || strings.ContainsAny(host, "/@ ") {
		v.add(key, "must be host:port with a host and a port 1-65535, got %s", quoteValue(s))
	}
}

func splitAddr(s string) (host string, port int, ok bool) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, false
	}
	return h, n, true
}

// origin checks an Origin header value as browsers send it (RFC 6454):
// scheme://host[:port], no path. "*" alone allows every origin; a '*' in a
// host may only stand for its whole leftmost label (https://*.example.com
// matches exactly one label there), which is all the matcher supports.
func (v *validator) origin(key, s string) {
	if s == "*" {
		return
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil {
		v.add(key, "must be an origin like https://app.example.com, got %s", quoteValue(s))
		return
	}
	if host := u.Hostname(); strings.Contains(host, "*") {
		rest, ok := strings.CutPrefix(host, "*.")
		if !ok || rest == "" || strings.Contains(rest, "*") {
			v.add(key, "a wildcard must be the whole leftmost label, like https://*.example.com, got %s", quoteValue(s))
		}
	}
}

// natsURL accepts what nats.go accepts: a comma-separated list of
// nats/tls/ws/wss URLs or bare host:port. URLs may embed credentials, so the
// message shows the redacted form only.
func (v *validator) natsURL(key, s string) {
	if s == "" {
		return // embedded server
	}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if !strings.Contains(part, "://") {
			part = "nats://" + part
		}
		u, err := url.Parse(part)
		if err != nil {
			v.add(key, "must be nats://host:port URLs separated by commas; one is not a valid URL")
			continue
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			v.add(key, "scheme must be nats, tls, ws or wss, got %q in %s", u.Scheme, strconv.Quote(u.Redacted()))
			continue
		}
		if u.Hostname() == "" {
			v.add(key, "needs a host, got %s", strconv.Quote(u.Redacted()))
		}
	}
}

// natsName checks a stream or consumer name: JetStream forbids whitespace,
// '.', '*', '>' and path separators in them.
func (v *validator) natsName(key, s string) {
	if s == "" || strings.ContainsAny(s, " \t\r\n.*>/\\") {
		v.add(key, "must be a non-empty name without spaces, '.', '*', '>', '/' or '\\', got %s", quoteValue(s))
	}
}
