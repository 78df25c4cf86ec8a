package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunCluster_ThreePods_SpreadsSocketsAndForwardsAcrossPods(t *testing.T) {
	t.Parallel()
	needRedis(t, "127.0.0.1:6379")
	// The deadline covers the dws build (smallLoad) on a busy machine too.
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	// 18 groups, not 6: with 6 (C, A) pairs every event sometimes sat on
	// a partition that moved during the run, leaving the hop split
	// without a frame (failed CI once: Stable 21 of 64, counts 0).
	const groups, perEvent = 18, 90 / 18
	load := smallLoad(t, 90, groups, "127.0.1.60")
	load.Connect.Procs = 3
	// The hop's 1 ms is a performance target for dws-bench runs, not for a
	// test on a shared machine: reported only.
	rep, err := RunCluster(ctx, ClusterConfig{Load: load, Pods: 3, Rate: 40, Step: 1500 * time.Millisecond, Warmup: 300 * time.Millisecond, MaxHopP99: -1})
	if err != nil {
		t.Fatalf("RunCluster: %v", err)
	}
	if !rep.Passed {
		t.Errorf("passed = false, checks %+v", rep.Checks)
	}
	if len(rep.Pods) != 3 {
		t.Fatalf("%d pods in the report, want 3", len(rep.Pods))
	}
	var local, fwd float64
	for _, p := range rep.Pods {
		if p.Sockets != 30 || p.PID == 0 || p.WS == "" {
			t.Errorf("pod %+v: want 30 sockets, a pid and a listener", p)
		}
		local += p.Local
		fwd += p.Forwarded
	}
	d := rep.Deliveries
	if d.Local != local || d.Forwarded != fwd || d.Forwarded <= 0 || d.ForwardedShare <= 0 || d.ForwardedShare >= 1 {
		t.Errorf("deliveries %+v (pods: %g local, %g forwarded): want both paths, summed over the pods", d, local, fwd)
	}
	// Every frame the sockets got was counted by exactly one pod, on one
	// path: the pods' sum is the frames published × sockets per event.
	if want := float64(rep.Publish.Acked) * perEvent; rep.Metrics["dws_deliveries_total"] != want {
		t.Errorf("pods counted %g deliveries, want %g (acked %d × %d sockets)", rep.Metrics["dws_deliveries_total"], want, rep.Publish.Acked, perEvent)
	}
	if rep.Loss.Checked != 90 || rep.Loss.Lost != 0 || rep.Loss.Duplicates != 0 || rep.Loss.WrongSubject != 0 {
		t.Errorf("loss %+v: want 90 sockets checked, nothing lost, repeated or misrouted", rep.Loss)
	}
	// Issue 10: every frame numbered, in order; the partitions spread.
	if rep.Loss.Sequenced != int64(rep.Metrics["dws_deliveries_total"]) || rep.Loss.Reordered != 0 {
		t.Errorf("order: %d sequenced frames of %g delivered, %d reordered; want all, 0", rep.Loss.Sequenced, rep.Metrics["dws_deliveries_total"], rep.Loss.Reordered)
	}
	if pf := rep.Partitions; pf.Owned != defaultPartitions || pf.Live != 3 || pf.MaxOff > 1 {
		t.Errorf("partitions %+v: want all %d owned by 3 pods, each within 1 of its share", pf, defaultPartitions)
	}
	st := rep.Step
	if st == nil || st.Published == 0 || st.Frames != st.Published*perEvent || st.Latency.P50Us <= 0 || st.Latency.P99Us < st.Latency.P50Us {
		t.Errorf("step %+v: want every event on %d sockets and latencies measured", st, perEvent)
	}
	// The hop split: both paths seen; with the partitions left out, its
	// frames are the step's.
	if h := rep.Hop; h == nil || h.Error != "" || h.Stable == 0 || h.Local.Count == 0 || h.Forwarded.Count == 0 ||
		st == nil || h.Local.Count+h.Forwarded.Count+h.ExcludedFrames != st.Frames {
		t.Errorf("hop: want local and forwarded frames that add up, with the excluded ones, to the step's; got %s", hopSummary(h))
	}
	jsonPath, mdPath, err := rep.WriteFiles(filepath.Join(t.TempDir(), "cluster"))
	if err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	var back map[string]any
	b, _ := os.ReadFile(jsonPath)
	if err := json.Unmarshal(b, &back); err != nil || back["scenario"] != "cluster" || back["passed"] != true {
		t.Errorf("JSON report: %v, scenario %v, passed %v", err, back["scenario"], back["passed"])
	}
	md, _ := os.ReadFile(mdPath)
	for _, want := range []string{"# dws-bench cluster", "## Pods", "Cross-pod share", "## Cross-pod hop", "PASS"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

// hopSummary prints a hop without its histograms.
func hopSummary(h *ClusterHop) string {
	if h == nil {
		return "no hop"
	}
	c := *h
	c.LocalHDR, c.ForwardedHDR = "", ""
	return fmt.Sprintf("%+v", c)
}

func TestRunCluster_KillAPod_SurvivorsGetEverythingWithinTheFailover(t *testing.T) {
	t.Parallel()
	needRedis(t, "127.0.0.1:6379")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	// 18 groups, not 6: the hop split counts only the partitions that kept
	// their owner, and with 6 (C, A) pairs all of them sat on moved
	// partitions in about 1 run in 10 (no frame left to split).
	load := smallLoad(t, 90, 18, "127.0.1.70")
	load.Connect.Procs = 3
	rep, err := RunCluster(ctx, ClusterConfig{Load: load, Pods: 3, Rate: 40, Step: 5 * time.Second, Warmup: 300 * time.Millisecond,
		KillPod: 2, KillAfter: time.Second, MaxHopP99: -1})
	if err != nil {
		t.Fatalf("RunCluster: %v", err)
	}
	if !rep.Passed {
		t.Errorf("passed = false, checks %+v, notes %q", rep.Checks, rep.Notes)
	}
	f := rep.Failover
	if f == nil || f.Error != "" || !f.Found || f.Pod != "pod-2" || f.Sockets != 30 || f.Seconds <= 0 || f.Seconds > 5 || f.KilledAfter < 0.9 {
		t.Fatalf("failover %+v: want pod-2 killed ~1 s in, its 30 sockets out, a failover within 5 s", f)
	}
	if !rep.Pods[2].Killed || rep.Pods[2].PartitionsOwned != nil || rep.Pods[0].Killed {
		t.Errorf("pods %+v: want only pod-2 marked killed", rep.Pods)
	}
	// The survivors hold every partition between them, and every one of
	// their sockets got every event, once and in order.
	if pf := rep.Partitions; pf.Live != 2 || pf.Owned != defaultPartitions || pf.MaxOff > 1 {
		t.Errorf("partitions %+v: want all %d on the 2 survivors, balanced", pf, defaultPartitions)
	}
	if l := rep.Loss; l.Checked != 60 || l.Excluded != 30 || l.Lost != 0 || l.Duplicates != 0 || l.Reordered != 0 || l.Sequenced == 0 {
		t.Errorf("loss %+v: want the 60 surviving sockets checked, nothing lost, repeated or reordered", l)
	}
	// The hop keeps to the events published before the kill, and leaves
	// out the killed pod's partitions (they moved).
	if h := rep.Hop; h == nil || h.CutSeconds != 1 || len(h.Moved) == 0 || h.Stable == 0 || h.Local.Count == 0 || h.Forwarded.Count == 0 {
		t.Errorf("hop: want a split cut at the kill, the killed pod's partitions moved; got %s", hopSummary(h))
	}
	md := rep.Markdown()
	if !strings.Contains(md, "## Failover") || !strings.Contains(md, "killed") {
		t.Errorf("Markdown lacks the failover:\n%s", md)
	}
}

func TestClusterConfig_UnevenSplit_IsRefused(t *testing.T) {
	cases := []struct {
		name         string
		pods, procs  int
		sockets      int
		spawn, wantE string
	}{
		{"no binary", 3, 3, 90, "", "--spawn-server"},
		{"procs not a multiple of pods", 3, 2, 90, "/bin/true", "multiple of --pods"},
		{"sockets not a multiple of workers", 3, 3, 91, "/bin/true", "split evenly"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ClusterConfig{Pods: tc.pods, Load: LoadConfig{Spawn: tc.spawn, Connect: ConnectConfig{Procs: tc.procs, Sockets: tc.sockets}}}
			err := c.applyDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.wantE) {
				t.Errorf("err %v, want one mentioning %q", err, tc.wantE)
			}
		})
	}
}

