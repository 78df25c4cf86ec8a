package bench

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// ResumeReport is the resume scenario's result (issue 11, SPEC §5a).
type ResumeReport struct {
	Scenario  string         `json:"scenario"`
	StartedAt time.Time      `json:"started_at"`
	Command   string         `json:"command,omitempty"`
	Machine   Machine        `json:"machine"`
	Config    ResumeSettings `json:"config"`
	Pod       PodInfo        `json:"pod"`
	Epoch     string         `json:"epoch"`
	// Opened is the sockets that received ready in the ramp.
	Opened int64 `json:"opened"`
	// Resumed is the sockets dropped and reconnected with since/epoch;
	// Untouched the rest, connected throughout.
	Resumed   int64 `json:"resumed"`
	Untouched int64 `json:"untouched"`
	// BehindMean is how many of its group's events a resumed socket
	// missed on average (published between its last event and the
	// reconnect moment).
	BehindMean float64 `json:"behind_mean"`
	// Catchup is reconnect start → the socket has every event of its group
	// published up to the reconnect moment, over the resumed sockets that
	// got there (Caught of Resumed).
	Catchup      Latency `json:"catchup"`
	Caught       int64   `json:"caught_up"`
	StormSeconds float64 `json:"storm_seconds"`
	// Resumed and untouched sockets' sequence checks (row_data seq per
	// group, over the whole run).
	ResumedSeq   SeqFigures `json:"resumed_seq"`
	UntouchedSeq SeqFigures `json:"untouched_seq"`
	// Resyncs counts {"type":"resync"} frames by reason.
	Resyncs map[string]int64 `json:"resyncs,omitempty"`
	// UnexpectedCloses counts sockets the server (or the network) ended.
	UnexpectedCloses int64 `json:"unexpected_closes"`
	// Live latency of the untouched sockets, by publish time: the steady
	// window before the drop, and the storm (reconnect start → last
	// catch-up).
	LiveBefore Latency `json:"live_before"`
	LiveStorm  Latency `json:"live_storm"`
	P99Ratio   float64 `json:"live_p99_ratio"`
	// The server's view of the same windows: dws_fanout_latency_seconds
	// (stored in the partition stream → socket written, once per live event
	// and loop), which leaves out the sourcing hop from nats.stream, the
	// clients' share of the machine and their reading.
	ServerLiveBefore HistFigures `json:"server_live_before"`
	ServerLiveStorm  HistFigures `json:"server_live_storm"`
	CPU              ResumeCPU   `json:"cpu"`
	// RSS of the server: at the end of the baseline, and the peak of the
	// run (sampled every 100 ms).
	RSSBaseline int64 `json:"server_rss_baseline_bytes"`
	RSSPeak     int64 `json:"server_rss_peak_bytes"`
	// PeakWaiting is the highest dws_resume_waiting seen (scraped every
	// 500 ms during the storm).
	PeakWaiting float64            `json:"peak_resume_waiting"`
	Publish     PublishFigures     `json:"publish"`
	Metrics     map[string]float64 `json:"server_metrics,omitempty"`
	Checks      []TargetCheck      `json:"checks"`
	Passed      bool               `json:"passed"`
	Notes       []string           `json:"notes,omitempty"`
}

// ResumeSettings is the resume scenario's configuration, without secrets.
type ResumeSettings struct {
	Sockets         int      `json:"sockets"`
	Groups          int      `json:"groups"`
	Rate            float64  `json:"events_per_second"`
	Fraction        float64  `json:"fraction"`
	BaselineSeconds float64  `json:"baseline_seconds"`
	AwaySeconds     float64  `json:"away_seconds"`
	Loops           int      `json:"client_loops"`
	PayloadBytes    int      `json:"payload_bytes"`
	ServerSet       []string `json:"server_set,omitempty"`
}

// SeqFigures are the sequence checks over a set of sockets.
type SeqFigures struct {
	Sockets         int64 `json:"sockets"`
	Lost            int64 `json:"lost"`
	Duplicated      int64 `json:"duplicated"`
	SocketsWithLoss int64 `json:"sockets_with_loss"`
}

