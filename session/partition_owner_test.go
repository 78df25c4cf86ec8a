package session

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"
)

// ownerRig is n owners over one store, recording who consumes what, and
// failing the test when two pods consume one partition at once.
type ownerRig struct {
	t      *testing.T
	mu     sync.Mutex
	active map[int]string // partition -> consuming pod
	owners map[string]*PartitionOwner
	cancel map[string]context.CancelFunc
	sick   sync.Map // pod id -> struct{}: its Healthy check fails
}

func newOwnerRig(t *testing.T, store PartitionLeases, failover time.Duration, podIDs ...string) *ownerRig {
	r := &ownerRig{t: t, active: map[int]string{}, owners: map[string]*PartitionOwner{}, cancel: map[string]context.CancelFunc{}}
	for _, id := range podIDs {
		r.add(store, failover, id)
	}
	return r
}

func (r *ownerRig) add(store PartitionLeases, failover time.Duration, id string) {
	o := NewPartitionOwner(store, PartitionOwnerOptions{
		PodID: id, Partitions: 64, Failover: failover,
		Start: func(p int) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if other, ok := r.active[p]; ok && other != id {
				r.t.Errorf("partition %d started on %s while %s consumes it", p, id, other)
			}
			r.active[p] = id
		},
		Stop: func(p int) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.active[p] == id {
				delete(r.active, p)
			}
		},
		Healthy: func() error {
			if _, ok := r.sick.Load(id); ok {
				return errors.New("nats disconnected")
			}
			return nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	r.t.Cleanup(cancel)
	r.owners[id], r.cancel[id] = o, cancel
	o.StartLoop(ctx)
}

// counts returns partitions consumed per pod.
func (r *ownerRig) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := map[string]int{}
	for _, id := range r.active {
		c[id]++
	}
	return c
}

// waitBalanced waits until the given pods consume every partition, each
// its share ± 1, and returns how long it took.
func (r *ownerRig) waitBalanced(within time.Duration, pods ...string) time.Duration {
	r.t.Helper()
	start := time.Now()
	for {
		c, total, ok := r.counts(), 0, true
		for _, id := range pods {
			n := c[id]
			total += n
			if n < 64/len(pods) || n > (64+len(pods)-1)/len(pods) {
				ok = false
			}
		}
		if ok && total == 64 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			r.t.Fatalf("not balanced over %v within %v: %v", pods, within, c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPartitionOwner_BalanceJoinDrainCrash(t *testing.T) {
	t.Parallel()
	for name, mk := range leaseStores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const failover = 1500 * time.Millisecond // lease 600 ms, tick 150 ms
			store := mk()
			r := newOwnerRig(t, store, failover, "p1", "p2", "p3")
			r.waitBalanced(5*time.Second, "p1", "p2", "p3")

			r.add(store, failover, "p4") // joins
			r.waitBalanced(5*time.Second, "p1", "p2", "p3", "p4")

			// p2 drains: its partitions move at once, not after a lease.
			if err := r.owners["p2"].Drain(context.Background()); err != nil {
				t.Fatal(err)
			}
			r.cancel["p2"]()
			took := r.waitBalanced(5*time.Second, "p1", "p3", "p4")
			t.Logf("%s: drain handed over in %v", name, took)

			// p3 "crashes": it stops stepping without releasing anything.
			r.owners["p3"].step.Lock() // frozen like a SIGSTOPped process
			defer r.owners["p3"].step.Unlock()
			r.mu.Lock()
			for p, id := range r.active {
				if id == "p3" {
					delete(r.active, p) // its consumer died with it
				}
			}
			r.mu.Unlock()
			took = r.waitBalanced(5*time.Second, "p1", "p4")
			t.Logf("%s: crash taken over in %v (failover budget %v)", name, took, failover)
			if took > failover {
				t.Errorf("crashed pod's partitions taken over in %v, budget %v", took, failover)
			}
		})
	}
}

// failingLeases is the memory store with a switch that makes every call
// fail, as an unreachable Redis would.
type failingLeases struct {
	*MemoryPartitionLeases
	mu   sync.Mutex
	down bool
}

func (f *failingLeases) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return context.DeadlineExceeded
	}
	return nil
}

func (f *failingLeases) Heartbeat(ctx context.Context, b Beat) (Pulse, error) {
	if err := f.err(); err != nil {
		return Pulse{}, err
	}
	return f.MemoryPartitionLeases.Heartbeat(ctx, b)
}

