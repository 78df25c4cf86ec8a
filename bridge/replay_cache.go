package bridge

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dws-gateway/dws/internal/metrics"
)

// The replay cache (issue 11): in a reconnect storm every socket's since
// falls in the same recent range of nats.stream, so the range is read once,
// unfiltered, in blocks of consecutive sequences, and every replay is
// served from memory by filtering the blocks by its subjects. A replay
// then costs a shared stream info and a walk over the blocks, not an
// ordered consumer of its own (about 5 JetStream round trips).
//
// Blocks live in an LRU bounded by resume.cache_bytes. A replay that needs
// a block no one holds starts one ordered consumer that reads a run of up
// to cacheRunBlocks blocks; replays that need a block of that run wait for
// it instead of reading it again. A block at the stream's end is partial:
// it says up to which seq it is complete. The run that read up to the end
// goes on as the tail follower (replay_follow.go) while replays keep
// needing the end, so the events published during a storm cost no reads.
// Measured (replay_bench_test.go; perf/resume-20261206.md): a storm's
// replay costs ~0.1 ms of shared work, against ~5 ms on its own consumer.

// cacheBlockSeqs is how many consecutive stream sequences a block holds:
// a replay walks (since, last] a block at a time, so a storm 15 000
// sequences back visits ~60 blocks, and the tail block a follower rebuilds
// per snapshot stays small.
const cacheBlockSeqs = 256

// cacheRunBlocks is the most blocks one ordered consumer reads: a storm's
// whole range (100 s at 150 events/s = 60 blocks) in one consumer.
const cacheRunBlocks = 64

// cacheReadTimeout bounds one run's read; the replays waiting for it fall
// back to their own filtered consumer when it fails.
const cacheReadTimeout = 10 * time.Second

// cacheMsgOverhead approximates what a cached message costs besides its
// subject, payload and request id (struct, index entry, slice headers).
const cacheMsgOverhead = 160

func blockOf(seq uint64) uint64       { return (seq - 1) / cacheBlockSeqs }
func blockFirst(k uint64) uint64      { return k*cacheBlockSeqs + 1 }
func blockLast(k uint64) uint64       { return (k + 1) * cacheBlockSeqs }
func blockNeed(k, last uint64) uint64 { return min(blockLast(k), last) }

// blockWait is a block being read; done closes when block or err is set.
type blockWait struct {
	done  chan struct{}
	block *cacheBlock
	err   error
}

// replayCache is the byte-bounded block LRU with its reads in flight. Safe
// for concurrent use.
type replayCache struct {
	maxBytes               int
	followWait, followIdle time.Duration

	mu      sync.Mutex
	epoch   string
	gen     uint64 // bumped when the epoch changes: older reads are not kept
	lru     *simplelru.LRU[uint64, *cacheBlock]
	bytes   int
	pending map[uint64]*blockWait
	tail    *follower // nil: no follower

	hits, misses, reads  cacheCount
	tooLarge, readFailed cacheCount // replays the cache did not serve
	follows              atomic.Uint64
	// bytesHeld is dws_resume_cache_bytes, moved with bytes. It is added
	// to, not set: several caches may share one catalogue (tests).
	bytesHeld prometheus.Gauge
}

// newReplayCache returns an empty cache of maxBytes exporting its counts
// to m's dws_resume_cache_* series, which it creates at zero so a pod
// that has had no storm yet shows 0 rather than no data.
func newReplayCache(maxBytes int, m *metrics.Metrics) *replayCache {
	c := &replayCache{
		maxBytes: maxBytes, followWait: followWait, followIdle: followIdle, pending: map[uint64]*blockWait{},
		hits:       cacheCount{c: m.ResumeCacheLookups.WithLabelValues(cacheHit)},
		misses:     cacheCount{c: m.ResumeCacheLookups.WithLabelValues(cacheMiss)},
		reads:      cacheCount{c: m.ResumeCacheReads},
		tooLarge:   cacheCount{c: m.ResumeCacheBypasses.WithLabelValues(bypassTooLarge)},
		readFailed: cacheCount{c: m.ResumeCacheBypasses.WithLabelValues(bypassReadFailed)},
		bytesHeld:  m.ResumeCacheBytes,
	}
	// The LRU counts entries; the byte cap is enforced in put. Every block
	// leaves through this callback (eviction, replacement, purge).
	c.lru, _ = simplelru.NewLRU[uint64, *cacheBlock](math.MaxInt32, func(_ uint64, b *cacheBlock) {
		c.bytes -= b.bytes
		c.bytesHeld.Sub(float64(b.bytes))
	})
	return c
}

