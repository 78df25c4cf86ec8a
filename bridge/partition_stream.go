package bridge

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/logx"
)

// MinServerVersion is the oldest nats-server dws runs on: partitioned
// consumption (SPEC §5) derives its stream from nats.stream with a subject
// transform on the source, which servers before 2.10 do not have (they
// accept the config and silently ignore the transform).
const MinServerVersion = "2.10.0"

// CheckServerVersion refuses a NATS server older than MinServerVersion
// with one line saying what to run instead.
func CheckServerVersion(nc *nats.Conn) error {
	v := nc.ConnectedServerVersion()
	major, minor, ok := parseVersion(v)
	if !ok {
		return fmt.Errorf("nats: cannot read the server version %q; dws needs nats-server >= %s", v, MinServerVersion)
	}
	if major < 2 || (major == 2 && minor < 10) {
		return fmt.Errorf("nats: server %s is too old: dws needs nats-server >= %s (subject transforms on stream sources); upgrade it, or leave nats.url empty for the embedded server", v, MinServerVersion)
	}
	return nil
}

func parseVersion(v string) (major, minor int, ok bool) {
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	return major, minor, err1 == nil && err2 == nil
}

// PartitionLayout names the dws-owned stream that splits nats.stream into
// partitions by (company, agent) without modifying it (SPEC §5, DESIGN
// "Ordered delivery across the fleet"), and its per-partition consumers.
//
// The derived stream sources nats.stream and rewrites each subject
// websocket.{C}.{A}.{rest} to dwsp.{stream}.{P}.websocket.{C}.{A}.{rest},
// where P = the server's partition(n, C, A) hash: every event of one
// (company, agent) lands in one partition, in source order. It is a work
// queue: a message is gone once its partition's owner acked it, so the
// copy costs storage only while events wait. Each message keeps the
// source's sequence in its Nats-Stream-Source header: that is the seq
// browsers see.
type PartitionLayout struct {
	Source     string // nats.stream
	Consumer   string // nats.consumer: partition consumers are {Consumer}_p{P}
	Partitions int
	// Memory keeps a newly created derived stream, and the partition
	// consumers' state, in memory instead of following the source's
	// storage. Set it only when the NATS server is
	// embedded in this pod: the copy then lives and dies with the pod, and
	// a restart creates it anew at the present, as on first start. On a
	// shared server a memory copy would be lost, or re-sourced from its
	// creation time, by a server restart the pods outlive. It saves the
	// file store's per-event write and per-ack block churn (issue 10).
	Memory bool
}

// Stream is the derived stream's name. The partition count is part of it:
// the transform's modulus is fixed at creation, so another count is
// another stream (the old one is left for the operator to delete).
func (l PartitionLayout) Stream() string {
	return l.Source + "_dws_p" + strconv.Itoa(l.Partitions)
}

// subjectPrefix is "dwsp.{stream}." ; the partition token follows it.
func (l PartitionLayout) subjectPrefix() string { return "dwsp." + l.Source + "." }

// Filter is partition p's subject filter.
func (l PartitionLayout) Filter(p int) string {
	return l.subjectPrefix() + strconv.Itoa(p) + ".>"
}

// ConsumerName is partition p's durable consumer.
func (l PartitionLayout) ConsumerName(p int) string {
	return l.Consumer + "_p" + strconv.Itoa(p)
}

// transform is the source subject transform.
func (l PartitionLayout) transform() jetstream.SubjectTransformConfig {
	return jetstream.SubjectTransformConfig{
		Source:      "websocket.*.*.>",
		Destination: l.subjectPrefix() + "{{partition(" + strconv.Itoa(l.Partitions) + ",1,2)}}.websocket.{{wildcard(1)}}.{{wildcard(2)}}.>",
	}
}

// PartitionOf is the partition the server puts (company, agent) in: the
// transform's partition(n,1,2) is FNV-1a over the two tokens concatenated,
// modulo n (nats-server subject_transform.go). Tests and tools use it to
// know which pod consumes a company's events; a test checks it against the
// server's placement.
func (l PartitionLayout) PartitionOf(company, agent string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(company))
	_, _ = h.Write([]byte(agent))
	return int(h.Sum32() % uint32(max(l.Partitions, 1)))
}

// OriginalSubject strips the partition prefix from a derived subject,
// giving the subject the event was published on; ok is false for a
// subject of another shape.
func (l PartitionLayout) OriginalSubject(derived string) (subject string, partition int, ok bool) {
	rest, found := strings.CutPrefix(derived, l.subjectPrefix())
	if !found {
		return "", 0, false
	}
	num, subject, found := strings.Cut(rest, ".")
	if !found {
		return "", 0, false
	}
	p, err := strconv.Atoi(num)
	if err != nil || p < 0 || p >= l.Partitions {
		return "", 0, false
	}
	return subject, p, true
}

// derivedMaxAge bounds how long events wait in the derived stream while no
// pod consumes their partition (every pod down): as long as dws keeps a
// stream it creates itself.
const derivedMaxAge = streamMaxAge

