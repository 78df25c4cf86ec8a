package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// replayEnv is one embedded server with nats.stream on it.
type replayEnv struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	m      *metrics.Metrics
	stream string
	// pubs are the events published so far, in seq order.
	pubs []published
}

type published struct {
	seq       uint64
	subject   string
	data      string
	requestID string
}

// newReplayEnv starts a server and creates the stream as dws does, with
// cfg applied on top (limits for the too_old cases).
func newReplayEnv(t *testing.T, cfg func(*jetstream.StreamConfig)) *replayEnv {
	t.Helper()
	_, url := startNATS(t)
	nc := connect(t, url)
	e := &replayEnv{nc: nc, js: newJS(t, nc), m: metrics.New(), stream: testNATS().Stream}
	sc := jetstream.StreamConfig{Name: e.stream, Subjects: StreamSubjects, Storage: jetstream.MemoryStorage}
	if cfg != nil {
		cfg(&sc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	return e
}

// publish stores an event whose payload names its subject and index.
func (e *replayEnv) publish(t *testing.T, subject string) published {
	t.Helper()
	n := len(e.pubs)
	p := published{subject: subject, data: fmt.Sprintf(`{"event_id":"e%d","subject":%q}`, n, subject), requestID: fmt.Sprintf("req-%d", n)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := Publish(ctx, e.nc, subject, []byte(p.data), p.requestID)
	if err != nil {
		t.Fatal(err)
	}
	p.seq = ack.Sequence
	e.pubs = append(e.pubs, p)
	return p
}

func (e *replayEnv) epoch(t *testing.T) string {
	t.Helper()
	s, err := e.js.Stream(context.Background(), e.stream)
	if err != nil {
		t.Fatal(err)
	}
	return Epoch(s.CachedInfo())
}

// consumers counts the consumers on the stream (replays leave none).
func (e *replayEnv) consumers(t *testing.T) int {
	t.Helper()
	s, err := e.js.Stream(context.Background(), e.stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Consumers
}

// collector is an emit callback that records every batch.
type collector struct {
	mu      sync.Mutex
	batches [][]reactor.ReplayEvent
}

func (c *collector) emit(b []reactor.ReplayEvent) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches = append(c.batches, slices.Clone(b)) // the Replayer reuses b
	return true
}

func (c *collector) events() []reactor.ReplayEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []reactor.ReplayEvent
	for _, b := range c.batches {
		all = append(all, b...)
	}
	return all
}

func seqs(evs []reactor.ReplayEvent) []uint64 {
	out := make([]uint64, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.Seq)
	}
	return out
}

// want lists the seqs of published events after since whose subject is in
// subjects.
func (e *replayEnv) want(since uint64, subjects ...string) []uint64 {
	var out []uint64
	for _, p := range e.pubs {
		if p.seq > since && slices.Contains(subjects, p.subject) {
			out = append(out, p.seq)
		}
	}
	return out
}

// checkEvents asserts each event carries what was published at its seq.
func (e *replayEnv) checkEvents(t *testing.T, evs []reactor.ReplayEvent) {
	t.Helper()
	for _, ev := range evs {
		i := slices.IndexFunc(e.pubs, func(p published) bool { return p.seq == ev.Seq })
		if i < 0 {
			t.Fatalf("event seq %d was never published", ev.Seq)
		}
		p := e.pubs[i]
		route, _ := ParseSubject(p.subject)
		switch {
		case string(ev.Payload) != p.data:
			t.Errorf("seq %d: payload %s, published %s", ev.Seq, ev.Payload, p.data)
		case ev.Route != route:
			t.Errorf("seq %d: route %+v, want %+v", ev.Seq, ev.Route, route)
		case ev.Meta.RequestID != p.requestID:
			t.Errorf("seq %d: request id %q, want %q", ev.Seq, ev.Meta.RequestID, p.requestID)
		case ev.Meta.Seq != ev.Seq:
			t.Errorf("seq %d: meta seq %d", ev.Seq, ev.Meta.Seq)
		case ev.Meta.PublishedAt.IsZero() || time.Since(ev.Meta.PublishedAt) > time.Minute:
			t.Errorf("seq %d: published at %v", ev.Seq, ev.Meta.PublishedAt)
		}
	}
}

func replayOptions(stream string) ReplayOptions {
	return ReplayOptions{Stream: stream, MaxEvents: 10000, MaxConcurrent: 4, Batch: 3}
}

// replayPaths are the Replayer's two ways of reading: each replay on its
// own filtered consumer (resume.cache_bytes 0), and the block cache.
var replayPaths = []struct {
	name       string
	cacheBytes int
}{{"consumer", 0}, {"cache", 1 << 20}}

const (
	chatsA1 = "websocket.acme.a1.chats"
	msgsX1  = "websocket.acme.a1.messages.x1"
	msgsX2  = "websocket.acme.a1.messages.x2"
)

// publishMix stores events of the chosen user and of everyone around it,
// interleaved: other chats, agents, companies and agents.
func (e *replayEnv) publishMix(t *testing.T, rounds int) {
	t.Helper()
	for range rounds {
		for _, s := range []string{
			chatsA1, msgsX1, "websocket.other.a1.chats", msgsX2, "websocket.acme.a2.chats",
			"websocket.acme.a1.agents", msgsX1, "websocket.acme.a2.messages.x1", chatsA1,
		} {
			e.publish(t, s)
		}
	}
}

func TestReplay_User_ReplaysItsEventsInSeqOrderAfterSince(t *testing.T) {
	for _, path := range replayPaths {
		t.Run(path.name, func(t *testing.T) { testReplayUser(t, path.cacheBytes) })
	}
}

func testReplayUser(t *testing.T, cacheBytes int) {
	e := newReplayEnv(t, nil)
	e.publishMix(t, 4) // 36 events
	cases := []struct {
		name     string
		req      reactor.ReplayRequest
		subjects []string
	}{
		{"chats and the selected chat interleaved", reactor.ReplayRequest{Company: "acme", Agent: "a1", Chat: "x1", Since: 5}, []string{chatsA1, msgsX1}},
		{"from the start", reactor.ReplayRequest{Company: "acme", Agent: "a1", Chat: "x1", Since: 0}, []string{chatsA1, msgsX1}},
		{"no chat selected: chats only", reactor.ReplayRequest{Company: "acme", Agent: "a1", Since: 10}, []string{chatsA1}},
		{"select_chat since: that chat only", reactor.ReplayRequest{Company: "acme", Agent: "a1", Chat: "x2", ChatOnly: true, Since: 3}, []string{msgsX2}},
		{"another agent of the company", reactor.ReplayRequest{Company: "acme", Agent: "a2", Chat: "x1", Since: 0}, []string{"websocket.acme.a2.chats", "websocket.acme.a2.messages.x1"}},
		{"epoch given and current", reactor.ReplayRequest{Company: "acme", Agent: "a1", Chat: "x1", Since: 20, Epoch: e.epoch(t)}, []string{chatsA1, msgsX1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := replayOptions(e.stream)
			o.CacheBytes = cacheBytes
			r := NewReplayer(e.js, o, e.m)
			var c collector
			resync, err := r.Replay(context.Background(), tc.req, c.emit)
			if err != nil || resync != "" {
				t.Fatalf("Replay = %q, %v; want caught up", resync, err)
			}
			got, want := seqs(c.events()), e.want(tc.req.Since, tc.subjects...)
			if len(want) == 0 || !slices.Equal(got, want) {
				t.Fatalf("replayed seqs %v, want %v", got, want)
			}
			for i, b := range c.batches {
				if len(b) == 0 || len(b) > 3 {
					t.Fatalf("batch %d has %d events; Batch is 3", i, len(b))
				}
			}
			e.checkEvents(t, c.events())
		})
	}
	eventually(t, 5*time.Second, "replay consumers deleted", func() bool { return e.consumers(t) == 0 })
	if got := counter(e.m.Resumes.WithLabelValues("replayed")); got != float64(len(cases)) {
		t.Errorf("resumes{replayed} = %v, want %d", got, len(cases))
	}
}

// Events published while a replay runs reach the socket live: the replay
// stops at the stream's last seq when it started.
func TestReplay_StopsAtTheLastSeqWhenItStarted(t *testing.T) {
	for _, path := range replayPaths {
		t.Run(path.name, func(t *testing.T) { testReplayStopsAtLast(t, path.cacheBytes) })
	}
}

func testReplayStopsAtLast(t *testing.T, cacheBytes int) {
	e := newReplayEnv(t, nil)
	for range 10 {
		e.publish(t, chatsA1)
	}
	last := e.pubs[len(e.pubs)-1].seq
	r := NewReplayer(e.js, ReplayOptions{Stream: e.stream, MaxEvents: 100, MaxConcurrent: 1, Batch: 2, CacheBytes: cacheBytes}, e.m)
	var got []uint64
	published := false
	resync, err := r.Replay(context.Background(), reactor.ReplayRequest{Company: "acme", Agent: "a1", Since: 0}, func(b []reactor.ReplayEvent) bool {
		got = append(got, seqs(b)...)
		if !published {
			published = true
			for range 5 {
				e.publish(t, chatsA1)
			}
		}
		return true
	})
	if err != nil || resync != "" {
		t.Fatalf("Replay = %q, %v", resync, err)
	}
	if want := e.want(0, chatsA1)[:10]; !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v (up to seq %d)", got, want, last)
	}
	if n := counter(e.m.ResumeEvents); n != 10 {
		t.Errorf("resume_events_total = %v, want 10", n)
	}
}

