// Package config is dws configuration: one definition per key (SPEC §9) that
// also yields its env name (DWS_ + key upper-cased, '.' → '_'), its default,
// whether it is a secret, and whether SIGHUP may change it live.
//
// The definition of a key is its field below: `koanf` is the key relative to
// its section, `default` its built-in value (parsed like an env value),
// `doc` the one line shown in docs/config.md, `secret:"true"` keeps the value
// out of logs, errors and `dws config print`, and `hot:"true"` means a SIGHUP
// reload applies it without a restart. keys.go turns these tags into the
// table every other file reads, so a new key is one new field.
package config

import "time"

// Config is the effective configuration. The `koanf` tag is the dotted key
// of SPEC §9 relative to its section; docs and env names derive from it.
type Config struct {
	Server    Server    `koanf:"server"`
	Auth      Auth      `koanf:"auth"`
	WebSocket WebSocket `koanf:"websocket"`
	RateLimit RateLimit `koanf:"ratelimit"`
	Session   Session   `koanf:"session"`
	Route     Route     `koanf:"route"`
	Redis     Redis     `koanf:"redis"`
	NATS      NATS      `koanf:"nats"`
	GRPC      GRPC      `koanf:"grpc"`
	Dispatch  Dispatch  `koanf:"dispatch"`
	Resume    Resume    `koanf:"resume"`
	Shutdown  Shutdown  `koanf:"shutdown"`
	Log       Log       `koanf:"log"`

	// origin remembers how Load built this value so a SIGHUP reload keeps
	// the same env and flag overrides; it is not a key.
	origin *origin
	// dev records which secrets ApplyDevKeys generated, so a reload of a
	// file without them keeps them.
	dev devGenerated
}

// Server holds listener addresses and the pod identity.
type Server struct {
	WSAddr   string `koanf:"ws_addr" default:":8080" doc:"WebSocket listener (gnet): upgrades and a plain GET /healthz."`
	OpsAddr  string `koanf:"ops_addr" default:":8081" doc:"Ops HTTP listener: /healthz, /ready, /metrics, token minting."`
	GRPCAddr string `koanf:"grpc_addr" default:":50051" doc:"gRPC listener for pod-to-pod Push and grpc.health.v1."`
	// PodID is this pod's routable gRPC address; default POD_IP (or
	// 127.0.0.1) + the grpc port.
	PodID string `koanf:"pod_id" doc:"This pod's routable gRPC address host:port; empty = env POD_IP (else the host of server.grpc_addr, else 127.0.0.1) + the port of server.grpc_addr."`
	// Loops is the number of gnet event loops; 0 = one per core.
	Loops int `koanf:"loops" default:"0" doc:"Number of gnet event loops; 0 = one per core."`
	// Procs is the pod's GOMAXPROCS. One P more than the event loops by
	// default: with one P per loop, the GC's mark worker (a whole P for
	// each cycle) or the embedded NATS server takes a loop's P and that
	// loop's events wait; the floor bench at 19 000 sockets halved its
	// p99 with the extra P (perf/quiet-20261207.md).
	Procs int `koanf:"procs" default:"0" doc:"GOMAXPROCS: 0 = the event loops + 1, so the GC and the embedded NATS server never take a loop's P; -1 = Go's default (one per CPU or the container's CPU limit). The GOMAXPROCS environment variable wins over both."`
	// Workers bounds the handshake worker pool (token decrypt, locks).
	Workers int `koanf:"workers" default:"64" doc:"Handshake worker pool size (token decrypt, session locks)."`
	// WorkerQueue bounds handshakes waiting for a worker; past it new
	// upgrades get 503.
	WorkerQueue int `koanf:"worker_queue" default:"4096" doc:"Handshakes that may wait for a worker; past it new upgrades get 503."`
	// Pprof serves net/http/pprof on the ops listener: how the per-socket
	// memory figures in perf/ are explained. Off by default.
	Pprof bool `koanf:"pprof" default:"false" doc:"Serve /debug/pprof/ on the ops listener (profiling; keep off in production)."`
}

