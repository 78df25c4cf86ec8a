package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/reactor"
)

// Issue 11 asked how to read a resume: "an ordered consumer or direct
// gets — measure". The shape measured is a socket 1 000 events behind
// (chats and its selected chat's messages, interleaved) among 10 000
// events on other subjects, read in batches of 64:
//
//   - ordered: the Replayer (ephemeral ordered consumer, two filter
//     subjects, pulled 64 at a time).
//   - msg_get: the stream message-get API with next_by_subj, one request
//     per event, one cursor per filter merged by seq. This is what works
//     on a stream without AllowDirect, which dws must not turn on.
//   - direct_get: the same on a stream with AllowDirect, for reference.
//
// go test -run '^$' -bench BenchmarkReplay -benchmem ./bridge/

const (
	benchBehind = 1000
	benchOther  = 10000
)

// benchStream fills a stream with benchOther events for other sockets and
// benchBehind for acme/a1 (chats and messages of x1), the latter spread
// evenly among the former.
func benchStream(b *testing.B, allowDirect bool) (jetstream.JetStream, string) {
	b.Helper()
	_, url := startNATS(b)
	nc := connect(b, url)
	js := newJS(b, nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "wa_stream"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: StreamSubjects, Storage: jetstream.FileStorage, AllowDirect: allowDirect,
	}); err != nil {
		b.Fatal(err)
	}
	every := (benchOther + benchBehind) / benchBehind
	mine := 0
	for i := range benchOther + benchBehind {
		subject := "websocket.other" + strconv.Itoa(i%50) + ".a1.chats"
		if i%every == 0 && mine < benchBehind {
			subject = chatsA1
			if mine%2 == 1 {
				subject = msgsX1
			}
			mine++
		}
		msg := nats.NewMsg(subject)
		msg.Data = []byte(fmt.Sprintf(`{"event_id":"e%d","company_id":"acme","row_data":{"n":%d}}`, i, i))
		msg.Header.Set(HeaderRequestID, "req-"+strconv.Itoa(i))
		if _, err := js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			<-js.PublishAsyncComplete() // stay under the async window on a busy box
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("publishing the bench stream timed out")
	}
	if mine != benchBehind {
		b.Fatalf("published %d events for the socket, want %d", mine, benchBehind)
	}
	return js, name
}

// BenchmarkReplay_OrderedConsumer is the Replayer without its cache
// (resume.cache_bytes 0, or a range too large for it): a filtered ordered
// consumer per replay. BenchmarkReplay_Cached is the same replay served
// from the block cache (replay_cache.go) once a first replay has read the
// range: what each further replay of a reconnect storm costs.
func BenchmarkReplay_OrderedConsumer(b *testing.B) { benchReplayer(b, 0) }
func BenchmarkReplay_Cached(b *testing.B)          { benchReplayer(b, 32<<20) }

func benchReplayer(b *testing.B, cacheBytes int) {
	js, stream := benchStream(b, false)
	r := NewReplayer(js, ReplayOptions{Stream: stream, MaxEvents: 10000, MaxConcurrent: 1, Batch: 64, CacheBytes: cacheBytes}, metrics.New())
	req := reactor.ReplayRequest{Company: "acme", Agent: "a1", Chat: "x1"}
	replay := func() {
		n := 0
		resync, err := r.Replay(context.Background(), req, func(evs []reactor.ReplayEvent) bool {
			n += len(evs)
			return true
		})
		if err != nil || resync != "" || n != benchBehind {
			b.Fatalf("Replay = %q, %v, %d events; want %d", resync, err, n, benchBehind)
		}
	}
	replay() // the cache's first read; the consumer path's first consumer
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		replay()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBehind), "ns/event")
}

