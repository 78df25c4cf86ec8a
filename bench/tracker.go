package bench

import (
	"bytes"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/dws-gateway/dws/bench/client"
)

// Latency classes of a tracked socket: which path its events take. The
// fanout scenario compares them within one run, under the same load.
const (
	// ClassLocal: the pod holding the socket consumed the event.
	ClassLocal = 0
	// ClassCross: another pod consumed it and forwarded it over gRPC.
	ClassCross = 1
	// ClassSlow: a socket of the slow scenario that stops reading.
	ClassSlow  = 2
	numClasses = 3
)

// Subscription kinds of an event, for the order check: dws numbers a
// socket's chats events and its selected chat's messages events as two
// separate increasing sequences.
const (
	kindChats    = 0
	kindMessages = 1
	numKinds     = 2
)

// maxArrivalBuckets bounds the arrival profile (10 minutes of publish time
// at TimelineStep): the failover figure needs only the seconds around a
// kill, and a soak must not ship hours of it.
const maxArrivalBuckets = 6000

// maxTrackedSeq bounds one socket's seen-bitset (4 M events of one subject,
// 512 KiB): a larger sequence is counted as received but not checked.
const maxTrackedSeq = 1 << 22

// tracker is a worker's record of the events its sockets received: latency
// by (phase, class), a receipt timeline, and per socket the set of
// sequence numbers seen, for loss and duplicate detection.
//
// Events of socket id are always handled on loop id % loops of the engine,
// so one shard per loop is touched by one goroutine while the run goes on;
// its mutex is uncontended and only makes the final read safe.
type tracker struct {
	from, groups int
	crossFrom    int // groups ≥ crossFrom are ClassCross
	slow         func(id int) bool
	subjects     [][]byte // chats subject of each group
	t0           time.Time
	shards       []trackShard
	socks        []sockTrack // by id - from
	// partOf, when set (the cluster scenario), is the event partition of
	// each group: the tracked phases' latency is then also kept per
	// partition, so the lead can split it into local and forwarded once it
	// knows which partitions kept their owner (cluster_hop.go). cut, when
	// not 0, is a publish time (unix ns) after which events stay out of
	// that split (a kill's failover).
	partOf []int
	parts  []partTrack
	cut    atomic.Int64
}

// partTrack is one partition's latency over the tracked phases, from
// every loop: its own mutex, uncontended at the rates the bench publishes.
type partTrack struct {
	mu     sync.Mutex
	frames int64
	hist   *hdrhistogram.Histogram // nil until the first event
}

type trackShard struct {
	mu       sync.Mutex
	phases   map[int64]*phaseTrack // phase*numClasses + class
	timeline []uint32              // receipts per TimelineStep since t0
	dups     int64
	wrong    int64 // events whose subject is not the socket's group's
	untagged int64 // events without a seq (not the bench's)
	// sequenced counts frames carrying the server's seq; reordered those
	// whose seq was not above every earlier one of the same socket and
	// subscription kind (a repeat included).
	sequenced, reordered int64
	arrivals             ArrivalProfile
}

type phaseTrack struct {
	frames int64
	hist   *hdrhistogram.Histogram
}

// sockTrack is one socket's receipts. interrupted: the socket closed at
// some point, so a gap in its sequence is not the server's loss. last is
// the highest server seq seen per subscription kind on the current
// connection (0 = none yet: dws numbers from 1).
type sockTrack struct {
	seen        []uint64
	last        [numKinds]int64
	interrupted bool
}

func newTracker(from, to, groups, crossFrom, loops int, slow func(int) bool, t0 time.Time) *tracker {
	t := &tracker{
		from: from, groups: groups, crossFrom: crossFrom, slow: slow, t0: t0,
		shards: make([]trackShard, max(1, loops)),
		socks:  make([]sockTrack, to-from),
	}
	if t.crossFrom <= 0 {
		t.crossFrom = groups
	}
	for g := range groups {
		t.subjects = append(t.subjects, []byte(ChatsSubject(g)))
	}
	for i := range t.shards {
		t.shards[i].phases = make(map[int64]*phaseTrack)
	}
	return t
}

