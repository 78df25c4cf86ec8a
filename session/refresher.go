package session

import (
	"context"
	"log/slog"
	"time"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
)

// refresher runs refreshOnce every refresh interval; while Redis is down it
// probes with backoff instead (never a busy loop), so a recovery is noticed
// and every owned key re-asserted well within one refresh interval.
func (s *RedisStores) refresher(ctx context.Context) {
	c := s.core
	backoff := newBackoff(c.opt.RefreshInterval)
	t := time.NewTimer(c.opt.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		next := c.opt.RefreshInterval
		ok := false
		// A bug in one round must not stop the lease: the pod would be
		// declared dead while serving.
		safego.Run(ctx, "session.refresh", func() { ok = s.refreshOnce(ctx) })
		if !ok || !c.isHealthy() {
			next = backoff.next()
			select { // a failure's own wake-up must not skip the backoff
			case <-c.kick:
			default:
			}
		} else {
			backoff.reset()
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// refreshOnce renews the pod lease and re-asserts what is due. A lease
// found missing (Redis restarted or flushed, or this pod stalled past its
// TTL) and a recovery from degraded mode both mean any owned key may be
// gone or taken: then every key is re-asserted at once.
//
// Route lookups must not trust the registry before that re-assert is done
// (SPEC §5: nothing is lost while the registry is down), so a store coming
// back from degraded mode stays unhealthy until its full re-assert
// succeeded, and a lost data set (lease or registry:alive gone) first opens
// the cluster-wide recovery window, which holds every pod's lookups off
// until the other pods re-registered too. A master switch (failover.go)
// counts as a lost data set.
func (s *RedisStores) refreshOnce(ctx context.Context) bool {
	c, reg := s.core, s.registry
	full := c.needFull.Swap(false)
	wasDown := !c.isHealthy()
	// Master switches counted before this round's first command: only a
	// window opened after them settles them (failover.go).
	switches := reg.master.switches.Load()
	leaseMissing, dataLost, err := reg.renew(ctx)
	if err != nil {
		c.m.RefreshBatches.WithLabelValues("error").Inc()
		c.fail(ctx, "lease", err)
		if full || !c.isHealthy() {
			c.needFull.Store(true)
		}
		return false
	}
	c.m.RefreshBatches.WithLabelValues("ok").Inc()
	if leaseMissing || dataLost {
		reg.announce.Store(true)
	}
	if leaseMissing && !full {
		logx.From(ctx).Warn("pod lease was missing; re-asserting every owned key", slog.String("pod_id", c.opt.PodID))
	}
	announce := reg.announce.Load() || reg.switchSuspect()
	full = full || leaseMissing || wasDown || announce
	if announce {
		if !reg.openRecovery(ctx) {
			c.needFull.Store(true)
			return false
		}
		reg.settleSwitches(switches)
	}
	if !s.refreshStores(ctx, full) {
		if full {
			c.needFull.Store(true)
		}
		return false
	}
	if full {
		reg.announce.Store(false)
	}
	if !wasDown {
		return true
	}
	c.setHealthy(ctx, true, "", nil)
	// Joins and Acquires that ran during the re-assert still saw the
	// store down and only marked their keys dirty: write them now, not a
	// refresh interval later.
	return s.refreshStores(ctx, false)
}

// refreshStores re-asserts the due keys of every store (all of them when
// full); each store gets its turn even if an earlier one failed.
func (s *RedisStores) refreshStores(ctx context.Context, full bool) bool {
	ok := s.locks.refresh(ctx, full)
	return s.routes.refresh(ctx, full) && ok
}

// backoff doubles from a small step up to a cap.
type backoff struct {
	cur, min, max time.Duration
}

func newBackoff(ceiling time.Duration) *backoff {
	lo := min(100*time.Millisecond, ceiling/4)
	return &backoff{cur: lo, min: lo, max: ceiling}
}

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d
}

func (b *backoff) reset() { b.cur = b.min }

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