func TestReplay_Admin_FiltersByCompanyAndAgent(t *testing.T) {
	for _, path := range replayPaths {
		t.Run(path.name, func(t *testing.T) { testReplayAdmin(t, path.cacheBytes) })
	}
}

func testReplayAdmin(t *testing.T, cacheBytes int) {
	e := newReplayEnv(t, nil)
	for range 3 {
		for _, s := range []string{
			"websocket.acme.a1.agents", "websocket.acme.a2.agents", "websocket.other.a1.agents",
			chatsA1, msgsX1, "websocket.other.b7.agents",
		} {
			e.publish(t, s)
		}
	}
	cases := []struct {
		name     string
		company  string
		agent    string
		subjects []string
	}{
		{"all", "", "", []string{"websocket.acme.a1.agents", "websocket.acme.a2.agents", "websocket.other.a1.agents", "websocket.other.b7.agents"}},
		{"company only", "acme", "", []string{"websocket.acme.a1.agents", "websocket.acme.a2.agents"}},
		{"company and agent", "other", "b7", []string{"websocket.other.b7.agents"}},
		{"agent only", "", "a1", []string{"websocket.acme.a1.agents", "websocket.other.a1.agents"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := replayOptions(e.stream)
			o.CacheBytes = cacheBytes
			r := NewReplayer(e.js, o, e.m)
			var c collector
			req := reactor.ReplayRequest{Admin: true, Company: tc.company, Agent: tc.agent, Since: 2}
			if resync, err := r.Replay(context.Background(), req, c.emit); err != nil || resync != "" {
				t.Fatalf("Replay = %q, %v", resync, err)
			}
			if got, want := seqs(c.events()), e.want(2, tc.subjects...); !slices.Equal(got, want) {
				t.Fatalf("replayed %v, want %v", got, want)
			}
			e.checkEvents(t, c.events())
			for _, ev := range c.events() {
				if ev.Route.Kind != session.RouteAdmin || ev.Route.Company == "" || ev.Route.Agent == "" {
					t.Fatalf("admin event route %+v: want RouteAdmin with its company and agent", ev.Route)
				}
			}
		})
	}
}

