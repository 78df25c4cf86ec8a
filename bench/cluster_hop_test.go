package bench

import (
	"encoding/json"
	"errors"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dws-gateway/dws/bench/client"
	"github.com/dws-gateway/dws/bridge"
)

func TestPartitionOwners(t *testing.T) {
	cases := []struct {
		name  string
		n     int
		owned [][]int
		want  []int
	}{
		{"split over three pods", 4, [][]int{{0, 3}, {1}, {2}}, []int{0, 1, 2, 0}},
		{"one unowned, every pod read", 3, [][]int{{0}, {2}}, []int{0, ownerNone, 1}},
		{"one unowned, a pod not read", 3, [][]int{{0}, nil}, []int{0, ownerUnknown, ownerUnknown}},
		{"a handover overlap", 2, [][]int{{0, 1}, {1}}, []int{0, ownerSeveral}},
		{"listed by three pods", 1, [][]int{{0}, {0}, {0}}, []int{ownerSeveral}},
		{"out of range ignored", 2, [][]int{{0, 7, -1}, {1}}, []int{0, 1}},
		{"no pods", 2, nil, []int{ownerNone, ownerNone}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := partitionOwners(tc.n, tc.owned); !slices.Equal(got, tc.want) {
				t.Errorf("partitionOwners(%d, %v) = %v, want %v", tc.n, tc.owned, got, tc.want)
			}
		})
	}
}

// fakeReads replays owner reads; past the end it repeats the last one.
type fakeReads struct {
	reads [][]int
	errs  []error
	i     int
}

func (f *fakeReads) read() ([]int, error) {
	i := min(f.i, len(f.reads)-1)
	f.i++
	var err error
	if i < len(f.errs) {
		err = f.errs[i]
	}
	return f.reads[i], err
}

func TestOwnershipWatch_MovedPartitions(t *testing.T) {
	u := ownerUnknown
	cases := []struct {
		name  string
		reads [][]int // base, polls..., final
		errs  []error
		moved []bool
	}{
		{"stable", [][]int{{0, 1, 2}, {0, 1, 2}, {0, 1, 2}}, nil, []bool{false, false, false}},
		{"moved and came back", [][]int{{0, 1, 2}, {0, 2, 2}, {0, 1, 2}}, nil, []bool{false, true, false}},
		{"moved at the end", [][]int{{0, 1, 2}, {0, 1, 2}, {0, 1, 1}}, nil, []bool{false, false, true}},
		{"no owner at the start", [][]int{{0, ownerNone, ownerSeveral}, {0, 1, 2}, {0, 1, 2}}, nil, []bool{false, true, true}},
		// A poll that missed a pod marks nothing; the final read that
		// cannot see a pod (killed) counts its partitions as moved.
		{"a pod silent during a poll", [][]int{{0, 1, 2}, {0, u, u}, {0, 1, 2}}, []error{nil, errors.New("timeout")}, []bool{false, false, false}},
		{"a pod gone at the end", [][]int{{0, 1, 2}, {0, 1, 2}, {0, u, 0}}, []error{nil, nil, errors.New("refused")}, []bool{false, true, true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeReads{reads: tc.reads, errs: tc.errs}
			w := &ownershipWatch{read: f.read}
			w.observe(w.read()) // base, as start takes it
			for range len(tc.reads) - 2 {
				w.observe(w.read())
			}
			base, moved := w.finish()
			if !slices.Equal(base, tc.reads[0]) || !slices.Equal(moved, tc.moved) {
				t.Errorf("base %v moved %v, want %v %v", base, moved, tc.reads[0], tc.moved)
			}
			if w.reads != len(tc.reads) {
				t.Errorf("%d reads counted, want %d", w.reads, len(tc.reads))
			}
		})
	}
}

