// Package app assembles one dws pod from its configuration: stores, token
// validator, reactor, ops listener (and, with NATS, the bridge). cmd/dws is
// a thin main around it; end-to-end tests start several pods in process
// with it.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/internal/safego"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// Version is set at build time with -ldflags "-X …/app.Version=…".
var Version = "dev"

// App is one running pod.
type App struct {
	Cfg     *config.Config
	Metrics *metrics.Metrics
	Server  *reactor.Server
	Minter  *session.Minter

	keys      *session.APIKeyGuard
	issuer    []byte // SHA-256 of auth.issuer_api_key; nil = minting disabled
	validator *session.Validator
	store     *session.RedisStores // nil on a single node
	events    *eventPath
	replayer  *lateReplayer // resume (SPEC §5a), set once NATS is up
	locker    session.Locker
	routes    session.Routes
	ops       *http.Server
	opsLn     net.Listener
	draining  bool
	stopped   bool
	mu        sync.Mutex
	closers   []func(context.Context) error
	// rejectWhenDown is session.on_store_down == reject as last applied
	// (it is hot): /ready reports an unreachable Redis as down only then.
	rejectWhenDown atomic.Bool
	// extraChecks are readiness probes added by optional parts (redis,
	// nats, grpc), by dependency name.
	extraChecks map[string]func() (string, error)
}

// New builds a pod from a validated config. Nothing listens yet.
func New(cfg *config.Config) (*App, error) {
	a := &App{Cfg: cfg, Metrics: metrics.New(), extraChecks: map[string]func() (string, error){}, replayer: &lateReplayer{}}
	a.Metrics.BuildInfo.WithLabelValues(Version, runtime.Version()).Set(1)
	safego.SetPanicHook(func(where string) { a.Metrics.RecoveredPanics.WithLabelValues(where).Inc() })
	logx.SetLevel(cfg.Log.Level)

	userKey, err := session.ParseKey(cfg.Auth.TokenAESKey)
	if err != nil {
		return nil, fmt.Errorf("auth.token_aes_key: %w", err)
	}
	adminKey := userKey
	if cfg.Auth.AdminTokenAESKey != "" {
		if adminKey, err = session.ParseKey(cfg.Auth.AdminTokenAESKey); err != nil {
			return nil, fmt.Errorf("auth.admin_token_aes_key: %w", err)
		}
	}
	if a.Minter, err = session.NewMinter(userKey, adminKey); err != nil {
		return nil, err
	}
	a.keys = session.NewAPIKeyGuardWith(session.APIKeys{User: cfg.Auth.APIKey, Admin: cfg.Auth.AdminAPIKey,
		Issuer: cfg.Auth.IssuerAPIKey, AllowNoAPIKey: cfg.Auth.AllowNoAPIKey})
	a.issuer = issuerDigest(cfg.Auth.IssuerAPIKey)
	var cache session.TokenCache
	if cfg.Auth.TokenCacheTTL > 0 {
		mc, err := session.NewExpiringTokenCache(cfg.Auth.TokenCacheSize, cfg.Auth.TokenCacheTTL)
		if err != nil {
			return nil, err
		}
		cache = mc
	}
	var replay session.ReplayGuard
	if len(cfg.Redis.Addrs) > 0 {
		// Cluster mode: locks, routes, the token cache and the replay set
		// are shared by every pod through Redis.
		client, err := session.NewRedisClient(RedisClientOptions(cfg.Redis))
		if err != nil {
			return nil, err
		}
		a.store = session.NewRedisStores(client, RedisOptions(cfg, a.Metrics))
		a.locker, a.routes = a.store.Locker(), a.store.Routes()
		if cache != nil && cfg.Auth.SharedTokenCache {
			cache = session.NewTieredTokenCache(cache, a.store.TokenCache(), cfg.Auth.TokenCacheTTL)
		}
		replay = a.store.ReplayGuard()
		a.rejectWhenDown.Store(cfg.Session.OnStoreDown == session.OnStoreDownReject)
		a.extraChecks["redis"] = func() (string, error) {
			switch {
			case a.store.Healthy():
				return "ok", nil
			case a.rejectWhenDown.Load():
				return "", errors.New("unreachable")
			default:
				// accept_local: the pod still serves, so it stays ready.
				return "degraded: unreachable, sessions enforced locally", nil
			}
		}
	} else {
		a.locker = session.NewMemoryLocker()
		a.routes = session.NewMemoryRoutes(cfg.Server.PodID)
	}
	val, err := session.NewValidator(userKey, adminKey, session.ValidatorOptions{
		ClockSkew:    cfg.Auth.ClockSkew,
		MaxTokenAge:  cfg.Auth.MaxTokenAge,
		RejectReplay: cfg.Auth.RejectReplay,
		Replay:       replay,
		Cache:        cache,
		CacheTTL:     cfg.Auth.TokenCacheTTL,
		// A connect burst of fresh tokens must not become part of what
		// every idle socket costs (issue 12).
		CacheOnRepeat: true,
	})
	if err != nil {
		return nil, err
	}

	a.validator = val
	a.Server, err = reactor.New(reactor.Options{
		Addr:        cfg.Server.WSAddr,
		Loops:       cfg.Server.Loops,
		Workers:     cfg.Server.Workers,
		WorkerQueue: cfg.Server.WorkerQueue,
		Subprotocol: cfg.WebSocket.Subprotocol,
		Limits:      Limits(cfg),
		APIKeys:     a.keys,
		Tokens:      val,
		Locker:      a.locker,
		Routes:      a.routes,
		Metrics:     a.Metrics,
		// Resume reads the stream through the bridge, connected later.
		Replayer:      a.replayer,
		ReplayWorkers: cfg.Resume.MaxConcurrent,
	})
	if err != nil {
		return nil, err
	}
	if a.store != nil {
		a.store.SetEvictor(a.Server)
	}
	return a, nil
}