func TestClusterConfig_Kill_IsValidated(t *testing.T) {
	cases := []struct {
		name      string
		killPod   int
		killAfter time.Duration
		wantE     string
	}{
		{"pod-0 carries the broker", -1, time.Second, "--kill-pod"},
		{"no such pod", 3, time.Second, "--kill-pod"},
		{"no time", 2, 0, "--kill-after"},
		{"after the window", 2, 10 * time.Second, "--kill-after"},
		{"no kill", 0, 0, ""},
		{"inside the window", 1, 4 * time.Second, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ClusterConfig{Pods: 3, KillPod: tc.killPod, KillAfter: tc.killAfter, Step: 10 * time.Second,
				Load: LoadConfig{Spawn: "/bin/true", Connect: ConnectConfig{Procs: 3, Sockets: 90}}}
			err := c.applyDefaults()
			switch {
			case tc.wantE == "" && err != nil && (strings.Contains(err.Error(), "--kill") || strings.Contains(err.Error(), "cluster:")):
				t.Errorf("err %v, want none from the cluster's checks", err)
			case tc.wantE != "" && (err == nil || !strings.Contains(err.Error(), tc.wantE)):
				t.Errorf("err %v, want one mentioning %q", err, tc.wantE)
			}
		})
	}
}

func TestClusterConfig_FailoverBoundFollowsTheServersSetting(t *testing.T) {
	cases := []struct {
		set  []string
		max  time.Duration
		want time.Duration
	}{
		{nil, 0, 5 * time.Second},
		{[]string{"nats.failover=3s"}, 0, 3 * time.Second},
		{[]string{"nats.failover=3s", "nats.failover = 8s"}, 0, 8 * time.Second},
		{[]string{"nats.failover=bogus"}, 0, 5 * time.Second},
		{[]string{"nats.failover=3s"}, 2 * time.Second, 2 * time.Second},
		{nil, -1, -1},
	}
	for _, tc := range cases {
		c := ClusterConfig{Pods: 3, MaxFailover: tc.max, Load: LoadConfig{Spawn: "/bin/true", ServerSet: tc.set, Connect: ConnectConfig{Procs: 3, Sockets: 90}}}
		_ = c.applyDefaults()
		if c.MaxFailover != tc.want {
			t.Errorf("set %v, --max-failover %s: bound %s, want %s", tc.set, tc.max, c.MaxFailover, tc.want)
		}
	}
	if got := configuredPartitions([]string{"nats.partitions=16"}); got != 16 {
		t.Errorf("configuredPartitions(16) = %d", got)
	}
	if got := configuredPartitions([]string{"nats.partitions=0"}); got != defaultPartitions {
		t.Errorf("configuredPartitions(0) = %d, want the default %d", got, defaultPartitions)
	}
}