// Each bound of SPEC §5a answers its resync reason before anything is
// emitted, and is counted under that result.
func TestReplay_Bounds_AnswerResyncAndEmitNothing(t *testing.T) {
	for _, path := range replayPaths {
		t.Run(path.name, func(t *testing.T) { testReplayBounds(t, path.cacheBytes) })
	}
}

func testReplayBounds(t *testing.T, cacheBytes int) {
	user := reactor.ReplayRequest{Company: "acme", Agent: "a1", Chat: "x1"}
	cases := []struct {
		name   string
		stream func(*jetstream.StreamConfig)
		opts   func(*ReplayOptions)
		// setup publishes and returns the request.
		setup      func(t *testing.T, e *replayEnv) reactor.ReplayRequest
		wantResync string
		wantEvents int
	}{
		{
			name: "epoch of another stream incarnation", wantResync: reactor.ResyncEpochChanged,
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 1)
				req := user
				req.Epoch = "old-epoch"
				return req
			},
		},
		{
			name: "since older than the first retained event (MaxMsgs)", wantResync: reactor.ResyncTooOld,
			stream: func(c *jetstream.StreamConfig) { c.MaxMsgs = 5 },
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 2) // 18 events, first retained = 14
				req := user
				req.Since = 3
				return req
			},
		},
		{
			name: "since older than the first retained event (purge)", wantResync: reactor.ResyncTooOld,
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 2)
				s, err := e.js.Stream(context.Background(), e.stream)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Purge(context.Background(), jetstream.WithPurgeSequence(10)); err != nil {
					t.Fatal(err)
				}
				req := user
				req.Since = 8 // needs 9, gone
				return req
			},
		},
		{
			name: "since right before the first retained event replays", wantEvents: 4,
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 2)
				s, err := e.js.Stream(context.Background(), e.stream)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Purge(context.Background(), jetstream.WithPurgeSequence(10)); err != nil {
					t.Fatal(err)
				}
				req := user
				req.Since = 9 // needs 10 on, all retained: chats 10, 18; messages of x1 11, 16
				return req
			},
		},
		{
			name: "more than MaxEvents", wantResync: reactor.ResyncTooMany,
			opts: func(o *ReplayOptions) { o.MaxEvents = 7 },
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 2) // 8 matching
				return user
			},
		},
		{
			name: "exactly MaxEvents replays", wantEvents: 8,
			opts: func(o *ReplayOptions) { o.MaxEvents = 8 },
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 2)
				return user
			},
		},
		{
			name: "first missed event older than MaxAge", wantResync: reactor.ResyncTooOld,
			opts: func(o *ReplayOptions) { o.MaxAge = 150 * time.Millisecond },
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 1)
				time.Sleep(300 * time.Millisecond)
				e.publishMix(t, 1)
				return user
			},
		},
		{
			name: "missed events newer than MaxAge replay", wantEvents: 4,
			opts: func(o *ReplayOptions) { o.MaxAge = 150 * time.Millisecond },
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 1)
				time.Sleep(300 * time.Millisecond)
				e.publishMix(t, 1)
				req := user
				req.Since = 9 // only the second round
				return req
			},
		},
		{
			name: "since at the last seq: nothing to replay",
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 1)
				req := user
				req.Since = 9
				return req
			},
		},
		{
			name: "since past the last seq: nothing to replay",
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 1)
				req := user
				req.Since = 1000
				return req
			},
		},
		{
			name: "no matching event after since",
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				e.publishMix(t, 1)
				req := user
				req.Company = "nobody"
				return req
			},
		},
		{
			name: "empty stream",
			setup: func(t *testing.T, e *replayEnv) reactor.ReplayRequest {
				return user
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newReplayEnv(t, tc.stream)
			req := tc.setup(t, e)
			o := replayOptions(e.stream)
			o.CacheBytes = cacheBytes
			if tc.opts != nil {
				tc.opts(&o)
			}
			var c collector
			resync, err := NewReplayer(e.js, o, e.m).Replay(context.Background(), req, c.emit)
			if err != nil {
				t.Fatal(err)
			}
			if resync != tc.wantResync {
				t.Fatalf("resync %q, want %q", resync, tc.wantResync)
			}
			if n := len(c.events()); n != tc.wantEvents {
				t.Fatalf("emitted %d events, want %d", n, tc.wantEvents)
			}
			e.checkEvents(t, c.events())
			result := tc.wantResync
			if result == "" {
				result = "replayed"
			}
			if got := counter(e.m.Resumes.WithLabelValues(result)); got != 1 {
				t.Errorf("resumes{%s} = %v, want 1", result, got)
			}
			eventually(t, 5*time.Second, "replay consumers deleted", func() bool { return e.consumers(t) == 0 })
		})
	}
}

