package bench

import (
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

func TestMergeEncoded_WorkersMergeToTheCombinedDistribution(t *testing.T) {
	// Two workers: one saw fast handshakes, the other slow ones. The merged
	// histogram must equal one that recorded everything.
	a, b, whole := newHistogram(), newHistogram(), newHistogram()
	for v := int64(1); v <= 1000; v++ {
		_ = a.RecordValue(v * 10)     // 10 µs … 10 ms
		_ = b.RecordValue(v * 10_000) // 10 ms … 10 s
		_ = whole.RecordValue(v * 10)
		_ = whole.RecordValue(v * 10_000)
	}
	merged := newHistogram()
	for _, h := range []*hdrhistogram.Histogram{a, b} {
		enc, err := EncodeHistogram(h)
		if err != nil {
			t.Fatal(err)
		}
		if err := MergeEncoded(merged, enc); err != nil {
			t.Fatal(err)
		}
	}
	if !merged.Equals(whole) {
		t.Fatalf("merged histogram differs from the combined one: %+v vs %+v", Summarize(merged), Summarize(whole))
	}
	s := Summarize(merged)
	if s.Count != 2000 || s.P50Us > 10_100 || s.P99Us < 9_800_000 {
		t.Errorf("summary %+v: want 2000 values, p50 ≈ 10 ms, p99 ≈ 9.9 s", s)
	}
}

func TestMergeEncoded_Failures(t *testing.T) {
	wide := hdrhistogram.New(1, 1<<40, 3)
	_ = wide.RecordValue(1 << 39) // beyond the suite's 10-minute bound
	enc, err := EncodeHistogram(wide)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		enc  string
	}{
		{"not base64", "%%%"},
		{"value out of the destination's range", enc},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := MergeEncoded(newHistogram(), tc.enc); err == nil {
				t.Error("MergeEncoded succeeded, want an error")
			}
		})
	}
	if err := MergeEncoded(newHistogram(), ""); err != nil {
		t.Errorf("empty encoding: %v, want nothing to merge", err)
	}
}

func TestSummarize_EmptyHistogramIsZero(t *testing.T) {
	if s := Summarize(newHistogram()); s != (Latency{}) {
		t.Errorf("Summarize(empty) = %+v", s)
	}
}