// Auth holds API keys and token keys (all secrets) and token rules.
type Auth struct {
	APIKey      string `koanf:"api_key" secret:"true" doc:"API key of user upgrades (travels in browser URLs); required outside dev mode unless auth.allow_no_api_key."`
	AdminAPIKey string `koanf:"admin_api_key" secret:"true" doc:"API key of admin upgrades; empty = admins use auth.api_key."`
	// IssuerAPIKey guards the mint endpoints. It is separate from the two
	// keys above because those travel in browser URLs: with them any
	// browser user could mint a token for any other user (SPEC §3).
	IssuerAPIKey string `koanf:"issuer_api_key" secret:"true" doc:"API key of POST /generate-token and /admin/generate-token (header X-API-Key); empty = minting disabled (403). Must differ from the other API keys."`
	// AllowNoAPIKey is the explicit opt-out of the mandatory API key, for
	// deployments that authenticate upgrades by token alone.
	AllowNoAPIKey    bool          `koanf:"allow_no_api_key" default:"false" doc:"Run with an empty auth.api_key (upgrades checked by token only); logged as a warning at every start."`
	TokenAESKey      string        `koanf:"token_aes_key" secret:"true" doc:"AES-256-GCM key of user tokens, 64 hex characters; empty (with the admin key) = dev mode with ephemeral keys."`
	AdminTokenAESKey string        `koanf:"admin_token_aes_key" secret:"true" doc:"AES-256-GCM key of admin tokens, 64 hex characters."`
	ClockSkew        time.Duration `koanf:"clock_skew" default:"30s" hot:"true" doc:"How far in the future a token's issued_at may be."`
	MaxTokenAge      time.Duration `koanf:"max_token_age" default:"0s" hot:"true" doc:"Oldest accepted issued_at; 0 = unchecked."`
	RejectReplay     bool          `koanf:"reject_replay" default:"false" doc:"Reject a token whose jti was already seen within its lifetime."`
	TokenCacheTTL    time.Duration `koanf:"token_cache_ttl" default:"30s" doc:"Lifetime of a cached successful token validation (never past expires_at); 0 = no cache."`
	TokenCacheSize   int           `koanf:"token_cache_size" default:"100000" doc:"Entries in the in-process token validation cache."`
	// SharedTokenCache adds the Redis tier of SPEC §3's cache. Off by
	// default: decrypting a token costs ~2 µs, a Redis GET plus SET costs two
	// round trips per handshake and halved Redis-backed handshakes/s
	// (perf/connect.md).
	SharedTokenCache bool `koanf:"shared_token_cache" default:"false" doc:"Also cache validations in Redis (token_cache:<sha256>); costs two Redis round trips per handshake."`
	// Dev is set (never from a file) when dws generated ephemeral keys.
	Dev bool `koanf:"-"`
}

// WebSocket holds handshake, framing and outbound limits.
type WebSocket struct {
	MaxHandshakeBytes int           `koanf:"max_handshake_bytes" default:"8192" doc:"Largest upgrade request head; larger gets 431."`
	HandshakeTimeout  time.Duration `koanf:"handshake_timeout" default:"10s" hot:"true" doc:"Time a client has to complete the upgrade request."`
	AllowedOrigins    []string      `koanf:"allowed_origins" hot:"true" doc:"Origins allowed to upgrade (scheme://host[:port]); empty = any."`
	PingInterval      time.Duration `koanf:"ping_interval" default:"20s" hot:"true" doc:"Interval between server pings."`
	MaxMissedPongs    int           `koanf:"max_missed_pongs" default:"2" hot:"true" doc:"Pings left unanswered before the socket is closed."`
	MaxMessageBytes   int           `koanf:"max_message_bytes" default:"65536" hot:"true" doc:"Largest inbound message after reassembly; larger closes 1009."`
	// The outbound ring caps are what bounds per-socket memory (DESIGN
	// invariant 2); 1 MiB holds a few hundred typical events.
	OutboundRingBytes    int           `koanf:"outbound_ring_bytes" default:"1048576" hot:"true" doc:"Bytes queued per socket before it counts as a slow consumer (1 MiB)."`
	OutboundRingMessages int           `koanf:"outbound_ring_messages" default:"1024" hot:"true" doc:"Messages queued per socket before it counts as a slow consumer."`
	SlowConsumerGrace    time.Duration `koanf:"slow_consumer_grace" default:"5s" hot:"true" doc:"How long a ring may stay full before close 4408 slow-consumer."`
	Subprotocol          string        `koanf:"subprotocol" default:"json.v1" doc:"Sec-WebSocket-Protocol echoed when the client offers it."`
}

