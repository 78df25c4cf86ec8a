package bridge

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// infoGate shares stream info requests among replays: a replay waits for
// an info requested after it asked (its last seq must include every event
// the socket could have missed before it joined its routes), and every
// replay asking while one request is out shares the next. At most one
// request is out at a time: one round trip serves a storm's replays.
type infoGate struct {
	js   jetstream.JetStream
	name string

	mu      sync.Mutex
	running bool
	next    *infoFlight
}

type infoFlight struct {
	done chan struct{}
	s    jetstream.Stream
	info *jetstream.StreamInfo
	err  error
}

// get returns the stream and its info, requested after get was called.
func (g *infoGate) get(ctx context.Context) (jetstream.Stream, *jetstream.StreamInfo, error) {
	g.mu.Lock()
	f := g.next
	if f == nil {
		f = &infoFlight{done: make(chan struct{})}
		g.next = f
	}
	if !g.running {
		g.startLocked()
	}
	g.mu.Unlock()
	select {
	case <-f.done:
		return f.s, f.info, f.err
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

func (g *infoGate) startLocked() {
	f := g.next
	g.next, g.running = nil, true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := g.js.Stream(ctx, g.name)
		cancel()
		if err != nil {
			f.err = fmt.Errorf("stream %q: %w", g.name, err)
		} else {
			f.s, f.info = s, s.CachedInfo() // js.Stream has just fetched it
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		close(f.done)
		g.running = false
		if g.next != nil {
			g.startLocked()
		}
	}()
}
