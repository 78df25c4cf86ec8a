package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dws-gateway/dws/bench"
)

func runPipeline(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		a       = fs.String("a", "", "dws `binary` A (the baseline of the ratio)")
		b       = fs.String("b", "", "dws `binary` B (optional: ratio B/A)")
		rounds  = fs.Int("rounds", 2, "rounds per binary, run alternately A, B, A, B, …")
		events  = fs.Int("events", 20000, "events published per round")
		rate    = fs.Float64("rate", 2000, "events/s")
		groups  = fs.Int("groups", 50, "(company, agent) subjects the events are spread over")
		payload = fs.Int("payload-bytes", 0, "pad each event payload to about this many bytes (0: ≈200)")
		logDir  = fs.String("log-dir", "", "where the pods write their logs (default: a temp dir)")
		settle  = fs.Duration("settle", 30*time.Second, "longest wait for the pod to settle every event")
		out     = fs.String("out", "bench-out/pipeline-"+time.Now().Format("20060102-150405"), "report path `prefix`: PREFIX.json and PREFIX.md")
		sets    multiFlag
	)
	fs.Var(&sets, "server-set", "extra key=value for the pods (repeatable)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: dws-bench pipeline --a BINARY [--b BINARY] [flags]\n\nPod CPU per event with no socket attached: broker, consumer and dispatcher.\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *a == "" {
		fmt.Fprintln(stderr, "dws-bench pipeline: --a (a dws binary) is required")
		return 2
	}
	rep, err := bench.RunPipeline(ctx, bench.PipelineConfig{
		A: *a, B: *b, Rounds: *rounds, Events: *events, Rate: *rate, Groups: *groups, PayloadBytes: *payload,
		TokenKey: os.Getenv("DWS_AUTH_TOKEN_AES_KEY"), APIKey: os.Getenv("DWS_AUTH_API_KEY"),
		Set: sets, LogDir: *logDir, Settle: *settle,
		Command: redactedCommand(append([]string{"dws-bench", "pipeline"}, args...)),
	})
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench pipeline:", err)
		return 1
	}
	jsonPath, mdPath, err := rep.WriteFiles(*out)
	if err != nil {
		fmt.Fprintln(stderr, "dws-bench pipeline: write report:", err)
		return 1
	}
	for _, rd := range rep.Rounds {
		fmt.Fprintf(stdout, "%s%d  events %6d  pod CPU %6.2f s  %7.1f µs/event\n", rd.Side, rd.Round, rd.Events, rd.CPUSeconds, rd.CPUUsPerEvt)
	}
	fmt.Fprintf(stdout, "median A: %.1f µs/event", rep.MedianA)
	if *b != "" {
		fmt.Fprintf(stdout, "  median B: %.1f µs/event  B/A %.3f", rep.MedianB, rep.Ratio)
	}
	fmt.Fprintf(stdout, "\nreport: %s, %s\n", jsonPath, mdPath)
	return 0
}