func TestFailoverTime_LongestWaitAroundTheKill(t *testing.T) {
	const step = 100 * time.Millisecond
	const kill = 1000 * time.Millisecond // bucket 10 starts at the kill
	ms := func(v int64) int64 { return v * 1000 }
	// profile builds buckets 0..n-1 with receipts lat ms after each
	// bucket's start, then applies the overrides (bucket: last, latency in
	// ms since T0).
	profile := func(n int, lat int64, over map[int][2]int64) *ArrivalProfile {
		p := &ArrivalProfile{}
		for i := range n {
			p.LastUs = append(p.LastUs, ms(int64(i)*100+lat))
			p.MaxLatencyUs = append(p.MaxLatencyUs, ms(lat))
		}
		for i, v := range over {
			p.LastUs[i], p.MaxLatencyUs[i] = ms(v[0]), ms(v[1])
		}
		return p
	}
	cases := []struct {
		name   string
		p      *ArrivalProfile
		kill   time.Duration
		window time.Duration
		want   time.Duration
		found  bool
	}{
		{"nothing stalls: the normal latency", profile(30, 3, nil), kill, time.Second, 3 * time.Millisecond, true},
		// Events published right after the kill waited 2.5 s for a survivor.
		{"stalled after the kill", profile(30, 3, map[int][2]int64{10: {3500, 2500}, 11: {3500, 2400}}), kill, time.Second, 2500 * time.Millisecond, true},
		// An event published before the kill, pulled by the dead pod and
		// redelivered 3 s after it.
		{"stalled before the kill", profile(30, 3, map[int][2]int64{9: {4000, 3100}}), kill, time.Second, 3000 * time.Millisecond, true},
		// A bucket straddling the kill (1000-1100 ms, kill at 1005) counts
		// its last receipt after the kill (195 ms) and its latency (150).
		{"straddling bucket", profile(30, 3, map[int][2]int64{10: {1200, 150}}), kill + 5*time.Millisecond, time.Second, 195 * time.Millisecond, true},
		{"a stall outside the window is not the kill's", profile(30, 3, map[int][2]int64{25: {6000, 3500}}), kill, time.Second, 3 * time.Millisecond, true},
		{"a wider window sees it", profile(30, 3, map[int][2]int64{25: {6000, 3500}}), kill, 2 * time.Second, 3500 * time.Millisecond, true},
		{"no event in the window", profile(5, 3, nil), kill, 200 * time.Millisecond, 0, false},
		{"empty buckets are skipped", &ArrivalProfile{LastUs: []int64{0, 0}, MaxLatencyUs: []int64{0, 0}}, kill, time.Hour, 0, false},
		{"no profile", nil, kill, time.Second, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, found := failoverTime(tc.p, step, tc.kill, tc.window)
			if got != tc.want || found != tc.found {
				t.Errorf("failoverTime = %s, %v; want %s, %v", got, found, tc.want, tc.found)
			}
		})
	}
}

