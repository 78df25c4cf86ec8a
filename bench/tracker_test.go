package bench

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dws-gateway/dws/bench/client"
	"github.com/dws-gateway/dws/codec"
)

func trackEvent(t *tracker, id int, seq int64, subject string, phase int64) {
	t.event(id, &client.Event{Seq: seq, Subject: []byte(subject), Phase: phase, Latency: time.Millisecond})
}

func TestTracker_Loss_CountsGapsDuplicatesAndWrongSubjects(t *testing.T) {
	// Sockets 10..13 over 2 groups: 10 and 12 in group 0, 11 and 13 in 1.
	tr := newTracker(10, 14, 2, 0, 2, nil, time.Now())
	s0, s1 := ChatsSubject(0), ChatsSubject(1)
	for seq := range int64(5) {
		trackEvent(tr, 10, seq, s0, 1) // all five
		if seq != 3 {
			trackEvent(tr, 12, seq, s0, 1) // misses 3
		}
		trackEvent(tr, 11, seq, s1, 1)
	}
	trackEvent(tr, 11, 2, s1, 1) // a duplicate
	trackEvent(tr, 13, 0, s0, 1) // group 0's event on a group-1 socket
	tr.interrupt(13)

	open := func(int) bool { return true }
	got := tr.loss([]int64{5, 5}, []int64{0, 0}, open)
	want := LossFigures{Checked: 3, Excluded: 1, Lost: 1 + 0, SocketsWithLoss: 1, Duplicates: 1, WrongSubject: 1}
	if got != want {
		t.Errorf("loss = %+v, want %+v", got, want)
	}
	// A publish JetStream refused is owed to nobody.
	got = tr.loss([]int64{5, 5}, []int64{1, 0}, open)
	if got.Lost != 0 || got.SocketsWithLoss != 0 {
		t.Errorf("with one failed publish in group 0: %+v, want no loss", got)
	}
	// Socket 13 never opened: excluded even if not interrupted.
	got = tr.loss([]int64{5, 5}, nil, func(id int) bool { return id != 10 })
	if got.Checked != 2 || got.Excluded != 2 {
		t.Errorf("with socket 10 closed: %+v, want 2 checked, 2 excluded", got)
	}
}

func TestTracker_Snapshot_SplitsPhasesAndClasses(t *testing.T) {
	// Groups ≥ 2 are cross; id%10 == 0 is slow.
	tr := newTracker(0, 8, 4, 2, 2, func(id int) bool { return id == 4 }, time.Now())
	for id := range 8 {
		trackEvent(tr, id, 0, ChatsSubject(id%4), 1)
		trackEvent(tr, id, 1, ChatsSubject(id%4), 0) // warm-up: timeline only
	}
	phases, timeline, err := tr.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[int]int64{}
	for _, p := range phases {
		if p.Phase != 1 {
			t.Errorf("phase %d recorded; warm-up events must not be", p.Phase)
		}
		counts[p.Class] += p.Frames
	}
	// Ids 0,1,5 local (4 is slow); 2,3,6,7 cross.
	if counts[ClassLocal] != 3 || counts[ClassCross] != 4 || counts[ClassSlow] != 1 {
		t.Errorf("frames by class %v: want local 3, cross 4, slow 1", counts)
	}
	var n uint32
	for _, v := range timeline {
		n += v
	}
	if n != 16 {
		t.Errorf("timeline holds %d receipts, want 16", n)
	}
}