// An event the live path would drop is dropped here too, and counted.
func TestReplay_InvalidPayload_SkippedAndCounted(t *testing.T) {
	for _, path := range replayPaths {
		t.Run(path.name, func(t *testing.T) { testReplayInvalidPayload(t, path.cacheBytes) })
	}
}

func testReplayInvalidPayload(t *testing.T, cacheBytes int) {
	e := newReplayEnv(t, nil)
	e.publish(t, chatsA1)
	ctx := context.Background()
	for _, bad := range []string{`{"unterminated"`, "\xff\xfe"} {
		if _, err := Publish(ctx, e.nc, chatsA1, []byte(bad), "bad"); err != nil {
			t.Fatal(err)
		}
	}
	e.publish(t, chatsA1)
	var c collector
	o := replayOptions(e.stream)
	o.CacheBytes = cacheBytes
	if resync, err := NewReplayer(e.js, o, e.m).Replay(ctx, reactor.ReplayRequest{Company: "acme", Agent: "a1"}, c.emit); err != nil || resync != "" {
		t.Fatalf("Replay = %q, %v", resync, err)
	}
	if got, want := seqs(c.events()), []uint64{1, 4}; !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	if got := counter(e.m.Drops.WithLabelValues(DropInvalidPayload)); got != 2 {
		t.Fatalf("drops{invalid_payload} = %v, want 2", got)
	}
}

