package session

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
)

// redisLocker is the single-session lock of SPEC §4 on Redis. It is the
// RedisStore itself seen through the Locker interface.
//
// Like MemoryLocker, the lock is per pod, not per socket (the key's value
// is the pod id): a second Acquire of a key this pod holds succeeds with
// TakeoverLocal and one Release gives the key up. The caller releases when
// the pod stops owning the session (its current socket closes), not when a
// socket replaced by a newer local one closes, nor after an Evict (the key
// belongs to the newcomer then).
type redisLocker RedisStore

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
	assertedAt   time.Time // last time Redis confirmed the key names us
}

// Bounds of the Acquire retry loop after a kill notice (SPEC §4: "retries
// with backoff"): the holder usually answers within one Redis round trip
// plus an event-loop turn, so start small; cap the step so the newcomer
// notices a release soon even late in session.kill_wait.
const (
	acquireBackoffMin = 25 * time.Millisecond
	acquireBackoffMax = 400 * time.Millisecond
)

// reEvictDelays: a notice can reach this pod between Acquire returning and
// the reactor indexing the socket, so that Evict finds nothing. The store
// evicts again after each delay unless the key was acquired again since
// (the reactor ignores an Evict for a key it has no socket for).
var reEvictDelays = []time.Duration{100 * time.Millisecond, time.Second}

var (
	errStoreDown   = errors.New("session store unavailable")
	errUnavailable = codec.NewError(codec.CodeServiceUnavailable, "session store unavailable")
	errSuperseded  = codec.NewError(codec.CodeSessionConflict, "session taken over by a newer connection")
)