// ChatsSubject is the JetStream subject group g's sockets receive (see
// identity).
func ChatsSubject(g int) string {
	s := strconv.Itoa(g)
	return "websocket.c" + s + ".a" + s + ".chats"
}

func (t *tracker) class(id int) int {
	switch {
	case t.slow != nil && t.slow(id):
		return ClassSlow
	case id%t.groups >= t.crossFrom:
		return ClassCross
	}
	return ClassLocal
}

// event records one event of socket id; it runs on id's loop.
func (t *tracker) event(id int, ev *client.Event) {
	sh := &t.shards[id%len(t.shards)]
	now := time.Now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i := max(0, int(now.Sub(t.t0)/TimelineStep))
	for i >= len(sh.timeline) {
		sh.timeline = append(sh.timeline, 0)
	}
	sh.timeline[i]++
	if srv := ev.ServerSeq; srv > 0 {
		sh.sequenced++
		st := &t.socks[id-t.from]
		k := subscriptionKind(ev.Subject)
		if srv <= st.last[k] {
			sh.reordered++
		} else {
			st.last[k] = srv
		}
	}
	if ev.TS > 0 {
		sh.arrivals.record(ev.TS-t.t0.UnixNano(), now.Sub(t.t0), ev.Latency)
	}
	if ev.Seq < 0 {
		sh.untagged++
		return
	}
	g := id % t.groups
	if string(ev.Subject) != string(t.subjects[g]) {
		sh.wrong++
		return
	}
	if s := ev.Seq; s < maxTrackedSeq {
		st := &t.socks[id-t.from]
		w := int(s >> 6)
		for w >= len(st.seen) {
			st.seen = append(st.seen, 0)
		}
		bit := uint64(1) << (s & 63)
		if st.seen[w]&bit != 0 {
			sh.dups++
		}
		st.seen[w] |= bit
	}
	if ev.Phase <= 0 {
		return // warm-up or between steps: counted in the timeline only
	}
	key := ev.Phase*numClasses + int64(t.class(id))
	p := sh.phases[key]
	if p == nil {
		p = &phaseTrack{hist: client.NewHistogram()}
		sh.phases[key] = p
	}
	p.frames++
	us := ev.Latency.Microseconds()
	_ = p.hist.RecordValue(min(max(us, 1), p.hist.HighestTrackableValue()))
	if t.partOf != nil && key%numClasses != ClassSlow {
		t.recordPartition(g, ev.TS, max(us, 1))
	}
}

// splitByPartition keeps the tracked phases' latency per event partition
// too: partOf[g] is group g's partition (bridge.PartitionLayout.PartitionOf).
// Call it before the first event.
func (t *tracker) splitByPartition(partOf []int) {
	if len(partOf) < t.groups {
		return
	}
	n := 0
	for _, p := range partOf {
		n = max(n, p+1)
	}
	t.partOf, t.parts = partOf, make([]partTrack, n)
}

// setCut leaves events published after at (unix ns; 0 = none) out of the
// per-partition split.
func (t *tracker) setCut(at int64) { t.cut.Store(at) }

// recordPartition adds one latency (µs) of group g's partition, published
// at pubNs; it runs under g's socket's shard lock, and takes the
// partition's own.
func (t *tracker) recordPartition(g int, pubNs, us int64) {
	if cut := t.cut.Load(); cut > 0 && pubNs > cut {
		return
	}
	p := t.partOf[g]
	if p < 0 || p >= len(t.parts) {
		return
	}
	pt := &t.parts[p]
	pt.mu.Lock()
	if pt.hist == nil {
		pt.hist = client.NewHistogram()
	}
	pt.frames++
	_ = pt.hist.RecordValue(min(us, pt.hist.HighestTrackableValue()))
	pt.mu.Unlock()
}

