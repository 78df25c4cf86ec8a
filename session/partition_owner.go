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
	// well within it (see NewPartitionOwner for the timings).
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
// tick it heartbeats its membership (which keeps its leases), computes the
// assignment over the live members (AssignPartitions), hands over the
// partitions that now belong elsewhere and acquires those assigned to it
// once their previous holder released them or stopped being live.
type PartitionOwner struct {
	store      PartitionLeases
	opts       PartitionOwnerOptions
	ttl        time.Duration // membership, and so lease, lifetime
	tick       time.Duration
	fenceAfter time.Duration

	step      sync.Mutex // one step or drain at a time
	owned     []int      // guarded by step; copied into view
	lastOK    time.Time  // when the last successful heartbeat was sent, guarded by step
	lastCheck time.Time  // when the leases were last checked, guarded by step
	needCheck bool       // the next heartbeat checks the leases, guarded by step
	draining  bool       // guarded by step

	viewMu sync.RWMutex
	view   []int
	live   []string
}

// partitionCheckEvery is how often a pod has its leases checked although
// its membership never lapsed: the safety net for state a promoted
// replica lost (its last writes) and the recalibration of serverClock.
// The check costs ~8 commands, so at 100 pods it adds ~13 commands/s.
const partitionCheckEvery = time.Minute

// NewPartitionOwner returns an owner; Run starts it.
//
// Timings from F = nats.failover (5 s by default): the membership, and so
// every lease of the pod, lives F/2 after each heartbeat (2.5 s); the pod
// heartbeats every F/6 (833 ms), three beats per lifetime. A dead pod's
// membership thus lapses at most F/2 after its last beat and the pod its
// partitions are assigned to sees that within a tick: taken over within
// 2F/3 (3.3 s), leaving F/3 for the consumer's start and the redelivery of
// what the dead pod had pulled. A pod that cannot heartbeat stops
// consuming 0.3 F (1.5 s) after its last successful beat was sent, F/5
// (1 s) before its leases can lapse (fencing).
func NewPartitionOwner(store PartitionLeases, opts PartitionOwnerOptions) *PartitionOwner {
	if opts.Failover <= 0 {
		opts.Failover = 5 * time.Second
	}
	f := opts.Failover
	return &PartitionOwner{store: store, opts: opts, ttl: f / 2, tick: f / 6, fenceAfter: f * 3 / 10, needCheck: true}
}

// LeaseTTL is how long a membership heartbeat, and with it each lease of
// the pod, lives: half the failover budget, leaving the rest for the new
// owner's first tick, its consumer start and the redelivery of what the
// dead pod had pulled.
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
// then it stops every partition it still owns and releases them. While
// heartbeats fail it wakes at the fencing deadline too, so a pod cut off
// stops consuming in time whatever the tick.
func (o *PartitionOwner) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			o.giveUpAll(PartitionDrained)
			return
		case <-t.C:
		}
		start := time.Now()
		o.Step(ctx)
		t.Reset(o.nextWait(start, time.Now()))
	}
}

// nextWait is the time from now to the next step: a tick after the last
// one started, or the fencing deadline if that comes first.
func (o *PartitionOwner) nextWait(last, now time.Time) time.Duration {
	o.step.Lock()
	defer o.step.Unlock()
	next := last.Add(o.tick)
	if fence := o.lastOK.Add(o.fenceAfter); len(o.owned) > 0 && fence.After(now) && fence.Before(next) {
		next = fence
	}
	return max(next.Sub(now), 0)
}

// opDeadline bounds one step's calls: a tick, but a failing call must
// return by the fencing deadline while this pod owns partitions.
func (o *PartitionOwner) opDeadline(now time.Time) time.Time {
	d := now.Add(o.tick)
	if fence := o.lastOK.Add(o.fenceAfter); len(o.owned) > 0 && fence.Before(d) {
		d = fence
		if floor := now.Add(o.tick / 4); d.Before(floor) {
			d = floor // a last try when the step itself came late
		}
	}
	return d
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
	sent := time.Now()
	opCtx, cancel := context.WithDeadline(ctx, o.opDeadline(sent))
	defer cancel()

	check := o.needCheck || sent.Sub(o.lastCheck) >= partitionCheckEvery
	pulse, err := o.store.Heartbeat(opCtx, Beat{Pod: o.opts.PodID, TTL: o.ttl, Owned: o.owned, Check: check})
	if err != nil {
		o.fence(ctx, err) // the beat may have run: the next one checks
		return
	}
	o.lastOK = sent
	if pulse.Checked {
		o.lastCheck, o.needCheck = sent, false
	}
	desired := AssignPartitions(o.opts.Partitions, pulse.Live)

	var keep, handOver []int
	for i, p := range o.owned {
		switch {
		case pulse.Checked && !pulse.Held[i]:
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
			// Leases do not lapse while this pod lives: the next
			// heartbeat checks, which releases what is not owned.
			o.needCheck = true
			logx.L().Warn("partition release failed", "err", err.Error(), "partitions", handOver)
		}
	}
	var want []int
	for p, owner := range desired {
		if owner == o.opts.PodID && !slices.Contains(keep, p) {
			want = append(want, p)
		}
	}
	if len(want) > 0 {
		got, err := o.store.Acquire(opCtx, want, o.opts.PodID)
		if err != nil {
			o.needCheck = true // a lost reply may have taken some: checked next tick
		}
		for i, p := range want {
			if i < len(got) && got[i] {
				keep = append(keep, p)
				if o.opts.Start != nil {
					o.opts.Start(p)
				}
				o.changed(p, true, PartitionAcquired)
			}
		}
	}
	slices.Sort(keep)
	o.owned = keep
	o.publish(pulse.Live)
}

// fence stops consuming everything once fenceAfter has passed since the
// last successful heartbeat was sent: before the membership, and with it
// the leases, can lapse and another pod may take them, with a margin for
// the stops themselves.
func (o *PartitionOwner) fence(ctx context.Context, err error) {
	// Leases this pod stops consuming still name it: the next heartbeat
	// checks, which releases them (the membership may not lapse at all).
	o.needCheck = true
	if ctx.Err() != nil || len(o.owned) == 0 || time.Since(o.lastOK) < o.fenceAfter {
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
	errLeave := o.store.Leave(ctx, o.opts.PodID, o.ttl)
	owned := o.owned
	for _, p := range owned {
		o.stop(p, PartitionDrained)
	}
	o.owned = nil
	o.publish(nil)
	// Released (or, failing that, gone from leaving, which frees them too):
	// nothing of this pod is left in the store.
	return errors.Join(errLeave, o.store.Release(ctx, owned, o.opts.PodID), o.store.Leave(ctx, o.opts.PodID, 0))
}

func (o *PartitionOwner) giveUpAll(reason string) {
	o.step.Lock()
	defer o.step.Unlock()
	if o.draining {
		return // Drain handed everything over
	}
	o.draining = true
	owned := o.owned
	for _, p := range owned {
		o.stop(p, reason)
	}
	o.owned = nil
	o.publish(nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = o.store.Release(ctx, owned, o.opts.PodID)
	_ = o.store.Leave(ctx, o.opts.PodID, 0)
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
