package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/internal/safego"
)

// The cross-pod hop (issue 10: "the cross-pod hop must add ≤ 1 ms p99").
// With partitions, the pod owning an event's partition writes it to its own
// sockets (local) and forwards it over gRPC to the other pods holding the
// route (forwarded). Worker i's sockets all sit on pod i mod P, so an event
// a worker receives is local when that pod owned the event's partition
// throughout the window, forwarded when another pod did. Each worker ships
// the window's latency per partition (tracker.splitByPartition); the lead
// reads the owners off every pod's GET /ready at the window's start, polls
// them during it and reads them again after the drain, and leaves out the
// partitions whose owner changed at any read: their events took either path.

// Owner values of a partition besides a pod index.
const (
	ownerNone    = -1 // no readable pod lists it, and every pod was read
	ownerSeveral = -2 // two pods list it (a handover overlap)
	ownerUnknown = -3 // no readable pod lists it, and some pod was not read
)

// ClusterHop is the window's publish → receive latency split by path.
type ClusterHop struct {
	// Local: the socket's pod owned the event's partition; Forwarded:
	// another pod did and sent it over gRPC.
	Local     Latency `json:"local"`
	Forwarded Latency `json:"forwarded"`
	// HopP50Us and HopP99Us are Forwarded's percentile minus Local's:
	// what the hop adds (a difference of percentiles, not the percentile
	// of a difference).
	HopP50Us int64 `json:"hop_p50_us"`
	HopP99Us int64 `json:"hop_p99_us"`
	// ForwardedShare is Forwarded.Count over both counts: the bench's view
	// of the share the pods' dws_deliveries_total report.
	ForwardedShare float64 `json:"forwarded_share"`
	// Partitions is nats.partitions; Stable counts those with one owner
	// at every read, Moved lists the others (left out).
	Partitions int   `json:"partitions"`
	Stable     int   `json:"stable"`
	Moved      []int `json:"moved,omitempty"`
	// ExcludedFrames were received on a moved partition.
	ExcludedFrames int64 `json:"excluded_frames"`
	// Reads counts the ownership reads (start, polls, end); ReadErrors
	// those where some pod's /ready failed.
	Reads      int `json:"reads"`
	ReadErrors int `json:"read_errors"`
	// CutSeconds, with a kill, is how much of the window the split covers:
	// events published after the kill are left out.
	CutSeconds float64 `json:"cut_seconds,omitempty"`
	// Error tells why there is no split (no ownership readable: a server
	// before issue 10).
	Error string `json:"error,omitempty"`
	// Push is the batches the pods forwarded over the step, on a
	// PushStream or by unary Push (dws_grpc_forward_duration_seconds, the
	// sender's view: first send to answer, the remote's Deliver included),
	// live pods only.
	Push PushFigures `json:"push"`
	// LocalHDR and ForwardedHDR are the two histograms, for plots.
	LocalHDR     string `json:"local_hdr,omitempty"`
	ForwardedHDR string `json:"forwarded_hdr,omitempty"`
}

