package session

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
)

// Start loads the scripts, takes the pod lease, subscribes to kill notices
// and starts the refresher and the release worker. They run until Close or
// until ctx ends; ending ctx without Close is a crash as far as Redis can
// tell (nothing is cleaned up, the lease lapses). If Redis is unreachable,
// Start still succeeds in degraded mode and the refresher keeps probing.
func (s *RedisStore) Start(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.started {
		return errors.New("session: redis store already started")
	}
	if s.opt.PodID == "" {
		return errors.New("session: redis store needs a pod id")
	}
	s.started = true
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel = cancel

	cctx, ccancel := s.opCtx(ctx)
	err := s.loadScripts(cctx)
	if err == nil {
		// registry:alive only if absent: on a fresh data set this start is
		// no recovery, and a running cluster's marker is left as it is.
		_, err = s.rdb.Pipelined(cctx, func(p redis.Pipeliner) error {
			p.Set(cctx, s.keys.pod(s.opt.PodID), s.leaseValue, s.leaseTTL)
			p.SetArgs(cctx, s.keys.registryAlive(), "1", redis.SetArgs{Mode: "NX", TTL: registryAliveTTL})
			return nil
		})
		if errors.Is(err, redis.Nil) { // SET NX found the marker: fine
			err = nil
		}
	}
	ccancel()
	if err != nil && !s.fail(ctx, "start", err) {
		cancel()
		return err
	}
	var ps *redis.PubSub
	if s.Healthy() {
		if ps, err = s.subscribe(runCtx); err != nil {
			s.fail(ctx, "subscribe", err)
		}
	}
	if !s.Healthy() {
		s.needFull.Store(true)
	}
	s.wg.Add(3)
	safego.Go(runCtx, "session.refresher", func(ctx context.Context) { defer s.wg.Done(); s.refresher(ctx) })
	safego.Go(runCtx, "session.kill_listener", func(ctx context.Context) { defer s.wg.Done(); s.listen(ctx, ps) })
	safego.Go(runCtx, "session.release_worker", func(ctx context.Context) { defer s.wg.Done(); s.worker(ctx) })
	return nil
}

// Close stops the background work and gives up everything this pod holds:
// every session lock it owns (compare-and-delete), every route membership
// and its pod lease, so an idle cluster leaves no keys behind (SPEC §4, §6).
// Call it after the sockets are closed.
func (s *RedisStore) Close(ctx context.Context) error {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	s.life.Unlock()
	if ps := s.ps.Load(); ps != nil {
		_ = ps.Close() // unblocks the listener's read
	}
	done := make(chan struct{})
	safego.Go(ctx, "session.close_wait", func(context.Context) { s.wg.Wait(); close(done) })
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.sweep(ctx)
}

