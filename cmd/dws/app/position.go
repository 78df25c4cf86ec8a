package app

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
)

// positionInterval is how often a pod reads the stream's last sequence for
// its ready frames: one JetStream API request a second per pod. A position
// up to this old only makes a resume replay a little more (SPEC §5a).
const positionInterval = time.Second

// streamPosition keeps the ready frame's stream position current: a
// client that drops before its first event comes back with since = the
// ready frame's seq and misses nothing (SPEC §5a).
type streamPosition struct {
	stream jetstream.Stream
	epoch  string
	set    func(epoch string, seq uint64)
	last   uint64
	known  bool
}

// watchStreamPosition sets the position once (so the first ready frame
// has it) and then every positionInterval until ctx ends.
func watchStreamPosition(ctx context.Context, js jetstream.JetStream, name, epoch string, set func(string, uint64)) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := js.Stream(sctx, name)
	if err != nil {
		return err
	}
	p := &streamPosition{stream: st, epoch: epoch, set: set}
	if err := p.refresh(ctx); err != nil {
		return err
	}
	safego.Go(ctx, "app.stream_position", func(ctx context.Context) {
		t := time.NewTicker(positionInterval)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// A failure keeps the last position: stale is safe.
			err := p.refresh(ctx)
			if (err != nil) != failing {
				failing = err != nil
				if failing {
					logx.L().Warn("stream position unreadable; ready frames keep the last one", "err", err.Error())
				}
			}
		}
	})
	return nil
}

// refresh reads the stream's last sequence and, when it moved, rebuilds
// the shared ready frame.
func (p *streamPosition) refresh(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, positionInterval)
	defer cancel()
	info, err := p.stream.Info(rctx)
	if err != nil {
		return err
	}
	if seq := info.State.LastSeq; !p.known || seq != p.last {
		p.last, p.known = seq, true
		p.set(p.epoch, seq)
	}
	return nil
}