// RateLimit holds per-IP handshake and per-socket inbound limits.
type RateLimit struct {
	// HandshakesPerIP defaults to off: behind a load balancer every client
	// shares its address (SPEC §2).
	HandshakesPerIP   float64 `koanf:"handshakes_per_ip" default:"0" hot:"true" doc:"Upgrades per second per client IP; 0 = off."`
	HandshakeBurst    int     `koanf:"handshake_burst" default:"20" hot:"true" doc:"Burst of the per-IP upgrade limit."`
	MessagesPerSecond float64 `koanf:"messages_per_second" default:"10" hot:"true" doc:"Inbound frames per second per socket; 0 = off."`
	MessageBurst      int     `koanf:"message_burst" default:"20" hot:"true" doc:"Burst of the per-socket inbound limit."`
	// CloseAfter is how many consecutive over-limit frames close 4429.
	CloseAfter int `koanf:"close_after" default:"20" hot:"true" doc:"Consecutive over-limit frames before close 4429."`
	// Handshake pacing (reactor/pacer.go): in a reconnect storm new
	// handshakes wait while live events wait in the event loops.
	HandshakePaceLag     time.Duration `koanf:"handshake_pace_lag" default:"2ms" hot:"true" doc:"Wait of a live event in an event loop past which new handshakes are admitted at an adaptive rate (a reconnect storm spread out); 0 = never pace."`
	HandshakePaceMaxWait time.Duration `koanf:"handshake_pace_max_wait" default:"6s" hot:"true" doc:"Longest a paced handshake waits for admission (at most half websocket.handshake_timeout)."`
}

// Session holds single-session lock timing.
type Session struct {
	TTL             time.Duration `koanf:"ttl" default:"30s" doc:"Lifetime of a session lock not refreshed by its owner."`
	RefreshInterval time.Duration `koanf:"refresh_interval" default:"10s" doc:"How often an owner refreshes its locks, routes and pod lease; must be below session.ttl."`
	// KillWait bounds how long a newcomer retries after a kill notice
	// before a forced takeover from a live but silent holder.
	KillWait time.Duration `koanf:"kill_wait" default:"3s" doc:"Retry window after a kill notice before a forced takeover from a live, silent holder."`
	// OnStoreDown is accept_local (default) or reject.
	OnStoreDown string `koanf:"on_store_down" default:"accept_local" hot:"true" doc:"When the session store is unreachable: accept_local (degrade) or reject (503)."`
	// RefreshBatch is how many owned keys one pipelined refresh carries.
	RefreshBatch int `koanf:"refresh_batch" default:"500" doc:"Owned keys carried by one pipelined refresh."`
	// GCTTL only bounds a crashed pod's leftovers: locks and route members
	// count while their pod's lease lives (DESIGN "Redis cost at fleet
	// scale"), and each owned key is re-written once per a third of it,
	// the one refresh cost that grows with sockets (perf/redis-cost.md).
	GCTTL time.Duration `koanf:"gc_ttl" default:"24h" doc:"Redis TTL of session locks and route members, which count only while their pod's lease lives: it bounds how long a crashed pod's keys stay in Redis memory. Each owned key is re-written once per a third of it. At least 10 × session.ttl and 10 × route.ttl."`
}

