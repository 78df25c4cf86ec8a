package session

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
)

// Reasons a partition changed hands, the `reason` label of ownership
// changes (SPEC §8 style: a closed set).
const (
	// PartitionAcquired: this pod took a partition assigned to it.
	PartitionAcquired = "acquired"
	// PartitionRebalanced: membership changed and the partition belongs
	// to another pod now; handed over cleanly.
	PartitionRebalanced = "rebalanced"
	// PartitionLost: the lease was found held by another pod (this pod
	// was paused or cut off longer than the lease).
	PartitionLost = "lost"
	// PartitionStoreDown: the lease could not be refreshed in time, so
	// this pod stopped consuming before another pod could take over.
	PartitionStoreDown = "store_unreachable"
	// PartitionDrained: this pod is shutting down and handed it over.
	PartitionDrained = "drained"
)

// PartitionOwnerOptions configure a PartitionOwner.
type PartitionOwnerOptions struct {
	// PodID is this pod's id (its gRPC address).
	PodID string
	// Partitions is nats.partitions.
	Partitions int
	// Failover is nats.failover: a dead pod's partitions are taken over
	// well within it (the lease lives 2/5 of it, see leaseTTL).
	Failover time.Duration
	// Start begins consuming partition p. Called on the owner's goroutine
	// after the lease is held; it must not block for long.
	Start func(p int)
	// Stop ends consumption of p and returns only when nothing more of p
	// will be delivered by this pod: the lease is released after it, so a
	// new owner never overlaps with a running one in normal operation.
	Stop func(p int)
	// OnChange is told of every ownership change (metrics); optional.
	OnChange func(p int, owned bool, reason string)
	// Healthy reports whether this pod can consume at all (its NATS
	// connection is up); optional. While it fails the pod stops renewing
	// its membership and leases, exactly as when the lease store is
	// unreachable, so a pod cut off from NATS but not from Redis gives
	// its partitions up within the failover budget instead of holding
	// them unconsumed.
	Healthy func() error
}

// PartitionOwner keeps this pod's share of the partitions (SPEC §5): every
// tick it heartbeats its membership, computes the assignment over the live
// members (AssignPartitions), refreshes the leases it holds, hands over
// those that now belong elsewhere and acquires those assigned to it once
// their previous holder released them or its lease lapsed.
type PartitionOwner struct {
	store PartitionLeases
	opts  PartitionOwnerOptions
	ttl   time.Duration
	tick  time.Duration

	step     sync.Mutex // one step or drain at a time
	owned    []int      // guarded by step; copied into view
	lastOK   time.Time  // last successful refresh, guarded by step
	draining bool       // guarded by step

	viewMu sync.RWMutex
	view   []int
	live   []string
}

// NewPartitionOwner returns an owner; Run starts it.
func NewPartitionOwner(store PartitionLeases, opts PartitionOwnerOptions) *PartitionOwner {
	if opts.Failover <= 0 {
		opts.Failover = 5 * time.Second
	}
	ttl := opts.Failover * 2 / 5
	return &PartitionOwner{store: store, opts: opts, ttl: ttl, tick: ttl / 4}
}

// LeaseTTL is how long a partition lease (and a membership heartbeat)
// lives: 2/5 of the failover budget, leaving the rest for the new owner's
// first tick, its consumer start and the redelivery of what the dead pod
// had pulled.
func (o *PartitionOwner) LeaseTTL() time.Duration { return o.ttl }

// Owned returns the partitions this pod consumes now, sorted.
func (o *PartitionOwner) Owned() []int {
	o.viewMu.RLock()
	defer o.viewMu.RUnlock()
	return slices.Clone(o.view)
}

// Members returns the live members seen at the last heartbeat.
func (o *PartitionOwner) Members() []string {
	o.viewMu.RLock()
	defer o.viewMu.RUnlock()
	return slices.Clone(o.live)
}

// Run takes the first step at once, then one every tick until ctx ends;
// then it stops every partition it still owns and releases them.
func (o *PartitionOwner) Run(ctx context.Context) {
	o.Step(ctx)
	t := time.NewTicker(o.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			o.giveUpAll(PartitionDrained)
			return
		case <-t.C:
			o.Step(ctx)
		}
	}
}

// StartLoop runs the owner on its own goroutine until ctx ends.
func (o *PartitionOwner) StartLoop(ctx context.Context) {
	safego.Go(ctx, "session.partitions", o.Run)
}

