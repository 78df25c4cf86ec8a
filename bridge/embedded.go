package bridge

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/safego"
)

// embeddedReadyTimeout bounds start-up; an embedded server is ready in a
// few milliseconds, so seconds means something is wrong (port taken, disk).
const embeddedReadyTimeout = 10 * time.Second

// StartEmbedded runs a nats-server with JetStream inside this process for
// the single-node default (SPEC §10: no nats.url configured). It listens on
// 127.0.0.1 at cfg.EmbeddedPort (0 or -1 = a random free port, never the
// machine's 4222) and stores JetStream data in cfg.EmbeddedDir, or in a
// fresh temp dir that is removed once the server has shut down. The server
// logs nothing and installs no signal handlers: dws owns both. It returns
// the server (call Shutdown) and its client URL.
func StartEmbedded(cfg config.NATS) (*server.Server, string, error) {
	dir, temp := cfg.EmbeddedDir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "dws-nats-*")
		if err != nil {
			return nil, "", fmt.Errorf("embedded nats: temp dir: %w", err)
		}
		dir, temp = d, true
	}
	port := cfg.EmbeddedPort
	if port <= 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "dws-embedded",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
	}
	cleanup := func() {
		if temp {
			_ = os.RemoveAll(dir)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		cleanup()
		return nil, "", fmt.Errorf("embedded nats: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(embeddedReadyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		cleanup()
		return nil, "", fmt.Errorf("embedded nats: not ready after %s", embeddedReadyTimeout)
	}
	if temp {
		safego.Go(context.Background(), "embedded_nats_cleanup", func(context.Context) {
			s.WaitForShutdown()
			cleanup()
		})
	}
	return s, s.ClientURL(), nil
}