// Route holds route registry timing.
type Route struct {
	TTL      time.Duration `koanf:"ttl" default:"30s" doc:"Lifetime of a route member not refreshed by its pod."`
	CacheTTL time.Duration `koanf:"cache_ttl" default:"0s" doc:"How long route lookups are cached in process; 0 = no caching."`
}

// Redis selects the store: empty Addrs = in-memory (single node).
type Redis struct {
	Addrs        []string      `koanf:"addrs" doc:"Redis host:port list (Sentinel addresses when redis.master_name is set); empty = in-memory stores, single node."`
	MasterName   string        `koanf:"master_name" doc:"Sentinel master name; empty = no Sentinel."`
	Username     string        `koanf:"username" doc:"Redis ACL user name."`
	Password     string        `koanf:"password" secret:"true" doc:"Redis password."`
	DB           int           `koanf:"db" default:"0" doc:"Redis database number."`
	KeyPrefix    string        `koanf:"key_prefix" doc:"Prefix of every Redis key dws writes (tests isolate by it)."`
	PoolSize     int           `koanf:"pool_size" default:"0" doc:"Connection pool size; 0 = the go-redis default."`
	DialTimeout  time.Duration `koanf:"dial_timeout" default:"2s" doc:"Redis dial timeout."`
	ReadTimeout  time.Duration `koanf:"read_timeout" default:"1s" doc:"Redis read timeout."`
	WriteTimeout time.Duration `koanf:"write_timeout" default:"1s" doc:"Redis write timeout."`
}

// NATS selects the broker: empty URL = embedded server with JetStream.
type NATS struct {
	URL           string        `koanf:"url" doc:"NATS server URL(s), comma-separated; empty = embedded server with JetStream. Credentials in it are redacted when printed."`
	Stream        string        `koanf:"stream" default:"wa_stream" doc:"JetStream stream carrying websocket.> events."`
	Consumer      string        `koanf:"consumer" default:"ws_fanout" doc:"Name prefix of the per-partition durable consumers ({consumer}_p{N}) on the dws-owned partition stream."`
	CreateStream  bool          `koanf:"create_stream" default:"true" doc:"Create the stream when absent (an existing stream is never modified)."`
	MaxAckPending int           `koanf:"max_ack_pending" default:"5000" doc:"Unacked events per pod, split over the partitions (each partition consumer gets max(this/partitions, 256))."`
	AckWait       time.Duration `koanf:"ack_wait" default:"30s" doc:"Partition consumer AckWait. Failover does not wait for it: a new owner recreates the consumer at the oldest unacked event."`
	NakDelay      time.Duration `koanf:"nak_delay" default:"1s" doc:"While Redis is down, the pause between route lookups of a held message (it is kept in order, not NAKed)."`
	FetchBatch    int           `koanf:"fetch_batch" default:"256" doc:"Messages fetched ahead per pod, split over the partitions (at least 16 each)."`
	EmbeddedDir   string        `koanf:"embedded_dir" doc:"JetStream directory of the embedded server; empty = a temp dir."`
	// Partitions and Failover shape ordered delivery (SPEC §5): events are
	// split by (company, agent) into Partitions, each consumed by one live
	// pod at a time; a dead pod's partitions move within Failover.
	Partitions   int           `koanf:"partitions" default:"64" doc:"Partitions of the event stream by (company, agent); each is consumed by exactly one live pod. Changing it starts a new derived stream."`
	Failover     time.Duration `koanf:"failover" default:"5s" doc:"Bound on how long a dead pod's partitions stay unconsumed (a pod's membership, and with it its partition leases, lives half of it)."`
	EmbeddedPort int           `koanf:"embedded_port" default:"14222" doc:"Client port of the embedded server on 127.0.0.1 (dws publish finds it there); -1 = random."`
	// Replicas of the streams dws creates: 1 on a single server, 3 on a
	// JetStream cluster (an existing stream keeps its own).
	Replicas int `koanf:"replicas" default:"1" doc:"Replicas of the stream dws creates (1 single server, 3 in a JetStream cluster); the partition stream and its consumers follow the source stream."`
}

