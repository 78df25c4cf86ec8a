package main

// End-to-end tests of the real dws binary: built once in TestMain, run as a
// child process, driven through its signals, its listeners and its logs.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/cmd/dws/app"
	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// e2eVersion is stamped into the binary the way `make build` stamps a git
// describe, so `dws version` and dws_build_info can be checked.
const e2eVersion = "e2e-1.2.3"

var dwsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dws-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dwsBin = filepath.Join(dir, "dws")
	build := exec.Command("go", "build", "-o", dwsBin,
		"-ldflags", "-X github.com/dws-gateway/dws/cmd/dws/app.Version="+e2eVersion, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/dws: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running dws process with its output captured.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout *lockedBuf
	stderr *lockedBuf
	exited chan struct{}
	code   int
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// baseEnv is the test's environment without DWS_ variables, so a
// developer's shell cannot change what the binary sees.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DWS_") && !strings.HasPrefix(kv, "POD_IP=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// runDWS executes a dws command to completion.
func runDWS(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(dwsBin, args...)
	cmd.Env, cmd.Dir = baseEnv(env...), t.TempDir()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// errPortTaken: a port picked by freeAddr was taken by someone else
// between the pick and dws's bind; the caller retries with fresh ports.
var errPortTaken = errors.New("port taken")

// startPod starts `dws args(addrs)…` on fresh loopback ports and waits for
// its "dws started" log line, retrying when a picked port was taken.
func startPod(t *testing.T, env []string, args func(podAddrs) []string) (*proc, podAddrs) {
	t.Helper()
	for range 3 {
		a := newPodAddrs(t)
		p, err := startDWS(t, env, args(a)...)
		if errors.Is(err, errPortTaken) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return p, a
	}
	t.Fatal("three sets of free ports were taken before dws could bind them")
	return nil, podAddrs{}
}

// startDWS starts `dws args…` and waits for its "dws started" log line.
func startDWS(t *testing.T, env []string, args ...string) (*proc, error) {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(dwsBin, args...), stdout: &lockedBuf{}, stderr: &lockedBuf{}, exited: make(chan struct{})}
	p.cmd.Env, p.cmd.Dir = baseEnv(env...), t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			p.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				p.code = -int(ws.Signal())
			}
		default:
			p.code = -1000
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("dws stderr:\n%s", p.stderr.String())
		}
	})
	deadline := time.After(15 * time.Second)
	for len(p.logs("dws started")) == 0 {
		select {
		case <-p.exited:
			if strings.Contains(p.stderr.String(), "address already in use") {
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("dws exited (%d) before it started:\n%s", p.code, p.stderr.String())
		case <-deadline:
			return nil, fmt.Errorf("dws not started after 15 s:\n%s", p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return p, nil
}

// logs returns the JSON log lines whose msg is msg.
func (p *proc) logs(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (p *proc) waitLog(msg string, d time.Duration) map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if l := p.logs(msg); len(l) > 0 {
			return l[0]
		}
		select {
		case <-p.exited:
			p.t.Fatalf("dws exited (%d) before logging %q:\n%s", p.code, msg, p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	p.t.Fatalf("no %q log line after %v:\n%s", msg, d, p.stderr.String())
	return nil
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// wait returns the exit code, failing if the process outlives d.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(d):
		p.t.Fatalf("dws still running %v after the signal", d)
		return 0
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// podAddrs are one pod's listeners on free loopback ports.
type podAddrs struct{ ws, ops, grpc string }

func newPodAddrs(t *testing.T) podAddrs {
	return podAddrs{ws: freeAddr(t), ops: freeAddr(t), grpc: freeAddr(t)}
}

func (a podAddrs) flags() []string {
	return []string{"--set", "server.ws_addr=" + a.ws, "--set", "server.ops_addr=" + a.ops,
		"--set", "server.grpc_addr=" + a.grpc, "--set", "server.pod_id=" + a.grpc}
}

// startNATS runs a JetStream server of the test's own, so the test can
// read the consumer's state after dws is gone.
func startNATS(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("embedded nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// minter mints tokens with the AES key given to the process by env.
func minter(t *testing.T, keyHex string) *session.Minter {
	t.Helper()
	k, err := session.ParseKey(keyHex)
	if err != nil {
		t.Fatal(err)
	}
	m, err := session.NewMinter(k, k)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func userURL(t *testing.T, m *session.Minter, wsAddr, company, agent, user, apiKey string) string {
	t.Helper()
	tok, err := m.MintUser(session.UserClaims{CompanyID: company, AgentID: agent, UserID: user, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"user": {user}, "token": {tok}, "x-api-key": {apiKey}}
	return fmt.Sprintf("ws://%s/ws/%s/%s?%s", wsAddr, company, agent, q.Encode())
}

// bufConn reads through the dialer's buffer: the ready frame often arrives
// in the same packet as the 101.
type bufConn struct {
	net.Conn
	r io.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func dialWS(t *testing.T, u string) (net.Conn, error) {
	t.Helper()
	conn, br, _, err := ws.Dialer{Protocols: []string{"json.v1"}, Timeout: 5 * time.Second}.Dial(context.Background(), u)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	var c net.Conn = conn
	if br != nil {
		c = bufConn{conn, io.MultiReader(br, conn)}
	}
	msg, err := wsutil.ReadServerText(c)
	if err != nil || !strings.HasPrefix(string(msg), `{"type":"ready"`) {
		return nil, fmt.Errorf("no ready frame: %q %v", msg, err)
	}
	return c, nil
}

// rawUpgrade sends an upgrade request for u on a fresh TCP connection and
// returns the HTTP answer.
func rawUpgrade(u string) (*http.Response, []byte, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, nil, err
	}
	conn, err := net.DialTimeout("tcp", pu.Host, 2*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", pu.RequestURI(), pu.Host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b, nil
}

// socket reads events until the server closes it.
type socket struct {
	conn      net.Conn
	mu        sync.Mutex
	events    []string // event_id, in arrival order
	closeCode int      // 0 until closed; -1 = dropped without a close frame
	readErr   error
	done      chan struct{}
}

func readSocket(conn net.Conn) *socket {
	s := &socket{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			msg, err := wsutil.ReadServerText(conn)
			if err != nil {
				s.mu.Lock()
				var ce wsutil.ClosedError
				if errors.As(err, &ce) {
					s.closeCode = int(ce.Code)
				} else {
					s.closeCode, s.readErr = -1, err
				}
				s.mu.Unlock()
				return
			}
			var env struct {
				Type    string `json:"type"`
				Payload struct {
					EventID string `json:"event_id"`
				} `json:"payload"`
			}
			if json.Unmarshal(msg, &env) == nil && env.Type == "event" {
				s.mu.Lock()
				s.events = append(s.events, env.Payload.EventID)
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *socket) snapshot() ([]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events), s.closeCode
}

// gatedPod is a second pod of the test's own: registered in Redis under
// the route, served by a real ForwardServer whose deliveries block while
// the gate is shut. It holds the drain of the pod under test open for as
// long as the test needs to look at it.
type gatedPod struct {
	id   string
	mu   sync.Mutex
	got  []string
	hold chan struct{} // nil = open
}

func (g *gatedPod) Deliver(_ session.Route, payload []byte, _ reactor.Meta) int {
	g.mu.Lock()
	hold := g.hold
	g.mu.Unlock()
	if hold != nil {
		<-hold
	}
	var ev struct {
		EventID string `json:"event_id"`
	}
	_ = json.Unmarshal(payload, &ev)
	g.mu.Lock()
	g.got = append(g.got, ev.EventID)
	g.mu.Unlock()
	return 1
}

func (g *gatedPod) shut() {
	g.mu.Lock()
	g.hold = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedPod) open() {
	g.mu.Lock()
	if g.hold != nil {
		close(g.hold)
		g.hold = nil
	}
	g.mu.Unlock()
}

func (g *gatedPod) received() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.got)
}

func startGatedPod(t *testing.T, redisCfg config.Redis, route session.Route) (*gatedPod, *session.RedisStores) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedPod{id: ln.Addr().String()}
	srv := bridge.NewForwardServer(g, metrics.New())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { g.open(); srv.Stop() })
	client, err := session.NewRedisClient(app.RedisClientOptions(redisCfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	cfg := config.Defaults()
	cfg.Server.PodID, cfg.Redis = g.id, redisCfg
	store := session.NewRedisStores(client, app.RedisOptions(cfg, metrics.New()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := store.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close(context.Background()) })
	if err := store.Routes().Join(ctx, route); err != nil {
		t.Fatal(err)
	}
	return g, store
}

func redisKeys(t *testing.T, rdb *redis.Client, prefix string) []string {
	t.Helper()
	var out []string
	iter := rdb.Scan(context.Background(), 0, prefix+"*", 1000).Iterator()
	for iter.Next(context.Background()) {
		out = append(out, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// SPEC §6 shutdown, end to end: SIGTERM with live sockets and events in
// flight (their forwards to another pod held open by the test).
func TestE2E_SIGTERM_DrainsInOrderAndExitsZero(t *testing.T) {
	const (
		sockets  = 5
		burst    = 200
		tailSize = 50
		timeout  = 10 * time.Second
		apiKey   = "e2e-drain-key"
		company  = "acme"
		agent    = "a1"
		redisURL = "127.0.0.1:6379"
	)
	rdb := redis.NewClient(&redis.Options{Addr: redisURL})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s is not reachable (%v): start it with `make services`", redisURL, err)
	}
	prefix := "dwse2e:" + randomHex(6) + ":"
	t.Cleanup(func() {
		for _, k := range redisKeys(t, rdb, prefix) {
			rdb.Del(context.Background(), k)
		}
	})
	natsURL := startNATS(t)
	route := session.Route{Kind: session.RouteChats, Company: company, Agent: agent}
	other, otherStore := startGatedPod(t, config.Redis{Addrs: []string{redisURL}, KeyPrefix: prefix,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second}, route)

	aesKey := randomHex(32)
	p, addrs := startPod(t, []string{"DWS_AUTH_TOKEN_AES_KEY=" + aesKey, "DWS_AUTH_API_KEY=" + apiKey, "DWS_GRPC_AUTH_TOKEN=e2e-grpc-token"}, func(a podAddrs) []string {
		return append(append([]string{"serve"}, a.flags()...),
			"--set", "nats.url="+natsURL, "--set", "redis.addrs="+redisURL, "--set", "redis.key_prefix="+prefix,
			"--set", "shutdown.timeout="+timeout.String(), "--set", "shutdown.close_grace=1s", "--set", "grpc.call_timeout=5s")
	})
	mint := minter(t, aesKey)

	var socks []*socket
	for i := range sockets {
		conn, err := dialWS(t, userURL(t, mint, addrs.ws, company, agent, fmt.Sprintf("u%d", i), apiKey))
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, readSocket(conn))
	}

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	subject := fmt.Sprintf("websocket.%s.%s.chats", company, agent)
	event := func(id string) []byte {
		return []byte(fmt.Sprintf(`{"event_id":%q,"company_id":%q,"agent_id":%q,"row_data":{}}`, id, company, agent))
	}
	// Warm-up: the whole path (consumer, local sockets, the other pod) works.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bridge.Publish(ctx, nc, subject, event("warm"), "req-warm"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "warm-up event everywhere", func() bool {
		for _, s := range socks {
			if ev, _ := s.snapshot(); len(ev) != 1 {
				return false
			}
		}
		return len(other.received()) == 1
	})

	// The burst: every event is forwarded to the other pod, whose gate is
	// shut, so none can be acked. Once every socket has it, all of it is
	// in flight: delivered here, forwards pending, unacked.
	other.shut()
	want := append([]string{"warm"}, publishAll(ctx, t, js, subject, "e", burst, event)...)
	waitFor(t, 10*time.Second, "the burst at every local socket", func() bool {
		for _, s := range socks {
			if ev, _ := s.snapshot(); len(ev) != len(want) {
				return false
			}
		}
		return true
	})
	if st := partitionState(ctx, t, js); st.ackPending != burst {
		t.Fatalf("before SIGTERM: %d messages unacked, want the whole burst (%d)", st.ackPending, burst)
	}
	// The tail is published just before SIGTERM: some of it may not have
	// reached this pod when it stops consuming.
	tail := publishAll(ctx, t, js, subject, "t", tailSize, event)
	p.signal(syscall.SIGTERM)
	sent := time.Now()
	p.waitLog("draining", 5*time.Second)

	// Draining, with events in flight: not ready, upgrades refused with
	// 503 "draining", the open sockets not closed yet.
	resp, err := http.Get("http://" + addrs.ops + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), `"status":"draining"`) {
		t.Fatalf("/ready while draining: %d %s", resp.StatusCode, b)
	}
	resp, b, err = rawUpgrade(userURL(t, mint, addrs.ws, company, agent, "late", apiKey))
	if err != nil {
		t.Fatalf("upgrade while draining: %v", err)
	}
	var e struct{ Code, Message string }
	if resp.StatusCode != 503 || json.Unmarshal(b, &e) != nil || e.Code != "InternalServerError" || e.Message != "draining" {
		t.Fatalf("upgrade while draining: %d %s", resp.StatusCode, b)
	}
	for i, s := range socks {
		if _, code := s.snapshot(); code != 0 {
			t.Fatalf("socket %d closed (%d) before its in-flight events were settled", i, code)
		}
	}

	other.open()
	code := p.wait(timeout + 2*time.Second)
	took := time.Since(sent)
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if took > timeout {
		t.Fatalf("exit %v after SIGTERM, shutdown.timeout is %v", took, timeout)
	}
	t.Logf("exit 0 %v after SIGTERM", took.Round(time.Millisecond))

	// Every socket got the burst and the same prefix of the tail, in
	// publish order, then close 1001.
	delivered := -1
	for i, s := range socks {
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("socket %d still open after exit", i)
		}
		got, closeCode := s.snapshot()
		if closeCode != 1001 {
			t.Errorf("socket %d: close %d (%v), want 1001", i, closeCode, s.readErr)
		}
		k := len(got) - len(want)
		if k < 0 || !slices.Equal(got, append(slices.Clone(want), tail[:min(max(k, 0), len(tail))]...)) {
			t.Fatalf("socket %d: %d events, want the %d of the burst then a prefix of the tail, in order; %s",
				i, len(got), len(want), firstDiff(got, append(slices.Clone(want), tail...)))
		}
		if delivered >= 0 && k != delivered {
			t.Fatalf("socket %d got %d tail events, another got %d", i, k, delivered)
		}
		delivered = k
	}
	want = append(want, tail[:delivered]...)
	// The forwards in flight at SIGTERM were finished, once each.
	if got := other.received(); !slices.Equal(got, want) {
		t.Errorf("other pod got %d events, want %d in order; %s", len(got), len(want), firstDiff(got, want))
	}
	// Every message this pod received was acked before exit. The rest of
	// the tail was never received: JetStream keeps it for another pod
	// (pending, or ack-pending until nats.ack_wait when it was handed out
	// as the pull subscription closed; nats.go #898). Nothing is lost.
	// The partition stream is a work queue: an acked event leaves it.
	st := partitionState(ctx, t, js)
	total := 1 + burst + tailSize
	// (What was fetched and not processed was NAKed for the next owner:
	// JetStream counts those as redelivered.)
	if int(st.unsettled) != total-len(want) {
		t.Fatalf("after drain: %d events left on the partition stream; want %d", st.unsettled, total-len(want))
	}
	t.Logf("drain: burst of %d in flight delivered and acked; tail %d of %d delivered, %d left for the next owner (%d given back unprocessed)",
		burst, delivered, tailSize, tailSize-delivered, st.redelivered)

	// The pod's Redis keys are gone: once the other pod has released its
	// own, only the cluster's shared markers are left under the prefix.
	if err := otherStore.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range redisKeys(t, rdb, prefix) {
		// Cluster-wide markers belong to no pod: they carry a TTL and
		// outlive the last pod on purpose (session/keys.go).
		if strings.HasSuffix(k, ":registry:alive") || strings.HasSuffix(k, ":registry:recovering") {
			if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 {
				t.Errorf("shared key %s has no TTL (%v)", k, ttl)
			}
			continue
		}
		t.Errorf("key left after shutdown: %s", k)
	}
	// And the listeners are closed.
	for _, addr := range []string{addrs.ws, addrs.ops, addrs.grpc} {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after exit", addr)
		}
	}
	var order []string
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		for _, msg := range []string{"shutdown signal received", "draining", "stopped"} {
			if strings.Contains(line, `"msg":"`+msg+`"`) {
				order = append(order, msg)
			}
		}
	}
	if !slices.Equal(order, []string{"shutdown signal received", "draining", "stopped"}) {
		t.Fatalf("shutdown log lines %v", order)
	}
}

// firstDiff describes where got departs from want.
func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("at %d: %q, want %q", i, got[i], want[i])
		}
	}
	if len(got) < len(want) {
		return fmt.Sprintf("missing from %d: %q…", len(got), want[len(got)])
	}
	return fmt.Sprintf("extra from %d: %q…", len(want), got[len(want)])
}

// publishAll publishes n events named prefix000… asynchronously and waits
// for every JetStream ack; it returns their ids in publish order.
func publishAll(ctx context.Context, t *testing.T, js jetstream.JetStream, subject, prefix string, n int, event func(string) []byte) []string {
	t.Helper()
	ids := make([]string, 0, n)
	acks := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		id := fmt.Sprintf("%s%03d", prefix, i)
		msg := nats.NewMsg(subject)
		msg.Data = event(id)
		msg.Header.Set(bridge.HeaderRequestID, "req-"+id)
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			t.Fatal(err)
		}
		ids, acks = append(ids, id), append(acks, f)
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("publish acks timed out")
		}
	}
	return ids
}

