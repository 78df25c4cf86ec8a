package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/safego"
)

// FloorProcessConfig is the floor server as a process: the WebSocket
// listener, an ops listener answering GET /ready, and the same broker path
// dws has when the bench spawns it — an embedded nats-server with
// JetStream, the stream and durable pull consumer dws creates with its
// defaults (bridge.EnsureStream, bridge.EnsureConsumer), consumed with the
// same fetch batch and acked explicitly.
type FloorProcessConfig struct {
	// WSAddr and OpsAddr are IPv4 host:port listeners.
	WSAddr, OpsAddr string
	// NATSPort is the embedded server's client port on 127.0.0.1.
	NATSPort int
	// Loops is the floor's epoll loops; 0 = one per CPU.
	Loops int
}

// ParseFloorProcessArgs reads the hidden "floor-server" subcommand's flags;
// dws-bench and the bench's test binary share it.
func ParseFloorProcessArgs(args []string, out io.Writer) (FloorProcessConfig, error) {
	var c FloorProcessConfig
	fs := flag.NewFlagSet("floor-server", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.WSAddr, "ws-addr", "127.0.0.1:8090", "WebSocket listener `host:port`")
	fs.StringVar(&c.OpsAddr, "ops-addr", "127.0.0.1:8091", "listener of GET /ready")
	fs.IntVar(&c.NATSPort, "nats-port", 14223, "embedded NATS client port on 127.0.0.1")
	fs.IntVar(&c.Loops, "loops", 0, "epoll loops (0: one per CPU)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("floor-server: unexpected argument %q", fs.Arg(0))
	}
	return c, nil
}

// RunFloorProcess serves until ctx ends.
func RunFloorProcess(ctx context.Context, c FloorProcessConfig) error {
	srv, err := StartFloorServer(FloorOptions{Addr: c.WSAddr, Loops: c.Loops})
	if err != nil {
		return err
	}
	defer srv.Close()
	ncfg := config.Defaults().NATS
	ncfg.EmbeddedPort = c.NATSPort
	ns, url, err := bridge.StartEmbedded(ncfg)
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := bridge.Connect(url, "dws-bench floor")
	if err != nil {
		return fmt.Errorf("floor: nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := bridge.EnsureStream(sctx, js, ncfg)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	// One durable pull consumer over the whole stream: the floor is one
	// process, so it needs no partitions.
	cons, err := stream.CreateOrUpdateConsumer(sctx, jetstream.ConsumerConfig{
		Durable:       "floor",
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: ncfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	// The callback is the whole of the floor's event path: encode once,
	// post to the loops, ack.
	cc, err := cons.Consume(func(m jetstream.Msg) {
		srv.Publish(m.Subject(), m.Data())
		_ = m.Ack()
	}, jetstream.PullMaxMessages(ncfg.FetchBatch))
	if err != nil {
		return fmt.Errorf("floor: consume: %w", err)
	}
	defer cc.Stop()

	ln, err := net.Listen("tcp4", c.OpsAddr)
	if err != nil {
		return fmt.Errorf("floor: ops listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ready\n") })
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	safego.Go(ctx, "bench.floor.ops", func(context.Context) {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("floor: ops:", err)
		}
	})
	<-ctx.Done()
	_ = hs.Close()
	return nil
}
