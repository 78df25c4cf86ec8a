package session

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// PartitionLeases is the shared state behind partition ownership (SPEC §5,
// DESIGN "Ordered delivery across the fleet"): which pods take part, and
// which pod holds each partition's lease. A lease is what makes a pod the
// consumer of a partition; membership only says who *should* hold which
// (AssignPartitions). Every method may block on the network.
type PartitionLeases interface {
	// Heartbeat marks pod as a member for ttl and returns the live members,
	// sorted.
	Heartbeat(ctx context.Context, pod string, ttl time.Duration) ([]string, error)
	// Leave removes pod from the members at once (drain), so the others
	// reassign its partitions on their next tick instead of after ttl.
	Leave(ctx context.Context, pod string) error
	// Acquire takes the lease of partition p for pod for ttl when it is
	// free or already pod's; it reports whether pod holds it now.
	Acquire(ctx context.Context, p int, pod string, ttl time.Duration) (bool, error)
	// Refresh extends pod's leases of ps to ttl and reports, per
	// partition, whether pod still held it.
	Refresh(ctx context.Context, ps []int, pod string, ttl time.Duration) ([]bool, error)
	// Release gives up pod's leases of ps (compare-and-delete).
	Release(ctx context.Context, ps []int, pod string) error
}

// MemoryPartitionLeases is the single-node PartitionLeases: one process,
// so the one pod that heartbeats owns every partition. Several in-process
// pods may share one (tests).
type MemoryPartitionLeases struct {
	now func() time.Time

	mu      sync.Mutex
	members map[string]time.Time
	leases  map[int]memLease
}

type memLease struct {
	pod     string
	expires time.Time
}

// NewMemoryPartitionLeases returns an empty in-memory lease table.
func NewMemoryPartitionLeases() *MemoryPartitionLeases {
	return &MemoryPartitionLeases{now: time.Now, members: map[string]time.Time{}, leases: map[int]memLease{}}
}

// Heartbeat implements PartitionLeases.
func (m *MemoryPartitionLeases) Heartbeat(_ context.Context, pod string, ttl time.Duration) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.members[pod] = now.Add(ttl)
	live := make([]string, 0, len(m.members))
	for p, exp := range m.members {
		if exp.After(now) {
			live = append(live, p)
		} else {
			delete(m.members, p)
		}
	}
	slices.Sort(live)
	return live, nil
}

// Leave implements PartitionLeases.
func (m *MemoryPartitionLeases) Leave(_ context.Context, pod string) error {
	m.mu.Lock()
	delete(m.members, pod)
	m.mu.Unlock()
	return nil
}

// Acquire implements PartitionLeases.
func (m *MemoryPartitionLeases) Acquire(_ context.Context, p int, pod string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if l, ok := m.leases[p]; ok && l.pod != pod && l.expires.After(now) {
		return false, nil
	}
	m.leases[p] = memLease{pod: pod, expires: now.Add(ttl)}
	return true, nil
}

// Refresh implements PartitionLeases.
func (m *MemoryPartitionLeases) Refresh(_ context.Context, ps []int, pod string, ttl time.Duration) ([]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	held := make([]bool, len(ps))
	for i, p := range ps {
		if l, ok := m.leases[p]; ok && l.pod == pod && l.expires.After(now) {
			m.leases[p] = memLease{pod: pod, expires: now.Add(ttl)}
			held[i] = true
		}
	}
	return held, nil
}

// Release implements PartitionLeases.
func (m *MemoryPartitionLeases) Release(_ context.Context, ps []int, pod string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		if m.leases[p].pod == pod {
			delete(m.leases, p)
		}
	}
	return nil
}

