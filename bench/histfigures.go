package bench

import (
	"math"
	"slices"
	"strconv"
	"strings"
)

// The pod histograms the reports read with histFigures.
const (
	pushHist   = "dws_grpc_forward_duration_seconds"
	fanoutHist = "dws_fanout_latency_seconds"
)

// HistFigures summarise a pod histogram's increase between two scrapes:
// Calls observations, MeanMs their mean, P50Ms and P99Ms the upper bounds
// of the buckets holding those quantiles (the histogram's resolution:
// dws's latency buckets double); -1 when above the last finite bucket.
type HistFigures struct {
	Calls  float64 `json:"calls"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_le_ms"`
	P99Ms  float64 `json:"p99_le_ms"`
}

// histFigures reads histogram name's increase from m0 to m1, summed over
// the pods scraped at both ends (a nil scrape leaves its pod out).
func histFigures(name string, m0, m1 []Metrics) HistFigures {
	buckets := map[float64]float64{}
	var f HistFigures
	var sum float64
	for i, m := range m1 {
		if m == nil || i >= len(m0) || m0[i] == nil {
			continue
		}
		for k, v := range m {
			le, ok := strings.CutPrefix(k, name+`_bucket{le="`)
			if !ok {
				continue
			}
			b, err := strconv.ParseFloat(strings.TrimSuffix(le, `"}`), 64)
			if err != nil {
				continue
			}
			buckets[b] += v - m0[i][k]
		}
		f.Calls += m[name+"_count"] - m0[i][name+"_count"]
		sum += m[name+"_sum"] - m0[i][name+"_sum"]
	}
	if f.Calls <= 0 {
		return HistFigures{}
	}
	f.MeanMs = 1000 * sum / f.Calls
	les := slices.Sorted(func(yield func(float64) bool) {
		for b := range buckets {
			if !yield(b) {
				return
			}
		}
	})
	at := func(q float64) float64 {
		for _, b := range les {
			if buckets[b] >= q*f.Calls {
				if math.IsInf(b, 1) {
					return -1
				}
				return 1000 * b
			}
		}
		return -1
	}
	f.P50Ms, f.P99Ms = at(0.5), at(0.99)
	return f
}
