package app

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
	"github.com/dws-gateway/dws/session"
)

// partitionLayout is the partitioned stream the pods of this fleet share.
func partitionLayout(n config.NATS) bridge.PartitionLayout {
	return bridge.PartitionLayout{Source: n.Stream, Consumer: n.Consumer, Partitions: n.Partitions}
}

// OwnedPartitions lists the partitions this pod consumes (for /ready).
func (a *App) OwnedPartitions() []int {
	if a.events == nil || a.events.bridge == nil {
		return nil
	}
	return a.events.bridge.Owned()
}

// eventPath is the outbound half of a pod: NATS (embedded when no nats.url
// is configured), the JetStream bridge and the gRPC forward server.
type eventPath struct {
	embedded *server.Server
	url      string
	nc       *nats.Conn
	grpc     *bridge.ForwardServer
	grpcLn   net.Listener
	bridge   *bridge.Bridge
	// leaseClient is the Redis client of the partition leases, apart from
	// the session stores' pool so a burst of session traffic never delays
	// a lease renewal past nats.failover. nil on a single node.
	leaseClient redis.UniversalClient
	// stopPosition ends the stream-position watch (watchStreamPosition).
	stopPosition context.CancelFunc
	// stopCtx is the shutdown context Shutdown hands to drainEvents: it
	// bounds the gRPC graceful stop in stopEvents, which takes none.
	stopCtx context.Context
}

// security maps the grpc.* keys onto the bridge's options. An empty
// auth_token (dev mode only: Validate refuses it elsewhere, and dev mode
// binds gRPC to 127.0.0.1) leaves the port unauthenticated.
func security(c config.GRPC) bridge.Security {
	return bridge.Security{AuthToken: c.AuthToken, CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile, CAFile: c.TLSCAFile}
}

// startForward opens the gRPC listener before the WebSocket listener: a
// socket's route names this pod as soon as it is open, so other pods must
// be able to push here from that moment.
func (a *App) startForward(ctx context.Context) error {
	ev := &eventPath{url: a.Cfg.NATS.URL}
	a.events = ev
	opts, err := security(a.Cfg.GRPC).ServerOptions(a.Metrics)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.Cfg.Server.GRPCAddr)
	if err != nil {
		return fmt.Errorf("server.grpc_addr: %w", err)
	}
	ev.grpcLn = ln
	ev.grpc = bridge.NewForwardServer(a.Server, a.Metrics, opts...)
	safego.Go(ctx, "app.grpc", func(context.Context) {
		if err := ev.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			logx.L().Error("grpc listener stopped", "err", err.Error())
		}
	})
	a.extraChecks["grpc"] = func() (string, error) { return "ok", nil }
	return nil
}

// startEvents brings up NATS (embedded when no nats.url) and the JetStream
// bridge, once sockets can be served.
func (a *App) startEvents(context.Context) error {
	cfg := a.Cfg
	ev := a.events
	if ev.url == "" {
		srv, url, err := bridge.StartEmbedded(cfg.NATS)
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		ev.embedded, ev.url = srv, url
		logx.L().Info("embedded NATS JetStream started", "url", url)
	}
	nc, err := bridge.Connect(ev.url, "dws "+cfg.Server.PodID)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	ev.nc = nc
	var leases session.PartitionLeases // nil: this pod is the fleet
	if len(cfg.Redis.Addrs) > 0 {
		if ev.leaseClient, err = session.NewRedisClient(RedisClientOptions(cfg.Redis)); err != nil {
			return err
		}
		leases = session.NewRedisPartitionLeases(ev.leaseClient, cfg.Redis.KeyPrefix, partitionLayout(cfg.NATS).Stream())
	}
	ev.bridge, err = bridge.New(bridge.Options{
		Leases:        leases,
		PodID:         cfg.Server.PodID,
		NATS:          cfg.NATS,
		GRPC:          cfg.GRPC,
		Dispatch:      cfg.Dispatch,
		RouteCacheTTL: cfg.Route.CacheTTL,
		Conn:          nc,
		Routes:        a.routes,
		Local:         a.Server,
		Metrics:       a.Metrics,
		Security:      security(cfg.GRPC),
		// The embedded server lives and dies with this pod.
		EmbeddedServer: ev.embedded != nil,
	})
	if err != nil {
		return err
	}
	if err := ev.bridge.Start(context.Background()); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	// Resume reads what a socket missed from the stream (SPEC §5a).
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	// Every ready frame from now on names the stream's epoch (SPEC §5) and
	// its position, the since of a client that drops before any event.
	var posCtx context.Context
	posCtx, ev.stopPosition = context.WithCancel(context.Background())
	if err := watchStreamPosition(posCtx, js, cfg.NATS.Stream, ev.bridge.Epoch(), a.Server.SetStreamPosition); err != nil {
		return fmt.Errorf("jetstream: stream %q position: %w", cfg.NATS.Stream, err)
	}
	a.replayer.set(bridge.NewReplayer(js, bridge.ReplayOptions{
		Stream:        cfg.NATS.Stream,
		MaxEvents:     cfg.Resume.MaxEvents,
		MaxAge:        cfg.Resume.MaxAge,
		MaxConcurrent: cfg.Resume.MaxConcurrent,
		CacheBytes:    cfg.Resume.CacheBytes,
	}, a.Metrics))
	a.extraChecks["nats"] = func() (string, error) {
		if !nc.IsConnected() {
			return "", errors.New("disconnected")
		}
		return "ok", nil
	}
	return nil
}

// drainEvents is SPEC §6 shutdown step 2: stop fetching, finish and ack
// what is in flight.
func (a *App) drainEvents(ctx context.Context) error {
	if a.events == nil {
		return nil
	}
	a.events.stopCtx = ctx
	if a.events.bridge == nil {
		return nil
	}
	return a.events.bridge.Drain(ctx)
}

// stopEvents is the last step: gRPC, the bridge, NATS. The gRPC graceful
// stop gets what is left of the shutdown context (SPEC §6: exit within
// shutdown.timeout whatever streams a peer holds open), or shutdown.timeout
// when start-up failed before any drain.
func (a *App) stopEvents() {
	ev := a.events
	if ev == nil {
		return
	}
	if ev.grpc != nil {
		ctx := ev.stopCtx
		if ctx == nil {
			c, cancel := context.WithTimeout(context.Background(), a.Cfg.Shutdown.Timeout)
			defer cancel()
			ctx = c
		}
		if err := ev.grpc.Shutdown(ctx); err != nil {
			logx.L().Warn("grpc streams still open at the shutdown deadline; closed", "err", err.Error())
		}
	}
	if ev.stopPosition != nil {
		ev.stopPosition()
	}
	if ev.bridge != nil {
		ev.bridge.Close()
	}
	if ev.nc != nil {
		ev.nc.Close()
	}
	if ev.leaseClient != nil {
		_ = ev.leaseClient.Close()
	}
	if ev.embedded != nil {
		ev.embedded.Shutdown()
		ev.embedded.WaitForShutdown()
	}
}

// NATSURL is where this pod's events come from (the embedded server's URL
// on a single node).
func (a *App) NATSURL() string {
	if a.events == nil {
		return ""
	}
	return a.events.url
}

// GRPCAddr is the bound gRPC listener address.
func (a *App) GRPCAddr() string {
	if a.events == nil || a.events.grpcLn == nil {
		return ""
	}
	return a.events.grpcLn.Addr().String()
}