func TestOwnershipWatch_ReadsTheReadyEndpoints(t *testing.T) {
	serve := func(body string) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable) // a 503 body lists them too
			_, _ = w.Write([]byte(body))
		})}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		return ln.Addr().String()
	}
	a := serve(`{"status":"ready","partitions":[0,2]}`)
	b := serve(`{"status":"draining","partitions":[1]}`)
	old := serve(`{"status":"ready"}`)
	w := newOwnershipWatch([]string{a, b}, 4)
	owners, err := w.read()
	if err != nil || !slices.Equal(owners, []int{0, 1, 0, ownerNone}) {
		t.Errorf("owners %v, %v; want [0 1 0 none]", owners, err)
	}
	w = newOwnershipWatch([]string{a, old}, 3)
	owners, err = w.read()
	if err == nil || !strings.Contains(err.Error(), "before issue 10") || !slices.Equal(owners, []int{0, ownerUnknown, 0}) {
		t.Errorf("with a server listing none: owners %v, err %v", owners, err)
	}
}

// hdrOf encodes a histogram holding values (µs).
func hdrOf(t *testing.T, values ...int64) string {
	t.Helper()
	h := newHistogram()
	for _, v := range values {
		if err := h.RecordValue(v); err != nil {
			t.Fatal(err)
		}
	}
	enc, err := EncodeHistogram(h)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

func TestSplitHop_ByOwnerAndWorkerPod(t *testing.T) {
	// Partitions 0..3: pod 0 owns 0 and 2, pod 1 owns 1, 3 moved.
	owner := []int{0, 1, 0, 1}
	moved := []bool{false, false, false, true}
	part := func(p int, values ...int64) PartitionHist {
		return PartitionHist{Partition: p, Frames: int64(len(values)), Hist: hdrOf(t, values...)}
	}
	cases := []struct {
		name             string
		workers          []hopWorker
		local, fwd, excl int64
		localP50, fwdP50 int64
		wantHopP50       bool // a hop is reported (both paths seen)
	}{
		{"pod 0's worker: 0 and 2 local, 1 forwarded, 3 left out",
			[]hopWorker{{Pod: 0, Parts: []PartitionHist{part(0, 1000, 1000), part(2, 1000), part(1, 3000), part(3, 9000, 9000)}}},
			3, 1, 2, 1000, 3000, true},
		{"two pods' workers",
			[]hopWorker{{Pod: 0, Parts: []PartitionHist{part(0, 1000), part(1, 2000)}}, {Pod: 1, Parts: []PartitionHist{part(0, 2000), part(1, 1000)}}},
			2, 2, 0, 1000, 2000, true},
		{"only local frames", []hopWorker{{Pod: 1, Parts: []PartitionHist{part(1, 1000)}}}, 1, 0, 0, 1000, 0, false},
		{"unknown partition left out", []hopWorker{{Pod: 0, Parts: []PartitionHist{part(9, 1000)}}}, 0, 0, 1, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			local, fwd, excl, err := splitHop(tc.workers, owner, moved)
			if err != nil {
				t.Fatal(err)
			}
			if local.TotalCount() != tc.local || fwd.TotalCount() != tc.fwd || excl != tc.excl {
				t.Fatalf("local %d forwarded %d excluded %d, want %d %d %d", local.TotalCount(), fwd.TotalCount(), excl, tc.local, tc.fwd, tc.excl)
			}
			h := hopFigures(local, fwd)
			near := func(got, want int64) bool { return got >= want*99/100 && got <= want*101/100 }
			if !near(h.Local.P50Us, tc.localP50) || !near(h.Forwarded.P50Us, tc.fwdP50) {
				t.Errorf("p50 local %d forwarded %d, want ≈ %d, %d", h.Local.P50Us, h.Forwarded.P50Us, tc.localP50, tc.fwdP50)
			}
			if tc.wantHopP50 != (h.HopP50Us != 0) {
				t.Errorf("hop p50 %d: want one only when both paths have frames", h.HopP50Us)
			}
			if tc.wantHopP50 && !near(h.HopP50Us, tc.fwdP50-tc.localP50) {
				t.Errorf("hop p50 %d, want ≈ %d", h.HopP50Us, tc.fwdP50-tc.localP50)
			}
			if want := float64(tc.fwd) / float64(max(1, tc.local+tc.fwd)); h.ForwardedShare != want {
				t.Errorf("forwarded share %g, want %g", h.ForwardedShare, want)
			}
		})
	}
	if _, _, _, err := splitHop([]hopWorker{{Parts: []PartitionHist{{Partition: 0, Frames: 1, Hist: "garbage"}}}}, owner, moved); err == nil {
		t.Error("a bad histogram merged without error")
	}
}

