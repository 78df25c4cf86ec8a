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
		Replicas:    max(cfg.Replicas, 1),
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another pod created it between our lookup and create: use theirs.
		return js.Stream(ctx, cfg.Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %q: %w", cfg.Stream, err)
	}
	logx.From(ctx).Info("stream created", "stream", cfg.Stream, "subjects", StreamSubjects, "replicas", max(cfg.Replicas, 1))
	return s, nil
}
