package bridge

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/reactor"
)

// The tests count the consumers left on the stream: a tail follower
// stops soon after its last replay.
func init() { followIdle = 300 * time.Millisecond }

// cachedReplayer is a Replayer whose cache holds cacheBytes.
func (e *replayEnv) cachedReplayer(cacheBytes int) *Replayer {
	return NewReplayer(e.js, ReplayOptions{Stream: e.stream, MaxEvents: 10000, MaxConcurrent: 64, Batch: 50, CacheBytes: cacheBytes}, e.m)
}

// replayAll replays req and fails the test unless it caught up.
func replayAll(t *testing.T, r *Replayer, req reactor.ReplayRequest) []uint64 {
	t.Helper()
	var c collector
	resync, err := r.Replay(context.Background(), req, c.emit)
	if err != nil || resync != "" {
		t.Fatalf("Replay(since %d) = %q, %v; want caught up", req.Since, resync, err)
	}
	return seqs(c.events())
}

// publishRounds stores n events cycling over subjects.
func (e *replayEnv) publishRounds(t *testing.T, n int, subjects ...string) {
	t.Helper()
	for i := range n {
		e.publish(t, subjects[i%len(subjects)])
	}
}

// Replays served from the cache across block boundaries, with since at
// and around a block's edge, among other sockets' events, and over a
// stretch of deleted messages, are exactly what the stream holds.
func TestReplayCache_BlockBoundaries(t *testing.T) {
	e := newReplayEnv(t, nil)
	// 700 events: blocks 0 (1-256), 1 (257-512), 2 (513-768, partial).
	e.publishRounds(t, 700, chatsA1, "websocket.other.a1.chats", msgsX1, "websocket.acme.a2.chats", msgsX2, "websocket.acme.a1.agents", "websocket.zz.q.agents")
	s, err := e.js.Stream(context.Background(), e.stream)
	if err != nil {
		t.Fatal(err)
	}
	// A gap: 300-340 and the events at the first block edge deleted.
	deleted := []uint64{256, 257}
	for q := uint64(300); q <= 340; q++ {
		deleted = append(deleted, q)
	}
	for _, q := range deleted {
		if err := s.DeleteMsg(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	e.pubs = slices.DeleteFunc(e.pubs, func(p published) bool { return slices.Contains(deleted, p.seq) })

	user := func(since uint64) reactor.ReplayRequest {
		return reactor.ReplayRequest{Company: "acme", Agent: "a1", Chat: "x1", Since: since}
	}
	cases := []struct {
		name     string
		req      reactor.ReplayRequest
		subjects []string
	}{
		{"from the start, three blocks", user(0), []string{chatsA1, msgsX1}},
		{"since the last seq of a block", user(255), []string{chatsA1, msgsX1}},
		{"since a block's last seq", user(256), []string{chatsA1, msgsX1}},
		{"since a block's first seq", user(257), []string{chatsA1, msgsX1}},
		{"since inside the deleted stretch", user(310), []string{chatsA1, msgsX1}},
		{"since in the partial block", user(600), []string{chatsA1, msgsX1}},
		{"chat only", reactor.ReplayRequest{Company: "acme", Agent: "a1", Chat: "x2", ChatOnly: true, Since: 100}, []string{msgsX2}},
		{"admin of all", reactor.ReplayRequest{Admin: true, Since: 200}, []string{"websocket.acme.a1.agents", "websocket.zz.q.agents"}},
		{"admin of a company", reactor.ReplayRequest{Admin: true, Company: "zz", Since: 200}, []string{"websocket.zz.q.agents"}},
		{"admin of an agent", reactor.ReplayRequest{Admin: true, Company: "acme", Agent: "a1", Since: 200}, []string{"websocket.acme.a1.agents"}},
		{"nobody's events", reactor.ReplayRequest{Company: "nobody", Agent: "a1", Since: 10}, nil},
	}
	// One Replayer for all: later cases are served from what earlier ones
	// read, the first from a cold cache.
	r := e.cachedReplayer(1 << 20)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c collector
			resync, err := r.Replay(context.Background(), tc.req, c.emit)
			if err != nil || resync != "" {
				t.Fatalf("Replay = %q, %v", resync, err)
			}
			if got, want := seqs(c.events()), e.want(tc.req.Since, tc.subjects...); !slices.Equal(got, want) {
				t.Fatalf("replayed %d seqs %v\nwant %d %v", len(got), got, len(want), want)
			}
			e.checkEvents(t, c.events())
		})
	}
	st := r.CacheStats()
	if st.Reads != 1 {
		t.Errorf("cache reads = %d, want 1 (the first replay reads every block; the rest hit)", st.Reads)
	}
	if st.Hits == 0 {
		t.Errorf("cache hits = 0")
	}
	eventually(t, 5*time.Second, "cache read consumers deleted", func() bool { return e.consumers(t) == 0 })
}

