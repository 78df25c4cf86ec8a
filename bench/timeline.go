package bench

import (
	"sync"
	"time"
)

// TimelineStep is the resolution of handshake timelines: fine enough that
// the peak 1-s window is found to within 10 %, coarse enough that a
// 30-minute soak is 18 000 counters.
const TimelineStep = 100 * time.Millisecond

// Timeline counts events (handshakes) in TimelineStep buckets since a start
// shared by every worker, so timelines of several processes add up bucket by
// bucket. Safe for concurrent use.
type Timeline struct {
	mu     sync.Mutex
	t0     time.Time
	counts []uint32
}

// NewTimeline starts a timeline at t0.
func NewTimeline(t0 time.Time) *Timeline { return &Timeline{t0: t0} }

// Add counts one event at time at (events before t0 go to the first bucket).
func (t *Timeline) Add(at time.Time) {
	i := max(0, int(at.Sub(t.t0)/TimelineStep))
	t.mu.Lock()
	for i >= len(t.counts) {
		t.counts = append(t.counts, 0)
	}
	t.counts[i]++
	t.mu.Unlock()
}

// Counts returns a copy of the buckets.
func (t *Timeline) Counts() []uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]uint32(nil), t.counts...)
}

// MergeCounts adds src into dst bucket by bucket and returns dst (grown as
// needed).
func MergeCounts(dst, src []uint32) []uint32 {
	for len(dst) < len(src) {
		dst = append(dst, 0)
	}
	for i, v := range src {
		dst[i] += v
	}
	return dst
}

// PeakRate returns the highest rate per second over any window of
// consecutive buckets spanning window (a multiple of TimelineStep), sliding
// one bucket at a time. A timeline shorter than the window gives its total
// over the window.
func PeakRate(counts []uint32, window time.Duration) float64 {
	w := int(window / TimelineStep)
	if w <= 0 {
		return 0
	}
	var sum, peak uint64
	for i, v := range counts {
		sum += uint64(v)
		if i >= w {
			sum -= uint64(counts[i-w])
		}
		peak = max(peak, sum)
	}
	return float64(peak) / window.Seconds()
}

// PerSecond folds the buckets into whole seconds for reports and plots.
func PerSecond(counts []uint32) []uint64 {
	per := int(time.Second / TimelineStep)
	out := make([]uint64, (len(counts)+per-1)/per)
	for i, v := range counts {
		out[i/per] += uint64(v)
	}
	return out
}
