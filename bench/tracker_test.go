package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/dws-gateway/dws/bench/client"
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