// A replay past the cached partial tail block gets what was published
// since from the tail follower, with no new read; once no replay needs
// the tail, the follower stops and a replay extends the block with one
// read. Events after a replay's snapshot stay out.
func TestReplayCache_PartialTailExtended(t *testing.T) {
	e := newReplayEnv(t, nil)
	e.publishRounds(t, 40, chatsA1, "websocket.other.a1.chats")
	r := e.cachedReplayer(1 << 20)
	r.cache.followIdle = 300 * time.Millisecond
	req := reactor.ReplayRequest{Company: "acme", Agent: "a1", Since: 3}
	check := func(what string, wantReads, wantFollows uint64) {
		t.Helper()
		if got, want := replayAll(t, r, req), e.want(3, chatsA1); !slices.Equal(got, want) {
			t.Fatalf("%s: replayed %v, want %v", what, got, want)
		}
		if st := r.CacheStats(); st.Reads != wantReads || st.Follows != wantFollows {
			t.Fatalf("%s: cache reads %d, follows %d; want %d, %d", what, st.Reads, st.Follows, wantReads, wantFollows)
		}
	}
	check("first", 1, 1)
	e.publishRounds(t, 30, chatsA1, "websocket.other.a1.chats")
	check("30 more, followed", 1, 1)
	e.publishRounds(t, cacheBlockSeqs, chatsA1, "websocket.other.a1.chats")
	check("a block more, followed", 1, 1)
	eventually(t, 5*time.Second, "follower stopped when idle", func() bool {
		r.cache.mu.Lock()
		defer r.cache.mu.Unlock()
		return r.cache.tail == nil
	})
	eventually(t, 5*time.Second, "follower consumer deleted", func() bool { return e.consumers(t) == 0 })
	e.publishRounds(t, 30, chatsA1, "websocket.other.a1.chats")
	check("30 more, idle", 2, 2)
}

// A follower that does not reach a replay's need (a deleted seq it never
// gets) holds the replay followWait at most; then the replay reads the
// block itself.
func TestReplayCache_StalledFollower_ReadAfterFollowWait(t *testing.T) {
	e := newReplayEnv(t, nil)
	e.publishRounds(t, 10, chatsA1)
	r := e.cachedReplayer(1 << 20)
	r.cache.followWait = 200 * time.Millisecond
	req := reactor.ReplayRequest{Company: "acme", Agent: "a1", Since: 2}
	replayAll(t, r, req)
	c := r.cache
	c.mu.Lock()
	if c.tail != nil { // the first replay's follower may have stopped already
		c.stopFollowLocked(c.tail)
	}
	c.lru.Purge()
	c.tail = &follower{gen: c.gen, k: 0, upto: 3, wake: make(chan struct{})} // never moves
	c.mu.Unlock()
	start := time.Now()
	if got, want := replayAll(t, r, req), e.want(2, chatsA1); !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("replay took %v: it did not wait for the follower", d)
	}
	if st := r.CacheStats(); st.Reads != 2 {
		t.Fatalf("cache reads = %d, want 2", st.Reads)
	}
}