func TestReplay_EmitReturnsFalse_StopsEarly(t *testing.T) {
	for _, path := range replayPaths {
		t.Run(path.name, func(t *testing.T) { testReplayEmitFalse(t, path.cacheBytes) })
	}
}

func testReplayEmitFalse(t *testing.T, cacheBytes int) {
	e := newReplayEnv(t, nil)
	for range 20 {
		e.publish(t, chatsA1)
	}
	calls := 0
	r := NewReplayer(e.js, ReplayOptions{Stream: e.stream, MaxEvents: 100, MaxConcurrent: 1, Batch: 4, CacheBytes: cacheBytes}, e.m)
	resync, err := r.Replay(context.Background(), reactor.ReplayRequest{Company: "acme", Agent: "a1"}, func(b []reactor.ReplayEvent) bool {
		calls++
		return calls < 2
	})
	if err != nil || resync != "" {
		t.Fatalf("Replay = %q, %v; want \"\", nil", resync, err)
	}
	if calls != 2 {
		t.Fatalf("emit called %d times after returning false, want 2 calls in all", calls)
	}
	if got := counter(e.m.ResumeEvents); got != 8 {
		t.Errorf("resume_events_total = %v, want 8", got)
	}
	eventually(t, 5*time.Second, "replay consumer deleted", func() bool { return e.consumers(t) == 0 })
}

// A reconnect storm waits for resume.max_concurrent slots (SPEC §5a).
func TestReplay_MaxConcurrent_SecondWaitsForTheFirst(t *testing.T) {
	e := newReplayEnv(t, nil)
	for range 5 {
		e.publish(t, chatsA1)
	}
	r := NewReplayer(e.js, ReplayOptions{Stream: e.stream, MaxEvents: 100, MaxConcurrent: 1, Batch: 10}, e.m)
	req := reactor.ReplayRequest{Company: "acme", Agent: "a1"}

	inFirst, release := make(chan struct{}), make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		_, err := r.Replay(context.Background(), req, func([]reactor.ReplayEvent) bool {
			close(inFirst)
			<-release
			return true
		})
		firstDone <- err
	}()
	<-inFirst

	var second collector
	secondDone := make(chan error, 1)
	go func() {
		_, err := r.Replay(context.Background(), req, second.emit)
		secondDone <- err
	}()
	eventually(t, 5*time.Second, "second replay waiting", func() bool { return gauge(e.m.ResumeWaiting) == 1 })
	select {
	case <-secondDone:
		t.Fatal("second replay ran while the only slot was taken")
	case <-time.After(50 * time.Millisecond):
	}
	if n := len(second.events()); n != 0 {
		t.Fatalf("second replay emitted %d events while waiting", n)
	}

	close(release)
	for _, done := range []chan error{firstDone, secondDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("replay did not finish after the slot was freed")
		}
	}
	if n := len(second.events()); n != 5 {
		t.Fatalf("second replay emitted %d events, want 5", n)
	}
	if g := gauge(e.m.ResumeWaiting); g != 0 {
		t.Fatalf("resume_waiting = %v after both finished", g)
	}
}

