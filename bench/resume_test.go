package bench

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestSeqState_LostAndDuplicated(t *testing.T) {
	cases := []struct {
		name      string
		seqs      []int64
		published int64
		lost, dup int64
	}{
		{"in order", []int64{0, 1, 2, 3}, 4, 0, 0},
		{"gap", []int64{0, 1, 4, 5}, 6, 2, 0},
		{"repeat at the hand-over", []int64{0, 1, 2, 2, 3}, 4, 0, 1},
		{"replayed twice", []int64{0, 1, 2, 1, 2, 3}, 4, 0, 2},
		{"tail never arrived", []int64{0, 1}, 5, 3, 0},
		{"nothing at all", nil, 3, 3, 0},
		{"gap and repeat", []int64{0, 2, 2, 3}, 4, 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s seqState
			for _, q := range tc.seqs {
				s.observe(q)
			}
			s.finish(tc.published)
			if s.lost != tc.lost || s.dup != tc.dup {
				t.Errorf("lost %d dup %d, want %d %d", s.lost, s.dup, tc.lost, tc.dup)
			}
			var f SeqFigures
			f.addSeq(s)
			if f.Sockets != 1 || f.Lost != tc.lost || f.Duplicated != tc.dup || (f.SocketsWithLoss == 1) != (tc.lost > 0) {
				t.Errorf("figures %+v", f)
			}
		})
	}
}

func TestDropsNow_SameShareOfEveryGroup(t *testing.T) {
	cases := []struct {
		sockets, groups int
		fraction        float64
		want            int
	}{
		{100, 10, 0.5, 50},
		{100, 10, 1, 100},
		{100, 10, 0.25, 30}, // ⌈2.5⌉ = 3 of each group's 10
		{7, 7, 0.5, 7},      // one socket per group: ⌈0.5⌉
		{10, 3, 0.5, 6},     // sizes 4, 3, 3 → 2, 2, 2
	}
	for _, tc := range cases {
		sizes := make([]int64, tc.groups)
		for i := range tc.sockets {
			sizes[i%tc.groups]++
		}
		perGroup := make([]int, tc.groups)
		n := 0
		for i := range tc.sockets {
			if dropsNow(i, tc.groups, tc.fraction, sizes[i%tc.groups]) {
				n++
				perGroup[i%tc.groups]++
			}
		}
		if n != tc.want {
			t.Errorf("%d sockets / %d groups at %g: %d dropped, want %d", tc.sockets, tc.groups, tc.fraction, n, tc.want)
		}
		for g, k := range perGroup {
			if k == 0 {
				t.Errorf("%+v: group %d drops none", tc, g)
			}
		}
	}
}

func TestResyncReasonAndEpoch(t *testing.T) {
	cases := []struct {
		frame, reason, epoch string
	}{
		{`{"type":"resync","payload":{"reason":"too_many"}}`, "too_many", ""},
		{`{"type":"resync","payload":{}}`, "unknown", ""},
		{`{"type":"ready","epoch":"k3x9"}`, "", "k3x9"},
		{`{"type":"ready"}`, "", ""},
		{`{"type":"event","seq":3,"payload":{"reason":"x"}}`, "", ""},
	}
	for _, tc := range cases {
		if got := resyncReason([]byte(tc.frame)); got != tc.reason {
			t.Errorf("resyncReason(%s) = %q, want %q", tc.frame, got, tc.reason)
		}
		if got := stringAfter([]byte(tc.frame), epochKey); got != tc.epoch {
			t.Errorf("epoch of %s = %q, want %q", tc.frame, got, tc.epoch)
		}
	}
}