// Many replays at once on a cold cache share one read of the range.
func TestReplayCache_ConcurrentReplaysShareOneRead(t *testing.T) {
	e := newReplayEnv(t, nil)
	const groups = 20
	subjects := make([]string, groups)
	for g := range groups {
		subjects[g] = "websocket.c" + strconv.Itoa(g) + ".a1.chats"
	}
	e.publishRounds(t, 600, subjects...)
	r := e.cachedReplayer(1 << 20)
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, since := i%groups, uint64(i*3) // all in block 0: one run reads 0-2
			var c collector
			resync, err := r.Replay(context.Background(), reactor.ReplayRequest{Company: "c" + strconv.Itoa(g), Agent: "a1", Since: since}, c.emit)
			if err != nil || resync != "" {
				errs <- "replay " + strconv.Itoa(i) + ": " + resync + " " + errString(err)
				return
			}
			if got, want := seqs(c.events()), e.want(since, subjects[g]); !slices.Equal(got, want) {
				errs <- "replay " + strconv.Itoa(i) + ": wrong seqs"
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	if st := r.CacheStats(); st.Reads != 1 {
		t.Fatalf("cache reads = %d for 64 replays of one range, want 1", st.Reads)
	}
}

// cacheSeries are the dws_resume_cache_* values of one catalogue.
type cacheSeries struct {
	hit, miss, reads, tooLarge, readFailed, bytes float64
}

func (e *replayEnv) cacheSeries() cacheSeries {
	m := e.m
	return cacheSeries{
		hit:        counter(m.ResumeCacheLookups.WithLabelValues("hit")),
		miss:       counter(m.ResumeCacheLookups.WithLabelValues("miss")),
		reads:      counter(m.ResumeCacheReads),
		tooLarge:   counter(m.ResumeCacheBypasses.WithLabelValues("too_large")),
		readFailed: counter(m.ResumeCacheBypasses.WithLabelValues("read_failed")),
		bytes:      gauge(m.ResumeCacheBytes),
	}
}

// exports reports whether the series of a catalogue with this one cache
// are its CacheStats: the metrics say what the cache counted.
func (s cacheSeries) exports(st CacheStats) bool {
	return s == cacheSeries{
		hit: float64(st.Hits), miss: float64(st.Misses), reads: float64(st.Reads),
		tooLarge: float64(st.TooLarge), readFailed: float64(st.ReadFailed), bytes: float64(st.Bytes),
	}
}

// An operator tells a storm served from memory by the cache metrics: a
// replay of a range no block of which is held misses and reads the
// stream, one of a held range hits and reads nothing, and one too large
// for the cache is counted as bypassing it.
func TestReplayCache_Metrics_HitMissBypass(t *testing.T) {
	cases := []struct {
		name       string
		cacheBytes int
		warm       bool // the same replay ran once before
		// The moves of the series by the replay measured.
		hit, miss, reads, tooLarge float64
		held                       bool // dws_resume_cache_bytes > 0 after
	}{
		{"cold cache misses and reads the stream", 1 << 20, false, 0, 1, 1, 0, true},
		{"warm cache hits and reads nothing", 1 << 20, true, 1, 0, 0, 0, true},
		{"range over half the cache bypasses it", 4096, false, 0, 0, 0, 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newReplayEnv(t, nil)
			e.publishRounds(t, 40, chatsA1, "websocket.other.a1.chats") // one block
			r := e.cachedReplayer(tc.cacheBytes)
			req := reactor.ReplayRequest{Company: "acme", Agent: "a1", Since: 3}
			if tc.warm {
				replayAll(t, r, req)
			}
			before := e.cacheSeries()
			if got, want := replayAll(t, r, req), e.want(3, chatsA1); !slices.Equal(got, want) {
				t.Fatalf("replayed %v, want %v", got, want)
			}
			after := e.cacheSeries()
			moved := cacheSeries{
				hit: after.hit - before.hit, miss: after.miss - before.miss, reads: after.reads - before.reads,
				tooLarge: after.tooLarge - before.tooLarge, readFailed: after.readFailed - before.readFailed,
			}
			if want := (cacheSeries{hit: tc.hit, miss: tc.miss, reads: tc.reads, tooLarge: tc.tooLarge}); moved != want {
				t.Errorf("series moved %+v, want %+v", moved, want)
			}
			if (after.bytes > 0) != tc.held {
				t.Errorf("dws_resume_cache_bytes = %v, want held %v", after.bytes, tc.held)
			}
			if st := r.CacheStats(); !after.exports(st) {
				t.Errorf("series %+v, cache stats %+v", after, st)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// The cache stays within its byte cap: as the stream grows, the blocks
// read for older replays are evicted, and replays stay exact.
func TestReplayCache_EvictsUnderTheByteCap(t *testing.T) {
	e := newReplayEnv(t, nil)
	e.publishRounds(t, 50, chatsA1, "websocket.other.a1.chats", "websocket.third.a1.chats")
	s, err := e.js.Stream(context.Background(), e.stream)
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	// Room for about four blocks; a replay may span two of them.
	limit := 4 * cacheBlockSeqs * (int(info.State.Bytes/info.State.Msgs) + cacheMsgOverhead)
	r := e.cachedReplayer(limit)
	for round := range 6 {
		e.publishRounds(t, cacheBlockSeqs, chatsA1, "websocket.other.a1.chats", "websocket.third.a1.chats")
		since := e.pubs[len(e.pubs)-1].seq - 300
		if got, want := replayAll(t, r, reactor.ReplayRequest{Company: "acme", Agent: "a1", Since: since}), e.want(since, chatsA1); !slices.Equal(got, want) {
			t.Fatalf("round %d: replayed %d events, want %d", round, len(got), len(want))
		}
		if st := r.CacheStats(); st.Bytes > limit || st.Reads == 0 {
			t.Fatalf("round %d: cache %+v, cap %d", round, st, limit)
		}
		// Evicted blocks leave dws_resume_cache_bytes too (eventually: the
		// tail follower may still be putting what it read).
		eventually(t, 5*time.Second, "the series export the cache stats", func() bool { return e.cacheSeries().exports(r.CacheStats()) })
	}
	r.cache.mu.Lock()
	_, first := r.cache.lru.Peek(0)
	held := r.cache.lru.Len()
	r.cache.mu.Unlock()
	// 1 586 events are 7 blocks; the cap holds about 4 (bytes as the
	// cache counts them are a little under the stream's).
	if first || held >= 7 {
		t.Fatalf("cache holds %d blocks of 7 (block 0: %v); want the oldest evicted", held, first)
	}
}

// A range larger than half the cache is read with the socket's own
// filtered consumer, leaving the cache alone.
func TestReplayCache_RangeTooLarge_ReadsItsOwnConsumer(t *testing.T) {
	e := newReplayEnv(t, nil)
	e.publishRounds(t, 300, chatsA1, "websocket.other.a1.chats")
	r := e.cachedReplayer(4096)
	if got, want := replayAll(t, r, reactor.ReplayRequest{Company: "acme", Agent: "a1"}), e.want(0, chatsA1); !slices.Equal(got, want) {
		t.Fatalf("replayed %d events, want %d", len(got), len(want))
	}
	if st := r.CacheStats(); st.Reads != 0 || st.Bytes != 0 {
		t.Fatalf("cache %+v: want it untouched", st)
	}
}

// A stream deleted and created again restarts its sequences: the cache
// drops what it read of the old one.
func TestReplayCache_NewEpoch_DropsTheOldStreamsBlocks(t *testing.T) {
	e := newReplayEnv(t, nil)
	e.publishRounds(t, 20, chatsA1, msgsX1)
	r := e.cachedReplayer(1 << 20)
	req := reactor.ReplayRequest{Company: "acme", Agent: "a1", Chat: "x1"}
	replayAll(t, r, req)
	old := e.epoch(t)

	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, e.stream); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // a new Created, a new epoch
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: e.stream, Subjects: StreamSubjects, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	e.pubs = nil
	e.publishRounds(t, 20, msgsX1, "websocket.other.a1.chats")
	if e.epoch(t) == old {
		t.Fatal("the recreated stream has the old epoch")
	}
	req.Epoch = old
	var c collector
	if resync, err := r.Replay(ctx, req, c.emit); err != nil || resync != reactor.ResyncEpochChanged {
		t.Fatalf("old epoch: Replay = %q, %v; want epoch_changed", resync, err)
	}
	req.Epoch = e.epoch(t)
	got := replayAll(t, r, req)
	if want := e.want(0, chatsA1, msgsX1); !slices.Equal(got, want) {
		t.Fatalf("new stream: replayed %v, want %v", got, want)
	}
	// The purged blocks leave dws_resume_cache_bytes with the cache.
	eventually(t, 5*time.Second, "the series export the cache stats", func() bool { return e.cacheSeries().exports(r.CacheStats()) })
}

// too_many counts only the socket's events up to the snapshot, and is
// answered before anything is emitted or more blocks are read.
func TestReplayCache_TooManyAcrossBlocks(t *testing.T) {
	e := newReplayEnv(t, nil)
	e.publishRounds(t, 600, chatsA1, "websocket.other.a1.chats") // 300 of a1's
	for _, tc := range []struct {
		max        int
		wantResync string
	}{{299, reactor.ResyncTooMany}, {300, ""}, {0, reactor.ResyncTooMany}} {
		r := NewReplayer(e.js, ReplayOptions{Stream: e.stream, MaxEvents: tc.max, MaxConcurrent: 1, CacheBytes: 1 << 20}, e.m)
		var c collector
		resync, err := r.Replay(context.Background(), reactor.ReplayRequest{Company: "acme", Agent: "a1"}, c.emit)
		if err != nil || resync != tc.wantResync {
			t.Fatalf("max %d: Replay = %q, %v; want %q", tc.max, resync, err, tc.wantResync)
		}
		if n := len(c.events()); (resync == "") != (n == 300) {
			t.Fatalf("max %d: emitted %d events", tc.max, n)
		}
	}
}

func TestCacheBlock_Each(t *testing.T) {
	subjects := []string{
		chatsA1, msgsX1, "websocket.other.a1.chats", msgsX1, "websocket.acme.a1.agents",
		chatsA1, "websocket.b.c.agents", "websocket.bad", "websocket.acme.b.agents",
	}
	msgs := make([]cachedMsg, len(subjects))
	for i, s := range subjects {
		msgs[i] = cachedMsg{seq: uint64(10 + i), subject: s}
		msgs[i].route, msgs[i].routeOK = ParseSubject(s)
	}
	b := newCacheBlock(0, 18, msgs)
	cases := []struct {
		name        string
		filters     []string
		since, last uint64
		want        []uint64
	}{
		{"chats and a chat merged", []string{chatsA1, msgsX1}, 0, 100, []uint64{10, 11, 13, 15}},
		{"since and last bound", []string{chatsA1, msgsX1}, 10, 13, []uint64{11, 13}},
		{"one subject", []string{msgsX1}, 0, 100, []uint64{11, 13}},
		{"admin all", []string{"websocket.*.*.agents"}, 0, 100, []uint64{14, 16, 18}},
		{"admin company", []string{"websocket.acme.*.agents"}, 0, 100, []uint64{14, 18}},
		{"admin agent", []string{"websocket.*.a1.agents"}, 0, 100, []uint64{14}},
		{"admin exact", []string{"websocket.b.c.agents"}, 0, 100, []uint64{16}},
		{"nothing", []string{"websocket.x.y.chats"}, 0, 100, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newReplayMatch(tc.filters)
			var got []uint64
			b.each(&m, tc.since, tc.last, func(m *cachedMsg) bool { got = append(got, m.seq); return true })
			if !slices.Equal(got, tc.want) {
				t.Fatalf("matched %v, want %v", got, tc.want)
			}
		})
	}
	if b.bytes <= len(subjects)*cacheMsgOverhead {
		t.Fatalf("block bytes %d: want the messages' sizes counted", b.bytes)
	}
}

func TestReplayCache_BlockArithmetic(t *testing.T) {
	for _, tc := range []struct{ seq, k, first, last uint64 }{
		{1, 0, 1, 256}, {256, 0, 1, 256}, {257, 1, 257, 512}, {512, 1, 257, 512}, {513, 2, 513, 768},
	} {
		if k := blockOf(tc.seq); k != tc.k || blockFirst(k) != tc.first || blockLast(k) != tc.last {
			t.Errorf("seq %d: block %d [%d, %d], want %d [%d, %d]", tc.seq, k, blockFirst(k), blockLast(k), tc.k, tc.first, tc.last)
		}
	}
	if got := blockNeed(1, 300); got != 300 {
		t.Errorf("blockNeed(1, 300) = %d", got)
	}
	if got := blockNeed(0, 300); got != 256 {
		t.Errorf("blockNeed(0, 300) = %d", got)
	}
}
