package bridge

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/config"
)

func TestCheckServerVersion_Embedded(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	if err := CheckServerVersion(connect(t, url)); err != nil {
		t.Fatalf("embedded server refused: %v", err)
	}
}

// TestCheckServerVersion_MachineNATS runs against the machine's NATS
// (Debian's 2.9 on this machine kind): whatever its version, the check must
// agree with it, and a 2.9 server must be refused by name.
func TestCheckServerVersion_MachineNATS(t *testing.T) {
	t.Parallel()
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("NATS at 127.0.0.1:4222 unreachable (%v): run scripts/services.sh", err)
	}
	defer nc.Close()
	v := nc.ConnectedServerVersion()
	err = CheckServerVersion(nc)
	major, minor, _ := parseVersion(v)
	old := major < 2 || (major == 2 && minor < 10)
	if old != (err != nil) {
		t.Fatalf("server %s: check said %v", v, err)
	}
	if err != nil && !strings.Contains(err.Error(), ">= "+MinServerVersion) {
		t.Fatalf("refusal does not say what is needed: %v", err)
	}
	t.Logf("machine NATS %s: %v", v, err)
}

func TestParseVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v            string
		major, minor int
		ok           bool
	}{
		{"2.9.10", 2, 9, true}, {"2.10.0", 2, 10, true}, {"v2.11.4-beta", 2, 11, true}, {"3", 0, 0, false}, {"", 0, 0, false},
	} {
		ma, mi, ok := parseVersion(tc.v)
		if ma != tc.major || mi != tc.minor || ok != tc.ok {
			t.Errorf("%q: %d.%d %v", tc.v, ma, mi, ok)
		}
	}
}

func TestPartitionLayout_Subjects(t *testing.T) {
	t.Parallel()
	l := PartitionLayout{Source: "wa_stream", Consumer: "ws_fanout", Partitions: 64}
	if l.Stream() != "wa_stream_dws_p64" || l.ConsumerName(7) != "ws_fanout_p7" || l.Filter(7) != "dwsp.wa_stream.7.>" {
		t.Fatalf("names: %s %s %s", l.Stream(), l.ConsumerName(7), l.Filter(7))
	}
	for _, tc := range []struct {
		in, subj string
		p        int
		ok       bool
	}{
		{"dwsp.wa_stream.7.websocket.c.a.chats", "websocket.c.a.chats", 7, true},
		{"dwsp.wa_stream.63.websocket.c.a.messages.x", "websocket.c.a.messages.x", 63, true},
		{"dwsp.wa_stream.64.websocket.c.a.chats", "", 0, false},
		{"dwsp.other.7.websocket.c.a.chats", "", 0, false},
		{"dwsp.wa_stream.x.websocket", "", 0, false},
		{"dwsp.wa_stream.7", "", 0, false},
	} {
		subj, p, ok := l.OriginalSubject(tc.in)
		if subj != tc.subj || p != tc.p || ok != tc.ok {
			t.Errorf("%s: %q %d %v", tc.in, subj, p, ok)
		}
	}
}

func TestOriginSeq(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		hdr  string
		want uint64
		ok   bool
	}{
		{"wa_stream 42 websocket.*.*.> dwsp.x websocket.c.a.chats abc", 42, true},
		{"wa_stream 7", 7, true},
		{"wa_stream x y", 0, false},
		{"", 0, false},
		{"wa_stream 0 y", 0, false},
	} {
		h := nats.Header{}
		if tc.hdr != "" {
			h.Set(HeaderStreamSource, tc.hdr)
		}
		got, ok := OriginSeq(h)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q: %d %v", tc.hdr, got, ok)
		}
	}
}

// TestPartitionStream_SplitsByCompanyAgentInOrder publishes to the source
// stream and reads every partition's consumer: each event arrives in
// exactly one partition with its source seq, every (company, agent) in one
// partition in publish order, and events published before the derived
// stream existed are not pushed (deliver-new).
// The split holds whichever storage the copy uses: the source's (a shared
// server) or memory (an embedded server, PartitionLayout.Memory).
func TestPartitionStream_SplitsByCompanyAgentInOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		memory      bool
		wantStorage jetstream.StorageType
	}{
		{"source storage", false, jetstream.FileStorage},
		{"memory", true, jetstream.MemoryStorage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testPartitionSplit(t, tc.memory, tc.wantStorage)
		})
	}
}

