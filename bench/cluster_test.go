package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunCluster_ThreePods_SpreadsSocketsAndForwardsAcrossPods(t *testing.T) {
	t.Parallel()
	needRedis(t, "127.0.0.1:6379")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	load := smallLoad(t, 90, 6, "127.0.1.60")
	load.Connect.Procs = 3
	rep, err := RunCluster(ctx, ClusterConfig{Load: load, Pods: 3, Rate: 40, Step: 1500 * time.Millisecond, Warmup: 300 * time.Millisecond})
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
	if want := float64(rep.Publish.Acked) * 15; rep.Metrics["dws_deliveries_total"] != want {
		t.Errorf("pods counted %g deliveries, want %g (acked %d × 15 sockets)", rep.Metrics["dws_deliveries_total"], want, rep.Publish.Acked)
	}
	if rep.Loss.Checked != 90 || rep.Loss.Lost != 0 || rep.Loss.Duplicates != 0 || rep.Loss.WrongSubject != 0 {
		t.Errorf("loss %+v: want 90 sockets checked, nothing lost, repeated or misrouted", rep.Loss)
	}
	st := rep.Step
	if st == nil || st.Published == 0 || st.Frames != st.Published*15 || st.Latency.P50Us <= 0 || st.Latency.P99Us < st.Latency.P50Us {
		t.Errorf("step %+v: want every event on 15 sockets and latencies measured", st)
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
	for _, want := range []string{"# dws-bench cluster", "## Pods", "Cross-pod share", "PASS"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("Markdown lacks %q", want)
		}
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