// partitionTotals sums the state of the partition stream derived from
// wa_stream (default layout) and its consumers.
type partitionTotals struct {
	unsettled   uint64 // events still on the work-queue stream
	ackPending  int
	redelivered int
}

func partitionState(ctx context.Context, t *testing.T, js jetstream.JetStream) partitionTotals {
	t.Helper()
	d := config.Defaults().NATS
	l := bridge.PartitionLayout{Source: d.Stream, Consumer: d.Consumer, Partitions: d.Partitions}
	s, err := js.Stream(ctx, l.Stream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := partitionTotals{unsettled: info.State.Msgs}
	cs := s.ListConsumers(ctx)
	for ci := range cs.Info() {
		st.ackPending += ci.NumAckPending
		st.redelivered += ci.NumRedelivered
	}
	if err := cs.Err(); err != nil {
		t.Fatal(err)
	}
	return st
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

// scrapeCounter reads one sample of the text exposition at /metrics.
func scrapeCounter(t *testing.T, opsAddr, sample string) string {
	t.Helper()
	resp, err := http.Get("http://" + opsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return v
		}
	}
	return ""
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// SPEC §9 reload: one "config reloaded" line naming every changed key
// (secrets by name only) and those needing a restart; hot keys applied;
// an invalid file rejected with the old config kept.
func TestE2E_SIGHUP_ReloadsLogsChangesAndRejectsInvalidFile(t *testing.T) {
	const oldKey, newKey = "first-secret-api-key", "second-secret-api-key"
	aesKey := randomHex(32)
	var addrs podAddrs
	file := filepath.Join(t.TempDir(), "dws.yaml")
	conf := func(wsAddr, apiKey, ping string) string {
		return fmt.Sprintf("server:\n  ws_addr: %q\n  ops_addr: %q\n  grpc_addr: %q\n  pod_id: %q\n"+
			"auth:\n  api_key: %q\nwebsocket:\n  ping_interval: %s\nnats:\n  embedded_port: -1\n",
			wsAddr, addrs.ops, addrs.grpc, addrs.grpc, apiKey, ping)
	}
	p, _ := startPod(t, []string{"DWS_AUTH_TOKEN_AES_KEY=" + aesKey, "DWS_GRPC_AUTH_TOKEN=e2e-grpc-token"}, func(a podAddrs) []string {
		addrs = a
		writeFile(t, file, conf(addrs.ws, oldKey, "20s"))
		return []string{"serve", "--config", file}
	})
	mint := minter(t, aesKey)
	if _, err := dialWS(t, userURL(t, mint, addrs.ws, "c1", "a1", "u1", oldKey)); err != nil {
		t.Fatal(err)
	}

	// A hot key, a restart key and a secret change at once.
	writeFile(t, file, conf(freeAddr(t), newKey, "1s"))
	p.signal(syscall.SIGHUP)
	line := p.waitLog("config reloaded", 5*time.Second)
	time.Sleep(100 * time.Millisecond) // a second line would be a bug; give it the chance
	if n := len(p.logs("config reloaded")); n != 1 {
		t.Fatalf("%d \"config reloaded\" lines, want 1", n)
	}
	strs := func(v any) []string {
		var out []string
		for _, x := range v.([]any) {
			out = append(out, x.(string))
		}
		return out
	}
	if got := strs(line["changed"]); !slices.Equal(got, []string{"server.ws_addr", "auth.api_key", "websocket.ping_interval"}) {
		t.Fatalf("changed = %v", got)
	}
	if got := strs(line["restart_required"]); !slices.Equal(got, []string{"server.ws_addr", "auth.api_key"}) {
		t.Fatalf("restart_required = %v", got)
	}
	// The hot key reached the running pod: a socket opened now is pinged
	// within about a second…
	conn, err := dialWS(t, userURL(t, mint, addrs.ws, "c1", "a1", "u2", oldKey))
	if err != nil {
		t.Fatalf("old API key after the reload (auth.api_key needs a restart): %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(4 * time.Second))
	for {
		f, err := ws.ReadFrame(conn)
		if err != nil {
			t.Fatalf("no ping after websocket.ping_interval went to 1s: %v", err)
		}
		if f.Header.OpCode == ws.OpPing {
			break
		}
	}
	// …while the restart keys did not move: the old listener and key serve.
	if resp, _, err := rawUpgrade(userURL(t, mint, addrs.ws, "c1", "a1", "u3", newKey)); err != nil || resp.StatusCode != 401 {
		t.Fatalf("new API key before a restart: %v %v", resp, err)
	}

	// An invalid file is rejected; the running config stays.
	writeFile(t, file, conf(addrs.ws, "third-secret-api-key", "banana"))
	p.signal(syscall.SIGHUP)
	rej := p.waitLog("config reload rejected", 5*time.Second)
	if reason, _ := rej["reason"].(string); !strings.Contains(reason, "websocket.ping_interval") {
		t.Fatalf("rejection reason %q does not name the key", reason)
	}
	if _, err := dialWS(t, userURL(t, mint, addrs.ws, "c1", "a1", "u4", oldKey)); err != nil {
		t.Fatalf("old API key after a rejected reload: %v", err)
	}
	if n := len(p.logs("config reloaded")); n != 1 {
		t.Fatalf("a rejected reload logged \"config reloaded\" (%d lines)", n)
	}
	for result, want := range map[string]string{"ok": "1", "rejected": "1"} {
		if got := scrapeCounter(t, addrs.ops, `dws_config_reloads_total{result="`+result+`"}`); got != want {
			t.Errorf("dws_config_reloads_total{result=%q} = %q, want %s", result, got, want)
		}
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for _, secret := range []string{oldKey, newKey, "third-secret-api-key", aesKey} {
		if strings.Contains(p.stderr.String(), secret) || strings.Contains(p.stdout.String(), secret) {
			t.Fatalf("a secret reached the output:\n%s", p.stderr.String())
		}
	}
}

func TestE2E_ConfigCheck_ExitCodeAndMessageNameTheKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := []struct {
		name string
		yaml string
		code int
		want []string // substrings of the output
	}{
		{"good", "server:\n  ws_addr: \":9080\"\nwebsocket:\n  ping_interval: 15s\n", 0, []string{": ok"}},
		{"empty file is the defaults", "", 0, []string{": ok"}},
		{"typo in a key", "websocket:\n  ping_intervall: 15s\n", 1, []string{`"websocket.ping_intervall"`, `did you mean "websocket.ping_interval"`}},
		{"bad duration", "websocket:\n  ping_interval: banana\n", 1, []string{"websocket.ping_interval"}},
		{"bad number", "server:\n  workers: many\n", 1, []string{"server.workers"}},
		{"refresh not below ttl", "session:\n  ttl: 5s\n  refresh_interval: 10s\n", 1, []string{"session.refresh_interval"}},
		{"short AES key", "auth:\n  token_aes_key: abcd\n", 1, []string{"auth.token_aes_key"}},
		{"not YAML", "server: [\n", 1, []string{"config file"}},
		{"production keys missing", "auth:\n  token_aes_key: " + strings.Repeat("ab", 32) + "\n", 1, []string{"auth.api_key", "grpc.auth_token"}},
		{"issuer key is the API key", "auth:\n  token_aes_key: " + strings.Repeat("ab", 32) + "\n  api_key: k1\n  issuer_api_key: k1\ngrpc:\n  auth_token: t1\n", 1, []string{"auth.issuer_api_key"}},
		{"production keys set", "auth:\n  token_aes_key: " + strings.Repeat("ab", 32) + "\n  api_key: k1\n  issuer_api_key: k2\ngrpc:\n  auth_token: t1\n", 0, []string{": ok"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			writeFile(t, file, tc.yaml)
			out, errOut, code := runDWS(t, nil, "config", "check", file)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out+errOut, w) {
					t.Fatalf("output lacks %q:\nstdout: %s\nstderr: %s", w, out, errOut)
				}
			}
			if tc.name == "short AES key" && strings.Contains(out+errOut, "abcd") {
				t.Fatalf("the key value reached the error: %s", errOut)
			}
		})
	}
	if _, errOut, code := runDWS(t, nil, "config", "check", filepath.Join(dir, "missing.yaml")); code != 1 || !strings.Contains(errOut, "missing.yaml") {
		t.Fatalf("missing file: exit %d %s", code, errOut)
	}
}

func TestE2E_ConfigPrint_MasksSecrets(t *testing.T) {
	t.Parallel()
	secrets := map[string]string{
		"DWS_AUTH_API_KEY":               "print-api-key-value",
		"DWS_AUTH_ADMIN_API_KEY":         "print-admin-key-value",
		"DWS_AUTH_TOKEN_AES_KEY":         randomHex(32),
		"DWS_REDIS_PASSWORD":             "print-redis-password",
		"DWS_WEBSOCKET_MAX_MISSED_PONGS": "3",
	}
	var env []string
	for k, v := range secrets {
		env = append(env, k+"="+v)
	}
	out, errOut, code := runDWS(t, env, "config", "print", "--set", "nats.url=nats://bob:natspass@nats.example:4222")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for k, v := range secrets {
		if k != "DWS_WEBSOCKET_MAX_MISSED_PONGS" && strings.Contains(out, v) {
			t.Fatalf("%s printed in clear:\n%s", k, out)
		}
	}
	if strings.Contains(out, "natspass") {
		t.Fatalf("nats.url password printed:\n%s", out)
	}
	for _, want := range []string{`api_key: '***'`, `token_aes_key: '***'`, `password: '***'`, "max_missed_pongs: 3", "admin_token_aes_key: \"\""} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestE2E_Version_ShowsTheStampedVersion(t *testing.T) {
	t.Parallel()
	out, _, code := runDWS(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "dws "+e2eVersion+" go1.") {
		t.Fatalf("dws version: exit %d %q", code, out)
	}
	if _, errOut, code := runDWS(t, nil, "frobnicate"); code != 2 || !strings.Contains(errOut, "usage:") {
		t.Fatalf("unknown command: exit %d %s", code, errOut)
	}
}

// A token minted on the command line opens a socket on a pod that shares
// its key, and dws_build_info carries the stamped version.
func TestE2E_TokenUser_ThenConnect(t *testing.T) {
	aesKey := randomHex(32)
	env := []string{"DWS_AUTH_TOKEN_AES_KEY=" + aesKey, "DWS_AUTH_API_KEY=cli-key", "DWS_GRPC_AUTH_TOKEN=e2e-grpc-token"}
	out, errOut, code := runDWS(t, env, "token", "user", "--company", "acme", "--agent", "a1", "--user", "u9", "--ttl", "10m")
	if code != 0 {
		t.Fatalf("dws token user: exit %d %s", code, errOut)
	}
	tok := strings.TrimSpace(out)
	for _, bad := range []struct {
		env  []string
		args []string
		want string
	}{
		{env, []string{"token", "user", "--company", "acme"}, "--company, --agent and --user are required"},
		{nil, []string{"token", "user", "--company", "acme", "--agent", "a1", "--user", "u9"}, "DWS_AUTH_TOKEN_AES_KEY"},
		{env, []string{"token", "robot"}, "want: dws token user|admin"},
	} {
		if _, errOut, code := runDWS(t, bad.env, bad.args...); code != 1 || !strings.Contains(errOut, bad.want) {
			t.Fatalf("dws %v: exit %d %q, want 1 and %q", bad.args, code, errOut, bad.want)
		}
	}

	p, addrs := startPod(t, env, func(a podAddrs) []string {
		return append(append([]string{"serve"}, a.flags()...), "--set", "nats.embedded_port=-1")
	})
	q := url.Values{"user": {"u9"}, "token": {tok}, "x-api-key": {"cli-key"}}
	if _, err := dialWS(t, fmt.Sprintf("ws://%s/ws/acme/a1?%s", addrs.ws, q.Encode())); err != nil {
		t.Fatalf("connect with the CLI token: %v", err)
	}
	if got := scrapeCounter(t, addrs.ops, `dws_connections_active{kind="user"}`); got != "1" {
		t.Fatalf("dws_connections_active{kind=\"user\"} = %q", got)
	}
	if v := scrapeCounter(t, addrs.ops, fmt.Sprintf(`dws_build_info{go_version=%q,version=%q}`, runtimeVersion(t), e2eVersion)); v != "1" {
		t.Fatalf("dws_build_info for %s = %q", e2eVersion, v)
	}
	if strings.Contains(p.stdout.String(), "DEV MODE") {
		t.Fatal("configured keys, yet the pod says dev mode")
	}
}

// runtimeVersion is the Go version the binary was built with, as
// `dws version` reports it.
func runtimeVersion(t *testing.T) string {
	out, _, _ := runDWS(t, nil, "version")
	f := strings.Fields(out)
	if len(f) != 3 {
		t.Fatalf("dws version: %q", out)
	}
	return f[2]
}

// Issue 9, the newcomer's path: -h lists the commands and succeeds, for
// dws itself and for each command.
func TestE2E_Help_PrintsUsageAndExitsZero(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"}, {"serve", "-h"}, {"serve", "--help"}, {"publish", "-h"},
		{"token", "-h"}, {"token", "user", "-h"}, {"config", "--help"}, {"config", "print", "-h"},
	} {
		out, errOut, code := runDWS(t, nil, args...)
		if code != 0 || !strings.Contains(out, "usage") || strings.Contains(out+errOut, "help requested") {
			t.Errorf("dws %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
	}
	out, _, _ := runDWS(t, nil, "-h")
	for _, cmd := range []string{"[serve]", "token", "publish", "config check", "version"} {
		if !strings.Contains(out, "dws "+cmd) {
			t.Errorf("dws -h does not list %q:\n%s", cmd, out)
		}
	}
}

// SPEC §3: token keys with an empty auth.api_key refuse to start, with
// one line naming the key (it used to start and accept any key).
func TestE2E_Serve_EmptyAPIKey_RefusesToStartNamingTheKey(t *testing.T) {
	t.Parallel()
	a := newPodAddrs(t)
	env := []string{"DWS_AUTH_TOKEN_AES_KEY=" + randomHex(32), "DWS_GRPC_AUTH_TOKEN=e2e-grpc-token"}
	out, errOut, code := runDWS(t, env, append([]string{"serve"}, a.flags()...)...)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "auth.api_key") || strings.Contains(errOut, "grpc.auth_token") {
		t.Fatalf("exit %d, want 1 and one line naming auth.api_key\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if conn, err := net.DialTimeout("tcp", a.ws, 200*time.Millisecond); err == nil {
		conn.Close()
		t.Fatal("the refused pod listens")
	}
}

// The explicit opt-out starts, and says so at every start; so does an
// empty origin list outside dev mode (cross-site WebSocket hijacking).
func TestE2E_Serve_OpenDoors_WarnedAtStart(t *testing.T) {
	env := []string{"DWS_AUTH_TOKEN_AES_KEY=" + randomHex(32), "DWS_GRPC_AUTH_TOKEN=e2e-grpc-token", "DWS_AUTH_ALLOW_NO_API_KEY=true"}
	p, _ := startPod(t, env, func(a podAddrs) []string {
		return append(append([]string{"serve"}, a.flags()...), "--set", "nats.embedded_port=-1")
	})
	warned := map[string]string{}
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["level"] == "WARN" {
			k, _ := m["key"].(string)
			warned[k], _ = m["msg"].(string)
		}
	}
	if !strings.Contains(warned["auth.allow_no_api_key"], "token only") {
		t.Errorf("no warning about auth.allow_no_api_key: %v", warned)
	}
	if !strings.Contains(warned["websocket.allowed_origins"], "cross-site WebSocket hijacking") {
		t.Errorf("no warning about an empty websocket.allowed_origins: %v", warned)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// bannerLine returns the text after "label:" in the dev banner.
func bannerLine(t *testing.T, p *proc, label string) string {
	t.Helper()
	waitFor(t, 5*time.Second, "the dev banner", func() bool { return strings.Contains(p.stdout.String(), "Metrics:") })
	for _, line := range strings.Split(p.stdout.String(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), label+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %q line in the banner:\n%s", label, p.stdout.String())
	return ""
}

// Issue 9, the newcomer's path in dev mode: the banner's URLs dial (no
// [::], the real port), its curl mints a token that connects, and a clean
// stop leaves no /tmp/dws-nats-* behind.
func TestE2E_DevMode_BannerWorksAsPrinted_NoTempDirLeft(t *testing.T) {
	tmp := t.TempDir()
	p, addrs := startPod(t, []string{"TMPDIR=" + tmp}, func(a podAddrs) []string {
		// A wildcard ops address: dev mode binds it to 127.0.0.1, and
		// the banner must show the port the kernel picked.
		return []string{"serve", "--set", "server.ws_addr=" + a.ws, "--set", "server.ops_addr=:0",
			"--set", "server.grpc_addr=" + a.grpc, "--set", "server.pod_id=" + a.grpc, "--set", "nats.embedded_port=-1"}
	})
	metricsURL := bannerLine(t, p, "Metrics")
	if !strings.HasPrefix(metricsURL, "http://127.0.0.1:") || strings.HasSuffix(metricsURL, ":0/metrics") {
		t.Fatalf("metrics URL %q is not dialable", metricsURL)
	}
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatalf("banner metrics URL: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("banner metrics URL: %d", resp.StatusCode)
	}
	mint := bannerLine(t, p, "Mint")
	if !strings.HasPrefix(mint, "curl ") || !strings.Contains(mint, "-H 'Content-Type: application/json'") || !strings.Contains(mint, "X-API-Key: issuer-") {
		t.Fatalf("mint line %q", mint)
	}
	out, err := exec.Command("sh", "-c", mint).Output()
	if err != nil {
		t.Fatalf("the banner's curl: %v", err)
	}
	var tok struct{ Token string }
	if err := json.Unmarshal(out, &tok); err != nil || tok.Token == "" {
		t.Fatalf("the banner's curl answered %s", out)
	}
	apiKey := regexp.MustCompile(`x-api-key=([^&\s]+)`).FindStringSubmatch(bannerLine(t, p, "Connect"))
	if apiKey == nil {
		t.Fatal("no x-api-key in the Connect URL")
	}
	q := url.Values{"user": {"u2"}, "token": {tok.Token}, "x-api-key": {apiKey[1]}}
	if _, err := dialWS(t, fmt.Sprintf("ws://%s/ws/demo/agent1?%s", addrs.ws, q.Encode())); err != nil {
		t.Fatalf("connect with the curl's token: %v", err)
	}
	if got, _ := filepath.Glob(filepath.Join(tmp, "dws-nats-*")); len(got) != 1 {
		t.Fatalf("embedded NATS dirs while running: %v", got)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if got, _ := filepath.Glob(filepath.Join(tmp, "dws-nats-*")); len(got) != 0 {
		t.Fatalf("left behind after a clean stop: %v", got)
	}
}

// Issue 9, the newcomer's path: `dws publish` says who receives a subject
// and, asking the local pod, when nobody did.
func TestE2E_Publish_SaysWhoReceivesAndWhenNobodyDid(t *testing.T) {
	p, addrs := startPod(t, nil, func(a podAddrs) []string {
		return append(append([]string{"serve"}, a.flags()...), "--set", "nats.embedded_port=-1")
	})
	natsURL, _ := p.waitLog("embedded NATS JetStream started", 5*time.Second)["url"].(string)
	publish := func(subject string) string {
		t.Helper()
		out, errOut, code := runDWS(t, nil, "publish", "--subject", subject, "--set", "nats.url="+natsURL, "--set", "server.ops_addr="+addrs.ops)
		if code != 0 {
			t.Fatalf("dws publish %s: exit %d %s", subject, code, errOut)
		}
		return out
	}
	out := publish("websocket.demo.agent1.messages.chat9")
	if !strings.Contains(out, `only user sockets of /ws/demo/agent1 that sent {"type":"select_chat","chat_id":"chat9"}`) ||
		!strings.Contains(out, "no_route") || !strings.Contains(out, "nobody received it") {
		t.Fatalf("publish to a chat nobody selected:\n%s", out)
	}
	if out := publish("websocket.demo.agent1.agents"); !strings.Contains(out, "only admin sockets") {
		t.Fatalf("publish to agents:\n%s", out)
	}

	// With a socket of (demo, agent1) open, a chats event is delivered.
	dialDevUser(t, p, addrs, "u1")
	if out := publish("websocket.demo.agent1.chats"); !strings.Contains(out, "every user socket of /ws/demo/agent1") ||
		!strings.Contains(out, "delivered") || strings.Contains(out, "WARNING") {
		t.Fatalf("publish to chats with a socket open:\n%s", out)
	}
}

// dialDevUser opens a socket of (demo, agent1) on a dev pod with a token
// minted through the banner's issuer key.
func dialDevUser(t *testing.T, p *proc, addrs podAddrs, user string) net.Conn {
	t.Helper()
	issuer := regexp.MustCompile(`X-API-Key: (\S+)'`).FindStringSubmatch(bannerLine(t, p, "Mint"))
	apiKey := regexp.MustCompile(`x-api-key=([^&\s]+)`).FindStringSubmatch(bannerLine(t, p, "Connect"))
	if issuer == nil || apiKey == nil {
		t.Fatalf("no keys in the banner:\n%s", p.stdout.String())
	}
	req, _ := http.NewRequest("POST", "http://"+addrs.ops+"/generate-token",
		strings.NewReader(`{"company_id":"demo","agent_id":"agent1","user_id":"`+user+`","expires_in_seconds":600}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", issuer[1])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.Token == "" {
		t.Fatalf("mint: %d %v", resp.StatusCode, err)
	}
	q := url.Values{"user": {user}, "token": {tok.Token}, "x-api-key": {apiKey[1]}}
	conn, err := dialWS(t, fmt.Sprintf("ws://%s/ws/demo/agent1?%s", addrs.ws, q.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestPodProcs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		s      config.Server
		env    string
		want   int
		wantOK bool
	}{
		{"default: a loop per CPU, plus one", config.Server{}, "", 3, true},
		{"explicit loops, plus one", config.Server{Loops: 4}, "", 5, true},
		{"explicit procs", config.Server{Procs: 7, Loops: 4}, "", 7, true},
		{"Go's default", config.Server{Procs: -1}, "", 0, false},
		{"the environment wins", config.Server{Procs: 7}, "1", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := podProcs(tt.s, tt.env, 2)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("podProcs = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// The pod process applies server.procs: one P more than its event loops,
// unless the environment's GOMAXPROCS says otherwise; the start-up line
// reports what it runs with.
func TestServe_GOMAXPROCS_LoopsPlusOneUnlessTheEnvironmentSays(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  string
		want float64
	}{
		{"server.loops 1 gives 2 Ps", "", 2},
		{"GOMAXPROCS in the environment wins", "GOMAXPROCS=1", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := []string{"DWS_AUTH_TOKEN_AES_KEY=" + randomHex(32), "DWS_AUTH_API_KEY=procs-key", "DWS_GRPC_AUTH_TOKEN=procs-grpc-token"}
			if tt.env != "" {
				env = append(env, tt.env)
			}
			p, _ := startPod(t, env, func(a podAddrs) []string {
				return append(append([]string{"serve"}, a.flags()...),
					"--set", "server.loops=1", "--set", "nats.embedded_port=-1", "--set", "redis.key_prefix=dwstest:procs:")
			})
			if got := p.logs("dws started")[0]["gomaxprocs"]; got != tt.want {
				t.Fatalf("dws started with gomaxprocs %v, want %v", got, tt.want)
			}
		})
	}
}
