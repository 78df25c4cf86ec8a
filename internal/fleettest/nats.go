package fleettest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The JetStream cluster runs nats-server as processes, not in this process:
// Kill is a real SIGKILL (no graceful shutdown, no leadership handed over,
// sockets reset by the kernel), which an in-process Shutdown cannot be. The
// binary is built from the nats-server/v2 module in go.mod (the machine's
// nats-server may be too old) the first time a version is needed, in about
// a second from the Go build cache, and reused after.

// NATSServerBin, when set, is the nats-server binary to run instead of the
// one built from go.mod.
var NATSServerBin = ""

// natsServerModule is the module the binary is built from.
const natsServerModule = "github.com/nats-io/nats-server/v2"

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// natsServerBinary returns the nats-server to run: NATSServerBin, or one
// built from go.mod's version into a per-version file of the temp dir,
// which later test binaries reuse instead of each leaving a copy.
func natsServerBinary() (string, error) {
	if NATSServerBin != "" {
		return NATSServerBin, nil
	}
	buildOnce.Do(func() { builtBin, buildErr = buildNATSServer() })
	return builtBin, buildErr
}

func buildNATSServer() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	// A test binary's build info lists no dependencies: ask the go command.
	out, err := exec.Command(goBin, "list", "-m", "-f", "{{.Version}}", natsServerModule).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", natsServerModule, err)
	}
	version := strings.TrimSpace(string(out))
	dir := filepath.Join(os.TempDir(), "dws-fleettest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server-"+version)
	if fi, err := os.Stat(bin); err == nil && fi.Mode()&0o111 != 0 {
		return bin, nil
	}
	// Built under a temp name and renamed: a test binary running at the
	// same time never sees half a file.
	tmp := bin + ".tmp" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command(goBin, "build", "-o", tmp, natsServerModule).CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("go build %s: %w\n%s", natsServerModule, err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// natsProc is one nats-server process of a JetStream cluster.
type natsProc struct {
	name string
	port int
	dir  string
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

func (p *natsProc) url() string { return "nats://127.0.0.1:" + strconv.Itoa(p.port) }

func (p *natsProc) start(bin string) error {
	cmd, exited, err := spawn(bin, p.dir, p.args)
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	return nil
}

// kill sends SIGKILL and waits until the process is gone, so its ports
// are closed when kill returns.
func (p *natsProc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// JetStreamCluster is a running 3-node nats-server cluster with JetStream,
// every node on free loopback ports with its own store directory.
type JetStreamCluster struct {
	procs []*natsProc
	nc    *nats.Conn // to every node, for the leader queries
	js    jetstream.JetStream
}

// StartJetStreamCluster starts a 3-node JetStream cluster and waits until
// it has a meta leader and every node answers JetStream requests. It is
// stopped at cleanup.
func StartJetStreamCluster(t testing.TB) *JetStreamCluster {
	t.Helper()
	return startIn(t, "jetstream cluster", NewJetStreamCluster)
}

// NewJetStreamCluster is StartJetStreamCluster outside a test (dir holds
// one sub-directory per node); the caller calls Stop. On error the nodes
// started so far are returned too, for Stop.
func NewJetStreamCluster(dir string) (*JetStreamCluster, error) {
	bin, err := natsServerBinary()
	if err != nil {
		return nil, err
	}
	const n = 3
	ports, err := freePorts(2*n, false)
	if err != nil {
		return nil, err
	}
	var routes []string
	for i := range n {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(ports[n+i]))
	}
	c := &JetStreamCluster{}
	for i := range n {
		name := "n" + strconv.Itoa(i)
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return c, err
		}
		p := &natsProc{name: name, port: ports[i], dir: d, args: []string{
			"--name", name, "--addr", "127.0.0.1", "--port", strconv.Itoa(ports[i]),
			"--cluster_name", "dws-test", "--cluster", routes[i], "--routes", strings.Join(routes, ","),
			"--jetstream", "--store_dir", d,
		}}
		c.procs = append(c.procs, p)
		if err := p.start(bin); err != nil {
			return c, err
		}
	}
	if c.nc, err = nats.Connect(c.URL(), nats.Name("fleettest"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true)); err != nil {
		return c, err
	}
	if c.js, err = jetstream.New(c.nc); err != nil {
		return c, err
	}
	for _, p := range c.procs {
		if err := waitFor(startTimeout, "JetStream answering on "+p.name, func() bool {
			return jetStreamReady(p.url())
		}); err != nil {
			return c, fmt.Errorf("%w (logs in %s)", err, p.dir)
		}
	}
	// Every node answering is not enough: the meta leader places a
	// 3-replica stream only once it has heard from every peer.
	if err := waitFor(startTimeout, "a 3-replica stream placed", c.placesR3); err != nil {
		return c, fmt.Errorf("%w (logs in %s)", err, dir)
	}
	return c, nil
}

// placesR3 creates and deletes a 3-replica stream.
func (c *JetStreamCluster) placesR3() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	const name = "fleettest_ready"
	if _, err := c.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"fleettest.ready"},
		Storage: jetstream.MemoryStorage, Replicas: len(c.procs)}); err != nil {
		return false
	}
	return c.js.DeleteStream(ctx, name) == nil
}

// jetStreamReady reports whether the node at url answers a JetStream
// account info request: that needs the cluster's meta leader.
func jetStreamReady(url string) bool {
	nc, err := nats.Connect(url, nats.Timeout(500*time.Millisecond))
	if err != nil {
		return false
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err == nil
}

// URL is every node's client URL, comma-separated (nats.url).
func (c *JetStreamCluster) URL() string {
	urls := make([]string, len(c.procs))
	for i, p := range c.procs {
		urls[i] = p.url()
	}
	return strings.Join(urls, ",")
}

// Servers are the nodes' server names, by index.
func (c *JetStreamCluster) Servers() []string {
	names := make([]string, len(c.procs))
	for i, p := range c.procs {
		names[i] = p.name
	}
	return names
}

// StreamLeader returns the index of the node leading stream (its Raft
// group's leader, as the stream info reports it).
func (c *JetStreamCluster) StreamLeader(stream string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return -1, err
	}
	return c.leaderIndex(s.CachedInfo().Cluster)
}

func (c *JetStreamCluster) leaderIndex(ci *jetstream.ClusterInfo) (int, error) {
	if ci == nil || ci.Leader == "" {
		return -1, errors.New("no leader")
	}
	for i, p := range c.procs {
		if p.name == ci.Leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("leader %q is not a node of this cluster", ci.Leader)
}

// Kill stops node i abruptly (SIGKILL) and returns once it is gone.
func (c *JetStreamCluster) Kill(i int) { c.procs[i].kill() }

// Stop closes the query connection and kills every node.
func (c *JetStreamCluster) Stop() {
	if c.nc != nil {
		c.nc.Close()
	}
	for _, p := range c.procs {
		p.kill()
	}
}
