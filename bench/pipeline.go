package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The pipeline scenario measures what one event costs a pod before any
// socket: broker (the embedded JetStream stores, copies and acks it),
// consumer and dispatcher. No socket is connected, so every event ends as
// "no route" and the pod's CPU time over the run divided by the events is
// that cost. It is CPU time, not wall time: a busy machine stretches the
// run but barely moves the figure, which makes it the stable half of an
// old-vs-new comparison whose other half (frames written) `ab` measures.

// PipelineConfig configures RunPipeline.
type PipelineConfig struct {
	// A and B are dws binaries; rounds alternate A, B, A, B, … B may be
	// empty: A alone.
	A, B string
	// Rounds per binary (default 2).
	Rounds int
	// Events per round (default 20 000) published at Rate events/s
	// (default 2 000) over Groups subjects (default 50).
	Events int
	Rate   float64
	Groups int
	// PayloadBytes pads each payload (0: ≈ 200 B).
	PayloadBytes int
	// TokenKey and APIKey go to the pods (they refuse to start without);
	// never into the report.
	TokenKey string `json:"-"`
	APIKey   string `json:"-"`
	// Set are extra key=value overrides for the pods.
	Set []string
	// LogDir receives the pods' logs.
	LogDir string
	// Settle is the wait after the last publish ack for the pod to finish
	// (default: until every event is counted, at most 30 s).
	Settle time.Duration
	// Command is the command line, for the report.
	Command string
}

