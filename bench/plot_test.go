package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestPlotFanout_WritesBothPNGs(t *testing.T) {
	h := newHistogram()
	for v := int64(100); v < 20000; v += 37 {
		_ = h.RecordValue(v)
	}
	enc, err := EncodeHistogram(h)
	if err != nil {
		t.Fatal(err)
	}
	rep := &FanoutReport{
		Steps: []*StepFigures{{Name: "rate 10/s", HDR: enc}},
		Half:  &StepFigures{Name: "half", HDR: enc},
		Samples: []TimeSample{
			{Seconds: 1, RSS: 50 << 20, FramesPerSec: 100},
			{Seconds: 2, RSS: 52 << 20, FramesPerSec: 900},
			{Seconds: 3, RSS: 51 << 20, FramesPerSec: 800},
		},
	}
	prefix := filepath.Join(t.TempDir(), "fanout")
	got := PlotFanout(rep, prefix)
	if len(got) != 2 || got[0] != "fanout-latency-cdf.png" || got[1] != "fanout-timeline.png" {
		t.Fatalf("plots %v", got)
	}
	for _, name := range got {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(prefix), name))
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) || len(b) < 5000 {
			t.Errorf("%s: %d bytes, err %v: want a PNG", name, len(b), err)
		}
	}
}