// ResumeCPU is the server's CPU (embedded NATS included) per frame: live
// frames in the steady baseline, and the storm's CPU beyond that live cost
// per replayed frame.
type ResumeCPU struct {
	BaselineSeconds  float64 `json:"baseline_cpu_seconds"`
	BaselineFrames   float64 `json:"baseline_live_frames"`
	LiveUsPerFrame   float64 `json:"live_us_per_frame"`
	StormSeconds     float64 `json:"storm_cpu_seconds"`
	StormLiveFrames  float64 `json:"storm_live_frames"`
	ReplayedFrames   float64 `json:"replayed_frames"`
	ExtraUsPerReplay float64 `json:"extra_us_per_replayed_frame"`
	// Ratio is ExtraUsPerReplay / LiveUsPerFrame.
	Ratio float64 `json:"replayed_over_live"`
	// Cores used by the server and by this process (the clients), and the
	// machine's idle share, in the baseline and in the storm: a storm
	// bound by the server's CPU shows ServerStorm near the cores free.
	ServerCoresBaseline float64 `json:"server_cores_baseline"`
	ServerCoresStorm    float64 `json:"server_cores_storm"`
	ClientCoresBaseline float64 `json:"client_cores_baseline"`
	ClientCoresStorm    float64 `json:"client_cores_storm"`
	IdleBaseline        float64 `json:"machine_idle_baseline"`
	IdleStorm           float64 `json:"machine_idle_storm"`
}

// seqState checks one socket's row_data sequence: events of its group
// must arrive as 0, 1, 2, … whatever reconnects happen in between.
type seqState struct {
	next, lost, dup int64
}

// observe records event seq. A seq past next is a gap (the skipped ones
// are lost); one below next was delivered already.
func (s *seqState) observe(seq int64) {
	switch {
	case seq == s.next:
		s.next++
	case seq > s.next:
		s.lost += seq - s.next
		s.next = seq + 1
	default:
		s.dup++
	}
}

// finish counts the tail the socket never got: published is the group's
// event count at the end, after the drain.
func (s *seqState) finish(published int64) {
	if published > s.next {
		s.lost += published - s.next
		s.next = published
	}
}

// addSeq adds one socket's final state to f.
func (f *SeqFigures) addSeq(s seqState) {
	f.Sockets++
	f.Lost += s.lost
	f.Duplicated += s.dup
	if s.lost > 0 {
		f.SocketsWithLoss++
	}
}

// dropsNow tells whether socket i (group i mod groups, i/groups its rank
// in the group) is one of the dropped share: the first ⌈fraction × size⌉
// of each group, so every group loses the same share.
func dropsNow(i, groups int, fraction float64, groupSize int64) bool {
	if fraction >= 1 {
		return true
	}
	rank := i / groups
	return float64(rank) < fraction*float64(groupSize)
}

var (
	epochKey  = []byte(`"epoch":"`)
	reasonKey = []byte(`"reason":"`)
	resyncTyp = []byte(`"type":"resync"`)
)

// stringAfter is the JSON string value after key (no escapes: epochs and
// reasons are plain tokens), or "".
func stringAfter(p, key []byte) string {
	i := bytes.Index(p, key)
	if i < 0 {
		return ""
	}
	p = p[i+len(key):]
	j := bytes.IndexByte(p, '"')
	if j < 0 {
		return ""
	}
	return string(p[:j])
}

// resyncReason is the reason of a {"type":"resync"} frame, "" for any
// other frame ("unknown" for a resync without one).
func resyncReason(p []byte) string {
	if !bytes.Contains(p, resyncTyp) {
		return ""
	}
	if r := stringAfter(p, reasonKey); r != "" {
		return r
	}
	return "unknown"
}

// resumeCPU derives the per-frame CPU figures: the baseline's live cost
// per frame, and the storm's CPU left after charging its live frames at
// that cost, per replayed frame. The handshakes of the reconnect and the
// replays' NATS consumers are in the storm's CPU, so they are in the
// extra cost: what a resumed socket costs beyond a live frame.
func resumeCPU(baseCPU, baseFrames, stormCPU, stormLive, replayed float64) ResumeCPU {
	c := ResumeCPU{BaselineSeconds: baseCPU, BaselineFrames: baseFrames, StormSeconds: stormCPU,
		StormLiveFrames: stormLive, ReplayedFrames: replayed}
	if baseFrames > 0 {
		c.LiveUsPerFrame = baseCPU / baseFrames * 1e6
	}
	if replayed > 0 {
		extra := max(0, stormCPU-stormLive*c.LiveUsPerFrame/1e6)
		c.ExtraUsPerReplay = extra / replayed * 1e6
	}
	if c.LiveUsPerFrame > 0 {
		c.Ratio = c.ExtraUsPerReplay / c.LiveUsPerFrame
	}
	return c
}

