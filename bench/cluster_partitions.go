package bench

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// defaultPartitions and defaultFailover are dws's nats.partitions and
// nats.failover defaults (docs/config.md); --server-set may change them.
const (
	defaultPartitions = 64
	defaultFailover   = 5 * time.Second
)

// ClusterPartitions is how the event stream's partitions were spread over
// the live pods at the end of the run (dws_partitions_owned) and how
// ownership moved during the step.
type ClusterPartitions struct {
	// Configured is nats.partitions as the pods were started with it.
	Configured int `json:"configured"`
	// Owned is the live pods' gauges summed; Exposed is false when no pod
	// exports the gauge (a server from before issue 10).
	Owned   float64 `json:"owned"`
	Exposed bool    `json:"exposed"`
	// Live counts the pods scraped at the end; Share = Configured / Live.
	Live  int     `json:"live_pods"`
	Share float64 `json:"share"`
	// Min and Max are the least and most a live pod owned; MaxOff the
	// largest |owned − Share|.
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	MaxOff float64 `json:"max_off_share"`
	// Changes sums dws_partition_ownership_changes_total over the step by
	// reason, live pods only.
	Changes map[string]float64 `json:"ownership_changes,omitempty"`
	// Takeovers and TakeoverMeanSeconds come from
	// dws_partition_takeover_seconds over the step; TakeoverPending is
	// dws_partition_takeover_pending_total's increase (events a dead or
	// former owner had pulled and not acked).
	Takeovers           float64 `json:"takeovers"`
	TakeoverMeanSeconds float64 `json:"takeover_mean_seconds"`
	TakeoverPending     float64 `json:"takeover_pending"`
	// ServerDuplicateDrops is dws_drops_total{reason="duplicate"} over the
	// step: repeats the pods' seq filters kept from the sockets.
	ServerDuplicateDrops float64 `json:"server_duplicate_drops"`
}

// serverSetting returns the last --server-set value of key, if any.
func serverSetting(set []string, key string) (string, bool) {
	v, ok := "", false
	for _, s := range set {
		if k, val, found := strings.Cut(s, "="); found && strings.TrimSpace(k) == key {
			v, ok = strings.TrimSpace(val), true
		}
	}
	return v, ok
}

// configuredPartitions is nats.partitions from the pods' overrides.
func configuredPartitions(set []string) int {
	if v, ok := serverSetting(set, "nats.partitions"); ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return defaultPartitions
}

// configuredFailover is nats.failover from the pods' overrides.
func configuredFailover(set []string) time.Duration {
	if v, ok := serverSetting(set, "nats.failover"); ok {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return defaultFailover
}

const ownedGauge = "dws_partitions_owned"

// partitionFigures reads the pods' scrapes before (m0) and after (m1) the
// step; a nil m1[i] is a pod that is gone (killed) or was not scraped.
func partitionFigures(configured int, m0, m1 []Metrics) ClusterPartitions {
	pf := ClusterPartitions{Configured: configured, Min: math.Inf(1), Max: math.Inf(-1)}
	var owned []float64
	for i, m := range m1 {
		if m == nil {
			continue
		}
		pf.Live++
		if v, ok := m[ownedGauge]; ok {
			pf.Exposed = true
			owned = append(owned, v)
			pf.Owned += v
		}
		var before Metrics
		if i < len(m0) {
			before = m0[i]
		}
		for k, v := range m {
			if r, ok := strings.CutPrefix(k, `dws_partition_ownership_changes_total{reason="`); ok {
				r = strings.TrimSuffix(r, `"}`)
				if d := v - before[k]; d != 0 {
					if pf.Changes == nil {
						pf.Changes = map[string]float64{}
					}
					pf.Changes[r] += d
				}
			}
		}
		pf.Takeovers += m["dws_partition_takeover_seconds_count"] - before["dws_partition_takeover_seconds_count"]
		pf.TakeoverMeanSeconds += m["dws_partition_takeover_seconds_sum"] - before["dws_partition_takeover_seconds_sum"] // a sum until divided below
		pf.TakeoverPending += m.Sum("dws_partition_takeover_pending_total") - before.Sum("dws_partition_takeover_pending_total")
		pf.ServerDuplicateDrops += m.Get("dws_drops_total", `reason="duplicate"`) - before.Get("dws_drops_total", `reason="duplicate"`)
	}
	if pf.Takeovers > 0 {
		pf.TakeoverMeanSeconds /= pf.Takeovers
	} else {
		pf.TakeoverMeanSeconds = 0
	}
	if len(owned) == 0 {
		pf.Min, pf.Max = 0, 0
		return pf
	}
	pf.Share = float64(configured) / float64(len(owned))
	for _, v := range owned {
		pf.Min, pf.Max = min(pf.Min, v), max(pf.Max, v)
		pf.MaxOff = max(pf.MaxOff, math.Abs(v-pf.Share))
	}
	return pf
}

// dropsByReason sums dws_drops_total's increase over the step by reason,
// over the pods scraped at both ends.
func dropsByReason(m0, m1 []Metrics) map[string]float64 {
	var out map[string]float64
	for i, m := range m1 {
		if m == nil || i >= len(m0) || m0[i] == nil {
			continue
		}
		for k, v := range m {
			r, ok := strings.CutPrefix(k, `dws_drops_total{reason="`)
			if !ok {
				continue
			}
			if d := v - m0[i][k]; d != 0 {
				if out == nil {
					out = map[string]float64{}
				}
				out[strings.TrimSuffix(r, `"}`)] += d
			}
		}
	}
	return out
}
