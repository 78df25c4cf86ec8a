package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dws-gateway/dws/session"
)

var (
	buildOnce sync.Once
	dwsBin    string
	buildErr  error
)

// dwsBinary builds cmd/dws once per test run, for tests that need a pod
// they can kill -9.
func dwsBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dws-bin-")
		if err != nil {
			buildErr = err
			return
		}
		dwsBin = filepath.Join(dir, "dws")
		out, err := exec.Command("go", "build", "-o", dwsBin, "github.com/dws-gateway/dws/cmd/dws").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return dwsBin
}

// startProcessPod runs the real dws binary with the cluster's flags and
// returns it with its ws port.
func (c *cluster) startProcessPod() (*exec.Cmd, int, string) {
	t := c.t
	podID := freeAddr(t)
	wsAddr := freeAddr(t)
	args := []string{"serve", "--set", "server.pod_id=" + podID, "--set", "server.ws_addr=" + wsAddr,
		"--set", "server.ops_addr=" + freeAddr(t), "--set", "server.grpc_addr=" + podID}
	for k, v := range c.flags {
		args = append(args, "--set", k+"="+v)
	}
	cmd := exec.Command(dwsBinary(t), args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	_, portStr, _ := net.SplitHostPort(wsAddr)
	port, _ := strconv.Atoi(portStr)
	eventuallyT(t, 10*time.Second, "process pod listening", func() bool {
		conn, err := net.Dial("tcp", wsAddr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return cmd, port, podID
}

func eventuallyT(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

func TestCluster_PodKilled_RoutesLapseAndUserReconnectsElsewhere(t *testing.T) {
	c := newCluster(t, "127.0.0.1:6379", 1)
	b := c.pods[0]
	proc, port, deadPod := c.startProcessPod()

	// u1 lives on the process pod; the chats route names it.
	u := c.userURL(b, "acme", "a1", "u1")
	u = replacePort(u, b.WSPort(), port)
	conn := wsDial(t, u)
	if _, err := wsutil.ReadServerText(conn); err != nil {
		t.Fatal(err)
	}
	route := session.Route{Kind: session.RouteChats, Company: "acme", Agent: "a1"}
	pods, err := b.routes.Pods(context.Background(), route)
	if err != nil || len(pods) != 1 || pods[0] != deadPod {
		t.Fatalf("route pods %v %v, want [%s]", pods, err, deadPod)
	}

	// kill -9: no cleanup at all.
	_ = proc.Process.Signal(syscall.SIGKILL)
	_, _ = proc.Process.Wait()
	killed := time.Now()

	// The user reconnects to the surviving pod within 5 s.
	var again net.Conn
	eventuallyT(t, 5*time.Second, "reconnect to the surviving pod", func() bool {
		c2, err := tryWSDial(t, c.userURL(b, "acme", "a1", "u1"))
		if err != nil {
			return false
		}
		again = c2
		return true
	})
	if _, err := wsutil.ReadServerText(again); err != nil {
		t.Fatal(err)
	}
	t.Logf("reconnected %v after the kill", time.Since(killed))
	// The dead pod drops out of the route within route.ttl (1 s here).
	eventuallyT(t, 2*time.Second, "dead pod out of the route", func() bool {
		pods, err := b.routes.Pods(context.Background(), route)
		return err == nil && len(pods) == 1 && pods[0] == b.Cfg.Server.PodID
	})
	owner := c.rdb.Get(context.Background(), c.prefix+"session:acme:a1:u1").Val()
	if owner != b.Cfg.Server.PodID {
		t.Fatalf("lock owner %q, want %s", owner, b.Cfg.Server.PodID)
	}
}

func replacePort(u string, from, to int) string {
	return replaceOnce(u, fmt.Sprintf(":%d/", from), fmt.Sprintf(":%d/", to))
}

func replaceOnce(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	return s
}

// redisProc is a redis-server of the test's own, on a free port, so the
// test may kill it.
type redisProc struct {
	t    *testing.T
	port string
	cmd  *exec.Cmd
}

func startRedis(t *testing.T, port string) *redisProc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed: apt-get install redis-server (or run `make services`)")
	}
	if port == "" {
		_, port, _ = net.SplitHostPort(freeAddr(t))
	}
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &redisProc{t: t, port: port, cmd: cmd}
	t.Cleanup(r.kill)
	eventuallyT(t, 5*time.Second, "redis-server up", func() bool {
		conn, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return r
}

func (r *redisProc) kill() {
	if r.cmd.ProcessState == nil {
		_ = r.cmd.Process.Kill()
		_, _ = r.cmd.Process.Wait()
	}
}

func TestCluster_RedisKilledAndRestarted_SocketsStayKeysReasserted(t *testing.T) {
	rp := startRedis(t, "")
	c := newCluster(t, "127.0.0.1:"+rp.port, 2)
	p0, p1 := c.pods[0], c.pods[1]
	dialReady := func(p *App, user string) net.Conn {
		conn := wsDial(t, c.userURL(p, "acme", "a1", user))
		if _, err := wsutil.ReadServerText(conn); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	u1 := dialReady(p0, "u1")
	u2 := dialReady(p1, "u2")

	rp.kill()
	// A new socket is accepted locally (accept_local), the pod says so.
	var u3 net.Conn
	eventuallyT(t, 5*time.Second, "degraded accept", func() bool {
		conn, err := tryWSDial(t, c.userURL(p0, "acme", "a1", "u3"))
		if err != nil {
			return false
		}
		u3 = conn
		return true
	})
	if _, err := wsutil.ReadServerText(u3); err != nil {
		t.Fatal(err)
	}
	eventuallyT(t, 3*time.Second, "degraded gauge", func() bool { return testutil.ToFloat64(p0.Metrics.Degraded) == 1 })
	resp, err := http.Get("http://" + p0.OpsAddr() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !containsStr(string(body), "degraded") {
		t.Fatalf("/ready during outage: %d %s", resp.StatusCode, body)
	}
	// The same user accepted on both pods while Redis is away.
	dupA := dialReady(p0, "u4")
	dupB := dialReady(p1, "u4")

	// No socket was dropped by the outage.
	for _, conn := range []net.Conn{u1, u2, u3} {
		if err := wsutil.WriteClientMessage(conn, ws.OpPing, []byte("alive")); err != nil {
			t.Fatalf("socket dropped during outage: %v", err)
		}
	}

	startRedis(t, rp.port) // same port, empty data set
	// Within a few refresh intervals every owned key is back.
	want := map[string]string{
		"session:acme:a1:u1": p0.Cfg.Server.PodID,
		"session:acme:a1:u2": p1.Cfg.Server.PodID,
		"session:acme:a1:u3": p0.Cfg.Server.PodID,
	}
	eventuallyT(t, 5*time.Second, "keys re-asserted", func() bool {
		for k, v := range want {
			if c.rdb.Get(context.Background(), c.prefix+k).Val() != v {
				return false
			}
		}
		return testutil.ToFloat64(p0.Metrics.Degraded) == 0
	})
	// The duplicate is resolved: exactly one of the two u4 sockets remains.
	// Each read gets its own deadline: an expired one would not even
	// return a close frame already waiting in the buffer.
	var codes []int
	for _, conn := range []net.Conn{dupA, dupB} {
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		codes = append(codes, readUntilClose(conn))
	}
	alive := 0
	for _, code := range codes {
		switch code {
		case -1:
			alive++
		case 4402:
		default:
			t.Fatalf("duplicate closed with %d", code)
		}
	}
	if alive != 1 {
		t.Fatalf("after recovery %d u4 sockets alive (codes %v), want 1", alive, codes)
	}
}

func containsStr(s, sub string) bool { return replaceOnce(s, sub, "") != s }