// GRPC holds pod-to-pod forwarding settings.
type GRPC struct {
	// AuthToken is the fleet's shared secret: anyone who reaches the gRPC
	// port could otherwise push events into any browser (SPEC §5).
	AuthToken       string        `koanf:"auth_token" secret:"true" doc:"Shared fleet secret every Push carries (authorization: Bearer); required outside dev mode."`
	TLSCertFile     string        `koanf:"tls_cert_file" doc:"PEM certificate of this pod's gRPC server, also presented as client certificate to peers; empty = plaintext."`
	TLSKeyFile      string        `koanf:"tls_key_file" doc:"PEM private key of grpc.tls_cert_file."`
	TLSCAFile       string        `koanf:"tls_ca_file" doc:"PEM CA bundle that verifies peers; with it the server requires client certificates (mutual TLS)."`
	CallTimeout     time.Duration `koanf:"call_timeout" default:"2s" doc:"Timeout of one forwarded batch: its PushStream answer, or a unary Push call."`
	BatchMax        int           `koanf:"batch_max" default:"128" doc:"Messages per Push batch to one pod."`
	BatchWait       time.Duration `koanf:"batch_wait" default:"0s" doc:"How long a batch waits to fill; 0 = flush when idle."`
	BreakerFailures int           `koanf:"breaker_failures" default:"5" doc:"Consecutive failures that open a target's circuit breaker."`
	BreakerOpen     time.Duration `koanf:"breaker_open" default:"10s" doc:"How long an open breaker rejects calls before a probe."`
}

// Dispatch holds the JetStream dispatcher sizing.
type Dispatch struct {
	Workers int `koanf:"workers" default:"8" doc:"Unused since partitioned delivery: each owned partition is processed by its own goroutine, in order (SPEC §5). Accepted so existing files load."`
	Queue   int `koanf:"queue" default:"1024" doc:"Unused since partitioned delivery (see nats.fetch_batch). Accepted so existing files load."`
}

// Resume bounds catch-up after a reconnect (SPEC §5a): a socket that comes
// back with since={seq} is replayed what it missed from nats.stream.
type Resume struct {
	MaxEvents     int           `koanf:"max_events" default:"10000" doc:"Most events one resume replays; more answers resync too_many."`
	MaxAge        time.Duration `koanf:"max_age" default:"24h" doc:"Oldest event a resume replays; an older since answers resync too_old. 0 = as old as the stream keeps."`
	MaxConcurrent int           `koanf:"max_concurrent" default:"64" doc:"Replays running at once per pod; more wait (a reconnect storm queues, it does not grow memory)."`
	// CacheBytes bounds the block cache that serves a reconnect storm's
	// replays from one read of the stream's recent range (issue 11).
	CacheBytes int `koanf:"cache_bytes" default:"33554432" doc:"Bytes of recent stream events kept per pod to serve a reconnect storm's replays from one read (32 MiB); a replay whose range would take over half of it reads its own consumer. 0 = every replay reads its own consumer."`
}

// Shutdown holds the drain sequence timing (SPEC §6).
type Shutdown struct {
	CloseGrace time.Duration `koanf:"close_grace" default:"2s" doc:"Wait after sending close 1001 before dropping the remaining sockets."`
	Timeout    time.Duration `koanf:"timeout" default:"20s" doc:"Bound on the whole drain; the process exits within it."`
}

// Log holds logging settings.
type Log struct {
	Level string `koanf:"level" default:"info" hot:"true" doc:"debug, info, warn or error."`
}