// sweep deletes every key this pod wrote, in pipelined batches.
func (s *RedisStore) sweep(ctx context.Context) error {
	s.mu.Lock()
	lockKeys := make([]string, 0, len(s.locks))
	for k := range s.locks {
		lockKeys = append(lockKeys, k) // compare-and-delete: harmless if another pod holds it
	}
	routeKeys := make([]string, 0, len(s.routes))
	for k, e := range s.routes {
		if e.inRedis || e.dirty {
			routeKeys = append(routeKeys, k)
		}
	}
	s.jobs = nil
	s.mu.Unlock()

	ops := make([]batchOp, 0, len(lockKeys)+len(routeKeys))
	for _, k := range lockKeys {
		if op, ok, _ := s.prepLock(k, lockSweep, 0, true); ok {
			ops = append(ops, op)
		}
	}
	for _, k := range routeKeys {
		if op, ok, _ := s.prepRoute(k, routeSweep, true); ok {
			ops = append(ops, op)
		}
	}
	var errs []error
	for len(ops) > 0 {
		n := min(len(ops), s.opt.RefreshBatch)
		if !s.runBatch(ctx, "close", ops[:n]) {
			errs = append(errs, errors.New("session: releasing keys on close failed"))
		}
		ops = ops[n:]
	}
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.rdb.Del(cctx, s.keys.pod(s.opt.PodID)).Err(); err != nil {
		s.fail(ctx, "close", err)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// refresher runs refreshOnce every refresh interval; while Redis is down it
// probes with backoff instead (never a busy loop), so a recovery is noticed
// and every owned key re-asserted well within one refresh interval.
func (s *RedisStore) refresher(ctx context.Context) {
	backoff := newBackoff(s.opt.RefreshInterval)
	t := time.NewTimer(s.opt.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		next := s.opt.RefreshInterval
		ok := false
		// A bug in one round must not stop the lease: the pod would be
		// declared dead while serving.
		safego.Run(ctx, "session.refresh", func() { ok = s.refreshOnce(ctx) })
		if !ok || !s.Healthy() {
			next = backoff.next()
			select { // a failure's own wake-up must not skip the backoff
			case <-s.kick:
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
// until the other pods re-registered too.
func (s *RedisStore) refreshOnce(ctx context.Context) bool {
	full := s.needFull.Swap(false)
	wasDown := !s.Healthy()
	var (
		lease *redis.StatusCmd
		alive *redis.BoolCmd
	)
	cctx, cancel := s.opCtx(ctx)
	_, err := s.rdb.Pipelined(cctx, func(p redis.Pipeliner) error {
		lease = p.SetArgs(cctx, s.keys.pod(s.opt.PodID), s.leaseValue, redis.SetArgs{TTL: s.leaseTTL, Get: true})
		// PEXPIRE, not SET: it must never recreate the marker, or a
		// restart would go unnoticed by the route lookups.
		alive = p.PExpire(cctx, s.keys.registryAlive(), registryAliveTTL)
		return nil
	})
	cancel()
	if err != nil && !errors.Is(err, redis.Nil) {
		s.m.RefreshBatches.WithLabelValues("error").Inc()
		s.fail(ctx, "lease", err)
		if full || !s.Healthy() {
			s.needFull.Store(true)
		}
		return false
	}
	s.m.RefreshBatches.WithLabelValues("ok").Inc()
	leaseMissing := errors.Is(lease.Err(), redis.Nil)
	if leaseMissing || !alive.Val() {
		s.announce.Store(true)
	}
	if leaseMissing && !full {
		logx.From(ctx).Warn("pod lease was missing; re-asserting every owned key", slog.String("pod_id", s.opt.PodID))
	}
	announce := s.announce.Load()
	full = full || leaseMissing || wasDown || announce
	if announce && !s.openRecovery(ctx) {
		s.needFull.Store(true)
		return false
	}
	ok := s.refreshLocks(ctx, full)
	ok = s.refreshRoutes(ctx, full) && ok
	if !ok {
		if full {
			s.needFull.Store(true)
		}
		return false
	}
	if full {
		s.announce.Store(false)
	}
	if wasDown {
		s.setHealthy(ctx, true, "", nil)
		// Joins and Acquires that ran during the re-assert still saw the
		// store down and only marked their keys dirty: write them now,
		// not a refresh interval later.
		ok = s.refreshLocks(ctx, false)
		ok = s.refreshRoutes(ctx, false) && ok
	}
	return ok
}

// openRecovery (re)opens the recovery window: registry:recovering first,
// then registry:alive, one after the other, so no lookup can see the data
// set as intact in between (on a Redis Cluster the two keys live on
// different nodes, where one pipeline has no order).
func (s *RedisStore) openRecovery(ctx context.Context) bool {
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	err := s.rdb.Set(cctx, s.keys.registryRecovering(), "1", s.recoveryWindow).Err()
	if err == nil {
		err = s.rdb.Set(cctx, s.keys.registryAlive(), "1", registryAliveTTL).Err()
	}
	if err != nil {
		s.m.RefreshBatches.WithLabelValues("error").Inc()
		s.fail(ctx, "lease", err)
		return false
	}
	return true
}

// refreshLocks re-asserts due lock keys and finishes releases and yields
// that failed while Redis was down.
func (s *RedisStore) refreshLocks(ctx context.Context, full bool) bool {
	now := time.Now()
	var (
		reassert, release []string
		yield             = map[string]uint64{}
	)
	s.mu.Lock()
	for k, e := range s.locks {
		switch {
		case e.yieldPending:
			yield[k] = e.acqGen
		case !e.held && e.pending == 0:
			release = append(release, k)
		case e.held && (full || e.dirty || now.Sub(e.assertedAt) >= s.reassertLocks):
			reassert = append(reassert, k)
		}
	}
	s.mu.Unlock()
	ops := make([]batchOp, 0, len(reassert)+len(release)+len(yield))
	add := func(op batchOp, ok, _ bool) {
		if ok {
			ops = append(ops, op)
		}
	}
	for _, k := range reassert {
		add(s.prepLock(k, lockReassert, 0, false))
	}
	for _, k := range release {
		add(s.prepLock(k, lockRelease, 0, false))
	}
	for k, seq := range yield {
		add(s.prepLock(k, lockYield, seq, false))
	}
	return s.refreshBatches(ctx, ops)
}

// refreshRoutes re-writes due route members (with garbage collection of
// lapsed members on the same keys) and finishes failed leaves.
func (s *RedisStore) refreshRoutes(ctx context.Context, full bool) bool {
	now := time.Now()
	var reassert, leave []string
	s.mu.Lock()
	for k, e := range s.routes {
		switch {
		case e.refs == 0:
			leave = append(leave, k)
		case full || e.dirty || !e.inRedis || now.Sub(e.assertedAt) >= s.reassertRoute:
			reassert = append(reassert, k)
		}
	}
	s.mu.Unlock()
	ops := make([]batchOp, 0, len(reassert)+len(leave))
	for _, k := range reassert {
		if op, ok, _ := s.prepRoute(k, routeReassert, false); ok {
			ops = append(ops, op)
		}
	}
	for _, k := range leave {
		if op, ok, _ := s.prepRoute(k, routeLeave, false); ok {
			ops = append(ops, op)
		}
	}
	return s.refreshBatches(ctx, ops)
}

// refreshBatches sends ops session.refresh_batch at a time, one pipeline
// each: the cost grows with owned keys / batch size (issue 3 §4).
func (s *RedisStore) refreshBatches(ctx context.Context, ops []batchOp) bool {
	for len(ops) > 0 {
		n := min(len(ops), s.opt.RefreshBatch)
		if !s.runBatch(ctx, "refresh", ops[:n]) {
			s.m.RefreshBatches.WithLabelValues("error").Inc()
			for _, o := range ops[n:] {
				o.unlock()
			}
			return false
		}
		s.m.RefreshBatches.WithLabelValues("ok").Inc()
		ops = ops[n:]
	}
	return true
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