// PipelineRound is one pod's figures.
type PipelineRound struct {
	Side        string  `json:"side"`
	Round       int     `json:"round"`
	Events      int64   `json:"events"`
	Processed   float64 `json:"processed"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUUsPerEvt float64 `json:"cpu_us_per_event"`
	WallSeconds float64 `json:"wall_seconds"`
}

// PipelineReport is the scenario's result.
type PipelineReport struct {
	Command string          `json:"command"`
	Config  PipelineConfig  `json:"config"`
	Rounds  []PipelineRound `json:"rounds"`
	// MedianA and MedianB are the sides' median µs per event; Ratio B/A.
	MedianA float64 `json:"median_a_us_per_event"`
	MedianB float64 `json:"median_b_us_per_event,omitempty"`
	Ratio   float64 `json:"ratio,omitempty"`
}

func (c *PipelineConfig) applyDefaults() error {
	if c.A == "" {
		return errors.New("pipeline: a dws binary is required")
	}
	if c.Rounds <= 0 {
		c.Rounds = 2
	}
	if c.Events <= 0 {
		c.Events = 20000
	}
	if c.Rate <= 0 {
		c.Rate = 2000
	}
	if c.Groups <= 0 {
		c.Groups = 50
	}
	if c.Settle <= 0 {
		c.Settle = 30 * time.Second
	}
	return nil
}

// RunPipeline runs the rounds and returns the report.
func RunPipeline(ctx context.Context, cfg PipelineConfig) (*PipelineReport, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	rep := &PipelineReport{Command: cfg.Command, Config: cfg}
	sides := []struct{ name, bin string }{{"A", cfg.A}}
	if cfg.B != "" {
		sides = append(sides, struct{ name, bin string }{"B", cfg.B})
	}
	for r := 1; r <= cfg.Rounds; r++ {
		for _, s := range sides {
			rd, err := pipelineRound(ctx, cfg, s.bin, fmt.Sprintf("pipeline-%s%d", s.name, r))
			if err != nil {
				return nil, fmt.Errorf("round %s%d: %w", s.name, r, err)
			}
			rd.Side, rd.Round = s.name, r
			rep.Rounds = append(rep.Rounds, rd)
		}
	}
	per := map[string][]float64{}
	for _, rd := range rep.Rounds {
		per[rd.Side] = append(per[rd.Side], rd.CPUUsPerEvt)
	}
	rep.MedianA = median(per["A"])
	if cfg.B != "" {
		rep.MedianB = median(per["B"])
		rep.Ratio = ratio(rep.MedianB, rep.MedianA)
	}
	return rep, nil
}

// processedMetric counts the events a pod settled without a socket.
const processedMetric = `dws_nats_acks_total`

func pipelineRound(ctx context.Context, cfg PipelineConfig, bin, name string) (PipelineRound, error) {
	pod, err := StartPod(ctx, PodOptions{Binary: bin, Name: name, TokenKey: cfg.TokenKey, APIKey: cfg.APIKey,
		Set: cfg.Set, LogDir: cfg.LogDir})
	if err != nil {
		return PipelineRound{}, err
	}
	defer pod.Stop()
	pub, err := NewPublisher(PublisherOptions{URLs: []string{pod.NATSURL}, Groups: cfg.Groups, PayloadBytes: cfg.PayloadBytes})
	if err != nil {
		return PipelineRound{}, err
	}
	defer pub.Close()
	before, err := Scrape(pod.Ops)
	if err != nil {
		return PipelineRound{}, err
	}
	cpu0, err := ReadProcCPU(pod.PID)
	if err != nil {
		return PipelineRound{}, err
	}
	start := time.Now()
	dur := time.Duration(float64(cfg.Events) / cfg.Rate * float64(time.Second))
	sent := pub.Run(ctx, cfg.Rate, dur, 0)
	pub.Wait(10 * time.Second)
	acked, failed := pub.Totals()
	if failed > 0 || acked != sent {
		return PipelineRound{}, fmt.Errorf("%d of %d publishes acked, %d failed: %s", acked, sent, failed, pub.LastError())
	}
	// Wait until the pod has settled every stored event, then read its CPU.
	var processed float64
	for deadline := time.Now().Add(cfg.Settle); ; {
		m, err := Scrape(pod.Ops)
		if err == nil {
			processed = m.Sum(processedMetric) - before.Sum(processedMetric)
			if processed >= float64(acked) {
				break
			}
		}
		if time.Now().After(deadline) {
			return PipelineRound{}, fmt.Errorf("the pod settled %.0f of %d events in %s", processed, acked, cfg.Settle)
		}
		if ctx.Err() != nil {
			return PipelineRound{}, ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	cpu1, err := ReadProcCPU(pod.PID)
	if err != nil {
		return PipelineRound{}, err
	}
	rd := PipelineRound{Events: acked, Processed: processed, CPUSeconds: cpu1 - cpu0,
		WallSeconds: time.Since(start).Seconds()}
	if acked > 0 {
		rd.CPUUsPerEvt = rd.CPUSeconds / float64(acked) * 1e6
	}
	return rd, nil
}

// Markdown renders the report.
func (rep *PipelineReport) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# dws-bench pipeline\n\n```\n%s\n```\n\n", rep.Command)
	fmt.Fprintf(&b, "Pod CPU per event with no socket attached (broker, consumer, dispatcher): %d events at %.0f/s over %d subjects per round; rounds alternate A, B.\n\n",
		rep.Config.Events, rep.Config.Rate, rep.Config.Groups)
	fmt.Fprintf(&b, "- A: `%s`\n", rep.Config.A)
	if rep.Config.B != "" {
		fmt.Fprintf(&b, "- B: `%s`\n", rep.Config.B)
	}
	b.WriteString("\n| round | events | pod CPU | µs/event | wall |\n| --- | --- | --- | --- | --- |\n")
	for _, rd := range rep.Rounds {
		fmt.Fprintf(&b, "| %s%d | %d | %.2f s | %.1f | %.1f s |\n", rd.Side, rd.Round, rd.Events, rd.CPUSeconds, rd.CPUUsPerEvt, rd.WallSeconds)
	}
	fmt.Fprintf(&b, "\nMedian A: **%.1f µs/event**", rep.MedianA)
	if rep.Config.B != "" {
		fmt.Fprintf(&b, "; median B: **%.1f µs/event**; B/A **%.3f**", rep.MedianB, rep.Ratio)
	}
	b.WriteString(".\n")
	return b.String()
}

// WriteFiles writes PREFIX.json and PREFIX.md.
func (rep *PipelineReport) WriteFiles(prefix string) (string, string, error) {
	return writeReportFiles(prefix, rep, rep.Markdown())
}
