package app

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/dws-gateway/dws/reactor"
)

// lateReplayer lets the reactor, built before NATS is connected, serve
// resume (SPEC §5a) once the event path is up. Until then a resuming
// socket gets live events only (the reactor logs why).
type lateReplayer struct {
	r atomic.Pointer[reactor.Replayer]
}

var errNoStream = errors.New("resume: the event stream is not connected yet")

func (l *lateReplayer) set(r reactor.Replayer) { l.r.Store(&r) }

// Replay implements reactor.Replayer.
func (l *lateReplayer) Replay(ctx context.Context, req reactor.ReplayRequest, emit func([]reactor.ReplayEvent) bool) (string, error) {
	r := l.r.Load()
	if r == nil {
		return "", errNoStream
	}
	return (*r).Replay(ctx, req, emit)
}