// p99Ratio is storm p99 over baseline p99, the baseline floored at 1 ms:
// sub-millisecond noise on a shared machine is not a regression.
func p99Ratio(before, storm Latency) float64 {
	base := max(before.P99Us, 1000)
	return float64(storm.P99Us) / float64(base)
}

// resumeChecks lists the targets: nothing lost or repeated on any socket,
// no resync, every socket opened and every resumed one caught up, the
// catch-up p99 within maxCatchup and the untouched sockets' live p99 within
// maxRatio of the baseline's (either ≤ 0: reported only).
func resumeChecks(r *ResumeReport, sockets int, maxCatchup time.Duration, maxRatio float64) []TargetCheck {
	var resyncs int64
	for _, n := range r.Resyncs {
		resyncs += n
	}
	checks := []TargetCheck{
		{Name: "sockets opened", Target: fmt.Sprintf("= %d", sockets), Value: float64(r.Opened), Met: r.Opened == int64(sockets), Assert: true},
		{Name: "resumed sockets caught up", Target: fmt.Sprintf("= %d", r.Resumed), Value: float64(r.Caught), Met: r.Resumed > 0 && r.Caught == r.Resumed, Assert: true},
		{Name: "events lost on resumed sockets", Target: "= 0", Value: float64(r.ResumedSeq.Lost), Met: r.ResumedSeq.Lost == 0, Assert: true},
		{Name: "events duplicated on resumed sockets", Target: "= 0", Value: float64(r.ResumedSeq.Duplicated), Met: r.ResumedSeq.Duplicated == 0, Assert: true},
		{Name: "events lost on untouched sockets", Target: "= 0", Value: float64(r.UntouchedSeq.Lost), Met: r.UntouchedSeq.Lost == 0, Assert: true},
		{Name: "events duplicated on untouched sockets", Target: "= 0", Value: float64(r.UntouchedSeq.Duplicated), Met: r.UntouchedSeq.Duplicated == 0, Assert: true},
		{Name: "resync frames", Target: "= 0", Value: float64(resyncs), Met: resyncs == 0, Assert: true},
		{Name: "sockets closed by the server", Target: "= 0", Value: float64(r.UnexpectedCloses), Met: r.UnexpectedCloses == 0, Assert: true},
	}
	cu := TargetCheck{Name: "catch-up p99 (ms)", Value: float64(r.Catchup.P99Us) / 1000, Assert: maxCatchup > 0}
	if maxCatchup > 0 {
		cu.Target = fmt.Sprintf("≤ %g", float64(maxCatchup.Milliseconds()))
		cu.Met = r.Catchup.Count > 0 && time.Duration(r.Catchup.P99Us)*time.Microsecond <= maxCatchup
	} else {
		cu.Target, cu.Met = "reported", true
	}
	rt := TargetCheck{Name: "untouched live p99, storm / before (1-ms floor)", Value: r.P99Ratio, Assert: maxRatio > 0}
	if maxRatio > 0 {
		rt.Target = fmt.Sprintf("≤ %g", maxRatio)
		rt.Met = r.LiveStorm.Count > 0 && r.P99Ratio <= maxRatio
	} else {
		rt.Target, rt.Met = "reported", true
	}
	return append(checks, cu, rt)
}

// verdict sets Passed from the asserted checks.
func (r *ResumeReport) verdict() {
	r.Passed = true
	for _, c := range r.Checks {
		if c.Assert && !c.Met {
			r.Passed = false
		}
	}
}

// WriteFiles writes prefix.json and prefix.md.
func (r *ResumeReport) WriteFiles(prefix string) (string, string, error) {
	return writeReportFiles(prefix, r, r.Markdown())
}

