// Package fleettest starts, for tests, the Redis topologies a fleet of dws
// pods runs against (issue 13, DESIGN "Where it runs at scale"): a
// 3-master Redis Cluster and a Sentinel setup (1 master, 1 replica, 3
// sentinels). Everything runs from the installed binaries (redis-server,
// redis-cli) on free ports in a t.TempDir and is stopped in t.Cleanup; the
// machine's own servers (6379, 4222) are never touched.
//
// scripts/fleet.sh does the same for people.
package fleettest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Binaries used; tests fail with what to install when they are missing.
var (
	RedisServerBin = "/usr/bin/redis-server"
	RedisCliBin    = "/usr/bin/redis-cli"
)

// startTimeout bounds every wait for a server, a cluster or a failover.
const startTimeout = 15 * time.Second

// proc is one redis-server (or sentinel) process.
type proc struct {
	port int
	dir  string
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

func (p *proc) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// spawn starts bin in dir with its output in dir/server.log; exited is
// closed once the process is gone.
func spawn(bin, dir string, args []string) (cmd *exec.Cmd, exited chan struct{}, err error) {
	cmd = exec.Command(bin, args...)
	cmd.Dir = dir
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return nil, nil, err
	}
	exited = make(chan struct{})
	go func() { _ = cmd.Wait(); _ = log.Close(); close(exited) }()
	return cmd, exited, nil
}