func TestCountBelow_MasksThePartialWord(t *testing.T) {
	seen := []uint64{^uint64(0), 0b1011}
	cases := []struct {
		n    int64
		want int64
	}{{0, 0}, {1, 1}, {64, 64}, {65, 65}, {66, 66}, {68, 67}, {200, 67}}
	for _, c := range cases {
		if got := countBelow(seen, c.n); got != c.want {
			t.Errorf("countBelow(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestIsSlow_ShareIsRoughlyKept(t *testing.T) {
	n := 0
	for id := range 10000 {
		if IsSlow(id, 0.1) {
			n++
		}
	}
	if n < 900 || n > 1100 {
		t.Errorf("%d of 10000 slow at share 0.1", n)
	}
	if IsSlow(5, 0) {
		t.Error("share 0 made a socket slow")
	}
}

func TestParseMetrics_SumsLabelsAndSkipsComments(t *testing.T) {
	text := `# HELP dws_drops_total drops
# TYPE dws_drops_total counter
dws_drops_total{reason="no_route"} 3
dws_drops_total{reason="slow_consumer"} 4
dws_drops_totalx 100
go_goroutines 42
dws_fanout_latency_seconds_bucket{le="+Inf"} 7 1700000000
`
	m, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Sum("dws_drops_total"); got != 7 {
		t.Errorf("Sum(dws_drops_total) = %g, want 7 (not the x-suffixed metric)", got)
	}
	if got := m.Get("go_goroutines", ""); got != 42 {
		t.Errorf("go_goroutines = %g", got)
	}
	if got := m.Get("dws_fanout_latency_seconds_bucket", `le="+Inf"`); got != 7 {
		t.Errorf("bucket with a timestamp = %g, want 7", got)
	}
}

// benchPayload is the publisher's payload shape (publisher.go) for event
// seq of group g.
func benchPayload(g int, seq int64, subject string, ts int64) []byte {
	return []byte(fmt.Sprintf(`{"event_id":"b%d-%d","company_id":"c%d","agent_id":"a%d","row_data":{"seq":%d,"subject":"%s","phase":1,"ts":%d}}`,
		g, seq, g, g, seq, subject, ts))
}

// seqEvent is the client.Event the bench client makes of a frame dws wrote
// with server seq srv (0: the frame of a server from before issue 10) for
// the bench's event row.
func seqEvent(srv uint64, row int64, subject string) *client.Event {
	return &client.Event{
		Payload: codec.AppendEventSeq(nil, srv, benchPayload(0, row, subject, 0)),
		Seq:     row, ServerSeq: int64(srv), Subject: []byte(subject),
		Phase: 1, Latency: time.Millisecond,
	}
}

func TestSubscriptionKind_SplitsChatsFromMessages(t *testing.T) {
	cases := []struct {
		subject string
		want    int
	}{
		{"websocket.c1.a1.chats", kindChats},
		{"websocket.c1.a1.messages.chat-9", kindMessages},
		{"", kindChats},
	}
	for _, tc := range cases {
		if got := subscriptionKind([]byte(tc.subject)); got != tc.want {
			t.Errorf("subscriptionKind(%q) = %d, want %d", tc.subject, got, tc.want)
		}
	}
}

func TestTracker_Reordered_PerSocketAndSubscription(t *testing.T) {
	chats, msgs := ChatsSubject(0), "websocket.c0.a0.messages.x"
	type frame struct {
		id        int    // socket (all in group 0 of one group)
		srv       uint64 // server seq; 0 = old server
		subject   string
		interrupt bool // close the socket before this frame
	}
	cases := []struct {
		name                 string
		frames               []frame
		sequenced, reordered int64
	}{
		{"increasing", []frame{{0, 1, chats, false}, {0, 2, chats, false}, {0, 5, chats, false}}, 3, 0},
		{"one late frame", []frame{{0, 1, chats, false}, {0, 3, chats, false}, {0, 2, chats, false}, {0, 4, chats, false}}, 4, 1},
		// Every frame after 5 that is not above 5 is out of order.
		{"two behind a jump", []frame{{0, 1, chats, false}, {0, 2, chats, false}, {0, 5, chats, false}, {0, 3, chats, false}, {0, 4, chats, false}, {0, 6, chats, false}}, 6, 2},
		{"a repeat", []frame{{0, 1, chats, false}, {0, 2, chats, false}, {0, 2, chats, false}}, 3, 1},
		{"sockets are separate", []frame{{0, 5, chats, false}, {1, 1, chats, false}, {1, 2, chats, false}, {0, 6, chats, false}}, 4, 0},
		{"subscriptions are separate", []frame{{0, 10, chats, false}, {0, 3, msgs, false}, {0, 11, chats, false}, {0, 4, msgs, false}}, 4, 0},
		{"messages out of order", []frame{{0, 10, chats, false}, {0, 4, msgs, false}, {0, 3, msgs, false}}, 3, 1},
		{"a reconnect starts over", []frame{{0, 8, chats, false}, {0, 9, chats, false}, {0, 2, chats, true}, {0, 3, chats, false}}, 4, 0},
		{"old server: nothing to check", []frame{{0, 0, chats, false}, {0, 0, chats, false}}, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker(0, 2, 1, 0, 2, nil, time.Now())
			for i, f := range tc.frames {
				if f.interrupt {
					tr.interrupt(f.id)
				}
				tr.event(f.id, seqEvent(f.srv, int64(i), f.subject))
			}
			got := tr.loss([]int64{0}, nil, func(int) bool { return true })
			if got.Sequenced != tc.sequenced || got.Reordered != tc.reordered {
				t.Errorf("sequenced %d, reordered %d; want %d, %d", got.Sequenced, got.Reordered, tc.sequenced, tc.reordered)
			}
		})
	}
}

func TestTracker_SequencedFrames_LossUsesTheBenchsSeq(t *testing.T) {
	// The server's seq (1000+) and row_data's (0..4) differ; loss and
	// duplicates follow row_data's.
	tr := newTracker(0, 2, 1, 0, 1, nil, time.Now())
	subj := ChatsSubject(0)
	for row := range int64(5) {
		tr.event(0, seqEvent(uint64(1000+row), row, subj))
		if row != 2 {
			tr.event(1, seqEvent(uint64(1000+row), row, subj))
		}
	}
	tr.event(0, seqEvent(1003, 3, subj)) // a repeat: duplicate and reordered
	got := tr.loss([]int64{5}, nil, func(int) bool { return true })
	want := LossFigures{Checked: 2, Lost: 1, SocketsWithLoss: 1, Duplicates: 1, Sequenced: 10, Reordered: 1}
	if got != want {
		t.Errorf("loss = %+v, want %+v", got, want)
	}
}

func TestArrivalProfile_RecordAndMergeKeepTheLatest(t *testing.T) {
	var a, b ArrivalProfile
	step := int64(TimelineStep)
	a.record(0, 5*time.Millisecond, 5*time.Millisecond)
	a.record(step/2, 80*time.Millisecond, 30*time.Millisecond)
	a.record(2*step+1, 300*time.Millisecond, 99*time.Millisecond)
	a.record(-1, time.Second, time.Second)                     // before T0: ignored
	a.record(maxArrivalBuckets*step, time.Hour, time.Hour)     // past the bound: ignored
	b.record(step/4, 90*time.Millisecond, 20*time.Millisecond) // later receipt, shorter latency
	b.record(3*step, 4*time.Second, 3700*time.Millisecond)     // a bucket a lacks
	a.merge(&b)
	a.merge(nil)
	wantLast := []int64{90000, 0, 300000, 4000000}
	wantLat := []int64{30000, 0, 99000, 3700000}
	if !slices.Equal(a.LastUs, wantLast) || !slices.Equal(a.MaxLatencyUs, wantLat) {
		t.Errorf("profile last %v latency %v; want %v, %v", a.LastUs, a.MaxLatencyUs, wantLast, wantLat)
	}
}

func TestTracker_Loss_ShipsTheArrivalProfile(t *testing.T) {
	t0 := time.Now().Add(-time.Second)
	tr := newTracker(0, 1, 1, 0, 1, nil, t0)
	ev := seqEvent(1, 0, ChatsSubject(0))
	ev.TS = t0.Add(150 * time.Millisecond).UnixNano()
	ev.Latency = 2 * time.Millisecond
	tr.event(0, ev)
	got := tr.loss([]int64{1}, nil, func(int) bool { return true })
	a := got.Arrivals
	if a == nil || len(a.LastUs) != 2 || a.LastUs[1] < 900000 || a.MaxLatencyUs[1] != 2000 {
		t.Errorf("arrivals %+v: want bucket 1 with a receipt ~1 s after T0 and 2 ms latency", a)
	}
}