func testPartitionSplit(t *testing.T, memory bool, wantStorage jetstream.StorageType) {
	_, url := startNATS(t)
	js := newJS(t, connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := EnsureStream(ctx, js, config.NATS{Stream: "wa_stream", CreateStream: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "websocket.old.a.chats", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	info, err := src.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := PartitionLayout{Source: "wa_stream", Consumer: "ws_fanout", Partitions: 8, Memory: memory}
	ps, err := EnsurePartitionStream(ctx, js, l, info)
	if err != nil {
		t.Fatal(err)
	}
	if got := ps.CachedInfo().Config.Storage; got != wantStorage {
		t.Fatalf("derived stream storage %v, want %v", got, wantStorage)
	}
	if got := ps.CachedInfo().Config.Subjects; !slices.Equal(got, l.ownSubjects()) {
		t.Fatalf("derived stream subjects %v, want %v", got, l.ownSubjects())
	}
	if _, err := EnsurePartitionStream(ctx, js, l, info); err != nil {
		t.Fatalf("second ensure must reuse the stream: %v", err)
	}
	if Epoch(info) == "" {
		t.Fatal("empty epoch")
	}

	const companies, agents, per = 5, 3, 10
	want := map[uint64]string{} // source seq -> subject
	for i := range per {
		for c := range companies {
			for a := range agents {
				subj := fmt.Sprintf("websocket.c%d.a%d.chats", c, a)
				if i%2 == 1 {
					subj = fmt.Sprintf("websocket.c%d.a%d.messages.x%d", c, a, i)
				}
				ack, err := js.Publish(ctx, subj, []byte(`{}`))
				if err != nil {
					t.Fatal(err)
				}
				want[ack.Sequence] = subj
			}
		}
	}

	// The source is copied asynchronously.
	derived, err := js.Stream(ctx, l.Stream())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		di, err := derived.Info(ctx)
		if err == nil && di.State.Msgs == uint64(len(want)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("derived stream holds %v messages, want %d (%v)", di.State.Msgs, len(want), err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	got := map[uint64]string{}
	partOf := map[string]int{} // "c.a" -> partition
	for p := range l.Partitions {
		cons, err := js.CreateOrUpdateConsumer(ctx, l.Stream(), l.PartitionConsumerConfig(p, 30*time.Second, 1000))
		if err != nil {
			t.Fatal(err)
		}
		if got := cons.CachedInfo().Config.MemoryStorage; got != memory {
			t.Fatalf("partition consumer memory state %v, want %v", got, memory)
		}
		var last uint64
		lastOf := map[string]uint64{}
		for {
			batch, err := cons.FetchNoWait(1000)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for m := range batch.Messages() {
				n++
				subj, mp, ok := l.OriginalSubject(m.Subject())
				seq, sok := OriginSeq(m.Headers())
				if !ok || !sok || mp != p {
					t.Fatalf("partition %d: message %s (seq %d %v)", p, m.Subject(), seq, sok)
				}
				if seq <= last {
					t.Fatalf("partition %d: seq %d after %d", p, seq, last)
				}
				last = seq
				r, _ := ParseSubject(subj)
				ca := r.Company + "." + r.Agent
				if q, seen := partOf[ca]; seen && q != p {
					t.Fatalf("%s in partitions %d and %d", ca, q, p)
				}
				partOf[ca] = p
				if want := l.PartitionOf(r.Company, r.Agent); want != p {
					t.Fatalf("%s in partition %d; PartitionOf says %d", ca, p, want)
				}
				if seq <= lastOf[ca] {
					t.Fatalf("%s out of order", ca)
				}
				lastOf[ca] = seq
				if _, dup := got[seq]; dup {
					t.Fatalf("seq %d twice", seq)
				}
				got[seq] = subj
				_ = m.Ack()
			}
			if n == 0 {
				break
			}
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events over the partitions, want %d", len(got), len(want))
	}
	for seq, subj := range want {
		if got[seq] != subj {
			t.Fatalf("seq %d: got %q want %q", seq, got[seq], subj)
		}
	}
	if len(partOf) != companies*agents {
		t.Fatalf("%d (company, agent) pairs seen", len(partOf))
	}
}

// The derived stream carries subjects of its own (the server then reads a
// message's subject once per ack, not once per consumer). A stream made
// before that gets them on the next start; another layout of the same
// source, whose subjects would overlap, is made without them and works.
func TestPartitionStream_OwnSubjects(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, js, info := newSource(ctx, t)
	l8 := PartitionLayout{Source: "wa_stream", Consumer: "ws_fanout", Partitions: 8, Memory: true}
	// As an older dws made it: no subjects.
	now := time.Now()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: l8.Stream(), Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.MemoryStorage, Sources: []*jetstream.StreamSource{{Name: l8.Source, OptStartTime: &now,
			SubjectTransforms: []jetstream.SubjectTransformConfig{l8.transform()}}}}); err != nil {
		t.Fatal(err)
	}
	s8, err := EnsurePartitionStream(ctx, js, l8, info)
	if err != nil {
		t.Fatal(err)
	}
	if got := s8.CachedInfo().Config.Subjects; !slices.Equal(got, l8.ownSubjects()) {
		t.Fatalf("old derived stream subjects %v after ensure, want %v", got, l8.ownSubjects())
	}
	l4 := l8
	l4.Partitions = 4
	s4, err := EnsurePartitionStream(ctx, js, l4, info)
	if err != nil {
		t.Fatalf("a second layout of the source: %v", err)
	}
	if got := s4.CachedInfo().Config.Subjects; len(got) != 0 {
		t.Fatalf("second layout's subjects %v, want none (they overlap the first's)", got)
	}
	// Both still split what is published.
	if _, err := js.Publish(ctx, "websocket.c1.a1.chats", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []jetstream.Stream{s8, s4} {
		eventually(t, 5*time.Second, "the event sourced", func() bool {
			i, err := s.Info(ctx)
			return err == nil && i.State.Msgs == 1
		})
	}
}
