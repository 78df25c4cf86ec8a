package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisPartitionLeases keeps partition membership and leases in Redis
// (keys: keyspace.partitions, docs/redis-keys.md). All its keys share the
// hash tag {partitions:G}, so the scripts below, which touch several of
// them, also run on Redis Cluster (one slot per group), and the pipelined
// heartbeat goes to one node.
//
// What a pod costs Redis per tick (INFO commandstats counts the commands
// inside scripts too): the heartbeat, ZRANGE + ZADD pipelined, 2
// commands; its leases nothing, they live with the membership. A script
// that reads Redis's TIME, checks the leases and pushes the keys' TTL
// runs on the first beat, after a lapse or a failure, and once per
// partitionCheckEvery; acquire and release scripts only when ownership
// changes (perf/redis-cost.md). Safe for concurrent use.
type RedisPartitionLeases struct {
	rdb   redis.UniversalClient
	keys  partitionKeys
	clock *serverClock
}

// partitionKeysTTL bounds the group's keys once no pod runs; each pod
// pushes it back at every lease check (every partitionCheckEvery), so it
// never lapses under a running fleet.
const partitionKeysTTL = 10 * time.Minute

// NewRedisPartitionLeases returns leases on rdb under keyPrefix (config
// redis.key_prefix) for one group of partitions: the pods consuming one
// partitioned stream (its name is the group), so another partition count,
// another stream or another NATS behind the same Redis never shares
// leases with it.
func NewRedisPartitionLeases(rdb redis.UniversalClient, keyPrefix, group string) *RedisPartitionLeases {
	return &RedisPartitionLeases{rdb: rdb, keys: keyspace{prefix: keyPrefix}.partitions(group), clock: newServerClock()}
}

func (r *RedisPartitionLeases) all() []string {
	return []string{r.keys.members, r.keys.owners, r.keys.leaving}
}

// Heartbeat implements PartitionLeases: the pipelined beat when the
// clock is calibrated and no check is asked for, the checking script
// otherwise or when the beat finds this pod's membership lapsed.
func (r *RedisPartitionLeases) Heartbeat(ctx context.Context, b Beat) (Pulse, error) {
	if !b.Check {
		live, ok, err := r.beat(ctx, b)
		if err != nil || ok {
			return Pulse{Live: live}, err
		}
	}
	return r.checkBeat(ctx, b)
}

// beat is the common tick: ZRANGE WITHSCORES (the members as they were)
// and ZADD of this pod, in one round trip. ok is false when it cannot
// vouch that b.Pod stayed a member since its previous beat (no clock, or
// its previous expiry had passed or was gone by the time the ZADD ran):
// then another pod may have taken a lease and the caller checks.
func (r *RedisPartitionLeases) beat(ctx context.Context, b Beat) (live []string, ok bool, err error) {
	send := r.clock.now()
	_, hi, calibrated := r.clock.at(send)
	if !calibrated {
		return nil, false, nil
	}
	var zr *redis.ZSliceCmd
	if _, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		zr = p.ZRangeWithScores(ctx, r.keys.members, 0, -1)
		p.ZAdd(ctx, r.keys.members, redis.Z{Score: float64(hi + b.TTL.Milliseconds()), Member: b.Pod})
		return nil
	}); err != nil {
		return nil, false, err
	}
	lo, hi, calibrated := r.clock.at(r.clock.now())
	if !calibrated {
		return nil, false, nil
	}
	live, prev, earliest := liveMembers(zr.Val(), b.Pod, lo)
	if earliest < lo-b.TTL.Milliseconds() {
		// Long gone (a full TTL past expiry even on the early clock):
		// drop it so the set holds the fleet, not its history.
		if err := r.rdb.ZRemRangeByScore(ctx, r.keys.members, "-inf", strconv.FormatInt(lo-b.TTL.Milliseconds(), 10)).Err(); err != nil {
			return nil, false, err
		}
	}
	return live, prev > hi, nil
}

