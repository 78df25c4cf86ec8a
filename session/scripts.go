package session

import "github.com/redis/go-redis/v9"

// Lua scripts for every check-then-act on Redis keys (issue 3 §1). Each is
// built once with redis.NewScript (its SHA computed here), loaded at Start,
// and run with EVALSHA so a handshake sends the hash, not the source.
//
// Cluster note: a script may only touch keys of its own slot. Scripts that
// peek at a pod lease (an undeclared key) do so only when checkLease is "1";
// the store passes "0" on a Redis Cluster and makes that check itself.

// Acquire results (first element of acquireScript's reply).
const (
	acqFree   = 0 // key was absent; now ours
	acqMine   = 1 // key already named this pod; TTL renewed
	acqHeld   = 2 // key names another, live pod (second element)
	acqDead   = 3 // holder's pod lease had lapsed; now ours
	acqForced = 4 // holder was forceFrom; now ours
)

// acquireScript is the whole single-session decision of SPEC §4 in one
// round trip.
//
//	KEYS[1] session key
//	ARGV[1] this pod id      ARGV[2] lock TTL (ms)
//	ARGV[3] pod key prefix   ARGV[4] "1" = check the holder's lease here
//	ARGV[5] forceFrom: take over if the holder is exactly this pod ("" = never)
//	ARGV[6] kill channel
//	ARGV[7] holder already notified: do not publish again to it
//
// A forced attempt that finds a different holder publishes nothing: that
// holder is newer than the caller, which gives up (409) rather than kill it.
// Reply {code, holder, published}. The kill notice is
// {"new_pod_id": me, "old_pod_id": holder}: SPEC §4's payload plus the pod
// it is meant for, so the other pods (every pod hears every notice through
// its pattern subscription) drop it without a round trip. A takeover from a
// dead or silent pod publishes the notice too: a pod whose lease merely
// lapsed (Redis restart, partition) is still told to close its socket.
var acquireScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {0, '', 0}
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, v, 0}
end
local code = 2
if ARGV[5] ~= '' and v == ARGV[5] then
  code = 4
elseif ARGV[4] == '1' and redis.call('EXISTS', ARGV[3] .. v) == 0 then
  code = 3
end
local notice = cjson.encode({new_pod_id = ARGV[1], old_pod_id = v})
if code ~= 2 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[6], notice)
  return {code, v, 1}
end
if ARGV[5] == '' and v ~= ARGV[7] then
  redis.call('PUBLISH', ARGV[6], notice)
  return {2, v, 1}
end
return {2, v, 0}
`)

// Re-assert results (first element of reassertScript's reply).
const (
	reassertKept     = 0 // key named this pod; TTL renewed
	reassertRecreate = 1 // key was gone (Redis restart, eviction); set again
	reassertLost     = 2 // key names another pod (second element)
)

// reassertScript is the refresher's compare-and-expire (SPEC §4): a key
// that is ours or simply gone is (re)set to this pod; a key another pod
// holds is reported, and the caller closes its socket.
//
//	KEYS[1] session key   ARGV[1] this pod id   ARGV[2] lock TTL (ms)
var reassertScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {0, ''}
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, ''}
end
return {2, v}
`)

// releaseScript is compare-and-delete: only the owner removes a lock.
//
//	KEYS[1] session key   ARGV[1] this pod id
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Pods replies other than a member list (podsScript's integer reply).
const (
	podsRecoveryStarted = 1 // registry:alive was missing: Redis lost its data; recovery window opened
	podsRecovering      = 2 // registry:recovering is set: pods are still re-registering
)

// podsScript lists the live members of a route in one round trip: members
// whose own expiry score has not passed and whose pod lease lives (this pod
// counts as live: it is the one asking).
//
// It first checks the registry markers (SPEC §5: no delivery from an
// incomplete registry). A missing registry:alive means Redis lost its data
// (restart, flush) and no pod has noticed yet: the script opens the
// recovery window itself (registry:recovering, then registry:alive) and
// replies podsRecoveryStarted. While registry:recovering lives it replies
// podsRecovering. Otherwise the reply is the member list.
//
//	KEYS[1] route key   KEYS[2] registry:alive   KEYS[3] registry:recovering
//	ARGV[1] now (unix ms)   ARGV[2] pod key prefix   ARGV[3] this pod id
//	ARGV[4] recovery window (ms)   ARGV[5] registry:alive TTL (ms)
var podsScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[4])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[5])
  return 1
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 2
end
local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local out = {}
for _, m in ipairs(members) do
  if m == ARGV[3] or redis.call('EXISTS', ARGV[2] .. m) == 1 then
    out[#out + 1] = m
  end
end
return out
`)

// routeAssertScript writes this pod's route member with a fresh expiry
// score, drops members whose expiry has passed (a crashed pod's litter) and
// gives the key itself the same long TTL, so a route every pod has left or
// died on disappears on its own. One command per route, for Join and for
// the refresher alike.
//
//	KEYS[1] route key   ARGV[1] this pod id   ARGV[2] expiry score (unix ms)
//	ARGV[3] now (unix ms)   ARGV[4] GC TTL (ms)
var routeAssertScript = redis.NewScript(`
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// allScripts is what Start loads into Redis.
var allScripts = []*redis.Script{acquireScript, reassertScript, releaseScript, podsScript, routeAssertScript}