func TestResumeCPU(t *testing.T) {
	cases := []struct {
		name                                    string
		baseCPU, baseFrames, stormCPU, live, rp float64
		wantLive, wantExtra, wantRatio          float64
	}{
		// 1 s for 100 000 frames: 10 µs each. The storm's 2 s minus
		// 50 000 live frames (0.5 s) is 1.5 s for 100 000 replayed.
		{"extra over live", 1, 100000, 2, 50000, 100000, 10, 15, 1.5},
		{"storm no dearer than live", 1, 100000, 0.4, 50000, 1000, 10, 0, 0},
		{"nothing replayed", 1, 100000, 1, 50000, 0, 10, 0, 0},
		{"no baseline frames", 1, 0, 2, 0, 1000, 0, 2000, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := resumeCPU(tc.baseCPU, tc.baseFrames, tc.stormCPU, tc.live, tc.rp)
			if !near(c.LiveUsPerFrame, tc.wantLive) || !near(c.ExtraUsPerReplay, tc.wantExtra) || !near(c.Ratio, tc.wantRatio) {
				t.Errorf("got %+v, want live %g extra %g ratio %g", c, tc.wantLive, tc.wantExtra, tc.wantRatio)
			}
		})
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

func TestResumeChecks(t *testing.T) {
	good := func() *ResumeReport {
		return &ResumeReport{Opened: 10, Resumed: 5, Caught: 5,
			Catchup:    Latency{Count: 5, P99Us: 2_000_000},
			LiveBefore: Latency{Count: 100, P99Us: 3000}, LiveStorm: Latency{Count: 50, P99Us: 5000}}
	}
	cases := []struct {
		name       string
		mut        func(r *ResumeReport)
		maxCatchup time.Duration
		maxRatio   float64
		pass       bool
		missed     string
	}{
		{"all good", func(*ResumeReport) {}, 10 * time.Second, 2, true, ""},
		{"a lost event", func(r *ResumeReport) { r.ResumedSeq.Lost = 1 }, 10 * time.Second, 2, false, "events lost on resumed sockets"},
		{"a duplicate", func(r *ResumeReport) { r.ResumedSeq.Duplicated = 2 }, 10 * time.Second, 2, false, "events duplicated on resumed sockets"},
		{"untouched loss", func(r *ResumeReport) { r.UntouchedSeq.Lost = 1 }, 10 * time.Second, 2, false, "events lost on untouched sockets"},
		{"a resync", func(r *ResumeReport) { r.Resyncs = map[string]int64{"too_many": 1} }, 10 * time.Second, 2, false, "resync frames"},
		{"one not caught up", func(r *ResumeReport) { r.Caught = 4 }, 10 * time.Second, 2, false, "resumed sockets caught up"},
		{"slow catch-up", func(r *ResumeReport) { r.Catchup.P99Us = 11_000_000 }, 10 * time.Second, 2, false, "catch-up p99 (ms)"},
		{"slow catch-up, report only", func(r *ResumeReport) { r.Catchup.P99Us = 11_000_000 }, -1, 2, true, ""},
		{"storm p99 3×", func(r *ResumeReport) { r.LiveStorm.P99Us = 9000 }, 10 * time.Second, 2, false, "untouched live p99"},
		{"storm p99 3×, report only", func(r *ResumeReport) { r.LiveStorm.P99Us = 9000 }, 10 * time.Second, -1, true, ""},
		{"sub-ms baseline floored", func(r *ResumeReport) { r.LiveBefore.P99Us = 200; r.LiveStorm.P99Us = 1900 }, 10 * time.Second, 2, true, ""},
		{"server closes", func(r *ResumeReport) { r.UnexpectedCloses = 1 }, 10 * time.Second, 2, false, "sockets closed by the server"},
		{"a socket never opened", func(r *ResumeReport) { r.Opened = 9 }, 10 * time.Second, 2, false, "sockets opened"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.mut(r)
			r.P99Ratio = p99Ratio(r.LiveBefore, r.LiveStorm)
			r.Checks = resumeChecks(r, 10, tc.maxCatchup, tc.maxRatio)
			r.verdict()
			if r.Passed != tc.pass {
				t.Errorf("passed %v, want %v: %+v", r.Passed, tc.pass, r.Checks)
			}
			for _, c := range r.Checks {
				if c.Assert && !c.Met && !strings.HasPrefix(c.Name, tc.missed) {
					t.Errorf("missed %q, want only %q", c.Name, tc.missed)
				}
			}
			if md := r.Markdown(); !strings.Contains(md, "| check |") {
				t.Errorf("markdown lacks the checks table:\n%s", md)
			}
		})
	}
}

func TestRunResume_StormLosesAndRepeatsNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	rep, err := RunResume(ctx, ResumeConfig{
		Spawn: buildDWS(t), LogDir: t.TempDir(), Sockets: 300, Groups: 10,
		SourceBase: netip.MustParseAddr("127.0.1.90"), Sources: 1,
		TokenKey: testKeyHex, APIKey: "bench-api-key",
		Rate: 100, Fraction: 0.5, Warmup: 300 * time.Millisecond, Baseline: time.Second, Away: 2 * time.Second,
		CatchupMax: 30 * time.Second, Tail: time.Second,
		// A loaded CI machine: the test is about order and completeness,
		// not the machine's speed.
		MaxCatchupP99: -1, MaxP99Ratio: -1,
	})
	if err != nil {
		t.Fatalf("RunResume: %v", err)
	}
	if rep.Resumed != 150 || rep.Untouched != 150 {
		t.Fatalf("resumed %d untouched %d, want 150 each", rep.Resumed, rep.Untouched)
	}
	if rep.Caught != rep.Resumed {
		t.Errorf("caught up %d of %d", rep.Caught, rep.Resumed)
	}
	if rep.BehindMean < 5 {
		t.Errorf("%.1f events behind on average: the storm replayed (almost) nothing", rep.BehindMean)
	}
	for name, f := range map[string]SeqFigures{"resumed": rep.ResumedSeq, "untouched": rep.UntouchedSeq} {
		if f.Sockets != 150 || f.Lost != 0 || f.Duplicated != 0 {
			t.Errorf("%s sockets: %+v, want 150 with nothing lost or duplicated", name, f)
		}
	}
	if rep.Metrics[`dws_resumes_total{result="replayed"}`] != 150 {
		t.Errorf("server counted %v replayed resumes, want 150", rep.Metrics[`dws_resumes_total{result="replayed"}`])
	}
	if rep.CPU.ReplayedFrames <= 0 || rep.Epoch == "" {
		t.Errorf("replayed frames %g, epoch %q", rep.CPU.ReplayedFrames, rep.Epoch)
	}
	if !rep.Passed {
		t.Errorf("passed = false: %+v", rep.Checks)
	}
}
