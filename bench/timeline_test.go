package bench

import (
	"slices"
	"testing"
	"time"
)

func TestPeakRate_SlidingWindowFindsTheBestSecond(t *testing.T) {
	cases := []struct {
		name   string
		counts []uint32
		want   float64
	}{
		{"empty timeline", nil, 0},
		{"flat 100 per bucket is 1000/s", slices.Repeat([]uint32{100}, 30), 1000},
		{"burst straddling a second boundary is found whole", append(append(make([]uint32, 7), slices.Repeat([]uint32{500}, 10)...), make([]uint32, 10)...), 5000},
		{"short ramp counts over the whole window", []uint32{300, 300}, 600},
		{"best window is not the first", []uint32{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1}, 90},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := PeakRate(tc.counts, time.Second); got != tc.want {
				t.Errorf("PeakRate = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMergeCounts_AddsBucketByBucketAndGrows(t *testing.T) {
	got := MergeCounts([]uint32{1, 2}, []uint32{10, 20, 30})
	if want := []uint32{11, 22, 30}; !slices.Equal(got, want) {
		t.Errorf("MergeCounts = %v, want %v", got, want)
	}
	if got := MergeCounts(nil, nil); len(got) != 0 {
		t.Errorf("MergeCounts(nil, nil) = %v, want empty", got)
	}
}

func TestPerSecond_FoldsTenBucketsPerSecond(t *testing.T) {
	counts := append(slices.Repeat([]uint32{1}, 10), 5, 5)
	if got, want := PerSecond(counts), []uint64{10, 10}; !slices.Equal(got, want) {
		t.Errorf("PerSecond = %v, want %v", got, want)
	}
}

func TestTimeline_AddBucketsByOffsetFromStart(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tl := NewTimeline(t0)
	tl.Add(t0.Add(-time.Second)) // a clock slightly behind: first bucket
	tl.Add(t0.Add(50 * time.Millisecond))
	tl.Add(t0.Add(250 * time.Millisecond))
	tl.Add(t0.Add(299 * time.Millisecond))
	if got, want := tl.Counts(), []uint32{2, 0, 2}; !slices.Equal(got, want) {
		t.Errorf("Counts = %v, want %v", got, want)
	}
}