// Limits maps the config keys onto the reactor's limits.
func Limits(cfg *config.Config) reactor.Limits {
	w, r := cfg.WebSocket, cfg.RateLimit
	return reactor.Limits{
		MaxHandshakeBytes:    w.MaxHandshakeBytes,
		HandshakeTimeout:     w.HandshakeTimeout,
		AllowedOrigins:       w.AllowedOrigins,
		PingInterval:         w.PingInterval,
		MaxMissedPongs:       w.MaxMissedPongs,
		MaxMessageBytes:      w.MaxMessageBytes,
		OutboundRingBytes:    w.OutboundRingBytes,
		OutboundRingMessages: w.OutboundRingMessages,
		SlowConsumerGrace:    w.SlowConsumerGrace,
		MessagesPerSecond:    r.MessagesPerSecond,
		MessageBurst:         r.MessageBurst,
		RateLimitCloseAfter:  r.CloseAfter,
		HandshakesPerIP:      r.HandshakesPerIP,
		HandshakeBurst:       r.HandshakeBurst,
		HandshakePaceLag:     r.HandshakePaceLag,
		HandshakePaceMaxWait: r.HandshakePaceMaxWait,
	}
}

// Start opens the listeners.
func (a *App) Start(ctx context.Context) error {
	a.warnOpenDoors()
	if a.store != nil {
		// Not ctx: the store's background work must outlive a cancelled
		// start-up context and end only in Shutdown.
		if err := a.store.Start(context.Background()); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
	}
	if err := a.startForward(ctx); err != nil {
		return err
	}
	if err := a.Server.Start(); err != nil {
		a.stopEvents()
		return err
	}
	if err := a.startEvents(ctx); err != nil {
		_ = a.Server.Stop(ctx)
		a.stopEvents()
		return err
	}
	ln, err := net.Listen("tcp", a.Cfg.Server.OpsAddr)
	if err != nil {
		return fmt.Errorf("server.ops_addr: %w", err)
	}
	a.opsLn = ln
	a.ops = a.newOpsServer(opsListenerIsLoopback(ln))
	safego.Go(ctx, "app.ops", func(context.Context) {
		if err := a.ops.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logx.L().Error("ops listener stopped", "err", err.Error())
		}
	})
	return nil
}