func TestReplay_CtxCancelledWhileWaiting_ReturnsCtxError(t *testing.T) {
	e := newReplayEnv(t, nil)
	e.publish(t, chatsA1)
	r := NewReplayer(e.js, ReplayOptions{Stream: e.stream, MaxEvents: 100, MaxConcurrent: 1}, e.m)
	req := reactor.ReplayRequest{Company: "acme", Agent: "a1"}

	inFirst, release := make(chan struct{}), make(chan struct{})
	firstDone := make(chan struct{})
	go func() {
		defer close(firstDone)
		_, _ = r.Replay(context.Background(), req, func([]reactor.ReplayEvent) bool {
			close(inFirst)
			<-release
			return true
		})
	}()
	<-inFirst
	t.Cleanup(func() { close(release); <-firstDone })

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	emitted := false
	go func() {
		_, err := r.Replay(ctx, req, func([]reactor.ReplayEvent) bool { emitted = true; return true })
		errc <- err
	}()
	eventually(t, 5*time.Second, "second replay waiting", func() bool { return gauge(e.m.ResumeWaiting) == 1 })
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled replay still waiting")
	}
	if emitted {
		t.Fatal("a cancelled replay emitted")
	}
	if g := gauge(e.m.ResumeWaiting); g != 0 {
		t.Fatalf("resume_waiting = %v after the cancel", g)
	}
	if got := counter(e.m.Resumes.WithLabelValues("failed")); got != 1 {
		t.Fatalf("resumes{failed} = %v, want 1", got)
	}
}

func TestReplay_MissingStream_Fails(t *testing.T) {
	e := newReplayEnv(t, nil)
	r := NewReplayer(e.js, ReplayOptions{Stream: "no_such_stream", MaxEvents: 100, MaxConcurrent: 1}, e.m)
	resync, err := r.Replay(context.Background(), reactor.ReplayRequest{Company: "acme", Agent: "a1", Since: 1}, (&collector{}).emit)
	if err == nil || resync != "" {
		t.Fatalf("Replay = %q, %v; want an error", resync, err)
	}
	if got := counter(e.m.Resumes.WithLabelValues("failed")); got != 1 {
		t.Fatalf("resumes{failed} = %v, want 1", got)
	}
}

func TestReplayFilters(t *testing.T) {
	cases := []struct {
		name    string
		req     reactor.ReplayRequest
		want    []string
		wantErr bool
	}{
		{"user with chat", reactor.ReplayRequest{Company: "c", Agent: "a", Chat: "x"}, []string{"websocket.c.a.chats", "websocket.c.a.messages.x"}, false},
		{"user without chat", reactor.ReplayRequest{Company: "c", Agent: "a"}, []string{"websocket.c.a.chats"}, false},
		{"chat only", reactor.ReplayRequest{Company: "c", Agent: "a", Chat: "x", ChatOnly: true}, []string{"websocket.c.a.messages.x"}, false},
		{"chat only without chat", reactor.ReplayRequest{Company: "c", Agent: "a", ChatOnly: true}, nil, false},
		{"admin all", reactor.ReplayRequest{Admin: true}, []string{"websocket.*.*.agents"}, false},
		{"admin company", reactor.ReplayRequest{Admin: true, Company: "c"}, []string{"websocket.c.*.agents"}, false},
		{"admin company and agent", reactor.ReplayRequest{Admin: true, Company: "c", Agent: "a"}, []string{"websocket.c.a.agents"}, false},
		{"user wildcard company", reactor.ReplayRequest{Company: "*", Agent: "a"}, nil, true},
		{"user empty agent", reactor.ReplayRequest{Company: "c"}, nil, true},
		{"dotted chat", reactor.ReplayRequest{Company: "c", Agent: "a", Chat: "x.y"}, nil, true},
		{"admin dotted company", reactor.ReplayRequest{Admin: true, Company: "c.d"}, nil, true},
		{"admin wildcard agent", reactor.ReplayRequest{Admin: true, Agent: ">"}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := replayFilters(tc.req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("filters %v, want %v", got, tc.want)
			}
		})
	}
}
