package bench

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// The parent and its workers talk JSON lines: the parent writes a
// WorkerConfig and then commands to the worker's stdin; the worker writes
// messages to its stdout. Logs go to stderr, never to stdout.

// WorkerConfig is the first line a worker reads. It carries the keys, which
// is why it travels over a pipe and never on a command line.
type WorkerConfig struct {
	Index            int           `json:"index"`
	Server           string        `json:"server"`
	Sources          []string      `json:"sources"`
	From             int           `json:"from"` // socket ids [From, To)
	To               int           `json:"to"`
	Groups           int           `json:"groups"`
	Rate             float64       `json:"rate"`     // dials/s of this worker; 0 = unpaced
	Inflight         int           `json:"inflight"` // handshakes in flight at most
	Churn            float64       `json:"churn"`    // closes+reconnects/s of this worker
	Loops            int           `json:"loops"`
	HandshakeTimeout time.Duration `json:"handshake_timeout"`
	TokenTTL         time.Duration `json:"token_ttl"`
	ProgressEvery    time.Duration `json:"progress_every"`
	TokenKey         string        `json:"token_key"`
	APIKey           string        `json:"api_key"`
	// Track turns on event tracking (fanout, slow, soak): latency by
	// phase and class, a receipt timeline, per-socket sequence sets.
	Track bool `json:"track,omitempty"`
	// CrossFrom: groups ≥ CrossFrom are consumed by another pod
	// (ClassCross); 0 = none.
	CrossFrom int `json:"cross_from,omitempty"`
	// SlowShare is the fraction of sockets that stop reading on cmdPause
	// (IsSlow); SlowRecvBuf their SO_RCVBUF (0 = default).
	SlowShare   float64 `json:"slow_share,omitempty"`
	SlowRecvBuf int     `json:"slow_recv_buf,omitempty"`
	// Partitions, with Track, is each group's event partition (the
	// cluster scenario): the worker then also ships the tracked phases'
	// latency per partition (TrackResult.Partitions).
	Partitions []int `json:"partitions,omitempty"`
}

// Commands from the parent.
const (
	cmdRamp  = "ramp"  // start dialling at T0
	cmdChurn = "churn" // start churning (after every worker ramped)
	cmdStop  = "stop"  // report the result and exit
	// cmdPause and cmdResume stop and restart reading on the slow sockets.
	cmdPause  = "pause"
	cmdResume = "resume"
	// cmdHopCut leaves events published after Cut out of the
	// per-partition latency (the cluster scenario's kill).
	cmdHopCut = "hop-cut"
)

type parentCmd struct {
	Cmd string `json:"cmd"`
	T0  int64  `json:"t0,omitempty"` // unix ns, shared by all workers
	// Published is, with stop, the sequences sent per group (0..n-1) and
	// Failed how many of them JetStream refused: what the loss check
	// expects.
	Published []int64 `json:"published,omitempty"`
	Failed    []int64 `json:"failed,omitempty"`
	// Cut is, with cmdHopCut, a publish time (unix ns).
	Cut int64 `json:"cut,omitempty"`
}

// Message types from a worker.
const (
	msgReady    = "ready"    // tokens minted, engine built
	msgProgress = "progress" // periodic counters
	msgRamped   = "ramped"   // every socket of the ramp opened or failed
	msgResult   = "result"   // final figures, after stop
	msgError    = "error"    // fatal; the worker exits
)

type workerMsg struct {
	Type     string        `json:"type"`
	Worker   int           `json:"worker"`
	Progress *Progress     `json:"progress,omitempty"`
	Result   *WorkerResult `json:"result,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// Progress is a worker's running counters.
type Progress struct {
	Dials          int64   `json:"dials"`
	Opened         int64   `json:"opened"`
	Failed         int64   `json:"failed"`
	Connected      int64   `json:"connected"`
	Errors         int64   `json:"errors"`
	HandshakeP99Us int64   `json:"handshake_p99_us"`
	CPUSeconds     float64 `json:"cpu_seconds"`
	Events         int64   `json:"events,omitempty"`
	EventP99Us     int64   `json:"event_p99_us,omitempty"` // since the start
}

// WorkerResult is what one worker measured.
type WorkerResult struct {
	Sockets       int              `json:"sockets"`
	Loops         int              `json:"loops"`
	MintSeconds   float64          `json:"mint_seconds"`
	Dials         int64            `json:"dials"`
	Opened        int64            `json:"opened"`
	Failed        int64            `json:"failed"`
	Closed        int64            `json:"closed"`
	Connected     int64            `json:"connected"`
	RampOpened    int64            `json:"ramp_opened"`
	RampFailed    int64            `json:"ramp_failed"`
	FramesIn      int64            `json:"frames_in"`
	Events        int64            `json:"events"`
	Pings         int64            `json:"pings"`
	PongsSent     int64            `json:"pongs_sent"`
	Errors        map[string]int64 `json:"errors"`
	CloseCodes    map[uint16]int64 `json:"close_codes"`
	HandshakeRamp string           `json:"handshake_ramp_hdr"`
	HandshakeAll  string           `json:"handshake_all_hdr"`
	Timeline      []uint32         `json:"timeline"` // handshakes per TimelineStep since T0
	RampEnd       int64            `json:"ramp_end"` // unix ns
	RampCPU       float64          `json:"ramp_cpu_seconds"`
	RampSysCPU    float64          `json:"ramp_sys_cpu_seconds"` // part of RampCPU spent in the kernel
	TotalCPU      float64          `json:"total_cpu_seconds"`
	ChurnClosed   int64            `json:"churn_closed"`
	ChurnReopened int64            `json:"churn_reopened"`
	ChurnFailed   int64            `json:"churn_failed"`
	Dropped       int64            `json:"dropped"` // open sockets the server ended
	Track         *TrackResult     `json:"track,omitempty"`
}

// TrackResult is what a tracking worker saw of the events.
type TrackResult struct {
	Phases   []PhaseHist `json:"phases"`
	Timeline []uint32    `json:"timeline"` // receipts per TimelineStep since T0
	Loss     LossFigures `json:"loss"`
	// SlowCloseCodes counts how the slow sockets ended.
	SlowCloseCodes map[uint16]int64 `json:"slow_close_codes,omitempty"`
	SlowSockets    int64            `json:"slow_sockets"`
	SlowClosed     int64            `json:"slow_closed"`
	// Partitions is the tracked phases' latency per event partition,
	// when WorkerConfig.Partitions asked for it.
	Partitions []PartitionHist `json:"partitions,omitempty"`
}

// lineWriter writes JSON lines from several goroutines.
type lineWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newLineWriter(w io.Writer) *lineWriter { return &lineWriter{enc: json.NewEncoder(w)} }

func (w *lineWriter) send(v any) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(v)
}