func TestPartitionFigures_SpreadChangesAndTakeovers(t *testing.T) {
	m0 := []Metrics{
		{ownedGauge: 22, `dws_partition_ownership_changes_total{reason="acquired"}`: 22},
		{ownedGauge: 21, `dws_partition_ownership_changes_total{reason="acquired"}`: 21},
		{ownedGauge: 21},
	}
	m1 := []Metrics{
		{ownedGauge: 32, `dws_partition_ownership_changes_total{reason="acquired"}`: 33, `dws_partition_ownership_changes_total{reason="takeover"}`: 10,
			"dws_partition_takeover_seconds_count": 10, "dws_partition_takeover_seconds_sum": 2, "dws_partition_takeover_pending_total": 7,
			`dws_drops_total{reason="duplicate"}`: 3},
		{ownedGauge: 32, `dws_partition_ownership_changes_total{reason="acquired"}`: 21, `dws_partition_ownership_changes_total{reason="takeover"}`: 11,
			"dws_partition_takeover_seconds_count": 11, "dws_partition_takeover_seconds_sum": 2.2},
		nil, // killed
	}
	pf := partitionFigures(64, m0, m1)
	if !pf.Exposed || pf.Live != 2 || pf.Owned != 64 || pf.Share != 32 || pf.Min != 32 || pf.Max != 32 || pf.MaxOff != 0 {
		t.Errorf("spread %+v: want 2 live pods owning 32 each", pf)
	}
	if pf.Changes["acquired"] != 11 || pf.Changes["takeover"] != 21 || len(pf.Changes) != 2 {
		t.Errorf("changes %v: want acquired 11, takeover 21", pf.Changes)
	}
	if pf.Takeovers != 21 || pf.TakeoverMeanSeconds < 0.199 || pf.TakeoverMeanSeconds > 0.201 || pf.TakeoverPending != 7 || pf.ServerDuplicateDrops != 3 {
		t.Errorf("takeovers %+v: want 21, mean 0.2 s, 7 pending, 3 duplicate drops", pf)
	}

	d := dropsByReason(
		[]Metrics{{`dws_drops_total{reason="no_route"}`: 5}, {}, {`dws_drops_total{reason="x"}`: 1}},
		[]Metrics{{`dws_drops_total{reason="no_route"}`: 9, `dws_drops_total{reason="duplicate"}`: 2}, {`dws_drops_total{reason="no_route"}`: 1}, nil})
	if len(d) != 2 || d["no_route"] != 5 || d["duplicate"] != 2 {
		t.Errorf("drops by reason %v: want no_route 5 (4 + 1), duplicate 2; the gone pod left out", d)
	}

	cases := []struct {
		name    string
		owned   []float64
		maxOff  float64
		min     float64
		exposed bool
	}{
		{"3 pods, 64", []float64{22, 21, 21}, 2.0 / 3, 21, true},
		{"one pod two over", []float64{23, 21, 20}, 5.0 / 3, 20, true},
		{"old server", nil, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ms []Metrics
			for _, v := range tc.owned {
				ms = append(ms, Metrics{ownedGauge: v})
			}
			if tc.owned == nil {
				ms = []Metrics{{"go_goroutines": 1}}
			}
			pf := partitionFigures(64, nil, ms)
			if pf.Exposed != tc.exposed || pf.Min != tc.min || pf.MaxOff < tc.maxOff-1e-9 || pf.MaxOff > tc.maxOff+1e-9 {
				t.Errorf("%+v: want exposed %v, min %g, max off %g", pf, tc.exposed, tc.min, tc.maxOff)
			}
		})
	}
}