// readOwnedPartitions reads the partitions a pod owns off its GET /ready
// (a 503 body lists them too).
func readOwnedPartitions(ops string) ([]int, error) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + ops + "/ready")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Partitions *[]int `json:"partitions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("GET /ready: %w", err)
	}
	if body.Partitions == nil {
		return nil, fmt.Errorf("GET /ready (status %d) lists no partitions: a server before issue 10", resp.StatusCode)
	}
	return *body.Partitions, nil
}

// partitionOwners folds the pods' owned lists (nil = pod not read) into
// each of n partitions' owner: a pod index or one of the owner* values.
func partitionOwners(n int, owned [][]int) []int {
	out := make([]int, n)
	allRead := true
	for _, o := range owned {
		allRead = allRead && o != nil
	}
	for p := range out {
		out[p] = ownerUnknown
		if allRead {
			out[p] = ownerNone
		}
	}
	for pod, list := range owned {
		for _, p := range list {
			if p < 0 || p >= n {
				continue
			}
			if out[p] >= 0 && out[p] != pod {
				out[p] = ownerSeveral
			} else if out[p] != ownerSeveral {
				out[p] = pod
			}
		}
	}
	return out
}

// ownershipWatch follows the partitions' owners over the window.
type ownershipWatch struct {
	read func() ([]int, error) // one read of every pod: partitionOwners

	mu    sync.Mutex
	base  []int
	moved []bool
	reads int
	errs  int
	err   string // the last read error

	stop chan struct{}
	done chan struct{}
}

// newOwnershipWatch reads the owners of n partitions off the pods' ops
// addresses.
func newOwnershipWatch(ops []string, n int) *ownershipWatch {
	return &ownershipWatch{read: func() ([]int, error) {
		owned := make([][]int, len(ops))
		var errs []string
		for i, o := range ops {
			l, err := readOwnedPartitions(o)
			if err != nil {
				errs = append(errs, fmt.Sprintf("pod %d: %v", i, err))
				continue
			}
			owned[i] = append([]int{}, l...) // not nil: read, maybe empty
		}
		var err error
		if len(errs) > 0 {
			err = fmt.Errorf("%s", strings.Join(errs, "; "))
		}
		return partitionOwners(n, owned), err
	}}
}

// start takes the base read, then polls every interval until finish. The
// cluster starts it before the step's warm-up: a partition that moves
// between the base read and the window's first event is caught too.
func (w *ownershipWatch) start(every time.Duration) {
	w.observe(w.read())
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	safego.Go(context.Background(), "bench.cluster.ownership", func(context.Context) {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.observe(w.read())
			}
		}
	})
}

// observe records one read: the first is the base; later ones mark every
// partition whose known owner differs from it. An unknown owner (a pod not
// read) marks nothing; finish treats it as moved.
func (w *ownershipWatch) observe(owners []int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reads++
	if err != nil {
		w.errs++
		w.err = err.Error()
	}
	if w.base == nil {
		w.base = owners
		w.moved = make([]bool, len(owners))
		for p, o := range owners {
			w.moved[p] = o < 0
		}
		return
	}
	for p, o := range owners {
		if p < len(w.base) && o != ownerUnknown && o != w.base[p] {
			w.moved[p] = true
		}
	}
}

// finish stops the polls and takes the last read, where an unknown owner
// counts as moved (the pod that held it is gone or silent). It returns the
// base owners and which partitions moved.
func (w *ownershipWatch) finish() (base []int, moved []bool) {
	if w.stop != nil {
		close(w.stop)
		<-w.done
		w.stop = nil
	}
	owners, err := w.read()
	w.observe(owners, err)
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, o := range owners {
		if p < len(w.moved) && o == ownerUnknown {
			w.moved[p] = true
		}
	}
	return w.base, w.moved
}

// hopWorker is one worker's share of the split: its pod and partitions.
type hopWorker struct {
	Pod   int
	Parts []PartitionHist
}

// splitHop merges the workers' per-partition latency into local (the
// worker's pod owned the partition) and forwarded (another pod did);
// partitions that moved, or had no single owner, are left out and their
// frames counted.
func splitHop(workers []hopWorker, owner []int, moved []bool) (local, fwd *hdrhistogram.Histogram, excluded int64, err error) {
	local, fwd = newHistogram(), newHistogram()
	for _, w := range workers {
		for _, ph := range w.Parts {
			p := ph.Partition
			if p < 0 || p >= len(owner) || owner[p] < 0 || (p < len(moved) && moved[p]) {
				excluded += ph.Frames
				continue
			}
			dst := fwd
			if owner[p] == w.Pod {
				dst = local
			}
			if err := MergeEncoded(dst, ph.Hist); err != nil {
				return nil, nil, 0, fmt.Errorf("partition %d: %w", p, err)
			}
		}
	}
	return local, fwd, excluded, nil
}

// hopFigures summarises the split.
func hopFigures(local, fwd *hdrhistogram.Histogram) ClusterHop {
	h := ClusterHop{Local: Summarize(local), Forwarded: Summarize(fwd)}
	if t := h.Local.Count + h.Forwarded.Count; t > 0 {
		h.ForwardedShare = float64(h.Forwarded.Count) / float64(t)
	}
	if h.Local.Count > 0 && h.Forwarded.Count > 0 {
		h.HopP50Us = h.Forwarded.P50Us - h.Local.P50Us
		h.HopP99Us = h.Forwarded.P99Us - h.Local.P99Us
	}
	h.LocalHDR, _ = EncodeHistogram(local)
	h.ForwardedHDR, _ = EncodeHistogram(fwd)
	return h
}

// groupPartitions is each group's event partition: the bench's group g is
// (company c{g}, agent a{g}) (identity).
func groupPartitions(groups, partitions int) []int {
	l := bridge.PartitionLayout{Partitions: partitions}
	out := make([]int, groups)
	for g := range out {
		c, a, _ := identity(g, groups)
		out[g] = l.PartitionOf(c, a)
	}
	return out
}

// clusterHop builds the hop figures from the workers' results and the
// finished watch (base, moved); pods is the pod count (worker i is on pod
// i mod pods).
func clusterHop(l *loadRun, pods, partitions int, watch *ownershipWatch, base []int, moved []bool, cut float64) *ClusterHop {
	var ws []hopWorker
	for i, w := range l.r.workers {
		if w.result == nil || w.result.Track == nil {
			continue
		}
		ws = append(ws, hopWorker{Pod: i % pods, Parts: w.result.Track.Partitions})
	}
	local, fwd, excluded, err := splitHop(ws, base, moved)
	var h ClusterHop
	if err == nil {
		h = hopFigures(local, fwd)
	} else {
		h.Error = err.Error()
	}
	h.Partitions, h.ExcludedFrames, h.CutSeconds = partitions, excluded, cut
	for p, m := range moved {
		if m {
			h.Moved = append(h.Moved, p)
		}
	}
	h.Stable = len(moved) - len(h.Moved)
	watch.mu.Lock()
	h.Reads, h.ReadErrors = watch.reads, watch.errs
	if h.Error == "" && h.Stable == 0 && watch.err != "" {
		h.Error = "partition owners not readable: " + watch.err
	}
	watch.mu.Unlock()
	return &h
}

// checks adds the hop split's checks; maxP99 < 0 reports only.
func (h *ClusterHop) checks(maxP99 time.Duration, add func(name, target string, value float64, met, assert bool)) {
	if h == nil {
		return
	}
	if h.Error != "" || h.Stable == 0 {
		add("partitions with one owner over the window (hop split)", "> 0", float64(h.Stable), false, false)
		return
	}
	both := h.Local.Count > 0 && h.Forwarded.Count > 0
	add("frames on both paths (local and forwarded) for the hop split", "> 0", float64(min(h.Local.Count, h.Forwarded.Count)), both, maxP99 > 0)
	if !both {
		return
	}
	limit := float64(maxP99.Microseconds()) / 1000
	add("cross-pod hop: forwarded p99 − local p99 (ms)", fmt.Sprintf("<= %g", limit),
		float64(h.HopP99Us)/1000, maxP99 < 0 || h.HopP99Us <= maxP99.Microseconds(), maxP99 > 0)
}

// writeClusterHop renders the split.
func writeClusterHop(b *strings.Builder, h *ClusterHop) {
	if h == nil {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("## Cross-pod hop\n\n")
	if h.Error != "" {
		p("No split: %s.\n\n", h.Error)
		return
	}
	p("| path | frames | p50 | p99 | p99.9 | max |\n| --- | --- | --- | --- | --- | --- |\n")
	row := func(name string, l Latency) {
		p("| %s | %d | %s | %s | %s | %s |\n", name, l.Count, ms(l.P50Us), ms(l.P99Us), ms(l.P999Us), ms(l.MaxUs))
	}
	row("local (the socket's pod owns the partition)", h.Local)
	row("forwarded (another pod owns it, gRPC)", h.Forwarded)
	p("\nHop (forwarded − local): **p50 %s, p99 %s**; forwarded share %.1f %% of the split's frames.",
		ms(h.HopP50Us), ms(h.HopP99Us), 100*h.ForwardedShare)
	if c := h.Push; c.Calls > 0 {
		le := func(v float64) string {
			if v < 0 {
				return "above the last bucket"
			}
			return fmt.Sprintf("≤ %g ms", v)
		}
		p(" The pods forwarded %.0f batches over gRPC (PushStream sends or unary Push calls; dws_grpc_forward_duration_seconds: mean %.2f ms, p50 %s, p99 %s; the sender's view, answer included).",
			c.Calls, c.MeanMs, le(c.P50Ms), le(c.P99Ms))
	}
	p(" %d of %d partitions kept one owner at all %d reads of the pods' /ready (before the warm-up, every 500 ms, after the drain)",
		h.Stable, h.Partitions, h.Reads)
	if len(h.Moved) > 0 {
		p("; %d moved and are left out (%d frames)", len(h.Moved), h.ExcludedFrames)
	}
	p(".")
	if h.ReadErrors > 0 {
		p(" %d reads missed a pod.", h.ReadErrors)
	}
	if h.CutSeconds > 0 {
		p(" Only events published in the first %.2f s of the window count (the kill came then).", h.CutSeconds)
	}
	p("\n\n")
}

// PushFigures summarise dws_grpc_forward_duration_seconds over the step:
// Calls forwarded batches (PushStream sends or unary Push calls).
type PushFigures = HistFigures

// pushFigures reads the forward duration histogram's increase over the step,
// summed over the pods scraped at both ends.
func pushFigures(m0, m1 []Metrics) PushFigures { return histFigures(pushHist, m0, m1) }
