package session

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// Route operations prepared by prepRoute.
type routeOp uint8

const (
	routeLeave    routeOp = iota // last local socket gone: ZREM
	routeReassert                // refresher: ZADD with a fresh expiry
	routeSweep                   // Close: ZREM whatever the state
)

// job is a background leave of key for the core's worker.
func (r *redisRoutes) job(key string) job {
	return func() (batchOp, bool, bool) { return r.prepRoute(key, routeLeave, false) }
}

// prepRoute is prepLock for routes.
func (r *redisRoutes) prepRoute(key string, op routeOp, block bool) (b batchOp, ok, busy bool) {
	r.mu.Lock()
	e := r.entries[key]
	r.mu.Unlock()
	if e == nil {
		return b, false, false
	}
	if !takeIO(&e.io, block) {
		return b, false, true
	}
	r.mu.Lock()
	send := false
	switch op {
	case routeLeave:
		if e.refs == 0 {
			if e.inRedis || e.dirty {
				send = true
			} else {
				r.dropRoute(key, e)
			}
		}
	case routeReassert:
		send = e.refs > 0
	case routeSweep:
		send = true
	}
	if send && op != routeReassert {
		e.removing = true
	}
	r.mu.Unlock()
	if !send {
		e.io.Unlock()
		return b, false, false
	}
	if op == routeReassert {
		return batchOp{
			fill: func(p redis.Pipeliner) redis.Cmder {
				return routeAssertScript.EvalSha(context.Background(), p, []string{key}, r.routeAssertArgs()...)
			},
			done: func(c redis.Cmder) {
				if c.Err() != nil {
					return
				}
				r.mu.Lock()
				e.inRedis, e.dirty = true, false
				e.due = nextDue(r.c.now(), e.due, r.reassertEvery)
				r.mu.Unlock()
			},
			unlock: e.io.Unlock,
		}, true, false
	}
	if h := r.beforeRemove; h != nil {
		h(key)
	}
	return batchOp{
		fill: func(p redis.Pipeliner) redis.Cmder {
			return p.ZRem(context.Background(), key, r.c.opt.PodID)
		},
		done: func(c redis.Cmder) {
			if c.Err() != nil {
				return
			}
			r.mu.Lock()
			e.inRedis, e.dirty = false, false
			if e.refs == 0 || op == routeSweep {
				r.dropRoute(key, e)
			}
			r.mu.Unlock()
		},
		// unlock runs whether or not done did (an outage skips it), so
		// removing never outlives the io lock: a Join waiting on io then
		// re-checks inRedis, and one arriving later trusts inRedis again.
		unlock: func() {
			r.mu.Lock()
			e.removing = false
			r.mu.Unlock()
			e.io.Unlock()
		},
	}, true, false
}

// dropRoute forgets an entry; r.mu held.
func (r *redisRoutes) dropRoute(key string, e *routeEntry) {
	if r.entries[key] == e {
		delete(r.entries, key)
	}
}

// refresh re-writes due route members (every member when full, with
// garbage collection of lapsed members on the same keys) and finishes
// failed leaves.
func (r *redisRoutes) refresh(ctx context.Context, full bool) bool {
	now := r.c.now()
	var reassert, leave []string
	r.mu.Lock()
	for k, e := range r.entries {
		switch {
		case e.refs == 0:
			leave = append(leave, k)
		case full || e.dirty || !e.inRedis || !now.Before(e.due):
			reassert = append(reassert, k)
		}
	}
	r.mu.Unlock()
	ops := make([]batchOp, 0, len(reassert)+len(leave))
	for _, k := range reassert {
		if op, ok, _ := r.prepRoute(k, routeReassert, false); ok {
			ops = append(ops, op)
		}
	}
	for _, k := range leave {
		if op, ok, _ := r.prepRoute(k, routeLeave, false); ok {
			ops = append(ops, op)
		}
	}
	return r.c.refreshBatches(ctx, ops)
}

// sweepOps are the ZREMs of every member this pod may have written, for
// Close. It waits for each key's io mutex.
func (r *redisRoutes) sweepOps() []batchOp {
	r.mu.Lock()
	keys := make([]string, 0, len(r.entries))
	for k, e := range r.entries {
		if e.inRedis || e.dirty {
			keys = append(keys, k)
		}
	}
	r.mu.Unlock()
	ops := make([]batchOp, 0, len(keys))
	for _, k := range keys {
		if op, ok, _ := r.prepRoute(k, routeSweep, true); ok {
			ops = append(ops, op)
		}
	}
	return ops
}
