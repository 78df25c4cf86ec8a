package session

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/logx"
)

// redisLocker is the single-session lock of SPEC §4 on Redis.
//
// Like MemoryLocker, the lock is per pod, not per socket (the key's value
// is the pod id): a second Acquire of a key this pod holds succeeds with
// TakeoverLocal and one Release gives the key up. The caller releases when
// the pod stops owning the session (its current socket closes), not when a
// socket replaced by a newer local one closes, nor after an Evict (the key
// belongs to the newcomer then).
//
// Liveness follows the pod-lease design of DESIGN "Redis cost at fleet
// scale": a lock key names its pod and counts only while that pod's lease
// lives (redisRegistry); the key's own TTL is long and refreshed lazily.
// All methods are safe for concurrent use.
type redisLocker struct {
	c   *redisCore
	reg *redisRegistry // holders' leases, on the Redis Cluster path

	killWait time.Duration // session.kill_wait
	ttl      time.Duration // long GC TTL of lock keys (session.gc_ttl)
	// reassertEvery is the lazy re-assert period of a key: a third of
	// the GC TTL leaves two more tries before a key lapses.
	reassertEvery time.Duration

	evictor atomic.Pointer[evictorBox]
	ps      atomic.Pointer[redis.PubSub] // the kill-notice subscription, closed by RedisStores.Close

	mu      sync.Mutex
	entries map[string]*lockEntry // by session suffix
	acqGen  uint64                // successful Acquires so far (lockEntry.acqGen)
}

// newRedisLocker applies the lock defaults to opts.
func newRedisLocker(c *redisCore, reg *redisRegistry, opts RedisLockOptions) *redisLocker {
	ttl := c.gcTTL(orDefault(opts.SessionTTL, defaultSessionTTL))
	return &redisLocker{
		c:             c,
		reg:           reg,
		killWait:      orDefault(opts.KillWait, defaultKillWait),
		ttl:           ttl,
		reassertEvery: ttl / 3,
		entries:       make(map[string]*lockEntry),
	}
}

// lockEntry is what this pod knows about one session key it holds, is
// acquiring, or still has to give up.
type lockEntry struct {
	// io serializes this pod's writes to the key: an Acquire, the
	// refresher and the release worker never interleave on one key.
	io sync.Mutex

	held         bool      // a local socket owns the key (Acquired, not Released or taken over)
	pending      int       // Acquires in flight
	killSeq      uint64    // kill notices received for the key
	acqGen       uint64    // store-wide number of the last successful Acquire
	yieldPending bool      // a kill notice asked us to delete the key
	dirty        bool      // accepted while Redis was down; not yet asserted
	due          time.Time // next lazy re-assert (nextDue); zero: never written
}

// Bounds of the Acquire retry loop after a kill notice (SPEC §4: "retries
// with backoff"): the holder usually answers within one Redis round trip
// plus an event-loop turn, so start small; cap the step so the newcomer
// notices a release soon even late in session.kill_wait.
const (
	acquireBackoffMin = 25 * time.Millisecond
	acquireBackoffMax = 400 * time.Millisecond
)

var (
	errUnavailable = codec.NewError(codec.CodeServiceUnavailable, "session store unavailable")
	errSuperseded  = codec.NewError(codec.CodeSessionConflict, "session taken over by a newer connection")
)

// Acquire implements Locker: newest connection wins (SPEC §4).
func (l *redisLocker) Acquire(ctx context.Context, key string) (Acquired, error) {
	l.mu.Lock()
	e := l.entries[key]
	if e == nil {
		e = &lockEntry{}
		l.entries[key] = e
	}
	e.pending++
	snap := e.killSeq
	l.mu.Unlock()

	if !l.c.isHealthy() {
		return l.acquireDown(key, e, snap)
	}
	e.io.Lock()
	defer e.io.Unlock()
	t, committed, err := l.acquireRemote(ctx, key, e, snap)
	switch {
	case err == nil:
		return l.finishAcquire(ctx, key, e, snap, t, committed)
	case errors.Is(err, errStoreDown):
		return l.acquireDown(key, e, snap)
	default:
		l.abandon(key, e)
		return Acquired{}, err
	}
}