// Markdown renders the report.
func (r *ResumeReport) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# dws-bench resume — %s\n\n", r.StartedAt.Format("2006-01-02 15:04 UTC"))
	if r.Command != "" {
		p("```\n%s\n```\n\n", r.Command)
	}
	c := r.Config
	p("%d sockets over %d groups, %g events/s throughout; %.0f %% of the sockets closed after a %gs baseline, away %gs, then reconnected at once with since/epoch (epoch %q). Machine: %d CPUs, %s.\n\n",
		c.Sockets, c.Groups, c.Rate, c.Fraction*100, c.BaselineSeconds, c.AwaySeconds, r.Epoch, r.Machine.CPUs, r.Machine.CPUModel)
	p("| figure | value |\n| --- | --- |\n")
	p("| resumed / untouched sockets | %d / %d |\n", r.Resumed, r.Untouched)
	p("| events behind per resumed socket (mean) | %.1f |\n", r.BehindMean)
	p("| caught up | %d of %d |\n", r.Caught, r.Resumed)
	p("| catch-up p50 / p99 / max | %s / %s / %s |\n", ms(r.Catchup.P50Us), ms(r.Catchup.P99Us), ms(r.Catchup.MaxUs))
	p("| storm (reconnect → last catch-up) | %.2f s |\n", r.StormSeconds)
	p("| resumed: lost / duplicated | %d / %d |\n", r.ResumedSeq.Lost, r.ResumedSeq.Duplicated)
	p("| untouched: lost / duplicated | %d / %d |\n", r.UntouchedSeq.Lost, r.UntouchedSeq.Duplicated)
	p("| resyncs | %v |\n", r.Resyncs)
	p("| closed by the server | %d |\n", r.UnexpectedCloses)
	p("| untouched live p50 / p99 before | %s / %s (%d frames) |\n", ms(r.LiveBefore.P50Us), ms(r.LiveBefore.P99Us), r.LiveBefore.Count)
	p("| untouched live p50 / p99 in the storm | %s / %s (%d frames) |\n", ms(r.LiveStorm.P50Us), ms(r.LiveStorm.P99Us), r.LiveStorm.Count)
	p("| live p99 storm / before | %.2f× |\n", r.P99Ratio)
	le := func(v float64) string {
		if v < 0 {
			return "> the last bucket"
		}
		return fmt.Sprintf("≤ %.2f ms", v)
	}
	p("| server's view (stored in the partition stream → written, `dws_fanout_latency_seconds`) p50 / p99 before | %s / %s (%.0f events × loops) |\n",
		le(r.ServerLiveBefore.P50Ms), le(r.ServerLiveBefore.P99Ms), r.ServerLiveBefore.Calls)
	p("| server's view p50 / p99 in the storm | %s / %s (%.0f) |\n",
		le(r.ServerLiveStorm.P50Ms), le(r.ServerLiveStorm.P99Ms), r.ServerLiveStorm.Calls)
	p("| server CPU per live frame (baseline) | %.2f µs |\n", r.CPU.LiveUsPerFrame)
	p("| extra server CPU per replayed frame | %.2f µs (%.2f× a live frame; %.0f replayed frames, %.2f CPU-s in the storm) |\n",
		r.CPU.ExtraUsPerReplay, r.CPU.Ratio, r.CPU.ReplayedFrames, r.CPU.StormSeconds)
	p("| cores: server / clients / machine idle, baseline | %.2f / %.2f / %.0f %% |\n", r.CPU.ServerCoresBaseline, r.CPU.ClientCoresBaseline, r.CPU.IdleBaseline*100)
	p("| cores: server / clients / machine idle, storm | %.2f / %.2f / %.0f %% |\n", r.CPU.ServerCoresStorm, r.CPU.ClientCoresStorm, r.CPU.IdleStorm*100)
	p("| server RSS baseline / peak | %s / %s |\n", mib(r.RSSBaseline), mib(r.RSSPeak))
	if n := r.Metrics["dws_resume_duration_seconds_count"]; n > 0 {
		p("| mean replay, slot → done (dws_resume_duration_seconds) | %.0f ms over %g replays |\n", r.Metrics["dws_resume_duration_seconds_sum"]/n*1000, n)
	}
	p("| peak dws_resume_waiting | %g |\n", r.PeakWaiting)
	p("| published (acked / failed) | %d / %d |\n\n", r.Publish.Acked, r.Publish.Failed)
	if len(r.Metrics) > 0 {
		p("Server counters over the run:\n\n")
		for _, k := range slices.Sorted(maps.Keys(r.Metrics)) {
			p("- `%s` %g\n", k, r.Metrics[k])
		}
		p("\n")
	}
	p("| check | target | value | met | asserted |\n| --- | --- | --- | --- | --- |\n")
	for _, ck := range r.Checks {
		p("| %s | %s | %g | %v | %v |\n", ck.Name, ck.Target, ck.Value, ck.Met, ck.Assert)
	}
	verdict := "PASS"
	if !r.Passed {
		verdict = "FAIL"
	}
	p("\n**%s**\n", verdict)
	for _, n := range r.Notes {
		p("\n- %s", n)
	}
	if len(r.Notes) > 0 {
		p("\n")
	}
	return b.String()
}
