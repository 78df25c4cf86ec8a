// Package safego starts goroutines that survive their own panics.
//
// DESIGN invariant 4: every goroutine dws starts goes through here, so a bug
// in one worker is logged with its request id, counted, and never takes the
// process (and every socket on it) down.
package safego

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"

	"github.com/dws-gateway/dws/internal/logx"
)

// OnPanic is called after a recovered panic with the place it happened. The
// metrics layer sets it to bump dws_recovered_panics_total{where}; it must be
// safe for concurrent use.
var onPanic atomic.Pointer[func(where string)]

// SetPanicHook installs the function called (after logging) for every
// recovered panic. Safe for concurrent use.
func SetPanicHook(fn func(where string)) { onPanic.Store(&fn) }

// Go runs fn in a new goroutine; a panic in fn is recovered, logged with the
// request id carried by ctx and counted under where.
func Go(ctx context.Context, where string, fn func(ctx context.Context)) {
	go func() {
		defer Recover(ctx, where)
		fn(ctx)
	}()
}

// Run calls fn on the current goroutine with the same protection as Go and
// reports whether fn returned normally. Loops that must survive a bad item
// (dispatch workers, gnet callbacks) wrap each item in Run.
func Run(ctx context.Context, where string, fn func()) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			report(ctx, where, r)
			ok = false
		}
	}()
	fn()
	return true
}

// Recover is meant to be deferred directly: it recovers a panic, logs it and
// counts it.
func Recover(ctx context.Context, where string) {
	if r := recover(); r != nil {
		report(ctx, where, r)
	}
}

func report(ctx context.Context, where string, r any) {
	logx.From(ctx).Error("recovered panic",
		slog.String("where", where),
		slog.String("panic", fmt.Sprint(r)),
		slog.String("stack", string(debug.Stack())))
	if fn := onPanic.Load(); fn != nil {
		(*fn)(where)
	}
}
