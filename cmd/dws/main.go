// Command dws is the WebSocket gateway. Subcommands:
//
//	dws [serve] [--config FILE] [--set key=value ...]   run a pod (default)
//	dws token user|admin ...                           mint a token
//	dws publish --subject S --data JSON                 publish a test event
//	dws config check FILE | config print               validate / show config
//	dws version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/cmd/dws/app"
	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/session"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args, stdout)
	case "token":
		err = token(args, stdout)
	case "publish":
		err = publish(args, stdout)
	case "config":
		err = configCmd(args, stdout)
	case "version":
		fmt.Fprintf(stdout, "dws %s %s\n", app.Version, runtime.Version())
	case "help", "-h", "--help":
		usage(stdout)
	default:
		fmt.Fprintf(stderr, "dws: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "dws %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  dws [serve] [--config FILE] [--set key=value ...]
  dws token user --company C --agent A --user U [--ttl 1h]
  dws token admin --admin ID [--company C] [--agent A] [--ttl 1h]
  dws publish --subject websocket.C.A.chats --data '{"event_id":"e1",...}' [--request-id ID]
  dws config check FILE
  dws config print [--config FILE]
  dws version
Keys and their DWS_ env names: docs/config.md
`)
}

// setFlags collects repeated --set key=value overrides.
type setFlags map[string]string

func (s setFlags) String() string { return "" }
func (s setFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok {
		return errors.New("want key=value")
	}
	s[k] = val
	return nil
}

func loadConfig(fs *flag.FlagSet, args []string) (*config.Config, error) {
	file := fs.String("config", "", "YAML config file (default: $DWS_CONFIG, else config/dws.yaml if present)")
	sets := setFlags{}
	fs.Var(sets, "set", "override a key: --set websocket.ping_interval=10s (repeatable)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cfg, err := config.Load(config.LoadOptions{File: *file, Flags: sets})
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

func serve(args []string, stdout io.Writer) error {
	cfg, err := loadConfig(flag.NewFlagSet("serve", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	dev := cfg.NeedsDevKeys()
	if dev {
		cfg.ApplyDevKeys()
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	a, err := app.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := a.Start(ctx); err != nil {
		return err
	}
	reloader := config.NewReloader("", cfg, func(_, next *config.Config) { a.Apply(next) })
	reloader.OnResult = func(res string) { a.Metrics.ConfigReloads.WithLabelValues(res).Inc() }
	stopWatch := reloader.Watch(ctx)
	defer stopWatch()
	logx.L().Info("dws started", "ws_port", a.WSPort(), "ops_addr", a.OpsAddr(), "pod_id", cfg.Server.PodID, "dev_mode", dev)
	if dev {
		banner, err := a.DevBanner("127.0.0.1")
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, banner)
	}
	<-ctx.Done()
	stop()
	logx.L().Info("shutdown signal received")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.Timeout)
	defer cancel()
	return a.Shutdown(sctx)
}

func token(args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "user" && args[0] != "admin") {
		return errors.New("want: dws token user|admin ...")
	}
	kind := args[0]
	fs := flag.NewFlagSet("token "+kind, flag.ContinueOnError)
	company := fs.String("company", "", "company id (user) or subscribed company (admin)")
	agent := fs.String("agent", "", "agent id (user) or subscribed agent (admin)")
	user := fs.String("user", "", "user id")
	admin := fs.String("admin", "", "admin id")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	cfg, err := loadConfig(fs, args[1:])
	if err != nil {
		return err
	}
	if cfg.NeedsDevKeys() {
		return errors.New("no token keys configured: set DWS_AUTH_TOKEN_AES_KEY (and DWS_AUTH_ADMIN_TOKEN_AES_KEY)")
	}
	userKey, err := session.ParseKey(cfg.Auth.TokenAESKey)
	if err != nil {
		return fmt.Errorf("auth.token_aes_key: %w", err)
	}
	adminKey := userKey
	if cfg.Auth.AdminTokenAESKey != "" {
		if adminKey, err = session.ParseKey(cfg.Auth.AdminTokenAESKey); err != nil {
			return fmt.Errorf("auth.admin_token_aes_key: %w", err)
		}
	}
	m, err := session.NewMinter(userKey, adminKey)
	if err != nil {
		return err
	}
	now := time.Now()
	var tok string
	if kind == "user" {
		if *company == "" || *agent == "" || *user == "" {
			return errors.New("--company, --agent and --user are required")
		}
		tok, err = m.MintUser(session.UserClaims{CompanyID: *company, AgentID: *agent, UserID: *user, ExpiresAt: now.Add(*ttl), IssuedAt: now})
	} else {
		if *admin == "" {
			return errors.New("--admin is required")
		}
		tok, err = m.MintAdmin(session.AdminClaims{AdminID: *admin, ExpiresAt: now.Add(*ttl), IssuedAt: now,
			SubscribedCompanyID: *company, SubscribedAgentID: *agent})
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func configCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("want: dws config check FILE | dws config print")
	}
	switch args[0] {
	case "check":
		if len(args) != 2 {
			return errors.New("want: dws config check FILE")
		}
		cfg, err := config.Load(config.LoadOptions{File: args[1]})
		if err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok\n", args[1])
		return nil
	case "print":
		cfg, err := loadConfig(flag.NewFlagSet("config print", flag.ContinueOnError), args[1:])
		if err != nil {
			return err
		}
		return config.Print(stdout, cfg)
	}
	return fmt.Errorf("unknown config subcommand %q", args[0])
}

// publish sends one test event to JetStream: to nats.url when configured,
// else to the embedded server of a local `make run` (nats.embedded_port).
func publish(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	subject := fs.String("subject", "", "websocket.{company}.{agent}.chats | .messages.{chat} | .agents")
	data := fs.String("data", "", "the event payload (JSON); default: a sample EnrichedEventPayload")
	reqID := fs.String("request-id", "", "X-Request-ID header (default: a new id)")
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	if *subject == "" {
		return errors.New("--subject is required, e.g. websocket.demo.agent1.chats")
	}
	payload := *data
	if payload == "" {
		r, ok := bridge.ParseSubject(*subject)
		if !ok {
			return fmt.Errorf("subject %q is not websocket.{company}.{agent}.chats|messages.{chat}|agents", *subject)
		}
		payload = fmt.Sprintf(`{"event_id":"%d","event_time":"%s","company_id":%q,"agent_id":%q,"row_data":{"hello":"from dws publish"}}`,
			time.Now().UnixNano(), time.Now().UTC().Format(time.RFC3339Nano), r.Company, r.Agent)
	}
	url := cfg.NATS.URL
	if url == "" {
		if cfg.NATS.EmbeddedPort <= 0 {
			return errors.New("no nats.url and no fixed nats.embedded_port: set DWS_NATS_URL")
		}
		url = fmt.Sprintf("nats://127.0.0.1:%d", cfg.NATS.EmbeddedPort)
	}
	nc, err := nats.Connect(url, nats.Name("dws publish"), nats.Timeout(3*time.Second))
	if err != nil {
		return fmt.Errorf("nats at %s: %w (is `make run` running?)", url, err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := bridge.Publish(ctx, nc, *subject, []byte(payload), *reqID)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "published to %s: stream %s seq %d request_id %s\n", *subject, p.Stream, p.Sequence, p.RequestID)
	return nil
}