// RedisPartitionLeases keeps partition membership and leases in Redis. All
// its keys share the hash tag {partitions}, so the scripts below, which
// touch several of them, also run on Redis Cluster (one slot).
//
// Keys (with the store's prefix; G is the group, one hash slot per group
// on Redis Cluster):
//   - {partitions:G}:members — sorted set, member = pod id, score = expiry
//     in Unix milliseconds: a crashed pod drops out when its score passes.
//   - {partitions:G}:owner:N — the pod id holding partition N's lease,
//     with a PX TTL: a crashed owner's lease lapses by itself.
type RedisPartitionLeases struct {
	rdb  redis.UniversalClient
	base string // prefix + "{partitions:G}:"
}

// NewRedisPartitionLeases returns leases on rdb under keyPrefix (config
// redis.key_prefix) for one group of partitions: the pods consuming one
// partitioned stream (its name is the group), so another partition count,
// another stream or another NATS behind the same Redis never shares
// leases with it.
func NewRedisPartitionLeases(rdb redis.UniversalClient, keyPrefix, group string) *RedisPartitionLeases {
	return &RedisPartitionLeases{rdb: rdb, base: keyPrefix + "{partitions:" + group + "}:"}
}

func (r *RedisPartitionLeases) membersKey() string { return r.base + "members" }
func (r *RedisPartitionLeases) ownerKey(p int) string {
	return r.base + "owner:" + strconv.Itoa(p)
}

// Owner returns the pod holding partition p's lease, "" when none does
// (for tools and tests: which pod consumes a company's events).
func (r *RedisPartitionLeases) Owner(ctx context.Context, p int) (string, error) {
	v, err := r.rdb.Get(ctx, r.ownerKey(p)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// heartbeatScript: ZADD self, drop lapsed members, return the live ones.
// The server's clock decides expiry, so pods' clocks need not agree.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZRANGE', KEYS[1], 0, -1)
`)

// Heartbeat implements PartitionLeases.
func (r *RedisPartitionLeases) Heartbeat(ctx context.Context, pod string, ttl time.Duration) ([]string, error) {
	live, err := heartbeatScript.Run(ctx, r.rdb, []string{r.membersKey()}, pod, ttl.Milliseconds()).StringSlice()
	if err != nil {
		return nil, err
	}
	slices.Sort(live)
	return live, nil
}

// Leave implements PartitionLeases.
func (r *RedisPartitionLeases) Leave(ctx context.Context, pod string) error {
	return r.rdb.ZRem(ctx, r.membersKey(), pod).Err()
}

// acquireScript: take a free lease or extend our own.
var acquirePartitionScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
`)

// Acquire implements PartitionLeases.
func (r *RedisPartitionLeases) Acquire(ctx context.Context, p int, pod string, ttl time.Duration) (bool, error) {
	n, err := acquirePartitionScript.Run(ctx, r.rdb, []string{r.ownerKey(p)}, pod, ttl.Milliseconds()).Int()
	return n == 1, err
}

// refreshPartitionsScript: compare-and-pexpire every key; 1 = still ours.
var refreshPartitionsScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('PEXPIRE', k, tonumber(ARGV[2]))
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
`)

// Refresh implements PartitionLeases.
func (r *RedisPartitionLeases) Refresh(ctx context.Context, ps []int, pod string, ttl time.Duration) ([]bool, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ps))
	for i, p := range ps {
		keys[i] = r.ownerKey(p)
	}
	res, err := refreshPartitionsScript.Run(ctx, r.rdb, keys, pod, ttl.Milliseconds()).Int64Slice()
	if err != nil {
		return nil, err
	}
	held := make([]bool, len(ps))
	for i := range held {
		held[i] = i < len(res) && res[i] == 1
	}
	return held, nil
}

// releasePartitionsScript: compare-and-delete every key.
var releasePartitionsScript = redis.NewScript(`
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
return 1
`)

// Release implements PartitionLeases.
func (r *RedisPartitionLeases) Release(ctx context.Context, ps []int, pod string) error {
	if len(ps) == 0 {
		return nil
	}
	keys := make([]string, len(ps))
	for i, p := range ps {
		keys[i] = r.ownerKey(p)
	}
	return releasePartitionsScript.Run(ctx, r.rdb, keys, pod).Err()
}
