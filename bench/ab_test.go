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

func TestRunAB_SameBinaryTwice_AlternatesAndReportsRatiosNearOne(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	bin := buildDWS(t)
	rep, err := RunAB(ctx, ABConfig{
		Load: smallLoad(t, 60, 4, "127.0.1.70"), A: bin, B: bin, Rounds: 1,
		Rate: 40, Step: 1200 * time.Millisecond, Warmup: 300 * time.Millisecond,
		// Far from any real difference: the assertion path runs and holds.
		AssertRatio: 100,
	})
	if err != nil {
		t.Fatalf("RunAB: %v", err)
	}
	if !rep.Passed {
		t.Errorf("passed = false, checks %+v", rep.Checks)
	}
	if len(rep.Rounds) != 2 || rep.Rounds[0].Side != "A" || rep.Rounds[1].Side != "B" {
		t.Fatalf("rounds %+v: want A then B", rep.Rounds)
	}
	for _, s := range []ABSide{rep.A, rep.B} {
		if s.Rounds != 1 || s.DeliveredPerSec <= 0 || s.P50Us <= 0 || s.P99Us < s.P50Us || s.CPUUsPerFrame <= 0 {
			t.Errorf("side %+v: want one round with every median measured", s)
		}
	}
	r := rep.Ratio
	if r.DeliveredPerSec != rep.B.DeliveredPerSec/rep.A.DeliveredPerSec || r.P99 != rep.B.P99Us/rep.A.P99Us || r.CPUUsPerFrame <= 0 {
		t.Errorf("ratios %+v: want B/A of the medians (A %+v, B %+v)", r, rep.A, rep.B)
	}
	// Same binary, same rate: the delivered rates match within noise.
	if r.DeliveredPerSec < 0.8 || r.DeliveredPerSec > 1.25 {
		t.Errorf("delivered B/A %.3f for the same binary: want about 1", r.DeliveredPerSec)
	}
	for _, rd := range rep.Rounds {
		if rd.Lost != 0 || rd.Duplicates != 0 || rd.Published == 0 {
			t.Errorf("round %+v: want events published, none lost or repeated", rd)
		}
	}
	jsonPath, mdPath, err := rep.WriteFiles(filepath.Join(t.TempDir(), "ab"))
	if err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	var back map[string]any
	b, _ := os.ReadFile(jsonPath)
	if err := json.Unmarshal(b, &back); err != nil || back["scenario"] != "ab" || back["ratio_b_over_a"] == nil {
		t.Errorf("JSON report: %v, scenario %v, ratio %v", err, back["scenario"], back["ratio_b_over_a"])
	}
	md, _ := os.ReadFile(mdPath)
	for _, want := range []string{"# dws-bench ab", "## Medians", "**B/A**", "## Rounds"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

func TestABReport_RatioBeyondAssertion_FailsTheRun(t *testing.T) {
	rep := &ABReport{Rounds: []ABRound{
		{Side: "A", Round: 1, DeliveredPerSec: 1000, P50Us: 100, P99Us: 1000, CPUUsPerFrame: 2},
		{Side: "B", Round: 1, DeliveredPerSec: 1000, P50Us: 100, P99Us: 3000, CPUUsPerFrame: 2},
		{Side: "A", Round: 2, DeliveredPerSec: 1000, P50Us: 300, P99Us: 2000, CPUUsPerFrame: 4},
		{Side: "B", Round: 2, DeliveredPerSec: 1000, P50Us: 300, P99Us: 5000, CPUUsPerFrame: 4},
	}}
	rep.fill(&ABConfig{A: "a", B: "b", Rounds: 2, AssertRatio: 1.5})
	if rep.A.P99Us != 1500 || rep.B.P99Us != 4000 || rep.Ratio.P99 != 4000.0/1500 || rep.Ratio.CPUUsPerFrame != 1 {
		t.Errorf("medians A %+v, B %+v, ratio %+v: want the middle of each side's rounds", rep.A, rep.B, rep.Ratio)
	}
	if rep.Passed {
		t.Fatal("passed = true with B's p99 2.7× A's and --assert-ratio 1.5")
	}
	var missed []string
	for _, c := range rep.Checks {
		if c.Assert && !c.Met {
			missed = append(missed, c.Name)
		}
	}
	if len(missed) != 1 || missed[0] != "B/A p99" {
		t.Errorf("missed asserted checks %v: want only the p99 ratio", missed)
	}
}