// Step is one tick (exported for tests that drive time themselves).
func (o *PartitionOwner) Step(ctx context.Context) {
	o.step.Lock()
	defer o.step.Unlock()
	if o.draining {
		return
	}
	if o.opts.Healthy != nil {
		if err := o.opts.Healthy(); err != nil {
			o.fence(ctx, err)
			return
		}
	}
	opCtx, cancel := context.WithTimeout(ctx, o.tick)
	defer cancel()

	live, err := o.store.Heartbeat(opCtx, o.opts.PodID, o.ttl)
	if err != nil {
		o.fence(ctx, err)
		return
	}
	held, err := o.store.Refresh(opCtx, o.owned, o.opts.PodID, o.ttl)
	if err != nil {
		o.fence(ctx, err)
		return
	}
	o.lastOK = time.Now()
	desired := AssignPartitions(o.opts.Partitions, live)

	var keep, handOver []int
	for i, p := range o.owned {
		switch {
		case !held[i]:
			o.stop(p, PartitionLost)
		case desired[p] != o.opts.PodID:
			handOver = append(handOver, p)
		default:
			keep = append(keep, p)
		}
	}
	for _, p := range handOver {
		o.stop(p, PartitionRebalanced)
	}
	if len(handOver) > 0 {
		if err := o.store.Release(opCtx, handOver, o.opts.PodID); err != nil {
			// The leases lapse by themselves within ttl.
			logx.L().Warn("partition release failed", "err", err.Error(), "partitions", handOver)
		}
	}
	for p, owner := range desired {
		if owner != o.opts.PodID || slices.Contains(keep, p) {
			continue
		}
		ok, err := o.store.Acquire(opCtx, p, o.opts.PodID, o.ttl)
		if err != nil {
			break // next tick
		}
		if ok {
			keep = append(keep, p)
			if o.opts.Start != nil {
				o.opts.Start(p)
			}
			o.changed(p, true, PartitionAcquired)
		}
	}
	slices.Sort(keep)
	o.owned = keep
	o.publish(live)
}

// fence stops consuming everything once half a lease has passed without a
// refresh: well before the leases lapse and another pod may take them, with
// a margin for late ticks on a loaded machine.
func (o *PartitionOwner) fence(ctx context.Context, err error) {
	if ctx.Err() != nil || len(o.owned) == 0 || time.Since(o.lastOK) < o.ttl/2 {
		return
	}
	logx.L().Warn("partition leases not refreshed in time; consumption stopped until this pod is healthy and the store answers",
		"err", err.Error(), "partitions", len(o.owned))
	for _, p := range o.owned {
		o.stop(p, PartitionStoreDown)
	}
	o.owned = nil
	o.publish(nil)
}

// Drain hands every partition over before shutdown (SPEC §6): leave the
// membership so the others reassign at once, stop consuming, release.
// The owner takes no further steps.
func (o *PartitionOwner) Drain(ctx context.Context) error {
	o.step.Lock()
	defer o.step.Unlock()
	o.draining = true
	errLeave := o.store.Leave(ctx, o.opts.PodID)
	owned := o.owned
	for _, p := range owned {
		o.stop(p, PartitionDrained)
	}
	o.owned = nil
	o.publish(nil)
	return errors.Join(errLeave, o.store.Release(ctx, owned, o.opts.PodID))
}

func (o *PartitionOwner) giveUpAll(reason string) {
	o.step.Lock()
	defer o.step.Unlock()
	o.draining = true
	owned := o.owned
	for _, p := range owned {
		o.stop(p, reason)
	}
	o.owned = nil
	o.publish(nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = o.store.Leave(ctx, o.opts.PodID)
	_ = o.store.Release(ctx, owned, o.opts.PodID)
}

func (o *PartitionOwner) stop(p int, reason string) {
	if o.opts.Stop != nil {
		o.opts.Stop(p)
	}
	o.changed(p, false, reason)
}

func (o *PartitionOwner) changed(p int, owned bool, reason string) {
	if o.opts.OnChange != nil {
		o.opts.OnChange(p, owned, reason)
	}
}

func (o *PartitionOwner) publish(live []string) {
	o.viewMu.Lock()
	o.view = slices.Clone(o.owned)
	if live != nil {
		o.live = live
	}
	o.viewMu.Unlock()
}
