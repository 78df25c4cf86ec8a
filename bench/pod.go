package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/dws-gateway/dws/internal/safego"
)

// PodOptions says how to start one dws pod for a scenario.
type PodOptions struct {
	// Binary is the dws executable.
	Binary string
	// Name labels the pod in reports and names its log file.
	Name string
	// TokenKey, APIKey and GRPCToken go to the pod through its
	// environment, never its command line. An empty GRPCToken is
	// $DWS_GRPC_AUTH_TOKEN or a random token shared by the run's pods.
	TokenKey, APIKey, GRPCToken string
	// NATSURL is the broker; empty = the pod's own embedded server on a
	// free port (Pod.NATSURL then says where).
	NATSURL string
	// RedisAddr and KeyPrefix share sessions and routes between pods;
	// empty RedisAddr = in-memory stores (a single pod).
	RedisAddr, KeyPrefix string
	// Set are extra "key=value" overrides (--set).
	Set []string
	// LogDir receives <Name>.log with the pod's stdout and stderr.
	LogDir string
	// ReadyTimeout bounds the wait for GET /ready; default 20 s.
	ReadyTimeout time.Duration
}

// Pod is a dws process a scenario started and will stop.
type Pod struct {
	Name    string
	PID     int
	WS      netip.AddrPort
	Ops     string // host:port of /metrics and /ready
	GRPC    string
	NATSURL string
	LogPath string
	cmd     *exec.Cmd
	done    chan error
}

// StartPod starts dws on free loopback ports and waits until it is ready.
// The pod inherits this process's open-file limit (raised to the hard limit
// first), which bounds the sockets it can hold.
func StartPod(ctx context.Context, o PodOptions) (*Pod, error) {
	if _, err := raiseFileLimit(); err != nil {
		return nil, fmt.Errorf("pod %s: raise file limit: %w", o.Name, err)
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", o.Name, err)
	}
	p := &Pod{
		Name: o.Name,
		WS:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(ports[0])),
		Ops:  "127.0.0.1:" + strconv.Itoa(ports[1]),
		GRPC: "127.0.0.1:" + strconv.Itoa(ports[2]),
		done: make(chan error, 1),
	}
	args := []string{"serve",
		"--set", "server.ws_addr=" + p.WS.String(),
		"--set", "server.ops_addr=" + p.Ops,
		"--set", "server.grpc_addr=" + p.GRPC,
		"--set", "server.pod_id=" + p.GRPC,
		"--set", "log.level=warn",
	}
	if o.NATSURL == "" {
		p.NATSURL = "nats://127.0.0.1:" + strconv.Itoa(ports[3])
		args = append(args, "--set", "nats.embedded_port="+strconv.Itoa(ports[3]))
	} else {
		p.NATSURL = o.NATSURL
		args = append(args, "--set", "nats.url="+o.NATSURL)
	}
	if o.RedisAddr != "" {
		args = append(args, "--set", "redis.addrs="+o.RedisAddr, "--set", "redis.key_prefix="+o.KeyPrefix)
	}
	for _, s := range o.Set {
		args = append(args, "--set", s)
	}
	env := []string{"DWS_AUTH_TOKEN_AES_KEY=" + o.TokenKey, "DWS_AUTH_API_KEY=" + o.APIKey,
		"DWS_GRPC_AUTH_TOKEN=" + grpcToken(o.GRPCToken)}
	if err := p.start(ctx, o.Binary, args, env, o.LogDir, o.ReadyTimeout); err != nil {
		return nil, err
	}
	return p, nil
}

// grpcToken is the fleet token a spawned pod gets: the given one, else
// $DWS_GRPC_AUTH_TOKEN, else one random token per bench process, so every
// pod a run starts shares it (dws refuses to start without one outside dev
// mode, and pods forwarding to each other must agree on it).
func grpcToken(given string) string {
	if given != "" {
		return given
	}
	if v := os.Getenv("DWS_GRPC_AUTH_TOKEN"); v != "" {
		return v
	}
	benchTokenOnce.Do(func() { benchToken = rand.Text() })
	return benchToken
}

var (
	benchTokenOnce sync.Once
	benchToken     string
)

// start runs binary with args and extra env, its output in
// logDir/<Name>.log, and waits for GET /ready on p.Ops.
func (p *Pod) start(ctx context.Context, binary string, args, env []string, logDir string, readyTimeout time.Duration) error {
	if logDir == "" {
		logDir = os.TempDir()
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	p.LogPath = filepath.Join(logDir, p.Name+".log")
	logf, err := os.Create(p.LogPath)
	if err != nil {
		return err
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	// Its own process group: a Ctrl-C of the bench reaches the bench,
	// which then stops the pod in order instead of both dying mid-run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pod %s: start %s: %w", p.Name, binary, err)
	}
	p.cmd, p.PID = cmd, cmd.Process.Pid
	// Reaps the child; ends with it.
	safego.Go(context.Background(), "bench.pod.wait", func(context.Context) { p.done <- cmd.Wait() })
	if readyTimeout <= 0 {
		readyTimeout = 20 * time.Second
	}
	if err := p.waitReady(ctx, readyTimeout); err != nil {
		p.Stop()
		return fmt.Errorf("pod %s: %w (log: %s)", p.Name, err, p.LogPath)
	}
	return nil
}

func (p *Pod) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	cl := &http.Client{Timeout: time.Second}
	for {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("exited before ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := cl.Get("http://" + p.Ops + "/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("not ready in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends SIGTERM (dws drains and exits) and kills the pod after 15 s.
func (p *Pod) Stop() {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.done <- errors.New("killed")
	}
}

// Exited reports whether the pod is gone, and why.
func (p *Pod) Exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. They are free
// when returned; a race with another process is possible but rare, and the
// pod then fails to start with a clear error.
func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
