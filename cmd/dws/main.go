// Command dws is the WebSocket gateway. Subcommands:
//
//	dws [serve] [--config FILE] [--set key=value ...]   run a pod (default)
//	dws token user|admin ...                           mint a token
//	dws publish --subject S --data JSON                 publish a test event
//	dws config check FILE | config print               validate / show config
//	dws version
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
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
	if len(args) > 0 && isHelp(args[0]) {
		usage(stdout)
		return 0
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	if len(args) > 0 && isHelp(args[0]) && cmd != "serve" && cmd != "publish" {
		// token and config take a sub-subcommand before their flags.
		usage(stdout)
		return 0
	}
	// A subcommand's -h prints to stdout (it was asked for); its flag
	// errors go to stderr.
	flagOut = stderr
	if slices.ContainsFunc(args, isHelp) {
		flagOut = stdout
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
	case "help":
		usage(stdout)
	default:
		fmt.Fprintf(stderr, "dws: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		// The flag set has printed its usage: a help request succeeded.
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "dws %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// flagOut is where flag sets print their usage and errors (set by run).
var flagOut io.Writer = os.Stderr

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// newFlagSet returns a flag set that reports errors (and ErrHelp) to its
// caller instead of exiting, printing to flagOut.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("dws "+name, flag.ContinueOnError)
	fs.SetOutput(flagOut)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage of dws %s:\n", name)
		fs.PrintDefaults()
	}
	return fs
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
  dws help | -h | --help
  dws COMMAND -h                                      flags of one command
Keys and their DWS_ env names: docs/config.md
With no auth.token_aes_key, serve runs in dev mode (ephemeral keys, 127.0.0.1 only).
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
	cfg, err := loadConfig(newFlagSet("serve"), args)
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
	if n, ok := podProcs(cfg.Server, os.Getenv("GOMAXPROCS"), runtime.NumCPU()); ok {
		runtime.GOMAXPROCS(n)
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
	logx.L().Info("dws started", "ws_port", a.WSPort(), "ops_addr", a.OpsAddr(), "pod_id", cfg.Server.PodID, "dev_mode", dev, "gomaxprocs", runtime.GOMAXPROCS(0))
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

// podProcs is the GOMAXPROCS server.procs asks for: ok is false when the
// Go default stays (GOMAXPROCS set in the environment, or procs -1). The
// default is one P per event loop (server.loops, 0 = one per CPU) plus
// one, so the runtime's own work has a P that is not a loop's. Only the
// pod process sets it: the in-process pods of the tests share their
// test binary's runtime.
func podProcs(s config.Server, env string, cpus int) (int, bool) {
	if env != "" || s.Procs < 0 {
		return 0, false
	}
	if s.Procs > 0 {
		return s.Procs, true
	}
	loops := s.Loops
	if loops == 0 {
		loops = cpus
	}
	return loops + 1, true
}

func token(args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "user" && args[0] != "admin") {
		return errors.New("want: dws token user|admin ...")
	}
	kind := args[0]
	fs := newFlagSet("token " + kind)
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
		cfg, err := loadConfig(newFlagSet("config print"), args[1:])
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
	fs := newFlagSet("publish")
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
	ops := opsURL(cfg.Server.OpsAddr)
	before, scraped := ackCounts(ops)
	p, err := bridge.Publish(ctx, nc, *subject, []byte(payload), *reqID)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "published to %s: stream %s seq %d request_id %s\n", *subject, p.Stream, p.Sequence, p.RequestID)
	fmt.Fprintln(stdout, whoReceives(*subject))
	if scraped {
		fmt.Fprintln(stdout, outcome(ops, before))
	}
	return nil
}

// whoReceives explains which sockets a subject reaches (SPEC §5): the
// stream accepts any event, and one no socket subscribes to is acked and
// dropped as no_route, which a newcomer cannot see from here otherwise.
func whoReceives(subject string) string {
	r, ok := bridge.ParseSubject(subject)
	if !ok {
		return "who receives it: nobody: dws consumes only websocket.{company}.{agent}.chats|messages.{chat}|agents"
	}
	switch r.Kind {
	case session.RouteChats:
		return fmt.Sprintf("who receives it: every user socket of /ws/%s/%s", r.Company, r.Agent)
	case session.RouteMessages:
		return fmt.Sprintf(`who receives it: only user sockets of /ws/%s/%s that sent {"type":"select_chat","chat_id":%q}`, r.Company, r.Agent, r.Chat)
	default:
		return fmt.Sprintf("who receives it: only admin sockets (/ws/admin) whose token subscribes to %s/%s or to everything", r.Company, r.Agent)
	}
}

// opsURL is where a local pod's ops listener answers, from server.ops_addr.
func opsURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// ackCounts reads how many events the pod at ops acked as delivered and as
// no_route (dws_nats_acks_total); false when no pod answers there.
func ackCounts(ops string) (map[string]float64, bool) {
	if ops == "" {
		return nil, false
	}
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get(ops + "/metrics")
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, reason := range []string{"delivered", "no_route"} {
			if v, ok := strings.CutPrefix(line, `dws_nats_acks_total{reason="`+reason+`",result="ack"} `); ok {
				out[reason], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return out, sc.Err() == nil
}

// outcome waits briefly for the local pod to ack the event and says how.
// It reads counters, so another event acked at the same moment can be
// mistaken for this one: good enough for a developer's single pod, and
// worded as what the pod counted.
func outcome(ops string, before map[string]float64) string {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		now, ok := ackCounts(ops)
		if !ok {
			break
		}
		if now["no_route"] > before["no_route"] {
			return "WARNING: the pod at " + ops + " counted this event as no_route: no socket is subscribed to it, so nobody received it"
		}
		if now["delivered"] > before["delivered"] {
			return "the pod at " + ops + " acked it as delivered to its socket(s)"
		}
	}
	return "the pod at " + ops + " has not acked it yet (another pod may own its partition)"
}
