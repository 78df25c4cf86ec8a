package session

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/logx"
)

// Lock operations prepared by prepLock.
type lockOp uint8

const (
	lockRelease  lockOp = iota // released (or a failed Acquire): compare-and-delete
	lockYield                  // kill notice: compare-and-delete unless re-acquired
	lockStale                  // notice for a key this process never held
	lockReassert               // refresher: compare-and-expire / re-set
	lockSweep                  // Close: compare-and-delete whatever the state
)

// job is a background release of key for the core's worker.
func (l *redisLocker) job(key string, op lockOp, seq uint64) job {
	return func() (batchOp, bool, bool) { return l.prepLock(key, op, seq, false) }
}

// prepLock decides, under the key's io mutex and l.mu, what to send for a
// lock and returns it as a batch op. ok=false: nothing to send. busy: the
// io mutex was held elsewhere (only when !block); retry later.
func (l *redisLocker) prepLock(key string, op lockOp, seq uint64, block bool) (b batchOp, ok, busy bool) {
	l.mu.Lock()
	e := l.entries[key]
	l.mu.Unlock()
	if e == nil {
		if op != lockStale {
			return b, false, false
		}
		return l.casDelete(key, nil, op), true, false
	}
	if !takeIO(&e.io, block) {
		return b, false, true
	}
	l.mu.Lock()
	send := false
	switch op {
	case lockRelease, lockStale:
		send = !e.held && e.pending == 0
	case lockYield:
		if e.acqGen == seq {
			send = true
		} else {
			e.yieldPending = false // re-acquired since: the newer socket keeps it
		}
	case lockReassert:
		send = e.held
	case lockSweep:
		send = true
	}
	l.mu.Unlock()
	if !send {
		e.io.Unlock()
		return b, false, false
	}
	if op == lockReassert {
		return l.reassert(key, e), true, false
	}
	b = l.casDelete(key, e, op)
	b.unlock = e.io.Unlock
	return b, true, false
}

// casDelete is the compare-and-delete batch op; on success an idle entry
// is forgotten.
func (l *redisLocker) casDelete(key string, e *lockEntry, op lockOp) batchOp {
	skey := l.c.keys.session(key)
	return batchOp{
		fill: func(p redis.Pipeliner) redis.Cmder {
			return releaseScript.EvalSha(context.Background(), p, []string{skey}, l.c.opt.PodID)
		},
		done: func(c redis.Cmder) {
			if c.Err() != nil {
				return
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			cur := l.entries[key]
			if cur == nil || (e != nil && cur != e) {
				return
			}
			if op == lockYield {
				cur.yieldPending = false
			}
			if (!cur.held && cur.pending == 0 && !cur.yieldPending) || op == lockSweep {
				l.dropLock(key, cur)
			}
		},
		unlock: func() {},
	}
}

// reassert is the refresher's compare-and-expire batch op (SPEC §4): a key
// found with another owner closes the local socket (4402 via the Evictor).
func (l *redisLocker) reassert(key string, e *lockEntry) batchOp {
	skey := l.c.keys.session(key)
	return batchOp{
		fill: func(p redis.Pipeliner) redis.Cmder {
			return reassertScript.EvalSha(context.Background(), p, []string{skey}, l.c.opt.PodID, l.ttl.Milliseconds())
		},
		done: func(c redis.Cmder) {
			res, err := c.(*redis.Cmd).Slice()
			if err != nil {
				return
			}
			code, holder, _ := parseAcquire(res)
			l.mu.Lock()
			if code != reassertLost {
				e.dirty = false
				e.due = nextDue(l.c.now(), e.due, l.reassertEvery)
				l.mu.Unlock()
				return
			}
			// Newest wins: the other pod's lock was recorded in Redis; ours
			// was provisional (accepted while Redis was down) or lost to a
			// takeover whose notice we missed.
			evict := e.held
			e.held, e.dirty = false, false
			e.killSeq++
			gen := e.acqGen
			l.mu.Unlock()
			l.c.m.SessionConflicts.WithLabelValues("remote").Inc()
			logx.L().Info("session lock found with another owner; closing local socket",
				slog.String("key", key), slog.String("holder", holder))
			if evict {
				l.evictLost(key, gen)
			}
		},
		unlock: e.io.Unlock,
	}
}

// dropLock forgets an entry; l.mu held.
func (l *redisLocker) dropLock(key string, e *lockEntry) {
	if l.entries[key] == e {
		delete(l.entries, key)
	}
}

// refresh re-asserts due lock keys (every key when full) and finishes
// releases and yields that failed while Redis was down.
func (l *redisLocker) refresh(ctx context.Context, full bool) bool {
	now := l.c.now()
	var (
		reassert, release []string
		yield             = map[string]uint64{}
	)
	l.mu.Lock()
	for k, e := range l.entries {
		switch {
		case e.yieldPending:
			yield[k] = e.acqGen
		case !e.held && e.pending == 0:
			release = append(release, k)
		case e.held && (full || e.dirty || !now.Before(e.due)):
			reassert = append(reassert, k)
		}
	}
	l.mu.Unlock()
	ops := make([]batchOp, 0, len(reassert)+len(release)+len(yield))
	add := func(op batchOp, ok, _ bool) {
		if ok {
			ops = append(ops, op)
		}
	}
	for _, k := range reassert {
		add(l.prepLock(k, lockReassert, 0, false))
	}
	for _, k := range release {
		add(l.prepLock(k, lockRelease, 0, false))
	}
	for k, seq := range yield {
		add(l.prepLock(k, lockYield, seq, false))
	}
	return l.c.refreshBatches(ctx, ops)
}

// sweepOps are the compare-and-deletes of every key this pod knows, for
// Close (harmless where another pod holds the key). It waits for each
// key's io mutex.
func (l *redisLocker) sweepOps() []batchOp {
	l.mu.Lock()
	keys := make([]string, 0, len(l.entries))
	for k := range l.entries {
		keys = append(keys, k)
	}
	l.mu.Unlock()
	ops := make([]batchOp, 0, len(keys))
	for _, k := range keys {
		if op, ok, _ := l.prepLock(k, lockSweep, 0, true); ok {
			ops = append(ops, op)
		}
	}
	return ops
}