// fits reports whether a replay of span sequences should use the cache:
// its range must take at most half of it, by the stream's mean message
// size. A resume hours back on a busy stream reads its own filtered
// consumer instead of flushing the cache.
func (c *replayCache) fits(span uint64, info *jetstream.StreamInfo) bool {
	mean := uint64(cacheMsgOverhead)
	if info.State.Msgs > 0 {
		mean += info.State.Bytes / info.State.Msgs
	}
	return span <= uint64(c.maxBytes)/2/mean
}

// held returns the blocks from k on that are held complete up to last
// (or up to their end), stopping at the first that is not: in a storm,
// every block a replay needs but the stream's end, under one lock.
func (c *replayCache) held(epoch string, k, last uint64) []*cacheBlock {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return nil
	}
	var out []*cacheBlock
	for ; k <= blockOf(last); k++ {
		b, ok := c.lru.Get(k)
		if !ok || b.upto < blockNeed(k, last) {
			break
		}
		out = append(out, b)
	}
	c.hits.add(uint64(len(out)))
	return out
}

// block returns block k complete up to need (<= last, the stream's last
// seq by a stream info fetched after the replay began), reading it when no
// one holds or reads it.
func (c *replayCache) block(ctx context.Context, s jetstream.Stream, epoch string, k, need, last uint64) (*cacheBlock, error) {
	missed, noFollow := false, false
	defer func() {
		if missed {
			c.misses.add(1)
		} else {
			c.hits.add(1)
		}
	}()
	for {
		c.mu.Lock()
		if epoch != c.epoch {
			// Another stream incarnation: its sequences are other events.
			c.resetLocked(epoch)
		}
		b, ok := c.lru.Get(k)
		if ok && b.upto >= need {
			c.mu.Unlock()
			return b, nil
		}
		missed = true
		if f := c.tail; f != nil && k >= f.k && !noFollow {
			// The tail follower reads what is published: wait until it
			// has passed need (the events up to need are stored already).
			f.wanted = time.Now()
			if k == f.k && f.upto >= need {
				b := c.snapshotLocked(f)
				c.mu.Unlock()
				return b, nil
			}
			wake := f.wake
			c.mu.Unlock()
			t := time.NewTimer(c.followWait)
			select {
			case <-wake:
			case <-t.C:
				noFollow = true // a deleted seq it will never see: read it
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
			t.Stop()
			continue
		}
		// Wait for the read of block k in flight, or start one.
		w := c.pending[k]
		if w == nil {
			w = c.startRunLocked(s, k, b, last)
		}
		c.mu.Unlock()
		select {
		case <-w.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if w.err != nil {
			return nil, w.err
		}
		if w.block.upto >= need {
			return w.block, nil
		}
		// Another replay's read ended before this one's need: extend it.
	}
}

func (c *replayCache) resetLocked(epoch string) {
	c.lru.Purge()
	c.bytes, c.epoch, c.pending = 0, epoch, map[uint64]*blockWait{}
	c.gen++
	if c.tail != nil {
		c.stopFollowLocked(c.tail)
	}
}

// startRunLocked starts reading blocks k.. up to the block of last, at
// most cacheRunBlocks, stopping before a block held complete enough or
// being read. base is block k as held (partial), or nil. It returns block
// k's wait.
func (c *replayCache) startRunLocked(s jetstream.Stream, k uint64, base *cacheBlock, last uint64) *blockWait {
	end := k
	for end+1 <= blockOf(last) && end+1 < k+cacheRunBlocks {
		j := end + 1
		if c.pending[j] != nil {
			break
		}
		if b, ok := c.lru.Peek(j); ok && b.upto >= blockNeed(j, last) {
			break
		}
		end = j
	}
	waits := make([]*blockWait, 0, end-k+1)
	for j := k; j <= end; j++ {
		w := &blockWait{done: make(chan struct{})}
		c.pending[j] = w
		waits = append(waits, w)
	}
	c.reads.add(1)
	// A run up to the stream's end may go on as the tail follower.
	go c.run(s, c.gen, k, base, blockNeed(end, last), waits, end == blockOf(last))
	return waits[0]
}

// run reads the stream from block k (after base's upto when extending it)
// up to to with one ordered consumer, publishing each block as it
// completes. A run that read up to the stream's end (tail) then follows
// the stream while replays need its end, when no other run does.
func (c *replayCache) run(s jetstream.Stream, gen, k uint64, base *cacheBlock, to uint64, waits []*blockWait, tail bool) {
	from := blockFirst(k)
	var msgs []cachedMsg
	if base != nil {
		from = base.upto + 1
		msgs = slices.Clip(base.msgs) // an append copies: base stays as it is
	}
	next := 0 // waits[next] is the block being filled, k+next
	var lastBlock *cacheBlock
	finish := func(upto uint64) {
		j := k + uint64(next)
		lastBlock = newCacheBlock(j, min(upto, blockLast(j)), msgs)
		c.put(gen, lastBlock, waits[next])
		msgs = nil
		next++
	}
	finishAll := func(upto uint64) {
		for next < len(waits) {
			finish(upto)
		}
	}
	fail := func(err error) {
		err = fmt.Errorf("replay cache: read %d-%d: %w", from, to, err)
		c.mu.Lock()
		for i := next; i < len(waits); i++ {
			c.deletePendingLocked(k+uint64(i), waits[i])
			waits[i].err = err
			close(waits[i].done)
		}
		c.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), cacheReadTimeout)
	defer cancel()
	rd, pending, err := openReader(ctx, s, from, to)
	if err != nil {
		fail(err)
		return
	}
	var carry *cachedMsg // read past to: the follower's first
	if pending == 0 {
		// Nothing from from on; to <= the stream's last seq, so every seq
		// up to to was deleted.
		finishAll(to)
	}
	for next < len(waits) {
		m, np, err := rd.next(jetstream.NextContext(ctx))
		if err != nil {
			fail(err)
			rd.close(s)
			return
		}
		for next < len(waits) && m.seq > blockLast(k+uint64(next)) {
			finish(blockLast(k + uint64(next)))
		}
		switch {
		case m.seq > to:
			finishAll(m.seq - 1)
			carry = &m
		case m.seq == to || np == 0:
			// NumPending 0: nothing after seq in the stream now, and to
			// is at most the stream's last seq: whatever lies up to to is
			// gone.
			msgs = append(msgs, m)
			finishAll(max(m.seq, to))
		default:
			msgs = append(msgs, m)
		}
	}
	var f *follower
	if tail {
		f = c.startFollow(gen, lastBlock)
	}
	if f == nil {
		rd.close(s)
		return
	}
	c.follow(s, f, rd, carry)
}

// put publishes a block read under generation gen and wakes its waiters,
// once it is cached: a woken replay, which reads w without the lock, then
// finds dws_resume_cache_bytes counting the block it was given.
func (c *replayCache) put(gen uint64, b *cacheBlock, w *blockWait) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w.block = b
	c.deletePendingLocked(b.k, w)
	c.putLocked(gen, b)
	close(w.done)
}