// acquireRemote runs the acquire script until the key is ours, the retry
// window closes (forced takeover), or a newer connection claims the key.
//
// committed reports that this Acquire published a kill notice. From then
// on it does not step aside for a newer connection (a kill notice received
// for the key): it already told the holder to let go, and stepping aside
// too would leave nobody holding the key.
func (l *redisLocker) acquireRemote(ctx context.Context, key string, e *lockEntry, snap uint64) (t Takeover, committed bool, err error) {
	skey, channel := l.c.keys.session(key), l.c.keys.killChannel(key)
	deadline := time.Now().Add(l.killWait)
	backoff := acquireBackoffMin
	var (
		notified string // holder already sent a kill notice
		force    string // take over from exactly this holder
		forcing  bool   // force is the end of the retry window
		deadPod  bool   // force is a holder whose lease lapsed (Cluster path)
		waited   bool
	)
	check := "0"
	if l.c.leaseInScript {
		check = "1"
	}
	for {
		// Superseded while waiting: stop before telling anyone to let go.
		if !committed && l.killedSince(e, snap) {
			return 0, false, errSuperseded
		}
		cctx, cancel := l.c.opCtx(ctx)
		res, err := l.c.run(cctx, acquireScript, []string{skey},
			l.c.opt.PodID, l.ttl.Milliseconds(), l.c.keys.podPrefix(), check, force, channel, notified).Slice()
		cancel()
		if err != nil {
			if l.c.fail(ctx, "acquire", err) {
				return 0, committed, errStoreDown
			}
			if ctx.Err() != nil {
				return 0, committed, codec.NewError(codec.CodeSessionConflict, "session lock not settled before the handshake ended")
			}
			return 0, committed, codec.NewError(codec.CodeInternalServerError, "session lock failed")
		}
		code, holder, published := parseAcquire(res)
		if published {
			l.c.m.KillNotices.WithLabelValues("sent").Inc()
			committed = true
		}
		switch code {
		case acqFree:
			if waited {
				return TakeoverRemote, committed, nil
			}
			return TakeoverNone, committed, nil
		case acqMine:
			return TakeoverLocal, committed, nil
		case acqDead:
			return TakeoverDeadPod, committed, nil
		case acqForced:
			if deadPod {
				return TakeoverDeadPod, committed, nil
			}
			l.c.m.SessionConflicts.WithLabelValues("forced").Inc()
			logx.From(ctx).Warn("session lock forced from a silent pod",
				slog.String("key", key), slog.String("holder", holder),
				slog.Duration("waited", l.killWait))
			return TakeoverForced, committed, nil
		}
		// acqHeld: another live pod holds it.
		if forcing && holder != force {
			// Someone newer than us took it while we waited (the forced
			// attempt told it nothing).
			return 0, committed, errSuperseded
		}
		force, forcing, deadPod = "", false, false
		if !l.c.leaseInScript {
			dead, err := l.reg.podDead(ctx, holder)
			if err != nil {
				if l.c.fail(ctx, "acquire", err) {
					return 0, committed, errStoreDown
				}
			} else if dead {
				force, deadPod = holder, true
				continue
			}
		}
		if holder != notified {
			if notified == "" {
				l.c.m.SessionConflicts.WithLabelValues("remote").Inc()
			}
			notified = holder
		}
		if !time.Now().Before(deadline) {
			force, forcing = holder, true
			continue
		}
		wait := min(backoff, time.Until(deadline))
		backoff = min(2*backoff, acquireBackoffMax)
		waited = true
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, committed, codec.NewError(codec.CodeSessionConflict, "session lock not settled before the handshake ended")
		case <-t.C:
		}
	}
}

func parseAcquire(res []any) (code int64, holder string, published bool) {
	if len(res) >= 1 {
		code, _ = res[0].(int64)
	}
	if len(res) >= 2 {
		holder, _ = res[1].(string)
	}
	if len(res) >= 3 {
		n, _ := res[2].(int64)
		published = n == 1
	}
	return code, holder, published
}

func (l *redisLocker) killedSince(e *lockEntry, snap uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return e.killSeq != snap
}

