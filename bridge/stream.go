package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/logx"
)

// streamMaxAge bounds a stream dws creates itself. Events are live change
// notifications: a gateway never replays them (the consumer starts at
// deliver-new), so a day of history only serves debugging and keeps the
// embedded default from filling the disk. A stream created by the upstream
// publisher keeps whatever limits it was given.
const streamMaxAge = 24 * time.Hour

// EnsureStream returns the stream cfg.Stream, creating it with the three
// subject patterns of SPEC §5 when it is absent and cfg.CreateStream is on.
// An existing stream is returned as it is — never updated — because the
// upstream publisher may own its limits and subjects.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg config.NATS) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, cfg.Stream)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %q: %w", cfg.Stream, err)
	}
	if !cfg.CreateStream {
		return nil, fmt.Errorf("stream %q does not exist and nats.create_stream is off", cfg.Stream)
	}
	s, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "dws change events (created by dws)",
		Subjects:    StreamSubjects,
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      streamMaxAge,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another pod created it between our lookup and create: use theirs.
		return js.Stream(ctx, cfg.Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %q: %w", cfg.Stream, err)
	}
	logx.From(ctx).Info("stream created", "stream", cfg.Stream, "subjects", StreamSubjects)
	return s, nil
}

// ConsumerConfig is the durable pull consumer every pod shares (SPEC §5):
// explicit acks, bounded ack-pending, deliver-new. Pull rather than push
// with a queue group was chosen by measurement (perf/fanout-consumer.md).
func ConsumerConfig(cfg config.NATS) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       cfg.Consumer,
		Description:   "dws fan-out (shared by all pods)",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
}

// EnsureConsumer returns the durable consumer cfg.Consumer on s, creating
// it when absent. An existing consumer is used as it is, so it keeps its
// position (and its settings: changing max_ack_pending or ack_wait on a
// live consumer is an operator's decision, logged here, not a side effect
// of a rolling restart).
func EnsureConsumer(ctx context.Context, s jetstream.Stream, cfg config.NATS) (jetstream.Consumer, error) {
	want := ConsumerConfig(cfg)
	c, err := s.Consumer(ctx, cfg.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = s.CreateConsumer(ctx, want)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			// Created concurrently by another pod with other settings.
			c, err = s.Consumer(ctx, cfg.Consumer)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %q: %w", cfg.Consumer, err)
	}
	have := c.CachedInfo().Config
	if have.DeliverSubject != "" {
		return nil, fmt.Errorf("consumer %q is a push consumer; dws needs a pull consumer (delete it or set nats.consumer)", cfg.Consumer)
	}
	if have.AckPolicy != jetstream.AckExplicitPolicy {
		return nil, fmt.Errorf("consumer %q has ack policy %s; dws needs explicit acks", cfg.Consumer, have.AckPolicy)
	}
	if have.MaxAckPending != want.MaxAckPending || have.AckWait != want.AckWait {
		logx.From(ctx).Warn("existing consumer keeps its settings",
			"consumer", cfg.Consumer,
			"max_ack_pending", have.MaxAckPending, "ack_wait", have.AckWait.String(),
			"configured_max_ack_pending", want.MaxAckPending, "configured_ack_wait", want.AckWait.String())
	}
	return c, nil
}