func (f *failingLeases) Acquire(ctx context.Context, ps []int, pod string) ([]bool, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.MemoryPartitionLeases.Acquire(ctx, ps, pod)
}

// TestPartitionOwner_StoreDown_StopsBeforeLeaseLapses: a pod that cannot
// refresh its leases stops consuming before they can lapse (another pod
// may take them then), and resumes when the store answers again.
func TestPartitionOwner_StoreDown_StopsBeforeLeaseLapses(t *testing.T) {
	t.Parallel()
	store := &failingLeases{MemoryPartitionLeases: NewMemoryPartitionLeases()}
	r := newOwnerRig(t, store, time.Second, "p1") // lease 400 ms
	r.waitBalanced(3*time.Second, "p1")
	store.mu.Lock()
	store.down = true
	store.mu.Unlock()
	downAt := time.Now()
	for len(r.counts()) > 0 {
		if time.Since(downAt) > 2*time.Second {
			t.Fatalf("still consuming %v with the store down", r.counts())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took, ttl := time.Since(downAt), r.owners["p1"].LeaseTTL(); took > ttl+100*time.Millisecond {
		t.Errorf("stopped %v after the store went down; the lease lives %v", took, ttl)
	}
	store.mu.Lock()
	store.down = false
	store.mu.Unlock()
	r.waitBalanced(3*time.Second, "p1")
}

// A pod that cannot consume (its NATS connection is down) while the lease
// store still answers gives its partitions up within the failover budget,
// and takes its share back once healthy.
func TestPartitionOwner_Unhealthy_HandsPartitionsOver(t *testing.T) {
	t.Parallel()
	const failover = time.Second
	r := newOwnerRig(t, NewMemoryPartitionLeases(), failover, "p1", "p2")
	r.waitBalanced(3*time.Second, "p1", "p2")
	r.sick.Store("p2", struct{}{})
	if took := r.waitBalanced(3*time.Second, "p1"); took > failover {
		t.Errorf("p1 consumed every partition %v after p2 fell sick; failover is %v", took, failover)
	}
	r.sick.Delete("p2")
	r.waitBalanced(3*time.Second, "p1", "p2")
}

// Each of 1, 2, 3 and 5 pods holds its share ± 1 of the partitions, and
// the rig fails the test if two pods ever consume one partition at once.
func TestPartitionOwner_BalancedOver1_2_3_5Pods(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 3, 5} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			t.Parallel()
			var ids []string
			for i := range n {
				ids = append(ids, "pod"+strconv.Itoa(i))
			}
			r := newOwnerRig(t, NewMemoryPartitionLeases(), time.Second, ids...)
			r.waitBalanced(5*time.Second, ids...)
		})
	}
}

// The owner wakes, and its calls give up, by the fencing deadline while
// it owns partitions and its heartbeats fail; otherwise it keeps its tick.
func TestPartitionOwner_WakesAndGivesUpByTheFencingDeadline(t *testing.T) {
	t.Parallel()
	o := NewPartitionOwner(NewMemoryPartitionLeases(), PartitionOwnerOptions{PodID: "a", Partitions: 8, Failover: 6 * time.Second})
	// tick 1 s, fencing 1.8 s after the last successful beat was sent.
	now := time.Now()
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name         string
		owned        bool
		lastOK, last time.Duration // before now
		wait, op     time.Duration // next wake, the step's call deadline, from now
	}{
		{"nothing owned: the tick", false, ms(1500), ms(200), ms(800), ms(1000)},
		{"fresh beat: the tick", true, ms(200), ms(200), ms(800), ms(1000)},
		{"fencing comes before the tick", true, ms(1500), ms(200), ms(300), ms(300)},
		{"fencing passed: the tick, a short last try", true, ms(2500), ms(200), ms(800), ms(250)},
		{"step ran late: at once", true, ms(200), ms(1500), 0, ms(1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o.owned = nil
			if tt.owned {
				o.owned = []int{1}
			}
			o.lastOK = now.Add(-tt.lastOK)
			if got := o.nextWait(now.Add(-tt.last), now); got != tt.wait {
				t.Errorf("next wake in %v, want %v", got, tt.wait)
			}
			if got := o.opDeadline(now).Sub(now); got != tt.op {
				t.Errorf("call deadline in %v, want %v", got, tt.op)
			}
		})
	}
}