func TestClusterHop_Checks(t *testing.T) {
	ok := ClusterHop{Local: Latency{Count: 100, P99Us: 2000}, Forwarded: Latency{Count: 200, P99Us: 2800}, HopP99Us: 800, Partitions: 64, Stable: 64}
	cases := []struct {
		name   string
		edit   func(h *ClusterHop)
		max    time.Duration
		failed string // the asserted check that misses; "" = none
		n      int    // checks added
	}{
		{"within 1 ms", func(*ClusterHop) {}, time.Millisecond, "", 2},
		{"over 1 ms", func(h *ClusterHop) { h.HopP99Us = 1001 }, time.Millisecond, "hop", 2},
		{"over, report only", func(h *ClusterHop) { h.HopP99Us = 5000 }, -1, "", 2},
		{"negative hop", func(h *ClusterHop) { h.HopP99Us = -300 }, time.Millisecond, "", 2},
		{"no forwarded frames", func(h *ClusterHop) { h.Forwarded.Count = 0 }, time.Millisecond, "both paths", 1},
		{"no local frames, report only", func(h *ClusterHop) { h.Local.Count = 0 }, -1, "", 1},
		{"owners unreadable", func(h *ClusterHop) { h.Error, h.Stable = "no partitions", 0 }, time.Millisecond, "", 1},
		{"every partition moved", func(h *ClusterHop) { h.Stable = 0 }, time.Millisecond, "", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := ok
			tc.edit(&h)
			var checks []TargetCheck
			h.checks(tc.max, func(name, target string, value float64, met, assert bool) {
				checks = append(checks, TargetCheck{Name: name, Target: target, Value: value, Met: met, Assert: assert})
			})
			if len(checks) != tc.n {
				t.Fatalf("checks %+v, want %d", checks, tc.n)
			}
			var failed []string
			for _, c := range checks {
				if c.Assert && !c.Met {
					failed = append(failed, c.Name)
				}
			}
			if tc.failed == "" && len(failed) > 0 || tc.failed != "" && (len(failed) != 1 || !strings.Contains(failed[0], tc.failed)) {
				t.Errorf("asserted misses %q, want %q", failed, tc.failed)
			}
		})
	}
	var none *ClusterHop
	none.checks(time.Millisecond, func(string, string, float64, bool, bool) { t.Error("a nil hop added a check") })
}

func TestGroupPartitions_MatchTheServersLayout(t *testing.T) {
	l := bridge.PartitionLayout{Partitions: 64}
	got := groupPartitions(60, 64)
	seen := map[int]bool{}
	for g, p := range got {
		c, a, _ := identity(g, 60)
		if want := l.PartitionOf(c, a); p != want {
			t.Errorf("group %d: partition %d, want %d", g, p, want)
		}
		seen[p] = true
	}
	if len(seen) < 20 {
		t.Errorf("60 groups over 64 partitions hit only %d: the hash looks wrong", len(seen))
	}
}

func TestTracker_PartitionSplit_KeepsTrackedPhasesBeforeTheCut(t *testing.T) {
	// Sockets 0..5 over 3 groups; group g in partition g+10 (the slice
	// is indexed by group); socket 5 is slow and stays out.
	tr := newTracker(0, 6, 3, 0, 2, func(id int) bool { return id == 5 }, time.Now())
	tr.splitByPartition([]int{10, 11, 12})
	pub := time.Now().UnixNano()
	ev := func(id int, ts int64, phase int64, lat time.Duration) {
		tr.event(id, &client.Event{Seq: 0, TS: ts, Subject: []byte(ChatsSubject(id % 3)), Phase: phase, Latency: lat})
	}
	for id := range 6 {
		ev(id, pub, 1, time.Duration(id+1)*time.Millisecond)
		ev(id, pub, 0, time.Second) // warm-up: never split
	}
	tr.setCut(pub + 1)
	ev(0, pub+2, 1, time.Second) // after the cut
	parts, err := tr.partitionHists()
	if err != nil {
		t.Fatal(err)
	}
	frames := map[int]int64{}
	for _, p := range parts {
		frames[p.Partition] = p.Frames
		h := newHistogram()
		if err := MergeEncoded(h, p.Hist); err != nil || h.TotalCount() != p.Frames || h.Max() >= 1_000_000 {
			t.Errorf("partition %d: %d frames, histogram %d (max %d µs), %v: want the same count, no warm-up or post-cut value", p.Partition, p.Frames, h.TotalCount(), h.Max(), err)
		}
	}
	// Group 0: sockets 0, 3; group 1: 1, 4; group 2: 2 (5 is slow).
	if want := map[int]int64{10: 2, 11: 2, 12: 1}; !maps.Equal(frames, want) {
		t.Errorf("frames by partition %v, want %v", frames, want)
	}
	// Without the split nothing is kept per partition.
	plain := newTracker(0, 2, 2, 0, 1, nil, time.Now())
	plain.event(0, &client.Event{TS: pub, Subject: []byte(ChatsSubject(0)), Phase: 1, Latency: time.Millisecond})
	if p, _ := plain.partitionHists(); len(p) != 0 {
		t.Errorf("an unsplit tracker shipped %v", p)
	}
}