// WSPort and OpsAddr tell where the pod listens (":0" in tests).
func (a *App) WSPort() int { return a.Server.Port() }

// OpsAddr returns the ops listener address.
func (a *App) OpsAddr() string { return a.opsLn.Addr().String() }

func (a *App) onClose(fn func(context.Context) error) {
	a.mu.Lock()
	a.closers = append(a.closers, fn)
	a.mu.Unlock()
}

// Shutdown runs SPEC §6's drain in its order: refuse upgrades, finish
// in-flight events, close 1001 to every socket, wait the grace, drop the
// rest, release this pod's Redis keys, stop gRPC and HTTP. Safe to call
// twice.
func (a *App) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return nil
	}
	a.stopped, a.draining = true, true
	closers := a.closers
	a.closers = nil
	a.mu.Unlock()
	var errs []error
	a.Server.Drain()
	logx.L().Info("draining", "open", a.Server.Open())
	if err := a.drainEvents(ctx); err != nil {
		errs = append(errs, fmt.Errorf("drain events: %w", err))
	}
	a.Server.CloseAll(ctx, codec.CloseGoingAway, "server shutting down", a.Cfg.Shutdown.CloseGrace)
	if err := a.Server.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if a.store != nil {
		if err := a.store.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("release redis keys: %w", err))
		}
	}
	tempDir := a.embeddedTempDir()
	a.stopEvents()
	if tempDir != "" {
		// The embedded server's own clean-up runs in a goroutine the
		// process may not wait for; a clean stop leaves no
		// /tmp/dws-nats-* behind.
		if err := os.RemoveAll(tempDir); err != nil {
			errs = append(errs, fmt.Errorf("remove embedded NATS dir: %w", err))
		}
	}
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if a.ops != nil {
		if err := a.ops.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	logx.L().Info("stopped")
	return errors.Join(errs...)
}

// Draining reports whether Shutdown has begun.
func (a *App) Draining() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.draining
}

// DevBanner is what `make run` prints in dev mode: ready-to-paste URLs
// with fresh tokens, the dev issuer key with the exact curl that mints
// another token, and where to look next. Every key shown is ephemeral: it
// dies with this process, which listens on 127.0.0.1 only. host is the
// address to print for wildcard listeners.
func (a *App) DevBanner(host string) (string, error) {
	now := time.Now()
	tok, err := a.Minter.MintUser(session.UserClaims{CompanyID: "demo", AgentID: "agent1", UserID: "dev",
		ExpiresAt: now.Add(24 * time.Hour), IssuedAt: now})
	if err != nil {
		return "", err
	}
	adminTok, err := a.Minter.MintAdmin(session.AdminClaims{AdminID: "dev-admin", ExpiresAt: now.Add(24 * time.Hour), IssuedAt: now})
	if err != nil {
		return "", err
	}
	adminKey := a.Cfg.Auth.AdminAPIKey
	if adminKey == "" {
		adminKey = a.Cfg.Auth.APIKey
	}
	wsBase := "ws://" + net.JoinHostPort(host, strconv.Itoa(a.WSPort()))
	ops := "http://" + dialable(a.OpsAddr(), host)
	userURL := fmt.Sprintf("%s/ws/demo/agent1?user=dev&token=%s&x-api-key=%s", wsBase, tok, url.QueryEscape(a.Cfg.Auth.APIKey))
	adminURL := fmt.Sprintf("%s/ws/admin?token=%s&x-api-key=%s", wsBase, adminTok, url.QueryEscape(adminKey))
	// The demo page is served by the ops listener (static.go) and takes the
	// user URL, credentials included, as its ws parameter.
	demo := ops + "/client/demo.html?ws=" + url.QueryEscape(userURL)
	mint := fmt.Sprintf(`curl -s -X POST -H 'Content-Type: application/json' -H 'X-API-Key: %s' -d '{"company_id":"demo","agent_id":"agent1","user_id":"u2","expires_in_seconds":3600}' %s/generate-token`,
		a.Cfg.Auth.IssuerAPIKey, ops)
	return fmt.Sprintf(`
  dws is running in DEV MODE: ephemeral keys for this process only, every listener on 127.0.0.1.

  Connect:   %s
  Browser:   const ws = new WebSocket("%s", "json.v1"); ws.onmessage = e => console.log(e.data)
  Chat:      ws.send('{"type":"select_chat","chat_id":"chat1"}')   (messages.chat1 events reach only sockets that selected chat1)
  Admin:     %s   (agents events reach only admin sockets)
  Mint:      %s
             (issuer key %s; connect as u2 with user=u2&token=<token>&x-api-key=%s; a second socket for the same user replaces the first, close 4402)
  Publish:   go run ./cmd/dws publish --subject websocket.demo.agent1.chats
  Demo page: %s   (reference client: reconnects and resumes with since/epoch, drops duplicates)
  Metrics:   %s/metrics
`, userURL, userURL, adminURL, mint, a.Cfg.Auth.IssuerAPIKey, url.QueryEscape(a.Cfg.Auth.APIKey), demo, ops), nil
}

