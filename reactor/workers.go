package reactor

import (
	"context"

	"github.com/dws-gateway/dws/internal/safego"
)

// workers is the bounded pool that runs everything a handshake or a
// select_chat needs from the network (token cache, session lock, route
// registry), so no event loop ever waits on Redis (DESIGN invariant 1).
type workers struct {
	jobs chan func()
}

func newWorkers(n, queue int) *workers {
	w := &workers{jobs: make(chan func(), queue)}
	for i := 0; i < n; i++ {
		safego.Go(context.Background(), "reactor.worker", func(ctx context.Context) {
			for job := range w.jobs {
				safego.Run(ctx, "reactor.worker", job)
			}
		})
	}
	return w
}

// submit queues fn without blocking; false means the queue is full and the
// caller must answer "busy" itself. Safe for concurrent use.
func (w *workers) submit(fn func()) (ok bool) {
	defer func() {
		if recover() != nil { // queue closed during shutdown
			ok = false
		}
	}()
	select {
	case w.jobs <- fn:
		return true
	default:
		return false
	}
}

func (w *workers) stop() { close(w.jobs) }