// EnsurePartitionStream returns the derived stream, creating it when
// absent. A new derived stream starts at the present (deliver-new: a
// gateway pushes live events; resume reads the source stream itself), so
// events published before the first pod of this layout started are not
// pushed. Storage and replicas follow the source stream, except that
// l.Memory puts a new copy in memory.
func EnsurePartitionStream(ctx context.Context, js jetstream.JetStream, l PartitionLayout, source *jetstream.StreamInfo) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, l.Stream())
	if err == nil {
		return addOwnSubjects(ctx, js, l, s)
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %q: %w", l.Stream(), err)
	}
	now := time.Now()
	storage := source.Config.Storage
	if l.Memory {
		storage = jetstream.MemoryStorage
	}
	cfg := jetstream.StreamConfig{
		Name:        l.Stream(),
		Description: fmt.Sprintf("dws: %s split into %d partitions by company and agent (created by dws)", l.Source, l.Partitions),
		Subjects:    l.ownSubjects(),
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      derivedMaxAge,
		Storage:     storage,
		Replicas:    source.Config.Replicas,
		Sources: []*jetstream.StreamSource{{
			Name:              l.Source,
			OptStartTime:      &now,
			SubjectTransforms: []jetstream.SubjectTransformConfig{l.transform()},
		}},
	}
	s, err = js.CreateStream(ctx, cfg)
	if subjectsOverlap(err) {
		// Another layout of the same source (another partition count)
		// holds the subjects: run without them, at the server's higher
		// cost per ack.
		logx.From(ctx).Info("partition stream created without subjects of its own: another stream holds them", "stream", l.Stream(), "subjects", cfg.Subjects)
		cfg.Subjects = nil
		s, err = js.CreateStream(ctx, cfg)
	}
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.Stream(ctx, l.Stream()) // another pod was first
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %q: %w", l.Stream(), err)
	}
	logx.From(ctx).Info("partition stream created", "stream", l.Stream(), "source", l.Source, "partitions", l.Partitions)
	return s, nil
}

// ownSubjects are the derived stream's own subjects: the subjects its
// sourced messages get, which nobody publishes to directly. They are
// there for the server's sake. On every ack of a work-queue stream the
// server asks each consumer whether it still needs the message; a stream
// with no subjects of its own makes each of the 64 filtered consumers
// load and copy the message's subject for that, while a stream with a
// wildcard subject loads it once per ack (nats-server stream.go
// potentialFilteredConsumers). That was 23 % of a pod's allocations and
// ~2 % of its CPU at 38 000 frames/s (perf/quiet-20261207.md).
func (l PartitionLayout) ownSubjects() []string {
	return []string{l.subjectPrefix() + ">"}
}

// addOwnSubjects gives a derived stream created before it had subjects
// of its own (ownSubjects) those subjects. A failed update is logged and
// the stream used as it is: it works the same, at the server's higher
// cost per ack.
func addOwnSubjects(ctx context.Context, js jetstream.JetStream, l PartitionLayout, s jetstream.Stream) (jetstream.Stream, error) {
	cfg := s.CachedInfo().Config
	if len(cfg.Subjects) > 0 {
		return s, nil
	}
	cfg.Subjects = l.ownSubjects()
	u, err := js.UpdateStream(ctx, cfg)
	if err != nil {
		logx.From(ctx).Info("partition stream kept without subjects of its own", "stream", l.Stream(), "err", err.Error())
		return s, nil
	}
	return u, nil
}

// jsErrSubjectOverlap is JetStream's "subjects overlap with an existing
// stream" (10065); nats.go has no named error for it.
const jsErrSubjectOverlap jetstream.ErrorCode = 10065

func subjectsOverlap(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrSubjectOverlap
}

// PartitionConsumerConfig is partition p's durable pull consumer: explicit
// acks, everything still in the work queue (so after a crash the new owner
// starts at the oldest unacked event).
//
// With l.Memory (embedded server) its state is kept in memory too: 64
// consumers rewriting their state files cost the embedded server ~6 % of
// the pod's CPU at saturation (issue 10). Not on a shared server: there a
// server restart that the pods outlive would drop memory consumers, and
// their partitions would stall until the next takeover.
func (l PartitionLayout) PartitionConsumerConfig(p int, ackWait time.Duration, maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       l.ConsumerName(p),
		Description:   fmt.Sprintf("dws partition %d of %d", p, l.Partitions),
		FilterSubject: l.Filter(p),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MemoryStorage: l.Memory,
	}
}

// Epoch names the incarnation of the source stream (SPEC §5 "ready"): its
// creation time, which changes whenever the stream is recreated, so a
// client never mistakes an old stream's seq for a new one's.
func Epoch(source *jetstream.StreamInfo) string {
	return strconv.FormatInt(source.Created.UnixNano(), 36)
}

// HeaderStreamSource is set by the server on every sourced message:
// "{stream} {seq} {filter} {transform} {subject} ...".
const HeaderStreamSource = "Nats-Stream-Source"

// OriginSeq returns the message's sequence in the source stream from its
// Nats-Stream-Source header.
func OriginSeq(h nats.Header) (uint64, bool) {
	v := h.Get(HeaderStreamSource)
	if v == "" {
		return 0, false
	}
	_, rest, ok := strings.Cut(v, " ")
	if !ok {
		return 0, false
	}
	num, _, _ := strings.Cut(rest, " ")
	seq, err := strconv.ParseUint(num, 10, 64)
	return seq, err == nil && seq > 0
}