// partitionHists ships the per-partition latency (partitions with at
// least one event).
func (t *tracker) partitionHists() ([]PartitionHist, error) {
	var out []PartitionHist
	for p := range t.parts {
		pt := &t.parts[p]
		pt.mu.Lock()
		if pt.hist == nil {
			pt.mu.Unlock()
			continue
		}
		enc, err := EncodeHistogram(pt.hist)
		frames := pt.frames
		pt.mu.Unlock()
		if err != nil {
			return nil, err
		}
		out = append(out, PartitionHist{Partition: p, Frames: frames, Hist: enc})
	}
	return out, nil
}

// interrupt marks socket id as having closed; it runs on id's loop. A
// reconnected socket is a new subscription: its order check starts over.
func (t *tracker) interrupt(id int) {
	sh := &t.shards[id%len(t.shards)]
	sh.mu.Lock()
	st := &t.socks[id-t.from]
	st.interrupted = true
	st.last = [numKinds]int64{}
	sh.mu.Unlock()
}

var messagesInfix = []byte(`.messages.`)

// subscriptionKind tells a messages event (websocket.{C}.{A}.messages.{X})
// from a chats one by the subject the bench wrote into row_data.
func subscriptionKind(subject []byte) int {
	if bytes.Contains(subject, messagesInfix) {
		return kindMessages
	}
	return kindChats
}

// ArrivalProfile is, per TimelineStep of publish time since T0, the latest
// receipt (µs since T0) and the longest publish → receipt latency (µs) of
// the events published in it and received by a worker's sockets: what the
// failover figure of a kill needs, whenever the kill happens. 0 = no event.
type ArrivalProfile struct {
	LastUs       []int64 `json:"last_us,omitempty"`
	MaxLatencyUs []int64 `json:"max_latency_us,omitempty"`
}

// record adds one event published at pub and received at recv (both since
// T0) after lat.
func (a *ArrivalProfile) record(pub int64, recv, lat time.Duration) {
	if pub < 0 {
		return
	}
	i := int(pub / int64(TimelineStep))
	if i >= maxArrivalBuckets {
		return
	}
	for i >= len(a.LastUs) {
		a.LastUs = append(a.LastUs, 0)
		a.MaxLatencyUs = append(a.MaxLatencyUs, 0)
	}
	a.LastUs[i] = max(a.LastUs[i], max(1, recv.Microseconds()))
	a.MaxLatencyUs[i] = max(a.MaxLatencyUs[i], max(1, lat.Microseconds()))
}

// merge folds o into a, bucket by bucket.
func (a *ArrivalProfile) merge(o *ArrivalProfile) {
	if o == nil {
		return
	}
	for i := range o.LastUs {
		if i >= len(a.LastUs) {
			a.LastUs = append(a.LastUs, 0)
			a.MaxLatencyUs = append(a.MaxLatencyUs, 0)
		}
		a.LastUs[i] = max(a.LastUs[i], o.LastUs[i])
		if i < len(o.MaxLatencyUs) {
			a.MaxLatencyUs[i] = max(a.MaxLatencyUs[i], o.MaxLatencyUs[i])
		}
	}
}