// Acquire implements Locker: newest connection wins (SPEC §4).
func (l *redisLocker) Acquire(ctx context.Context, key string) (Acquired, error) {
	s := (*RedisStore)(l)
	s.mu.Lock()
	e := s.locks[key]
	if e == nil {
		e = &lockEntry{}
		s.locks[key] = e
	}
	e.pending++
	snap := e.killSeq
	s.mu.Unlock()

	if !s.Healthy() {
		return s.acquireDown(key, e, snap)
	}
	e.io.Lock()
	defer e.io.Unlock()
	t, committed, err := s.acquireRemote(ctx, key, e, snap)
	switch {
	case err == nil:
		return s.finishAcquire(ctx, key, e, snap, t, committed)
	case errors.Is(err, errStoreDown):
		return s.acquireDown(key, e, snap)
	default:
		s.abandon(key, e)
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
func (s *RedisStore) acquireRemote(ctx context.Context, key string, e *lockEntry, snap uint64) (t Takeover, committed bool, err error) {
	skey, channel := s.keys.session(key), s.keys.killChannel(key)
	deadline := time.Now().Add(s.opt.KillWait)
	backoff := acquireBackoffMin
	var (
		notified string // holder already sent a kill notice
		force    string // take over from exactly this holder
		forcing  bool   // force is the end of the retry window
		deadPod  bool   // force is a holder whose lease lapsed (Cluster path)
		waited   bool
	)
	check := "0"
	if s.leaseInScript {
		check = "1"
	}
	for {
		// Superseded while waiting: stop before telling anyone to let go.
		if !committed && s.killedSince(e, snap) {
			return 0, false, errSuperseded
		}
		cctx, cancel := s.opCtx(ctx)
		res, err := s.run(cctx, acquireScript, []string{skey},
			s.opt.PodID, s.lockTTL.Milliseconds(), s.keys.podPrefix(), check, force, channel, notified).Slice()
		cancel()
		if err != nil {
			if s.fail(ctx, "acquire", err) {
				return 0, committed, errStoreDown
			}
			if ctx.Err() != nil {
				return 0, committed, codec.NewError(codec.CodeSessionConflict, "session lock not settled before the handshake ended")
			}
			return 0, committed, codec.NewError(codec.CodeInternalServerError, "session lock failed")
		}
		code, holder, published := parseAcquire(res)
		if published {
			s.m.KillNotices.WithLabelValues("sent").Inc()
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
			s.m.SessionConflicts.WithLabelValues("forced").Inc()
			logx.From(ctx).Warn("session lock forced from a silent pod",
				slog.String("key", key), slog.String("holder", holder),
				slog.Duration("waited", s.opt.KillWait))
			return TakeoverForced, committed, nil
		}
		// acqHeld: another live pod holds it.
		if forcing && holder != force {
			// Someone newer than us took it while we waited (the forced
			// attempt told it nothing).
			return 0, committed, errSuperseded
		}
		force, forcing, deadPod = "", false, false
		if !s.leaseInScript {
			dead, err := s.podDead(ctx, holder)
			if err != nil {
				if s.fail(ctx, "acquire", err) {
					return 0, committed, errStoreDown
				}
			} else if dead {
				force, deadPod = holder, true
				continue
			}
		}
		if holder != notified {
			if notified == "" {
				s.m.SessionConflicts.WithLabelValues("remote").Inc()
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

// podDead reports whether a pod's lease has lapsed (the Redis Cluster path,
// where the acquire script cannot read the lease itself).
func (s *RedisStore) podDead(ctx context.Context, podID string) (bool, error) {
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	n, err := s.rdb.Exists(cctx, s.keys.pod(podID)).Result()
	return n == 0, err
}

func (s *RedisStore) killedSince(e *lockEntry, snap uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return e.killSeq != snap
}

// finishAcquire records a lock Redis granted. It runs under e.io so a yield
// queued by an older kill notice cannot delete the key between the grant
// and this record. An uncommitted Acquire that a kill notice reached in
// flight steps aside (409) and the queued yield frees the key for the
// newer connection; a committed one keeps the key (the newer connection
// then takes it over after its kill wait).
func (s *RedisStore) finishAcquire(ctx context.Context, key string, e *lockEntry, snap uint64, t Takeover, committed bool) (Acquired, error) {
	if committed && s.killedSince(e, snap) && !s.stillMine(ctx, key) {
		// Both sides told each other to let go and the other one has
		// taken the key since: it is the newer connection.
		s.abandon(key, e)
		return Acquired{}, errSuperseded
	}
	s.mu.Lock()
	e.pending--
	if e.killSeq != snap && !committed {
		// A newer connection elsewhere claimed the key while the script
		// ran; the notice handler queued the compare-and-delete.
		s.mu.Unlock()
		logx.From(ctx).Info("session superseded during acquire", slog.String("key", key))
		return Acquired{}, errSuperseded
	}
	if e.held {
		t = TakeoverLocal // the caller must replace its own older socket
	}
	s.own(e)
	e.assertedAt = time.Now()
	s.mu.Unlock()
	// dws_session_takeovers_total and the local conflicts are counted by
	// the caller, which sees the Takeover.
	return Acquired{Takeover: t}, nil
}

// own records a successful Acquire; s.mu held.
func (s *RedisStore) own(e *lockEntry) {
	s.acqGen++
	e.acqGen = s.acqGen
	e.held, e.yieldPending, e.dirty = true, false, false
}

// stillMine reads the lock back (the rare race of finishAcquire; e.io is
// held, so only another pod can have changed it).
func (s *RedisStore) stillMine(ctx context.Context, key string) bool {
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	v, err := s.rdb.Get(cctx, s.keys.session(key)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		s.fail(ctx, "acquire", err)
	}
	return v == s.opt.PodID
}

// acquireDown applies session.on_store_down while Redis is unreachable:
// reject (503) or accept with local-only enforcement; an accepted key is
// asserted in Redis when it returns (newest-wins there, see refresh).
func (s *RedisStore) acquireDown(key string, e *lockEntry, snap uint64) (Acquired, error) {
	if s.onStoreDown() == OnStoreDownReject {
		s.abandon(key, e)
		return Acquired{}, errUnavailable
	}
	s.mu.Lock()
	e.pending--
	if e.killSeq != snap {
		s.mu.Unlock()
		return Acquired{}, errSuperseded
	}
	t := TakeoverNone
	if e.held {
		t = TakeoverLocal
	}
	s.own(e)
	e.dirty = true
	s.mu.Unlock()
	return Acquired{Takeover: t, Degraded: true}, nil
}

// abandon ends a failed Acquire; the script may have written the key
// before the failure, so an idle entry is given up through the worker.
func (s *RedisStore) abandon(key string, e *lockEntry) {
	s.mu.Lock()
	e.pending--
	idle := !e.held && e.pending == 0
	s.mu.Unlock()
	if idle {
		s.enqueue(job{kind: jobReleaseLock, key: key})
	}
}

// Release implements Locker. Non-blocking: the compare-and-delete runs on
// the background worker. A key this pod no longer holds (released, or
// taken over by another pod) is ignored.
func (l *redisLocker) Release(key string) {
	s := (*RedisStore)(l)
	s.mu.Lock()
	e := s.locks[key]
	if e == nil || !e.held {
		s.mu.Unlock()
		return
	}
	e.held = false
	idle := e.pending == 0
	s.mu.Unlock()
	if idle {
		s.enqueue(job{kind: jobReleaseLock, key: key})
	}
}

// Lock operations prepared by prepLock.
type lockOp uint8

const (
	lockRelease  lockOp = iota // released (or a failed Acquire): compare-and-delete
	lockYield                  // kill notice: compare-and-delete unless re-acquired
	lockStale                  // notice for a key this process never held
	lockReassert               // refresher: compare-and-expire / re-set
	lockSweep                  // Close: compare-and-delete whatever the state
)

// prepLock decides, under the key's io mutex and s.mu, what to send for a
// lock and returns it as a batch op. ok=false: nothing to send. busy: the
// io mutex was held elsewhere (only when !block); retry later.
func (s *RedisStore) prepLock(key string, op lockOp, seq uint64, block bool) (b batchOp, ok, busy bool) {
	s.mu.Lock()
	e := s.locks[key]
	s.mu.Unlock()
	if e == nil {
		if op != lockStale {
			return b, false, false
		}
		return s.casDelete(key, nil, op), true, false
	}
	if block {
		e.io.Lock()
	} else if !e.io.TryLock() {
		return b, false, true
	}
	s.mu.Lock()
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
	s.mu.Unlock()
	if !send {
		e.io.Unlock()
		return b, false, false
	}
	if op == lockReassert {
		return s.reassert(key, e), true, false
	}
	b = s.casDelete(key, e, op)
	b.unlock = e.io.Unlock
	return b, true, false
}

// casDelete is the compare-and-delete batch op; on success an idle entry
// is forgotten.
func (s *RedisStore) casDelete(key string, e *lockEntry, op lockOp) batchOp {
	skey := s.keys.session(key)
	return batchOp{
		fill: func(p redis.Pipeliner) redis.Cmder {
			return releaseScript.EvalSha(context.Background(), p, []string{skey}, s.opt.PodID)
		},
		done: func(c redis.Cmder) {
			if c.Err() != nil {
				return
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			cur := s.locks[key]
			if cur == nil || (e != nil && cur != e) {
				return
			}
			if op == lockYield {
				cur.yieldPending = false
			}
			if (!cur.held && cur.pending == 0 && !cur.yieldPending) || op == lockSweep {
				s.dropLock(key, cur)
			}
		},
		unlock: func() {},
	}
}

// reassert is the refresher's compare-and-expire batch op (SPEC §4): a key
// found with another owner closes the local socket (4402 via the Evictor).
func (s *RedisStore) reassert(key string, e *lockEntry) batchOp {
	skey := s.keys.session(key)
	return batchOp{
		fill: func(p redis.Pipeliner) redis.Cmder {
			return reassertScript.EvalSha(context.Background(), p, []string{skey}, s.opt.PodID, s.lockTTL.Milliseconds())
		},
		done: func(c redis.Cmder) {
			res, err := c.(*redis.Cmd).Slice()
			if err != nil {
				return
			}
			code, holder, _ := parseAcquire(res)
			s.mu.Lock()
			if code != reassertLost {
				e.dirty = false
				e.assertedAt = time.Now()
				s.mu.Unlock()
				return
			}
			// Newest wins: the other pod's lock was recorded in Redis; ours
			// was provisional (accepted while Redis was down) or lost to a
			// takeover whose notice we missed.
			evict := e.held
			e.held, e.dirty = false, false
			e.killSeq++
			gen := e.acqGen
			s.mu.Unlock()
			s.m.SessionConflicts.WithLabelValues("remote").Inc()
			logx.L().Info("session lock found with another owner; closing local socket",
				slog.String("key", key), slog.String("holder", holder))
			if evict {
				s.evictLost(key, gen)
			}
		},
		unlock: e.io.Unlock,
	}
}

// dropLock forgets an entry; s.mu held.
func (s *RedisStore) dropLock(key string, e *lockEntry) {
	if s.locks[key] == e {
		delete(s.locks, key)
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
func (s *RedisStore) onKillNotice(ctx context.Context, suffix string, payload string) {
	var n killNotice
	if err := json.Unmarshal([]byte(payload), &n); err != nil || n.NewPodID == "" {
		logx.From(ctx).Warn("malformed kill notice", slog.String("key", suffix))
		return
	}
	if n.NewPodID == s.opt.PodID || (n.OldPodID != "" && n.OldPodID != s.opt.PodID) {
		return // our own notice, or meant for another pod
	}
	s.m.KillNotices.WithLabelValues("received").Inc()
	s.mu.Lock()
	e := s.locks[suffix]
	if e == nil {
		s.mu.Unlock()
		// The key names us but no socket here holds it (a previous process
		// with the same pod id): let it go.
		s.enqueue(job{kind: jobStaleLock, key: suffix})
		return
	}
	e.killSeq++
	evict := e.held
	e.held = false // the caller does not Release an evicted socket
	e.yieldPending = true
	gen := e.acqGen
	s.mu.Unlock()
	if evict {
		s.evictLost(suffix, gen)
	}
	s.enqueue(job{kind: jobYieldLock, key: suffix, seq: gen})
}

// evictLost closes the local socket of a key another pod took, and again
// after each of reEvictDelays unless the key was acquired here since (acqGen
// moved on).
func (s *RedisStore) evictLost(key string, gen uint64) {
	s.evict(key)
	for _, d := range reEvictDelays {
		time.AfterFunc(d, func() {
			safego.Run(context.Background(), "session.re_evict", func() {
				s.mu.Lock()
				e := s.locks[key]
				again := e == nil || e.acqGen == gen
				s.mu.Unlock()
				if again {
					s.evict(key)
				}
			})
		})
	}
}

// listen holds this pod's one PSUBSCRIBE on session_kill:* and reconnects
// with backoff. Every (re)subscription after the first asks the refresher
// for a full re-assert, since notices sent meanwhile were missed.
func (s *RedisStore) listen(ctx context.Context, ps *redis.PubSub) {
	backoff := newBackoff(s.opt.RefreshInterval)
	for ctx.Err() == nil {
		if ps == nil {
			var err error
			ps, err = s.subscribe(ctx)
			if err != nil {
				s.fail(ctx, "subscribe", err)
				if !sleepCtx(ctx, backoff.next()) {
					return
				}
				continue
			}
			s.needFull.Store(true)
			s.wake()
			backoff.reset()
		}
		err := s.receive(ctx, ps)
		_ = ps.Close()
		s.ps.Store(nil)
		ps = nil
		if ctx.Err() != nil {
			return
		}
		s.fail(ctx, "subscribe", err)
		if !sleepCtx(ctx, backoff.next()) {
			return
		}
	}
}

// subscribe opens the pattern subscription and waits for its confirmation.
func (s *RedisStore) subscribe(ctx context.Context) (*redis.PubSub, error) {
	ps := s.rdb.PSubscribe(ctx, s.keys.killPattern())
	if _, err := ps.ReceiveTimeout(ctx, s.opt.OpTimeout); err != nil {
		_ = ps.Close()
		return nil, err
	}
	s.ps.Store(ps)
	if ctx.Err() != nil { // Close raced with us
		_ = ps.Close()
		return nil, ctx.Err()
	}
	return ps, nil
}

// receive dispatches notices until the connection fails. A quiet
// connection is pinged once per refresh interval; a second silent interval
// means it is dead.
func (s *RedisStore) receive(ctx context.Context, ps *redis.PubSub) error {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, s.opt.RefreshInterval)
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() && !pinged && ctx.Err() == nil {
				pinged = true
				if perr := ps.Ping(ctx); perr != nil {
					return perr
				}
				continue
			}
			return err
		}
		pinged = false
		if m, ok := msg.(*redis.Message); ok {
			if suffix, ok := s.keys.killSuffix(m.Channel); ok {
				safego.Run(ctx, "session.kill_notice", func() { s.onKillNotice(ctx, suffix, m.Payload) })
			}
		}
	}
}