// liveMembers reads a ZRANGE WITHSCORES of the members: those whose
// expiry is after lo, plus pod, sorted; pod's previous expiry (0 when
// absent) and the earliest expiry seen (max int64 when none).
func liveMembers(zs []redis.Z, pod string, lo int64) (live []string, prev, earliest int64) {
	earliest = int64(^uint64(0) >> 1)
	live = make([]string, 0, len(zs)+1)
	live = append(live, pod)
	for _, z := range zs {
		m, _ := z.Member.(string)
		exp := int64(z.Score)
		earliest = min(earliest, exp)
		switch {
		case m == pod:
			prev = exp
		case exp > lo:
			live = append(live, m)
		}
	}
	slices.Sort(live)
	return live, prev, earliest
}

// checkBeatScript is the heartbeat that also checks the leases, on
// Redis's own clock (TIME, returned for the calibration of serverClock):
// ZADD this pod, drop members a TTL past their expiry, report for each
// owned partition whether its lease still names the pod, release the
// leases naming it outside owned, push the keys' TTL. It returns
// {sec, usec, live members, held flags}.
//
// KEYS: members, owners. ARGV: pod, ttl ms, keys' ttl ms, owned....
var checkBeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pod, ttl = ARGV[1], tonumber(ARGV[2])
local ms = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local live, gone = {pod}, false
for i = 1, #ms, 2 do
  local exp = tonumber(ms[i + 1])
  if ms[i] ~= pod and exp > now then live[#live + 1] = ms[i] end
  if exp < now - ttl then gone = true end
end
redis.call('ZADD', KEYS[1], now + ttl, pod)
if gone then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local owned = {}
for i = 4, #ARGV do owned[ARGV[i]] = true end
local mine, stale = {}, {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if all[i + 1] == pod then
    if owned[all[i]] then mine[all[i]] = true else stale[#stale + 1] = all[i] end
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[2], unpack(stale)) end
if #all > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
local held = {}
for i = 4, #ARGV do held[#held + 1] = mine[ARGV[i]] and 1 or 0 end
return {t[1], t[2], live, held}
`)

// checkBeat runs checkBeatScript and calibrates the clock with its TIME.
func (r *RedisPartitionLeases) checkBeat(ctx context.Context, b Beat) (Pulse, error) {
	args := partitionArgs([]any{b.Pod, b.TTL.Milliseconds(), partitionKeysTTL.Milliseconds()}, b.Owned)
	send := r.clock.now()
	res, err := checkBeatScript.Run(ctx, r.rdb, r.all()[:2], args...).Slice()
	if err != nil {
		return Pulse{}, err
	}
	recv := r.clock.now()
	sec, usec, live, held, err := parseCheckBeat(res, len(b.Owned))
	if err != nil {
		return Pulse{}, err
	}
	r.clock.calibrate(sec, usec, send, recv)
	slices.Sort(live)
	return Pulse{Live: live, Checked: true, Held: held}, nil
}

func parseCheckBeat(res []any, owned int) (sec, usec int64, live []string, held []bool, err error) {
	bad := fmt.Errorf("partition heartbeat: unexpected reply %v", res)
	if len(res) != 4 {
		return 0, 0, nil, nil, bad
	}
	s, _ := res[0].(string)
	u, _ := res[1].(string)
	sec, err1 := strconv.ParseInt(s, 10, 64)
	usec, err2 := strconv.ParseInt(u, 10, 64)
	ms, _ := res[2].([]any)
	hs, _ := res[3].([]any)
	if err1 != nil || err2 != nil || len(hs) != owned {
		return 0, 0, nil, nil, bad
	}
	for _, m := range ms {
		if s, ok := m.(string); ok {
			live = append(live, s)
		}
	}
	held = make([]bool, owned)
	for i, h := range hs {
		held[i] = h == int64(1)
	}
	return sec, usec, live, held, nil
}

// leaseAliveLua defines alive(pod, now): pod's leases count (a member or
// leaving, not expired). KEYS[1] members, KEYS[3] leaving.
const leaseAliveLua = `
local function alive(pod, now)
  local s = redis.call('ZSCORE', KEYS[1], pod)
  if s and tonumber(s) > now then return true end
  s = redis.call('ZSCORE', KEYS[3], pod)
  return s and tonumber(s) > now or false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// acquirePartitionsScript takes, for a live member, every lease of ARGV
// that is free, its own, or held by a pod no longer alive; 1 per
// partition it holds now. KEYS: members, owners, leaving. ARGV: pod,
// keys' ttl ms, partitions....
var acquirePartitionsScript = redis.NewScript(leaseAliveLua + `
local pod = ARGV[1]
local out, set, seen = {}, {}, {}
local s = redis.call('ZSCORE', KEYS[1], pod)
if not (s and tonumber(s) > now) then return out end
local parts = {}
for i = 3, #ARGV do parts[#parts + 1] = ARGV[i] end
local cur = redis.call('HMGET', KEYS[2], unpack(parts))
for i, p in ipairs(parts) do
  local h = cur[i]
  local free = (not h) or h == pod
  if not free then
    if seen[h] == nil then seen[h] = alive(h, now) end
    free = not seen[h]
  end
  if free then
    set[#set + 1] = p
    set[#set + 1] = pod
    out[i] = 1
  else
    out[i] = 0
  end
end
if #set > 0 then
  redis.call('HSET', KEYS[2], unpack(set))
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return out
`)

// Acquire implements PartitionLeases.
func (r *RedisPartitionLeases) Acquire(ctx context.Context, ps []int, pod string) ([]bool, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	args := partitionArgs([]any{pod, partitionKeysTTL.Milliseconds()}, ps)
	res, err := acquirePartitionsScript.Run(ctx, r.rdb, r.all(), args...).Int64Slice()
	if err != nil {
		return nil, err
	}
	got := make([]bool, len(ps))
	for i := range got {
		got[i] = i < len(res) && res[i] == 1
	}
	return got, nil
}

// releasePartitionsScript: compare-and-delete of each lease. KEYS:
// owners. ARGV: pod, partitions....
var releasePartitionsScript = redis.NewScript(`
local parts = {}
for i = 2, #ARGV do parts[#parts + 1] = ARGV[i] end
local cur = redis.call('HMGET', KEYS[1], unpack(parts))
local del = {}
for i, p in ipairs(parts) do
  if cur[i] == ARGV[1] then del[#del + 1] = p end
end
if #del > 0 then redis.call('HDEL', KEYS[1], unpack(del)) end
return #del
`)

// Release implements PartitionLeases.
func (r *RedisPartitionLeases) Release(ctx context.Context, ps []int, pod string) error {
	if len(ps) == 0 {
		return nil
	}
	return releasePartitionsScript.Run(ctx, r.rdb, []string{r.keys.owners}, partitionArgs([]any{pod}, ps)...).Err()
}

// leaveScript moves the pod from members to leaving, where its leases
// count until ttl (ttl 0: removes it from both), and drops drains that
// ended. KEYS: members, owners, leaving. ARGV: pod, ttl ms, keys' ttl ms.
var leaveScript = redis.NewScript(leaseAliveLua + `
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) <= 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
`)

// Leave implements PartitionLeases.
func (r *RedisPartitionLeases) Leave(ctx context.Context, pod string, ttl time.Duration) error {
	return leaveScript.Run(ctx, r.rdb, r.all(), pod, ttl.Milliseconds(), partitionKeysTTL.Milliseconds()).Err()
}

// ownerScript: the pod whose lease of ARGV[1] counts, "" when none.
var ownerScript = redis.NewScript(leaseAliveLua + `
local h = redis.call('HGET', KEYS[2], ARGV[1])
if h and alive(h, now) then return h end
return ''
`)

// Owner returns the pod whose lease of partition p counts, "" when none
// does (for tools and tests: which pod consumes a company's events).
func (r *RedisPartitionLeases) Owner(ctx context.Context, p int) (string, error) {
	v, err := ownerScript.Run(ctx, r.rdb, r.all(), strconv.Itoa(p)).Text()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}