// LossFigures count missing and repeated events among the sockets that
// stayed connected for the whole run.
type LossFigures struct {
	// Checked is the number of sockets whose sequences were checked.
	Checked int64 `json:"sockets_checked"`
	// Excluded sockets closed at some point (churn, slow, dropped) or
	// never opened.
	Excluded int64 `json:"sockets_excluded"`
	// Lost is the number of (socket, event) pairs published and stored
	// by JetStream but never received.
	Lost int64 `json:"lost"`
	// SocketsWithLoss counts checked sockets missing at least one event.
	SocketsWithLoss int64 `json:"sockets_with_loss"`
	// Duplicates counts events a socket received more than once.
	Duplicates int64 `json:"duplicates"`
	// WrongSubject counts events a socket should never have seen.
	WrongSubject int64 `json:"wrong_subject"`
	// Sequenced counts frames that carried the server's seq (issue 10);
	// 0 = a server from before it, and Reordered means nothing.
	Sequenced int64 `json:"sequenced,omitempty"`
	// Reordered counts frames whose server seq was not above every
	// earlier seq of the same socket connection and subscription kind
	// (chats, messages): out of order, or a repeat.
	Reordered int64 `json:"reordered,omitempty"`
	// Arrivals is the worker's arrival profile (all sockets, closed ones
	// included), for the cluster scenario's failover figure; a worker
	// ships it, merged reports leave it out.
	Arrivals *ArrivalProfile `json:"arrivals,omitempty"`
}

// loss checks every socket against what was published: per group,
// sequences 0..next[g]-1 were sent and failed[g] of them were refused by
// JetStream (so never stored, never owed). open tells whether a socket is
// open now.
func (t *tracker) loss(next, failed []int64, open func(id int) bool) LossFigures {
	var f LossFigures
	arr := &ArrivalProfile{}
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		f.Duplicates += sh.dups
		f.WrongSubject += sh.wrong
		f.Sequenced += sh.sequenced
		f.Reordered += sh.reordered
		arr.merge(&sh.arrivals)
		sh.mu.Unlock()
	}
	if len(arr.LastUs) > 0 {
		f.Arrivals = arr
	}
	for k := range t.socks {
		id := t.from + k
		sh := &t.shards[id%len(t.shards)]
		sh.mu.Lock()
		st := &t.socks[k]
		if st.interrupted || !open(id) {
			f.Excluded++
			sh.mu.Unlock()
			continue
		}
		var sent, want int64
		if g := id % t.groups; g < len(next) {
			sent = min(next[g], maxTrackedSeq)
			want = sent
			if g < len(failed) {
				want -= failed[g]
			}
		}
		got := countBelow(st.seen, sent)
		sh.mu.Unlock()
		f.Checked++
		if got < want {
			f.Lost += want - got
			f.SocketsWithLoss++
		}
	}
	return f
}

// countBelow counts the set bits of seen below n.
func countBelow(seen []uint64, n int64) int64 {
	var c int64
	for w, v := range seen {
		lo := int64(w) << 6
		if lo >= n {
			break
		}
		if n-lo < 64 {
			v &= (uint64(1) << (n - lo)) - 1
		}
		c += int64(bits.OnesCount64(v))
	}
	return c
}

// PhaseHist is one (phase, class) latency histogram as a worker ships it.
type PhaseHist struct {
	Phase  int64  `json:"phase"`
	Class  int    `json:"class"`
	Frames int64  `json:"frames"`
	Hist   string `json:"hdr"`
}

// PartitionHist is one event partition's latency over the tracked phases
// (healthy sockets, events published before the cut) as a worker ships it.
type PartitionHist struct {
	Partition int    `json:"partition"`
	Frames    int64  `json:"frames"`
	Hist      string `json:"hdr"`
}

// snapshot returns the merged per-phase histograms and the timeline.
func (t *tracker) snapshot() ([]PhaseHist, []uint32, error) {
	merged := map[int64]*phaseTrack{}
	var timeline []uint32
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, p := range sh.phases {
			m := merged[k]
			if m == nil {
				m = &phaseTrack{hist: client.NewHistogram()}
				merged[k] = m
			}
			m.frames += p.frames
			m.hist.Merge(p.hist)
		}
		timeline = MergeCounts(timeline, sh.timeline)
		sh.mu.Unlock()
	}
	var out []PhaseHist
	for k, p := range merged {
		enc, err := EncodeHistogram(p.hist)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, PhaseHist{Phase: k / numClasses, Class: int(k % numClasses), Frames: p.frames, Hist: enc})
	}
	return out, timeline, nil
}