func (p *proc) start() error {
	cmd, exited, err := spawn(RedisServerBin, p.dir, p.args)
	if err != nil {
		return fmt.Errorf("%s: %w (install redis-server 7)", RedisServerBin, err)
	}
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	err = waitFor(startTimeout, "redis on "+p.addr()+" answering PING", func() bool {
		select {
		case <-exited: // stop waiting: it will never answer
			return true
		default:
		}
		c := redis.NewClient(&redis.Options{Addr: p.addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	})
	select {
	case <-exited:
		log, _ := os.ReadFile(filepath.Join(p.dir, "server.log"))
		return &exitedError{addr: p.addr(), log: string(log)}
	default:
	}
	return err
}

// exitedError is a server that exited before answering, most often
// because another process took its port between freePorts and the start.
type exitedError struct{ addr, log string }

func (e *exitedError) Error() string {
	log := e.log
	if len(log) > 2000 {
		log = log[len(log)-2000:]
	}
	return "redis on " + e.addr + " exited before answering PING; its log ends:\n" + log
}

// startOnFreePort starts the proc mk builds for a port from freePorts,
// trying another port when the server exits at start (its port was taken
// since it was found free): the tests of a package run in parallel and
// their clients take ephemeral ports all the time.
func startOnFreePort(withBus bool, mk func(port int) (*proc, error)) (*proc, error) {
	var last error
	for range 3 {
		ports, err := freePorts(1, withBus)
		if err != nil {
			return nil, err
		}
		p, err := mk(ports[0])
		if err != nil {
			return nil, err
		}
		err = p.start()
		var ex *exitedError
		if !errors.As(err, &ex) {
			return p, err
		}
		last = err
	}
	return nil, last
}

// kill stops the process abruptly (SIGKILL); a stopped process is left.
func (p *proc) kill() {
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}

// Cluster is a running Redis Cluster of three masters, no replicas.
type Cluster struct {
	// Addrs are the masters' host:port, the seeds of redis.addrs.
	Addrs []string
	procs []*proc
}

// StartCluster starts a 3-master Redis Cluster (cluster-enabled, slots
// spread by `redis-cli --cluster create`) and waits until every node
// reports cluster_state:ok. It is stopped at cleanup.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	return startIn(t, "redis cluster", NewCluster)
}

// startIn runs create in the test's temp dir, stops what it started at
// cleanup (also what a failed start left running) and fails the test on
// error.
func startIn[T interface {
	comparable
	Stop()
}](t testing.TB, what string, create func(dir string) (T, error)) T {
	t.Helper()
	c, err := create(t.TempDir())
	var none T
	if c != none {
		t.Cleanup(c.Stop)
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return c
}

// NewCluster is StartCluster outside a test (dir holds one sub-directory
// per node); the caller calls Stop. On error the nodes started so far are
// returned too, for Stop.
func NewCluster(dir string) (*Cluster, error) {
	c := &Cluster{}
	for range 3 {
		p, err := startOnFreePort(true, func(port int) (*proc, error) {
			d := filepath.Join(dir, "cluster-"+strconv.Itoa(port))
			return &proc{port: port, dir: d, args: append(baseArgs(port, d),
				"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "yes")}, os.MkdirAll(d, 0o755)
		})
		if p != nil {
			c.procs = append(c.procs, p)
			c.Addrs = append(c.Addrs, p.addr())
		}
		if err != nil {
			return c, err
		}
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(RedisCliBin, args...).CombinedOutput()
	if err != nil {
		return c, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	return c, c.waitOK()
}

// Stop kills every node.
func (c *Cluster) Stop() {
	for _, p := range c.procs {
		p.kill()
	}
}

// KillMaster kills node i (SIGKILL): with no replicas its slots stay down.
func (c *Cluster) KillMaster(i int) { c.procs[i].kill() }

// RestartMaster starts killed node i again on its port and directory: its
// nodes.conf gives it back its slots, its data is gone (no persistence), as
// after a crash of a cache-only master. It waits until every node reports
// cluster_state:ok.
func (c *Cluster) RestartMaster(i int) error {
	if err := c.procs[i].start(); err != nil {
		return err
	}
	return c.waitOK()
}

// waitOK waits until every node reports cluster_state:ok.
func (c *Cluster) waitOK() error {
	for _, a := range c.Addrs {
		if err := waitFor(startTimeout, "cluster_state:ok on "+a, func() bool {
			return strings.Contains(info(a, "CLUSTER", "INFO"), "cluster_state:ok")
		}); err != nil {
			return err
		}
	}
	return nil
}

// Sentinel is a running Sentinel setup: one master, one replica, three
// sentinels with quorum 2.
type Sentinel struct {
	// MasterName is the monitored master's name (redis.master_name).
	MasterName string
	// SentinelAddrs are the sentinels' host:port (redis.addrs).
	SentinelAddrs []string
	// ServerAddrs are the data nodes, the first master at start.
	ServerAddrs []string
	servers     []*proc
	sentinels   []*proc
}

// DownAfter is the sentinels' down-after-milliseconds: short, so a killed
// master is failed over within a test's budget.
const DownAfter = 1000 * time.Millisecond

// StartSentinel starts a master, a replica of it and three sentinels
// monitoring it as "mymaster" (quorum 2, down-after 1 s) and waits until
// the replica is in sync and every sentinel knows the replica and the
// other sentinels. It is stopped at cleanup.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	return startIn(t, "redis sentinel", NewSentinel)
}

// NewSentinel is StartSentinel outside a test; the caller calls Stop.
func NewSentinel(dir string) (*Sentinel, error) {
	s := &Sentinel{MasterName: "mymaster"}
	masterPort := 0
	for i := range 2 {
		p, err := startOnFreePort(false, func(port int) (*proc, error) {
			d := filepath.Join(dir, "redis-"+strconv.Itoa(port))
			args := baseArgs(port, d)
			if i == 1 {
				args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(masterPort))
			}
			return &proc{port: port, dir: d, args: args}, os.MkdirAll(d, 0o755)
		})
		if p != nil {
			s.servers = append(s.servers, p)
			s.ServerAddrs = append(s.ServerAddrs, p.addr())
			if i == 0 {
				masterPort = p.port
			}
		}
		if err != nil {
			return s, err
		}
	}
	if err := waitFor(startTimeout, "replica in sync", func() bool {
		return strings.Contains(info(s.ServerAddrs[1], "INFO", "replication"), "master_link_status:up")
	}); err != nil {
		return s, err
	}
	for range 3 {
		p, err := startOnFreePort(false, func(port int) (*proc, error) {
			d := filepath.Join(dir, "sentinel-"+strconv.Itoa(port))
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
			conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
				"sentinel monitor %s 127.0.0.1 %d 2\n"+
				"sentinel down-after-milliseconds %s %d\n"+
				"sentinel failover-timeout %s 10000\n"+
				"sentinel parallel-syncs %s 1\n",
				port, d, s.MasterName, masterPort, s.MasterName, DownAfter.Milliseconds(), s.MasterName, s.MasterName)
			file := filepath.Join(d, "sentinel.conf")
			return &proc{port: port, dir: d, args: []string{file, "--sentinel"}}, os.WriteFile(file, []byte(conf), 0o644)
		})
		if p != nil {
			s.sentinels = append(s.sentinels, p)
			s.SentinelAddrs = append(s.SentinelAddrs, p.addr())
		}
		if err != nil {
			return s, err
		}
	}
	for _, a := range s.SentinelAddrs {
		a := a
		if err := waitFor(startTimeout, "sentinel "+a+" knows the replica and the other sentinels", func() bool {
			m := sentinelMaster(a, s.MasterName)
			return m["num-slaves"] == "1" && m["num-other-sentinels"] == "2"
		}); err != nil {
			return s, err
		}
	}
	return s, nil
}

// Stop kills the sentinels, then the data nodes.
func (s *Sentinel) Stop() {
	for _, p := range s.sentinels {
		p.kill()
	}
	for _, p := range s.servers {
		p.kill()
	}
}

// Master returns the master's address as the first sentinel reports it.
func (s *Sentinel) Master() string {
	return masterAddr(s.SentinelAddrs[0], s.MasterName)
}

// Failover runs SENTINEL FAILOVER and waits until every sentinel names the
// new master and that master accepts writes; it returns the new master.
func (s *Sentinel) Failover() (string, error) {
	old := s.Master()
	if out := info(s.SentinelAddrs[0], "SENTINEL", "FAILOVER", s.MasterName); !strings.HasPrefix(out, "OK") {
		return "", fmt.Errorf("SENTINEL FAILOVER: %q", out)
	}
	return s.waitNewMaster(old)
}

// KillMaster kills the current master (SIGKILL) and waits, as Failover,
// for the sentinels to promote the replica.
func (s *Sentinel) KillMaster() (string, error) {
	old := s.Master()
	for _, p := range s.servers {
		if p.addr() == old {
			p.kill()
		}
	}
	return s.waitNewMaster(old)
}

func (s *Sentinel) waitNewMaster(old string) (string, error) {
	var now string
	err := waitFor(startTimeout+10*DownAfter, "sentinels agree on a new master", func() bool {
		now = masterAddr(s.SentinelAddrs[0], s.MasterName)
		if now == "" || now == old {
			return false
		}
		for _, a := range s.SentinelAddrs[1:] {
			if masterAddr(a, s.MasterName) != now {
				return false
			}
		}
		return strings.Contains(info(now, "INFO", "replication"), "role:master")
	})
	return now, err
}

func masterAddr(sentinel, name string) string {
	out := info(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
	f := strings.Fields(out)
	if len(f) != 2 {
		return ""
	}
	return f[0] + ":" + f[1]
}

func sentinelMaster(sentinel, name string) map[string]string {
	f := strings.Fields(info(sentinel, "SENTINEL", "MASTER", name))
	m := make(map[string]string, len(f)/2)
	for i := 0; i+1 < len(f); i += 2 {
		m[f[i]] = f[i+1]
	}
	return m
}

// baseArgs are the options of every data node: loopback only, no
// persistence (a test's data dies with it).
func baseArgs(port int, dir string) []string {
	return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no"}
}

// info runs one command through redis-cli and returns its raw output ("" on
// error): redis-cli prints every reply type plainly, one item a line.
func info(addr string, args ...string) string {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, RedisCliBin, append([]string{"-h", host, "-p", port}, args...)...).Output()
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(out))
}

// freePorts picks n distinct free loopback ports; withBus also requires
// port+10000 (a cluster node's bus port) to be free.
func freePorts(n int, withBus bool) ([]int, error) {
	var ports []int
	seen := map[int]bool{}
	for tries := 0; len(ports) < n && tries < 200; tries++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if seen[port] || port == 6379 || port == 4222 {
			continue
		}
		if withBus {
			if port+10000 > 65535 || !portFree(port+10000) {
				continue
			}
		}
		seen[port] = true
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("found %d free ports of %d", len(ports), n)
	}
	return ports, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

func waitFor(within time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
