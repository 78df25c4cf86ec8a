package session

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
)

// Master switches (Redis Sentinel failover, a DNS endpoint that moved).
//
// During a Sentinel failover the old master keeps acknowledging writes for
// about a second after the replica was promoted; they are discarded when it
// rejoins as a replica. Lease renewals, lock keys and route members written
// in that window are missing on the new master, which is a partly lost data
// set: a route lookup would skip the pods and sockets it no longer lists and
// ack the event as delivered. So a pod that finds itself on another master
// treats it as a lost data set: its lookups fail with errRegistryRecovering
// (the dispatcher holds the events) until it has opened the cluster-wide
// recovery window on the new master, and it re-asserts every owned key,
// exactly as after a Redis restart (refreshOnce).
//
// The switch is seen where it cannot be missed: every connection to the new
// master is a new TCP connection, so a dial hook compares each connection's
// remote address with the previous one. The hook runs before the connection
// carries a command, so no reply of the new master is trusted before the
// switch is known. It costs no Redis command. Not on a Redis Cluster, where
// every master has its own address (a cluster fails over by itself; a lost
// lease or registry marker is still noticed by the refresher).

// masterWatch remembers the address of the last connection dialed and
// counts the changes. Safe for concurrent use.
type masterWatch struct {
	mu   sync.Mutex
	addr string // "" until the first dial
	// switches counts address changes; the registry compares it with the
	// count its last recovery window was opened at.
	switches atomic.Uint64
}

// observe records a connection to addr and reports whether it is a switch:
// another address than the previous connection's. The first connection is
// none; an empty address (a dialer that gives none) is ignored.
func (w *masterWatch) observe(addr string) (prev string, switched bool) {
	if addr == "" {
		return "", false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	prev, w.addr = w.addr, addr
	if prev == "" || prev == addr {
		return prev, false
	}
	w.switches.Add(1)
	return prev, true
}

// watchMaster installs the dial hook on the client (not on a Redis
// Cluster). A switch makes the next refresh announce a lost data set and
// re-assert every owned key, now.
func (g *redisRegistry) watchMaster() {
	if !g.c.leaseInScript { // Redis Cluster: many addresses by design
		return
	}
	g.c.rdb.AddHook(dialWatch{g})
}

// dialWatch is the go-redis hook of watchMaster: dials only.
type dialWatch struct{ g *redisRegistry }

func (h dialWatch) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err == nil && conn != nil && conn.RemoteAddr() != nil {
			h.g.observeDial(ctx, conn.RemoteAddr().String())
		}
		return conn, err
	}
}

func (h dialWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h dialWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// observeDial handles a new connection to addr.
func (g *redisRegistry) observeDial(ctx context.Context, addr string) {
	prev, switched := g.master.observe(addr)
	if !switched {
		return
	}
	logx.From(ctx).Warn("redis master changed; writes the old master acknowledged may be lost: lookups wait for every pod to re-register, re-asserting every owned key",
		slog.String("pod_id", g.c.opt.PodID), slog.String("from", prev), slog.String("to", addr),
		slog.Duration("window", g.recoveryWindow))
	g.c.requestFull() // refreshOnce sees switchSuspect and announces
	if f := g.onSwitch.Load(); f != nil {
		// Not here: the dial may be the kill-notice subscription's own
		// reconnect, which holds that subscription's lock.
		n := g.master.switches.Load()
		safego.Go(context.WithoutCancel(ctx), "session.master_switch", func(context.Context) { (*f)(n) })
	}
}

// setOnSwitch installs what else a master switch does, given the switches
// counted so far (the kill-notice listener resubscribes on the new master
// at once).
func (g *redisRegistry) setOnSwitch(f func(switches uint64)) { g.onSwitch.Store(&f) }

// switchSuspect reports a master switch this pod has not yet opened the
// recovery window for: its route lookups must not trust the new master.
func (g *redisRegistry) switchSuspect() bool {
	return g.master.switches.Load() != g.settledSwitches.Load()
}

// settleSwitches records that the recovery window was opened after the
// switches counted at seen (read before the markers were written): the
// registry:recovering marker holds the lookups from now on.
func (g *redisRegistry) settleSwitches(seen uint64) { g.settledSwitches.Store(seen) }