func TestWorkerProtocol_CarriesThePartitionSplit(t *testing.T) {
	b, err := json.Marshal(WorkerConfig{Partitions: []int{3, 1}})
	if err != nil {
		t.Fatal(err)
	}
	var wc WorkerConfig
	if err := json.Unmarshal(b, &wc); err != nil || !slices.Equal(wc.Partitions, []int{3, 1}) {
		t.Errorf("round trip: %+v, %v", wc, err)
	}
	b, _ = json.Marshal(parentCmd{Cmd: cmdHopCut, Cut: 42})
	var c parentCmd
	if err := json.Unmarshal(b, &c); err != nil || c.Cmd != cmdHopCut || c.Cut != 42 {
		t.Errorf("hop cut round trip: %+v, %v", c, err)
	}
}

func TestPushFigures_BucketDeltasOverLivePods(t *testing.T) {
	hist := func(count, sum float64, cum ...float64) Metrics {
		m := Metrics{pushHist + "_count": count, pushHist + "_sum": sum}
		for i, le := range []string{"0.0004", "0.0016", "0.0064", "+Inf"} {
			m[pushHist+`_bucket{le="`+le+`"}`] = cum[i]
		}
		return m
	}
	cases := []struct {
		name   string
		m0, m1 []Metrics
		want   PushFigures
	}{
		{"two pods", []Metrics{hist(10, 1, 10, 10, 10, 10), hist(0, 0, 0, 0, 0, 0)},
			[]Metrics{hist(60, 1.1, 30, 55, 60, 60), hist(50, 0.1, 40, 49, 50, 50)},
			// 100 calls, 0.2 s: 60 ≤ 0.4 ms, 94 ≤ 1.6 ms, 100 ≤ 6.4 ms.
			PushFigures{Calls: 100, MeanMs: 2, P50Ms: 0.4, P99Ms: 6.4}},
		{"a killed pod left out", []Metrics{hist(0, 0, 0, 0, 0, 0), hist(0, 0, 0, 0, 0, 0)},
			[]Metrics{hist(4, 0.004, 1, 4, 4, 4), nil},
			PushFigures{Calls: 4, MeanMs: 1, P50Ms: 1.6, P99Ms: 1.6}},
		{"the tail past the last bucket", []Metrics{hist(0, 0, 0, 0, 0, 0)},
			[]Metrics{hist(100, 10, 90, 90, 90, 100)},
			PushFigures{Calls: 100, MeanMs: 100, P50Ms: 0.4, P99Ms: -1}},
		{"no calls", []Metrics{hist(0, 0, 0, 0, 0, 0)}, []Metrics{hist(0, 0, 0, 0, 0, 0)}, PushFigures{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := pushFigures(tc.m0, tc.m1)
			if got.Calls != tc.want.Calls || math.Abs(got.MeanMs-tc.want.MeanMs) > 1e-9 || got.P50Ms != tc.want.P50Ms || got.P99Ms != tc.want.P99Ms {
				t.Errorf("pushFigures = %+v, want %+v", got, tc.want)
			}
		})
	}
}