// dialable turns a bound listener address into one a client can dial: a
// wildcard host ("[::]", "0.0.0.0") becomes host, the port stays the real
// bound one.
func dialable(addr, host string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		h = host
	}
	return net.JoinHostPort(h, port)
}

// warnOpenDoors logs, at every start, each setting that leaves a door open
// on purpose (SPEC §3, issue 9): config.Validate refuses the rest.
func (a *App) warnOpenDoors() {
	c := a.Cfg
	log := logx.L()
	if c.Auth.AllowNoAPIKey && c.Auth.APIKey == "" {
		log.Warn("auth.allow_no_api_key is on and auth.api_key is empty: upgrades are checked by token only",
			"key", "auth.allow_no_api_key")
	}
	if !c.Auth.Dev && len(c.WebSocket.AllowedOrigins) == 0 {
		log.Warn("websocket.allowed_origins is empty: any web page can open sockets with a visitor's token (cross-site WebSocket hijacking); list your front-end origins",
			"key", "websocket.allowed_origins")
	}
	if c.Auth.IssuerAPIKey == "" {
		log.Info("token minting disabled: POST /generate-token and /admin/generate-token answer 403 until auth.issuer_api_key is set",
			"key", "auth.issuer_api_key")
	}
}

// embeddedTempDir is the temp directory bridge.StartEmbedded made for this
// pod's JetStream data, or "" when the data lives in nats.embedded_dir (the
// operator's, kept) or NATS is external.
func (a *App) embeddedTempDir() string {
	if a.events == nil || a.events.embedded == nil || a.Cfg.NATS.EmbeddedDir != "" {
		return ""
	}
	// StoreDir is <temp dir>/jetstream.
	dir := filepath.Dir(a.events.embedded.StoreDir())
	if !strings.HasPrefix(filepath.Base(dir), "dws-nats-") {
		return ""
	}
	return dir
}

// Apply takes a reloaded config: the hot keys reach the running pod; the
// reloader has already logged which keys need a restart.
func (a *App) Apply(next *config.Config) {
	logx.SetLevel(next.Log.Level)
	a.Server.SetLimits(Limits(next))
	a.validator.SetRules(next.Auth.ClockSkew, next.Auth.MaxTokenAge)
	if a.store != nil {
		a.store.SetOnStoreDown(next.Session.OnStoreDown)
		a.rejectWhenDown.Store(next.Session.OnStoreDown == session.OnStoreDownReject)
	}
}
