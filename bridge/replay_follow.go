package bridge

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/logx"
)

// followWait bounds a replay's wait for the tail follower; past it the
// replay reads the block itself (a deleted seq the follower never gets).
const followWait = 2 * time.Second

// followIdle stops the follower when no replay has needed the tail for
// that long: a pod outside a storm keeps no consumer open. A variable for
// the tests, which count consumers left on the stream.
var followIdle = 5 * time.Second

// follower is the tail follower: the ordered consumer of the run that
// read up to the stream's end, kept open while replays keep needing the
// end. Its block k grows as events are published; a replay gets a
// snapshot of it. Fields under replayCache.mu.
type follower struct {
	gen    uint64
	k      uint64
	msgs   []cachedMsg
	upto   uint64
	snap   *cacheBlock   // a snapshot of msgs up to upto, once asked for
	wake   chan struct{} // closed (and replaced) when upto moves or it stops
	wanted time.Time
}

// startFollow makes b's run the tail follower, unless there is one.
func (c *replayCache) startFollow(gen uint64, b *cacheBlock) *follower {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tail != nil || gen != c.gen || b == nil {
		return nil
	}
	c.tail = &follower{gen: gen, k: b.k, msgs: slices.Clip(b.msgs), upto: b.upto, snap: b, wake: make(chan struct{}), wanted: time.Now()}
	c.follows.Add(1)
	return c.tail
}

// follow reads what is published into f's block until no replay has
// needed the tail for followIdle, or the read fails.
func (c *replayCache) follow(s jetstream.Stream, f *follower, rd *reader, carry *cachedMsg) {
	defer rd.close(s)
	c.mu.Lock()
	if carry != nil && c.tail == f {
		c.advanceLocked(f, *carry)
	}
	c.mu.Unlock()
	for {
		m, _, err := rd.next(jetstream.NextMaxWait(time.Second))
		c.mu.Lock()
		if c.tail != f {
			c.mu.Unlock()
			return // stopped: the epoch changed
		}
		switch {
		case errors.Is(err, nats.ErrTimeout) && time.Since(f.wanted) < c.followIdle:
		case err != nil:
			c.stopFollowLocked(f)
			c.mu.Unlock()
			return
		default:
			c.advanceLocked(f, m)
		}
		c.mu.Unlock()
	}
}

// advanceLocked adds a message read by the follower, publishing the
// blocks it completes, and wakes the replays waiting for it.
func (c *replayCache) advanceLocked(f *follower, m cachedMsg) {
	for m.seq > blockLast(f.k) {
		c.putLocked(f.gen, newCacheBlock(f.k, blockLast(f.k), f.msgs))
		f.k++
		f.msgs = nil
	}
	f.msgs = append(f.msgs, m)
	f.upto, f.snap = m.seq, nil
	close(f.wake)
	f.wake = make(chan struct{})
}

// snapshotLocked returns the follower's block as read so far, cached.
func (c *replayCache) snapshotLocked(f *follower) *cacheBlock {
	if f.snap == nil {
		f.snap = newCacheBlock(f.k, f.upto, slices.Clip(f.msgs))
		c.putLocked(f.gen, f.snap)
	}
	return f.snap
}

// stopFollowLocked ends following: the partial block stays cached, and
// the replays waiting read what they need themselves.
func (c *replayCache) stopFollowLocked(f *follower) {
	if f.gen == c.gen {
		c.snapshotLocked(f)
	}
	if c.tail == f {
		c.tail = nil
	}
	close(f.wake)
	f.wake = make(chan struct{})
}

// reader is an unfiltered ordered consumer reading the stream from a seq.
type reader struct {
	oc jetstream.Consumer
	it jetstream.MessagesContext
}

// openReader starts reading at from, expecting to read up to to; pending
// is how many messages the stream held from from on at creation.
func openReader(ctx context.Context, s jetstream.Stream, from, to uint64) (*reader, uint64, error) {
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: replayInactive,
		MaxResetAttempts:  replayResetAttempts,
	})
	if err != nil {
		return nil, 0, err
	}
	// Pull the range in one or a few requests; a short extension still
	// pulls 64 so that events published meanwhile cost no round trips.
	it, err := oc.Messages(jetstream.PullMaxMessages(int(min(max(to-from+1, 64), 1024))))
	if err != nil {
		return nil, 0, err
	}
	rd := &reader{oc: oc, it: it}
	ci := oc.CachedInfo()
	if ci == nil {
		rd.it.Stop()
		return nil, 0, errors.New("no consumer info after creation")
	}
	return rd, ci.NumPending, nil
}

// next returns the next message and the stream's messages after it.
func (rd *reader) next(opt jetstream.NextOpt) (cachedMsg, uint64, error) {
	msg, err := rd.it.Next(opt)
	if err != nil {
		return cachedMsg{}, 0, err
	}
	md, err := msg.Metadata()
	if err != nil {
		return cachedMsg{}, 0, err
	}
	return newCachedMsg(msg, md), md.NumPending, nil
}

// close stops the read and deletes its consumer off the caller's path
// (the server would remove it after replayInactive).
func (rd *reader) close(s jetstream.Stream) {
	rd.it.Stop()
	ci := rd.oc.CachedInfo()
	if ci == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.DeleteConsumer(ctx, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			logx.L().Debug("replay cache consumer not deleted; the server removes it when idle", "consumer", ci.Name, "err", err)
		}
	}()
}