// BenchmarkReplay_Storm is a reconnect storm's shape: 64 replays at once
// (resume.max_concurrent), each a socket ~100 events behind (its chats
// among 100 sockets' on 10 000 events), cached or each on its own
// consumer. ns/op is the wall time per replay over the storm.
func BenchmarkReplay_Storm(b *testing.B) {
	for _, tc := range []struct {
		name  string
		cache int
	}{{"consumer", 0}, {"cached", 32 << 20}} {
		b.Run(tc.name, func(b *testing.B) {
			_, url := startNATS(b)
			nc := connect(b, url)
			js := newJS(b, nc)
			ctx := context.Background()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "wa_stream", Subjects: StreamSubjects, Storage: jetstream.FileStorage}); err != nil {
				b.Fatal(err)
			}
			const groups, events = 100, 10000
			for i := range events {
				if _, err := js.PublishAsync("websocket.c"+strconv.Itoa(i%groups)+".a1.chats", []byte(fmt.Sprintf(`{"event_id":"e%d"}`, i))); err != nil {
					b.Fatal(err)
				}
				if i%1000 == 999 {
					<-js.PublishAsyncComplete()
				}
			}
			<-js.PublishAsyncComplete()
			r := NewReplayer(js, ReplayOptions{Stream: "wa_stream", MaxEvents: 10000, MaxConcurrent: 64, CacheBytes: tc.cache}, metrics.New())
			var next atomic.Int64
			b.SetParallelism(32) // 64 goroutines on 2 cores
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					g := strconv.Itoa(int(next.Add(1)) % groups)
					n := 0
					resync, err := r.Replay(ctx, reactor.ReplayRequest{Company: "c" + g, Agent: "a1"}, func(evs []reactor.ReplayEvent) bool {
						n += len(evs)
						return true
					})
					if err != nil || resync != "" || n != events/groups {
						b.Errorf("Replay = %q, %v, %d events; want %d", resync, err, n, events/groups)
						return
					}
				}
			})
		})
	}
}

func BenchmarkReplay_MsgGet(b *testing.B)    { benchGets(b, false) }
func BenchmarkReplay_DirectGet(b *testing.B) { benchGets(b, true) }

func benchGets(b *testing.B, allowDirect bool) {
	js, stream := benchStream(b, allowDirect)
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		b.Fatal(err)
	}
	if s.CachedInfo().Config.AllowDirect != allowDirect {
		b.Fatalf("AllowDirect = %v, want %v", s.CachedInfo().Config.AllowDirect, allowDirect)
	}
	last := s.CachedInfo().State.LastSeq
	filters := []string{chatsA1, msgsX1}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n := 0
		err := replayByGets(ctx, s, filters, 0, last, 64, func(evs []reactor.ReplayEvent) bool {
			n += len(evs)
			return true
		})
		if err != nil || n != benchBehind {
			b.Fatalf("gets: %v, %d events; want %d", err, n, benchBehind)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBehind), "ns/event")
}

// replayByGets is the alternative measured above: per filter a cursor
// reading the next matching message by seq, merged in seq order.
func replayByGets(ctx context.Context, s jetstream.Stream, filters []string, since, last uint64, batch int, emit func([]reactor.ReplayEvent) bool) error {
	heads := make([]*jetstream.RawStreamMsg, len(filters))
	next := func(i int, from uint64) error {
		m, err := s.GetMsg(ctx, from, jetstream.WithGetMsgSubject(filters[i]))
		if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && m.Sequence > last) {
			heads[i] = nil
			return nil
		}
		heads[i] = m
		return err
	}
	for i := range filters {
		if err := next(i, since+1); err != nil {
			return err
		}
	}
	out := make([]reactor.ReplayEvent, 0, batch)
	for {
		lo := -1
		for i, h := range heads {
			if h != nil && (lo < 0 || h.Sequence < heads[lo].Sequence) {
				lo = i
			}
		}
		if lo < 0 {
			break
		}
		h := heads[lo]
		route, _ := ParseSubject(h.Subject)
		if ValidPayload(h.Data) {
			out = append(out, reactor.ReplayEvent{Seq: h.Sequence, Route: route, Payload: h.Data,
				Meta: reactor.Meta{RequestID: h.Header.Get(HeaderRequestID), PublishedAt: h.Time, Seq: h.Sequence}})
		}
		if len(out) == batch {
			if !emit(out) {
				return nil
			}
			out = make([]reactor.ReplayEvent, 0, batch)
		}
		if err := next(lo, h.Sequence+1); err != nil {
			return err
		}
	}
	if len(out) > 0 {
		emit(out)
	}
	return nil
}
