// Package metrics is the one catalogue of dws_ metrics (SPEC §8).
//
// Every metric dws exports is declared here and nowhere else, with base
// units and without per-socket or per-user labels. A *Metrics is made per
// server so several in-process pods in a test do not share counters.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// ConnectionDurationBuckets are the seconds buckets the old service's
// architecture asked for: 1m, 5m, 15m, 30m, 1h, 4h, 8h, 24h.
var ConnectionDurationBuckets = []float64{60, 300, 900, 1800, 3600, 14400, 28800, 86400}

// fastBuckets suit sub-millisecond to seconds latencies (handshake, fan-out,
// gRPC): 50 µs … ~3.3 s.
var fastBuckets = prometheus.ExponentialBuckets(0.00005, 2, 17)

// ResumeBuckets suit a resume replay (SPEC §5a), from a few events read in
// a millisecond to resume.max_events (10 000) read in seconds: 1 ms … ~16 s.
var ResumeBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// Metrics holds every dws_ collector. Fields are safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	ConnectionsActive   *prometheus.GaugeVec     // kind=user|admin
	ConnectionsTotal    *prometheus.CounterVec   // kind, result=accepted|rejected reason…
	ConnectionDuration  *prometheus.HistogramVec // kind
	HandshakeDuration   prometheus.Histogram
	HandshakePaceLimit  prometheus.Gauge       // admissions/s while paced, 0 when not
	HandshakesPaced     prometheus.Gauge       // handshakes waiting in the pacer
	AuthFailures        *prometheus.CounterVec // reason
	SessionConflicts    *prometheus.CounterVec // kind=local|remote|forced
	SessionTakeovers    *prometheus.CounterVec // kind=local|remote|dead_pod|forced
	KillNotices         *prometheus.CounterVec // direction=sent|received
	NATSMessages        *prometheus.CounterVec // subject_kind=chats|messages|agents|unknown
	NATSRedeliveries    prometheus.Counter
	Deliveries          *prometheus.CounterVec // path=local|forwarded
	Drops               *prometheus.CounterVec // reason
	FanoutLatency       prometheus.Histogram
	Acks                *prometheus.CounterVec // result=ack|nak|term, reason
	DispatchQueueDepth  prometheus.Gauge
	GRPCForwards        *prometheus.CounterVec // result=ok|retried_ok|failed|breaker_open
	GRPCForwardDuration prometheus.Histogram
	BreakerStateChanges *prometheus.CounterVec // to=closed|open|half_open
	OutboundRingBytes   prometheus.Gauge
	SlowConsumerCloses  prometheus.Counter
	RateLimitedFrames   prometheus.Counter
	RateLimitCloses     prometheus.Counter
	ProtocolCloses      *prometheus.CounterVec // code
	RedisErrors         *prometheus.CounterVec // op
	RefreshBatches      *prometheus.CounterVec // result=ok|error
	Degraded            prometheus.Gauge
	ConfigReloads       *prometheus.CounterVec // result=ok|rejected
	RecoveredPanics     *prometheus.CounterVec // where
	BuildInfo           *prometheus.GaugeVec   // version, go_version

	// Partitioned consumption (SPEC §5).
	PartitionsOwned          prometheus.Gauge
	PartitionChanges         *prometheus.CounterVec // reason=acquired|rebalanced|lost|store_unreachable|drained
	PartitionTakeover        prometheus.Histogram   // consumer recreate on acquire
	PartitionTakeoverPending prometheus.Counter     // unacked events a previous owner left
	PartitionSourceRestarts  *prometheus.CounterVec // result=stepped_down|refused
	PartitionRewinds         *prometheus.CounterVec // how=reset|recreate

	// Resume after reconnect (SPEC §5a).
	Resumes        *prometheus.CounterVec // result=replayed|too_old|epoch_changed|too_many|failed
	ResumeEvents   prometheus.Counter
	ResumeDuration prometheus.Histogram // replay slot acquired → done
	ResumeWaiting  prometheus.Gauge     // replays waiting for a slot (resume.max_concurrent)

	// The resume replay cache (resume.cache_bytes): whether a reconnect
	// storm is served from memory or reads nats.stream.
	ResumeCacheBytes    prometheus.Gauge
	ResumeCacheLookups  *prometheus.CounterVec // result=hit|miss
	ResumeCacheReads    prometheus.Counter
	ResumeCacheBypasses *prometheus.CounterVec // reason=too_large|read_failed
}