// finishAcquire records a lock Redis granted. It runs under e.io so a yield
// queued by an older kill notice cannot delete the key between the grant
// and this record. An uncommitted Acquire that a kill notice reached in
// flight steps aside (409) and the queued yield frees the key for the
// newer connection; a committed one keeps the key (the newer connection
// then takes it over after its kill wait).
//
// A committed Acquire re-reads the key for every notice that came since
// its snapshot, until none arrives between the read and the record: a
// notice landing after the read but before own would otherwise be lost
// (own clears what the notice set), leaving this pod holding a socket for
// a key another pod took.
func (l *redisLocker) finishAcquire(ctx context.Context, key string, e *lockEntry, snap uint64, t Takeover, committed bool) (Acquired, error) {
	checked := snap
	for {
		l.mu.Lock()
		seen := e.killSeq
		if !committed || seen == checked {
			break // l.mu stays held for the record below
		}
		l.mu.Unlock()
		if !l.stillMine(ctx, key) {
			// Both sides told each other to let go and the other one has
			// taken the key since: it is the newer connection.
			l.abandon(key, e)
			return Acquired{}, errSuperseded
		}
		checked = seen // notices up to seen are answered by that read
	}
	e.pending--
	if e.killSeq != snap && !committed {
		// A newer connection elsewhere claimed the key while the script
		// ran; the notice handler queued the compare-and-delete.
		l.mu.Unlock()
		logx.From(ctx).Info("session superseded during acquire", slog.String("key", key))
		return Acquired{}, errSuperseded
	}
	if e.held {
		t = TakeoverLocal // the caller must replace its own older socket
	}
	l.own(e)
	e.due = nextDue(l.c.now(), e.due, l.reassertEvery)
	l.mu.Unlock()
	// dws_session_takeovers_total and the local conflicts are counted by
	// the caller, which sees the Takeover.
	return Acquired{Takeover: t}, nil
}

// own records a successful Acquire; l.mu held.
func (l *redisLocker) own(e *lockEntry) {
	l.acqGen++
	e.acqGen = l.acqGen
	e.held, e.yieldPending, e.dirty = true, false, false
}

// stillMine reads the lock back (the rare race of finishAcquire; e.io is
// held, so only another pod can have changed it).
func (l *redisLocker) stillMine(ctx context.Context, key string) bool {
	cctx, cancel := l.c.opCtx(ctx)
	defer cancel()
	v, err := l.c.rdb.Get(cctx, l.c.keys.session(key)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		l.c.fail(ctx, "acquire", err)
	}
	return v == l.c.opt.PodID
}

// acquireDown applies session.on_store_down while Redis is unreachable:
// reject (503) or accept with local-only enforcement; an accepted key is
// asserted in Redis when it returns (newest-wins there, see refresh).
func (l *redisLocker) acquireDown(key string, e *lockEntry, snap uint64) (Acquired, error) {
	if l.c.onStoreDown() == OnStoreDownReject {
		l.abandon(key, e)
		return Acquired{}, errUnavailable
	}
	l.mu.Lock()
	e.pending--
	if e.killSeq != snap {
		l.mu.Unlock()
		return Acquired{}, errSuperseded
	}
	t := TakeoverNone
	if e.held {
		t = TakeoverLocal
	}
	l.own(e)
	e.dirty = true
	l.mu.Unlock()
	return Acquired{Takeover: t, Degraded: true}, nil
}

// abandon ends a failed Acquire; the script may have written the key
// before the failure, so an idle entry is given up through the worker.
func (l *redisLocker) abandon(key string, e *lockEntry) {
	l.mu.Lock()
	e.pending--
	idle := !e.held && e.pending == 0
	l.mu.Unlock()
	if idle {
		l.c.enqueue(l.job(key, lockRelease, 0))
	}
}

// Release implements Locker. Non-blocking: the compare-and-delete runs on
// the background worker. A key this pod no longer holds (released, or
// taken over by another pod) is ignored.
func (l *redisLocker) Release(key string) {
	l.mu.Lock()
	e := l.entries[key]
	if e == nil || !e.held {
		l.mu.Unlock()
		return
	}
	e.held = false
	idle := e.pending == 0
	l.mu.Unlock()
	if idle {
		l.c.enqueue(l.job(key, lockRelease, 0))
	}
}
