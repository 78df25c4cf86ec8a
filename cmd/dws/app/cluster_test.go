package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/session"
)

// cluster is several in-process pods sharing one Redis under a test prefix.
type cluster struct {
	t      *testing.T
	prefix string
	redis  string
	flags  map[string]string
	pods   []*App
	rdb    *redis.Client
}

func newCluster(t *testing.T, redisAddr string, n int) *cluster {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	c := &cluster{t: t, redis: redisAddr, prefix: "dwstest:" + hex.EncodeToString(suffix) + ":"}
	c.rdb = redis.NewClient(&redis.Options{Addr: redisAddr})
	if err := c.rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s is not reachable (%v): start it with `make services`", redisAddr, err)
	}
	t.Cleanup(func() { _ = c.rdb.Close() })
	c.flags = map[string]string{
		"redis.addrs":              redisAddr,
		"redis.key_prefix":         c.prefix,
		"auth.token_aes_key":       hex.EncodeToString(key),
		"auth.api_key":             "cluster-key",
		"grpc.auth_token":          "cluster-grpc-token",
		"session.refresh_interval": "200ms",
		"session.ttl":              "1s",
		"session.kill_wait":        "1s",
		"route.ttl":                "1s",
		"shutdown.close_grace":     "200ms",
	}
	for i := 0; i < n; i++ {
		c.add()
	}
	return c
}

// add starts one more pod; its pod id is a free loopback address.
func (c *cluster) add() *App { return c.addAs(freeAddr(c.t)) }

// addAs starts one more pod with the given pod id (a free loopback
// address), for tests that must know it before the pod runs.
func (c *cluster) addAs(podID string) *App {
	f := map[string]string{"server.pod_id": podID}
	for k, v := range c.flags {
		f[k] = v
	}
	a := startApp(c.t, f)
	c.pods = append(c.pods, a)
	return a
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (c *cluster) userURL(p *App, co, ag, u string) string {
	tok, err := p.Minter.MintUser(session.UserClaims{CompanyID: co, AgentID: ag, UserID: u, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		c.t.Fatal(err)
	}
	q := url.Values{"user": {u}, "token": {tok}, "x-api-key": {"cluster-key"}}
	return fmt.Sprintf("ws://127.0.0.1:%d/ws/%s/%s?%s", p.WSPort(), co, ag, q.Encode())
}

// keys lists the test prefix's keys.
func (c *cluster) keys() []string {
	var out []string
	iter := c.rdb.Scan(context.Background(), 0, c.prefix+"*", 1000).Iterator()
	for iter.Next(context.Background()) {
		out = append(out, iter.Val())
	}
	return out
}

func (c *cluster) adminURL(p *App, id string) string {
	tok, err := p.Minter.MintAdmin(session.AdminClaims{AdminID: id, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		c.t.Fatal(err)
	}
	q := url.Values{"token": {tok}, "x-api-key": {"cluster-key"}}
	return fmt.Sprintf("ws://127.0.0.1:%d/ws/admin?%s", p.WSPort(), q.Encode())
}

func TestCluster_50ConnectsSameUser_ExactlyOneSurvives(t *testing.T) {
	for _, kind := range []string{"user", "admin"} {
		t.Run(kind, func(t *testing.T) { testOneSurvivor(t, kind) })
	}
}

func testOneSurvivor(t *testing.T, kind string) {
	c := newCluster(t, "127.0.0.1:6379", 3)
	target, key := func(p *App) string { return c.userURL(p, "acme", "a1", "u1") }, "session:acme:a1:u1"
	if kind == "admin" {
		target, key = func(p *App) string { return c.adminURL(p, "adm1") }, "session:admin:adm1"
	}
	type result struct {
		pod  int
		conn net.Conn
	}
	var (
		mu      sync.Mutex
		open    []result
		refused int
		wg      sync.WaitGroup
	)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := i % 3
			conn, err := tryWSDial(t, target(c.pods[p]))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused++ // 409 SessionConflict is a legal answer under contention
				return
			}
			open = append(open, result{p, conn})
		}(i)
	}
	wg.Wait()
	// Every socket but one is told to go (4402) or closed; one stays.
	var survivors []result
	for _, r := range open {
		if _, err := wsutil.ReadServerText(r.conn); err != nil {
			t.Fatalf("no ready: %v", err)
		}
		_ = r.conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		code := readUntilClose(r.conn)
		switch code {
		case -1:
			survivors = append(survivors, r)
		case 4402:
		default:
			t.Fatalf("socket closed with %d, want 4402", code)
		}
	}
	if len(survivors) != 1 {
		t.Fatalf("%d survivors of %d accepted (%d refused), want exactly 1", len(survivors), len(open), refused)
	}
	owner, err := c.rdb.Get(context.Background(), c.prefix+key).Result()
	if err != nil || owner != c.pods[survivors[0].pod].Cfg.Server.PodID {
		t.Fatalf("lock names %q (%v), survivor is on %s", owner, err, c.pods[survivors[0].pod].Cfg.Server.PodID)
	}
}

func TestCluster_AllClosed_NoKeysLeft(t *testing.T) {
	c := newCluster(t, "127.0.0.1:6379", 2)
	var conns []net.Conn
	for i, p := range c.pods {
		conn := wsDial(t, c.userURL(p, "acme", "a1", fmt.Sprintf("u%d", i)))
		if _, err := wsutil.ReadServerText(conn); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	if len(c.keys()) == 0 {
		t.Fatal("no keys while sockets are open")
	}
	for _, conn := range conns {
		_ = conn.Close()
	}
	for _, p := range c.pods {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := p.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	// Token cache entries are not owned state: they expire on their own
	// within auth.token_cache_ttl. Everything else must be gone.
	for _, k := range c.keys() {
		if k == c.prefix+"registry:alive" {
			// Shared by every pod: tells a restarted (empty) Redis from a
			// live registry; it expires on its own within 24 h.
			if ttl := c.rdb.TTL(context.Background(), k).Val(); ttl <= 0 || ttl > 24*time.Hour {
				t.Fatalf("registry marker has TTL %v", ttl)
			}
			continue
		}
		if strings.Contains(k, ":token_cache:") {
			if ttl := c.rdb.TTL(context.Background(), k).Val(); ttl <= 0 || ttl > 30*time.Second {
				t.Fatalf("token cache key %s has TTL %v", k, ttl)
			}
			continue
		}
		t.Fatalf("key left behind: %s", k)
	}
}

// readUntilClose returns the close code of the next close frame, or -1 if
// the read deadline passes first (the socket is alive).
func readUntilClose(conn net.Conn) int {
	for {
		_, err := wsutil.ReadServerText(conn)
		if err == nil {
			continue
		}
		if ce, ok := err.(wsutil.ClosedError); ok {
			return int(ce.Code)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return -1
		}
		if strings.Contains(err.Error(), "timeout") {
			return -1
		}
		return 0
	}
}
