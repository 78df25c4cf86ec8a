package session

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
)

// reEvictDelays: a notice can reach this pod between Acquire returning and
// the reactor indexing the socket, so that Evict finds nothing. The store
// evicts again after each delay unless the key was acquired again since
// (the reactor ignores an Evict for a key it has no socket for).
var reEvictDelays = []time.Duration{100 * time.Millisecond, time.Second}

// evictorBox lets an atomic.Pointer hold an interface.
type evictorBox struct{ e Evictor }

// setEvictor installs what closes local sockets on a takeover.
func (l *redisLocker) setEvictor(e Evictor) { l.evictor.Store(&evictorBox{e}) }

func (l *redisLocker) evict(key string) {
	if b := l.evictor.Load(); b != nil && b.e != nil {
		b.e.Evict(key)
	}
}

// killNotice is the payload on session_kill:{suffix}. OldPodID is our
// addition (see acquireScript); a notice without it concerns every pod.
type killNotice struct {
	NewPodID string `json:"new_pod_id"`
	OldPodID string `json:"old_pod_id,omitempty"`
}

// onKillNotice handles a kill notice (SPEC §4): close the local socket
// (SessionConflict frame + 4402, by the reactor) and compare-and-delete the
// key so the newcomer gets it.
func (l *redisLocker) onKillNotice(ctx context.Context, suffix string, payload string) {
	var n killNotice
	if err := json.Unmarshal([]byte(payload), &n); err != nil || n.NewPodID == "" {
		logx.From(ctx).Warn("malformed kill notice", slog.String("key", suffix))
		return
	}
	if n.NewPodID == l.c.opt.PodID || (n.OldPodID != "" && n.OldPodID != l.c.opt.PodID) {
		return // our own notice, or meant for another pod
	}
	l.c.m.KillNotices.WithLabelValues("received").Inc()
	l.mu.Lock()
	e := l.entries[suffix]
	if e == nil {
		l.mu.Unlock()
		// The key names us but no socket here holds it (a previous process
		// with the same pod id): let it go.
		l.c.enqueue(l.job(suffix, lockStale, 0))
		return
	}
	e.killSeq++
	evict := e.held
	e.held = false // the caller does not Release an evicted socket
	e.yieldPending = true
	gen := e.acqGen
	l.mu.Unlock()
	if evict {
		l.evictLost(suffix, gen)
	}
	l.c.enqueue(l.job(suffix, lockYield, gen))
}

// evictLost closes the local socket of a key another pod took, and again
// after each of reEvictDelays unless the key was acquired here since (acqGen
// moved on).
func (l *redisLocker) evictLost(key string, gen uint64) {
	l.evict(key)
	for _, d := range reEvictDelays {
		time.AfterFunc(d, func() {
			safego.Run(context.Background(), "session.re_evict", func() {
				l.mu.Lock()
				e := l.entries[key]
				again := e == nil || e.acqGen == gen
				l.mu.Unlock()
				if again {
					l.evict(key)
				}
			})
		})
	}
}

// listen holds this pod's one PSUBSCRIBE on session_kill:* and reconnects
// with backoff. Every (re)subscription after the first asks the refresher
// for a full re-assert, since notices sent meanwhile were missed. A master
// switch (failover.go) closes the subscription, which may still sit on the
// old master, so it resubscribes on the new one at once.
func (l *redisLocker) listen(ctx context.Context, ps *redis.PubSub) {
	var subAt atomic.Uint64 // master switches counted when ps was made
	subAt.Store(l.reg.master.switches.Load())
	l.reg.setOnSwitch(func(n uint64) {
		if subAt.Load() < n {
			l.closeSubscription()
		}
	})
	backoff := newBackoff(l.c.opt.RefreshInterval)
	for ctx.Err() == nil {
		if ps == nil {
			subAt.Store(l.reg.master.switches.Load())
			var err error
			ps, err = l.subscribe(ctx)
			if err != nil {
				l.c.fail(ctx, "subscribe", err)
				if !sleepCtx(ctx, backoff.next()) {
					return
				}
				continue
			}
			l.c.requestFull()
			backoff.reset()
		}
		err := l.receive(ctx, ps)
		_ = ps.Close()
		l.ps.Store(nil)
		ps = nil
		if ctx.Err() != nil {
			return
		}
		if l.reg.master.switches.Load() != subAt.Load() {
			continue // closed for a master switch: no outage
		}
		l.c.fail(ctx, "subscribe", err)
		if !sleepCtx(ctx, backoff.next()) {
			return
		}
	}
}

// subscribe opens the pattern subscription and waits for its confirmation.
func (l *redisLocker) subscribe(ctx context.Context) (*redis.PubSub, error) {
	ps := l.c.rdb.PSubscribe(ctx, l.c.keys.killPattern())
	if _, err := ps.ReceiveTimeout(ctx, l.c.opt.OpTimeout); err != nil {
		_ = ps.Close()
		return nil, err
	}
	if err := ps.Subscribe(ctx, l.c.keys.killProbe(l.c.opt.PodID)); err != nil {
		_ = ps.Close()
		return nil, err
	}
	if _, err := ps.ReceiveTimeout(ctx, l.c.opt.OpTimeout); err != nil {
		_ = ps.Close()
		return nil, err
	}
	l.ps.Store(ps)
	if ctx.Err() != nil { // Close raced with us
		_ = ps.Close()
		return nil, ctx.Err()
	}
	return ps, nil
}

// errProbeLost: the subscription missed this pod's own probe.
var errProbeLost = errors.New("kill-notice subscription missed its probe: resubscribing")

// receive dispatches notices until the connection fails. A quiet
// connection is probed once per refresh interval: this pod publishes on its
// own probe channel through the ordinary client, which reaches the current
// master. A second silent interval means the subscription is dead or sits
// on a node that no longer hears the master's publishes (after a Sentinel
// failover go-redis moves its pools to the new master, but a subscription
// stays on the demoted one, where notices never arrive): resubscribe.
func (l *redisLocker) receive(ctx context.Context, ps *redis.PubSub) error {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, l.c.opt.RefreshInterval)
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				if pinged {
					return errProbeLost
				}
				pinged = true
				cctx, cancel := l.c.opCtx(ctx)
				perr := l.c.rdb.Publish(cctx, l.c.keys.killProbe(l.c.opt.PodID), "1").Err()
				cancel()
				if perr != nil {
					return perr
				}
				continue
			}
			return err
		}
		pinged = false
		if m, ok := msg.(*redis.Message); ok {
			if suffix, ok := l.c.keys.killSuffix(m.Channel); ok {
				safego.Run(ctx, "session.kill_notice", func() { l.onKillNotice(ctx, suffix, m.Payload) })
			}
		}
	}
}

// closeSubscription unblocks the listener's read (Close).
func (l *redisLocker) closeSubscription() {
	if ps := l.ps.Load(); ps != nil {
		_ = ps.Close()
	}
}