// New builds the catalogue in a fresh registry, with the Go and process
// collectors beside it.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	f := factory{m.Registry}
	m.ConnectionsActive = f.gaugeVec("connections_active", "Open WebSocket connections.", "kind")
	m.ConnectionsTotal = f.counterVec("connections_total", "Connection attempts by outcome.", "kind", "result")
	m.ConnectionDuration = f.histVec("connection_duration_seconds", "Lifetime of closed connections.", ConnectionDurationBuckets, "kind")
	m.HandshakeDuration = f.hist("handshake_duration_seconds", "From first request byte to 101 (or rejection).", fastBuckets)
	// A reconnect storm is admitted at the rate the loops' live events
	// allow (reactor/pacer.go): these say when and how hard.
	m.HandshakePaceLimit = f.gauge("handshake_pace_limit", "Handshakes admitted per second while admission is paced because live events wait in the event loops; 0 when not paced.")
	m.HandshakesPaced = f.gauge("handshakes_paced", "Handshakes waiting in the pacer for admission.")
	m.AuthFailures = f.counterVec("auth_failures_total", "Rejected handshakes by reason.", "reason")
	m.SessionConflicts = f.counterVec("session_conflicts_total", "Single-session conflicts found at connect.", "kind")
	m.SessionTakeovers = f.counterVec("session_takeovers_total", "Session locks taken over from an older holder.", "kind")
	m.KillNotices = f.counterVec("session_kill_notices_total", "Cross-pod kill notices.", "direction")
	m.NATSMessages = f.counterVec("nats_messages_received_total", "JetStream messages received.", "subject_kind")
	// Redeliveries follow a pod, NATS or Redis failure (or a NAK); SPEC §5
	// allows them to duplicate an event, so operators need their rate.
	m.NATSRedeliveries = f.counter("nats_redeliveries_total", "JetStream messages received more than once (NumDelivered > 1); their events may reach a socket twice.")
	m.Deliveries = f.counterVec("deliveries_total", "Frames accepted for sockets, by path.", "path")
	m.Drops = f.counterVec("drops_total", "Messages or frames dropped, by reason.", "reason")
	m.FanoutLatency = f.hist("fanout_latency_seconds", "From the event's store time in the stream dws consumes (the partition stream) to its socket write.", fastBuckets)
	m.Acks = f.counterVec("nats_acks_total", "JetStream acknowledgements by result and reason.", "result", "reason")
	m.DispatchQueueDepth = f.gauge("dispatch_queue_depth", "Messages waiting for a dispatcher worker.")
	m.GRPCForwards = f.counterVec("grpc_forwards_total", "Event batches forwarded to other pods (PushStream sends or unary Push calls), by result.", "result")
	m.GRPCForwardDuration = f.hist("grpc_forward_duration_seconds", "Duration of forwarded batches, first send to answer or failure (PushStream or unary Push).", fastBuckets)
	m.BreakerStateChanges = f.counterVec("circuit_breaker_state_changes_total", "Per-target circuit breaker transitions.", "to")
	m.OutboundRingBytes = f.gauge("outbound_ring_bytes", "Bytes queued in all outbound rings.")
	m.SlowConsumerCloses = f.counter("slow_consumer_closes_total", "Sockets closed 4408 slow-consumer.")
	m.RateLimitedFrames = f.counter("rate_limited_frames_total", "Inbound frames over the per-socket rate.")
	m.RateLimitCloses = f.counter("rate_limit_closes_total", "Sockets closed 4429 for sustained excess.")
	m.ProtocolCloses = f.counterVec("protocol_closes_total", "Sockets closed by the server, by close code.", "code")
	m.RedisErrors = f.counterVec("redis_errors_total", "Failed Redis operations by operation.", "op")
	m.RefreshBatches = f.counterVec("refresh_batches_total", "Lease refresh batches by result.", "result")
	m.Degraded = f.gauge("degraded", "1 while the session store is unreachable and the pod runs local-only.")
	m.ConfigReloads = f.counterVec("config_reloads_total", "SIGHUP reloads by result.", "result")
	m.RecoveredPanics = f.counterVec("recovered_panics_total", "Panics recovered by safego, by place.", "where")
	m.BuildInfo = f.gaugeVec("build_info", "Build information; value is always 1.", "version", "go_version")
	m.PartitionsOwned = f.gauge("partitions_owned", "Event partitions this pod consumes.")
	m.PartitionChanges = f.counterVec("partition_ownership_changes_total", "Partitions this pod started or stopped consuming, by reason.", "reason")
	m.PartitionTakeover = f.hist("partition_takeover_seconds", "Time from acquiring a partition to consuming it (consumer recreated at the oldest unacked event).", fastBuckets)
	m.PartitionTakeoverPending = f.counter("partition_takeover_pending_total", "Events a previous owner had pulled and not acked when this pod took their partition over.")
	m.PartitionSourceRestarts = f.counterVec("partition_source_restarts_total", "Stalled copies of nats.stream into the partition stream restarted by a leader step-down (JetStream cluster), by result.", "result")
	// A rewind follows deliveries lost between NATS and this pod (a killed
	// server, a slow-consumer drop); no event is lost, but its partition
	// is delivered again from the oldest unacked event.
	m.PartitionRewinds = f.counterVec("partition_rewinds_total", "Partition consumers rewound to their oldest unacked event after a gap in their delivery sequence (deliveries lost on the way), by how: reset (consumer reset, nats-server >= 2.14) or recreate (older servers).", "how")
	m.Resumes = f.counterVec("resumes_total", "Resume replays by result: replayed, or the resync reason (too_old, epoch_changed, too_many), or failed.", "result")
	m.ResumeEvents = f.counter("resume_events_total", "Events replayed to resuming sockets.")
	m.ResumeDuration = f.hist("resume_duration_seconds", "Resume replays from slot acquired to done.", ResumeBuckets)
	// A reconnect storm queues for resume.max_concurrent slots: this is the
	// queue, so operators see waiting instead of memory growth.
	m.ResumeWaiting = f.gauge("resume_waiting", "Resume replays waiting for a slot (resume.max_concurrent).")
	m.ResumeCacheBytes = f.gauge("resume_cache_bytes", "Bytes of nats.stream events the resume replay cache holds (at most resume.cache_bytes).")
	// A lookup is per block of 256 stream sequences, not per replay: a
	// storm's replay makes one per block of its range, so the hit share is
	// the share of its range served from memory.
	m.ResumeCacheLookups = f.counterVec("resume_cache_lookups_total", "Resume replay cache block lookups by result: hit (held in memory), miss (served by a read of nats.stream: started, in flight, or the tail follower's).", "result")
	// Reads are what the cache costs JetStream: a storm served from it adds
	// a few while dws_resumes_total adds thousands.
	m.ResumeCacheReads = f.counter("resume_cache_reads_total", "Ordered consumers the resume replay cache opened on nats.stream.")
	m.ResumeCacheBypasses = f.counterVec("resume_cache_bypasses_total", "Resume replays read with their own filtered consumer instead of the cache, by reason: too_large (range over half of resume.cache_bytes), read_failed (the cache's read failed).", "reason")
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

type factory struct{ r *prometheus.Registry }

func name(n string) string { return "dws_" + n }

func (f factory) counter(n, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name(n), Help: help})
	f.r.MustRegister(c)
	return c
}

func (f factory) counterVec(n, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name(n), Help: help}, labels)
	f.r.MustRegister(c)
	return c
}

func (f factory) gauge(n, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name(n), Help: help})
	f.r.MustRegister(g)
	return g
}

func (f factory) gaugeVec(n, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name(n), Help: help}, labels)
	f.r.MustRegister(g)
	return g
}

func (f factory) hist(n, help string, b []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name(n), Help: help, Buckets: b})
	f.r.MustRegister(h)
	return h
}

func (f factory) histVec(n, help string, b []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name(n), Help: help, Buckets: b}, labels)
	f.r.MustRegister(h)
	return h
}