func (c *replayCache) putLocked(gen uint64, b *cacheBlock) {
	if gen != c.gen {
		return
	}
	c.lru.Remove(b.k) // a partial block this one extends (the callback counts it out)
	c.lru.Add(b.k, b)
	c.bytes += b.bytes
	c.bytesHeld.Add(float64(b.bytes))
	for c.bytes > c.maxBytes && c.lru.Len() > 0 {
		c.lru.RemoveOldest() // replays holding it keep it until they finish
	}
}

func (c *replayCache) deletePendingLocked(k uint64, w *blockWait) {
	if c.pending[k] == w {
		delete(c.pending, k)
	}
}

// Label values of dws_resume_cache_lookups_total and
// dws_resume_cache_bypasses_total: fixed sets, one series each.
const (
	cacheHit         = "hit"
	cacheMiss        = "miss"
	bypassTooLarge   = "too_large"
	bypassReadFailed = "read_failed"
)

// cacheCount is one of CacheStats' counts and the counter exporting it,
// moved together where the event happens. The count stays this cache's
// own; the counter sums every cache sharing a catalogue.
type cacheCount struct {
	n atomic.Uint64
	c prometheus.Counter
}

func (k *cacheCount) add(n uint64) {
	if n == 0 {
		return
	}
	k.n.Add(n)
	k.c.Add(float64(n))
}

// CacheStats are the replay cache's counts since start: block lookups
// served from memory (hits) or waiting for a read (misses), the ordered
// consumers it read with, how many of them went on following the
// stream's end, and the replays it left to their own consumer because
// their range was too large for it or its read failed. The same counts
// are exported as dws_resume_cache_*.
type CacheStats struct {
	Hits, Misses, Reads, Follows uint64
	TooLarge, ReadFailed         uint64
	Bytes                        int
}

func (c *replayCache) stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{
		Hits: c.hits.n.Load(), Misses: c.misses.n.Load(), Reads: c.reads.n.Load(), Follows: c.follows.Load(),
		TooLarge: c.tooLarge.n.Load(), ReadFailed: c.readFailed.n.Load(), Bytes: c.bytes,
	}
}