func TestClusterReport_Check(t *testing.T) {
	owned := func(v float64) *float64 { return &v }
	// good is a passing 3-pod run with a kill of pod-2.
	good := func() *ClusterReport {
		return &ClusterReport{
			Sockets:    SocketFigures{Target: 90, RampOpened: 90},
			Pods:       []ClusterPod{{Sockets: 30, PartitionsOwned: owned(32)}, {Sockets: 30, PartitionsOwned: owned(32)}, {Killed: true}},
			Deliveries: ClusterDeliveries{Local: 100, Forwarded: 200, ForwardedShare: 2.0 / 3},
			Loss:       LossFigures{Checked: 60, Excluded: 30, Sequenced: 6000},
			Partitions: ClusterPartitions{Configured: 64, Exposed: true, Live: 2, Owned: 64, Share: 32, Min: 32, Max: 32},
			Failover:   &ClusterFailover{Pod: "pod-2", Found: true, Seconds: 2.1},
			Hop: &ClusterHop{Local: Latency{Count: 100, P99Us: 2000}, Forwarded: Latency{Count: 200, P99Us: 2500}, HopP99Us: 500,
				Partitions: 64, Stable: 43, Moved: []int{1}, CutSeconds: 1},
		}
	}
	cfg := &ClusterConfig{Pods: 3, KillPod: 2, MaxFailover: 5 * time.Second, MaxHopP99: time.Millisecond}
	cases := []struct {
		name   string
		edit   func(r *ClusterReport)
		cfg    *ClusterConfig
		pass   bool
		missed string // the asserted check that must miss
	}{
		{"all met", func(*ClusterReport) {}, cfg, true, ""},
		{"a reordered frame", func(r *ClusterReport) { r.Loss.Reordered = 1 }, cfg, false, "reordered"},
		{"a duplicate", func(r *ClusterReport) { r.Loss.Duplicates = 1 }, cfg, false, "duplicate events"},
		{"a loss", func(r *ClusterReport) { r.Loss.Lost = 2 }, cfg, false, "events lost"},
		{"no forwarding", func(r *ClusterReport) { r.Deliveries.ForwardedShare = 0 }, cfg, false, "cross-pod share"},
		{"a partition unowned", func(r *ClusterReport) { r.Partitions.Owned = 63 }, cfg, false, "partitions owned"},
		{"a partition owned twice", func(r *ClusterReport) { r.Partitions.Owned = 65 }, cfg, false, "partitions owned"},
		{"unbalanced", func(r *ClusterReport) { r.Partitions.MaxOff = 2 }, cfg, false, "share"},
		{"slow failover", func(r *ClusterReport) { r.Failover.Seconds = 5.5 }, cfg, false, "failover"},
		{"slow failover, report only", func(r *ClusterReport) { r.Failover.Seconds = 5.5 }, &ClusterConfig{Pods: 3, KillPod: 2, MaxFailover: -1}, true, ""},
		{"nothing around the kill arrived", func(r *ClusterReport) { r.Failover.Found = false }, cfg, false, "around the kill"},
		{"the kill failed", func(r *ClusterReport) { r.Failover.Error = "no process" }, cfg, false, "pod killed"},
		{"hop over 1 ms", func(r *ClusterReport) { r.Hop.HopP99Us = 1200 }, cfg, false, "hop"},
		{"hop over 1 ms, report only", func(r *ClusterReport) { r.Hop.HopP99Us = 1200 }, &ClusterConfig{Pods: 3, KillPod: 2, MaxFailover: 5 * time.Second, MaxHopP99: -1}, true, ""},
		{"no forwarded frames in the split", func(r *ClusterReport) { r.Hop.Forwarded.Count = 0 }, cfg, false, "both paths"},
		{"owners unreadable", func(r *ClusterReport) { r.Hop = &ClusterHop{Error: "no partitions listed"} }, cfg, true, ""},
		// A server from before issue 10: nothing to order, no partitions;
		// reported, not failed.
		{"old server", func(r *ClusterReport) {
			r.Loss.Sequenced, r.Partitions = 0, ClusterPartitions{Configured: 64}
			r.Failover = nil
		}, &ClusterConfig{Pods: 3}, true, ""},
		// Partitions exported before they were wired: every gauge at 0.
		{"gauge at 0 everywhere", func(r *ClusterReport) {
			r.Partitions = ClusterPartitions{Configured: 64, Exposed: true, Live: 3, Share: 64.0 / 3, MaxOff: 64.0 / 3}
		}, cfg, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.edit(r)
			r.check(tc.cfg)
			if r.Passed != tc.pass {
				t.Errorf("passed %v, want %v; checks %+v", r.Passed, tc.pass, r.Checks)
			}
			var missed []string
			for _, c := range r.Checks {
				if c.Assert && !c.Met {
					missed = append(missed, c.Name)
				}
			}
			if tc.missed != "" && (len(missed) != 1 || !strings.Contains(missed[0], tc.missed)) {
				t.Errorf("missed %q, want exactly one mentioning %q", missed, tc.missed)
			}
			for _, c := range r.Checks {
				if strings.HasPrefix(c.Name, "pod-2") {
					t.Errorf("the killed pod's socket count is checked: %+v", c)
				}
			}
			md := r.Markdown()
			for _, want := range []string{"## Order and exactly-once", "## Partitions"} {
				if !strings.Contains(md, want) {
					t.Errorf("Markdown lacks %q", want)
				}
			}
			if r.Hop != nil && !strings.Contains(md, "## Cross-pod hop") {
				t.Error("Markdown lacks the hop section")
			}
			if r.Failover != nil && r.Failover.Error == "" && !strings.Contains(md, "## Failover") {
				t.Error("Markdown lacks the failover section")
			}
		})
	}
}

func TestKiller_KillsOnceAndSaysWhen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pod := &Pod{Name: "pod-1", cmd: cmd}
	before := time.Now()
	k := scheduleKill(pod, 50*time.Millisecond)
	at, err := k.result(5 * time.Second)
	if err != nil || at.Sub(before) < 50*time.Millisecond {
		t.Fatalf("kill at %s after scheduling, err %v", at.Sub(before), err)
	}
	werr := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(werr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the process ended with %v, want SIGKILL", werr)
	}
	// A kill scheduled past the run never fires.
	late := scheduleKill(pod, time.Hour)
	if _, err := late.result(10 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "before the kill") {
		t.Errorf("late kill: err %v, want the run ending first", err)
	}
}
