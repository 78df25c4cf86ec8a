package bench

import (
	"encoding/json"
	"strings"
	"testing"
)

// The report embeds its configuration; the pods' keys must not end up in
// a file people copy into perf/.
func TestPipelineReport_KeepsSecretsOut(t *testing.T) {
	rep := &PipelineReport{Config: PipelineConfig{A: "dws-a", TokenKey: "secret-token-key", APIKey: "secret-api-key"},
		Rounds: []PipelineRound{{Side: "A", Round: 1, Events: 10, CPUUsPerEvt: 5}}, MedianA: 5}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{string(b), rep.Markdown()} {
		if strings.Contains(out, "secret-") {
			t.Fatalf("a key in the report: %s", out)
		}
	}
	if !strings.Contains(rep.Markdown(), "5.0 µs/event") {
		t.Fatalf("median missing from the report:\n%s", rep.Markdown())
	}
}
