package session

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"
)

// PartitionLeases is the shared state behind partition ownership (SPEC §5,
// docs/fleet.md): which pods take part, and which pod holds each
// partition's lease. A lease is what makes a pod the consumer of a
// partition; membership says who *should* hold which (AssignPartitions).
//
// A lease has no expiry of its own: it counts while its pod is a member
// (or leaving, below), so one membership heartbeat per tick keeps every
// lease of the pod alive, and a crashed pod's leases lapse with its
// membership. Refresh traffic grows with pods, not with partitions (the
// pod lease of DESIGN "Redis cost at fleet scale", applied to partitions;
// perf/redis-cost.md). Every method may block on the network.
type PartitionLeases interface {
	// Heartbeat keeps b.Pod a member for b.TTL, and with it every lease
	// it holds, and returns the live members. It checks b.Pod's leases
	// when asked, and whenever it cannot vouch that the membership stayed
	// live since the previous heartbeat (the only way another pod can
	// have taken one of them).
	Heartbeat(ctx context.Context, b Beat) (Pulse, error)
	// Leave takes pod out of the membership at once (drain), so the others
	// reassign its partitions on their next tick; its leases still count
	// for ttl or until released, so the new owners wait for the hand-over.
	// A ttl ≤ 0 ends that too: pod is gone, and no lease of it counts.
	Leave(ctx context.Context, pod string, ttl time.Duration) error
	// Acquire takes, for pod (a live member), the leases of ps that are
	// free, already pod's, or held by a pod no longer live; it reports,
	// per partition, whether pod holds it now.
	Acquire(ctx context.Context, ps []int, pod string) ([]bool, error)
	// Release gives up pod's leases of ps (compare-and-delete).
	Release(ctx context.Context, ps []int, pod string) error
}

// Beat is one membership heartbeat.
type Beat struct {
	Pod string
	TTL time.Duration
	// Owned are the partitions Pod consumes now, sorted.
	Owned []int
	// Check asks for the leases to be checked even if the membership
	// stayed live: the owner asks on its first beat, after any failed
	// call (a reply lost after the write) and every partitionCheckEvery
	// (a replica promoted without the last writes).
	Check bool
}

// Pulse is what a heartbeat saw.
type Pulse struct {
	// Live are the live members, sorted, Pod included.
	Live []string
	// Checked: the leases were checked. Held[i] then says whether Pod
	// still holds Owned[i], and every lease naming Pod outside Owned was
	// released (a write whose reply was lost, a failed release, a
	// predecessor under the same pod id). Unchecked, Pod's membership
	// stayed live since its previous heartbeat, so no other pod can have
	// taken a lease: every owned one is still held.
	Checked bool
	Held    []bool
}

// MemoryPartitionLeases is the single-node PartitionLeases: one process,
// so the one pod that heartbeats owns every partition. Several in-process
// pods may share one (tests). Same rules as the Redis store.
type MemoryPartitionLeases struct {
	now func() time.Time

	mu      sync.Mutex
	members map[string]time.Time // pod -> membership expiry
	leaving map[string]time.Time // draining pod -> expiry
	owners  map[int]string       // partition -> pod holding its lease
}

// NewMemoryPartitionLeases returns an empty in-memory lease table.
func NewMemoryPartitionLeases() *MemoryPartitionLeases {
	return &MemoryPartitionLeases{now: time.Now, members: map[string]time.Time{},
		leaving: map[string]time.Time{}, owners: map[int]string{}}
}

// alive: pod's leases count (member or leaving, not expired).
func (m *MemoryPartitionLeases) alive(pod string, now time.Time) bool {
	return m.members[pod].After(now) || m.leaving[pod].After(now)
}

// Heartbeat implements PartitionLeases.
func (m *MemoryPartitionLeases) Heartbeat(_ context.Context, b Beat) (Pulse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	lapsed := !m.members[b.Pod].After(now)
	m.members[b.Pod] = now.Add(b.TTL)
	var pulse Pulse
	for p, exp := range m.members {
		if exp.After(now) {
			pulse.Live = append(pulse.Live, p)
		} else {
			delete(m.members, p)
		}
	}
	slices.Sort(pulse.Live)
	if b.Check || lapsed {
		pulse.Checked, pulse.Held = true, make([]bool, len(b.Owned))
		for i, p := range b.Owned {
			pulse.Held[i] = m.owners[p] == b.Pod
		}
		for p, pod := range m.owners {
			if pod == b.Pod && !slices.Contains(b.Owned, p) {
				delete(m.owners, p)
			}
		}
	}
	return pulse, nil
}

// Leave implements PartitionLeases.
func (m *MemoryPartitionLeases) Leave(_ context.Context, pod string, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for p, exp := range m.leaving {
		if !exp.After(now) {
			delete(m.leaving, p)
		}
	}
	delete(m.members, pod)
	if ttl > 0 {
		m.leaving[pod] = now.Add(ttl)
	} else {
		delete(m.leaving, pod)
	}
	return nil
}

// Acquire implements PartitionLeases.
func (m *MemoryPartitionLeases) Acquire(_ context.Context, ps []int, pod string) ([]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	got := make([]bool, len(ps))
	if !m.members[pod].After(now) {
		return got, nil
	}
	for i, p := range ps {
		if h, ok := m.owners[p]; !ok || h == pod || !m.alive(h, now) {
			m.owners[p], got[i] = pod, true
		}
	}
	return got, nil
}

// Release implements PartitionLeases.
func (m *MemoryPartitionLeases) Release(_ context.Context, ps []int, pod string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		if m.owners[p] == pod {
			delete(m.owners, p)
		}
	}
	return nil
}

// Owner returns the pod whose lease of partition p counts, "" when none
// does (for tools and tests).
func (m *MemoryPartitionLeases) Owner(_ context.Context, p int) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h := m.owners[p]; h != "" && m.alive(h, m.now()) {
		return h, nil
	}
	return "", nil
}

// partitionArgs appends ps as decimal strings to args (script ARGV).
func partitionArgs(args []any, ps []int) []any {
	for _, p := range ps {
		args = append(args, strconv.Itoa(p))
	}
	return args
}
