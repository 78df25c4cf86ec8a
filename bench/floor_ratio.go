package bench

import (
	"encoding/json"
	"fmt"
	"math"
)

// FloorTargets are the floor scenario's assertions (issue 12): dws/floor
// ratios, plus one absolute bound where the floor is not a fair yardstick
// (memory: the floor keeps no session). A ratio bound ≤ 0 is reported
// only, never asserted.
type FloorTargets struct {
	// MaxP99, MaxP999 bound dws/floor of the main step's p99 and p99.9;
	// defaults 2 and 3.
	MaxP99  float64 `json:"max_p99_ratio"`
	MaxP999 float64 `json:"max_p999_ratio"`
	// MaxCPU bounds dws/floor of server CPU per delivered frame; default
	// 1.2.
	MaxCPU float64 `json:"max_cpu_per_frame_ratio"`
	// MinRate bounds dws/floor of the highest rate held; default 0.9.
	MinRate float64 `json:"min_max_rate_ratio"`
	// MinHandshakes bounds dws/floor of handshakes/s over the ramp;
	// default 0.75.
	MinHandshakes float64 `json:"min_handshake_ratio"`
	// MaxIdleSocketBytes bounds dws's RSS per idle socket, absolute;
	// default 1536 (1.5 KiB).
	MaxIdleSocketBytes float64 `json:"max_idle_socket_bytes"`
}

// DefaultFloorTargets are issue 12's targets.
var DefaultFloorTargets = FloorTargets{MaxP99: 2, MaxP999: 3, MaxCPU: 1.2, MinRate: 0.9, MinHandshakes: 0.75, MaxIdleSocketBytes: 1536}

// FloorFigures are the figures of one side (floor or dws) the ratios are
// taken from.
type FloorFigures struct {
	P50Us, P99Us, P999Us int64
	CPUUsPerFrame        float64
	// MaxRate is the highest swept events/s held (0 = none held).
	MaxRate          float64
	HandshakesPerSec float64
	IdleSocketBytes  float64
	// Lost, Duplicates and Wrong are the tracker's loss figures over the
	// whole run; Opened and Target the sockets of the ramp.
	Lost, Duplicates, Wrong int64
	Opened, Target          int64
}

// FloorRatios are dws's figures divided by the floor's. A ratio whose
// denominator is 0 is NaN in memory and null in JSON (see jsonRatio).
type FloorRatios struct {
	P50         float64 `json:"p50"`
	P99         float64 `json:"p99"`
	P999        float64 `json:"p999"`
	CPUPerFrame float64 `json:"server_cpu_per_frame"`
	MaxRate     float64 `json:"max_rate"`
	Handshakes  float64 `json:"handshakes_per_second"`
}

// MarshalJSON writes an unknown (NaN) ratio as null: encoding/json
// refuses NaN.
func (r FloorRatios) MarshalJSON() ([]byte, error) {
	m := map[string]*float64{}
	for k, v := range map[string]float64{
		"p50": r.P50, "p99": r.P99, "p999": r.P999, "server_cpu_per_frame": r.CPUPerFrame,
		"max_rate": r.MaxRate, "handshakes_per_second": r.Handshakes,
	} {
		if !math.IsNaN(v) {
			m[k] = &v
		}
	}
	return json.Marshal(m)
}

// floorRatios divides dws's figures by the floor's.
func floorRatios(dws, floor FloorFigures) FloorRatios {
	return FloorRatios{
		P50:         div(float64(dws.P50Us), float64(floor.P50Us)),
		P99:         div(float64(dws.P99Us), float64(floor.P99Us)),
		P999:        div(float64(dws.P999Us), float64(floor.P999Us)),
		CPUPerFrame: div(dws.CPUUsPerFrame, floor.CPUUsPerFrame),
		MaxRate:     div(dws.MaxRate, floor.MaxRate),
		Handshakes:  div(dws.HandshakesPerSec, floor.HandshakesPerSec),
	}
}

// div is a/b, NaN when b is not positive: a ratio to a floor that measured
// nothing is unknown, and an unknown ratio never meets a target.
func div(a, b float64) float64 {
	if b <= 0 {
		return math.NaN()
	}
	return a / b
}

// floorChecks turns the ratios and both sides' integrity figures into the
// report's checks. Integrity (every socket opened, nothing lost, repeated
// or misrouted, on either side) is always asserted: a floor that loses
// events is a broken yardstick, and ratios against it mean nothing.
func floorChecks(t FloorTargets, dws, floor FloorFigures, r FloorRatios) []TargetCheck {
	var cs []TargetCheck
	add := func(name, target string, value float64, met, assert bool) {
		if math.IsNaN(value) {
			value = -1 // unknown; JSON has no NaN, and met is already false
		}
		cs = append(cs, TargetCheck{Name: name, Target: target, Value: value, Met: met, Assert: assert})
	}
	for _, side := range []struct {
		name string
		f    FloorFigures
	}{{"floor", floor}, {"dws", dws}} {
		f := side.f
		add(side.name+": sockets opened", fmt.Sprintf("= %d", f.Target), float64(f.Opened), f.Opened == f.Target, true)
		add(side.name+": events lost, duplicated or misrouted", "= 0", float64(f.Lost+f.Duplicates+f.Wrong), f.Lost+f.Duplicates+f.Wrong == 0, true)
	}
	atMost := func(name string, value, bound float64) {
		add(name, fmt.Sprintf("<= %g", bound), value, value <= bound, bound > 0) // NaN compares false
	}
	atLeast := func(name string, value, bound float64) {
		add(name, fmt.Sprintf(">= %g", bound), value, value >= bound, bound > 0)
	}
	add("dws/floor p50 (reported)", "-", r.P50, !math.IsNaN(r.P50), false)
	atMost("dws/floor p99", r.P99, t.MaxP99)
	atMost("dws/floor p99.9", r.P999, t.MaxP999)
	atMost("dws/floor server CPU per frame", r.CPUPerFrame, t.MaxCPU)
	atLeast("dws/floor highest rate held", r.MaxRate, t.MinRate)
	atLeast("dws/floor handshakes/s", r.Handshakes, t.MinHandshakes)
	atMost("dws RSS per idle socket (bytes)", dws.IdleSocketBytes, t.MaxIdleSocketBytes)
	return cs
}

// missedChecks names the asserted checks that missed.
func missedChecks(cs []TargetCheck) []string {
	var out []string
	for _, c := range cs {
		if c.Assert && !c.Met {
			out = append(out, c.Name)
		}
	}
	return out
}
