package config

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
)

// Reload results passed to OnResult; they are the label values of
// dws_config_reloads_total{result}.
const (
	ResultOK       = "ok"
	ResultRejected = "rejected"
)

// Reloader re-reads the config file on demand or on SIGHUP, keeping the env
// and flag overrides of the original Load. Reload and Watch are safe for
// concurrent use; set the exported fields before either.
type Reloader struct {
	// OnResult, if set, is called after every reload with ResultOK or
	// ResultRejected (the caller counts dws_config_reloads_total).
	OnResult func(result string)
	// Log receives the "config reloaded" / "config reload rejected" line;
	// nil = logx.L().
	Log *slog.Logger

	file  string
	apply func(old, new *Config)

	// serial makes reloads one at a time; cur is separate so apply may
	// call Current without deadlocking.
	serial sync.Mutex
	cur    atomic.Pointer[Config]
}

// NewReloader returns a Reloader for file ("" = the file current was
// loaded from, or none). apply is called with the old and new config after
// each accepted reload, including one that changed nothing; it applies the
// hot keys (new is complete, but keys not marked hot take effect only after
// a restart).
func NewReloader(file string, current *Config, apply func(old, new *Config)) *Reloader {
	if file == "" {
		file = current.SourceFile()
	}
	r := &Reloader{file: file, apply: apply}
	r.cur.Store(current)
	return r
}

// Current returns the config of the last accepted reload (or the initial
// one). Treat it as read-only.
func (r *Reloader) Current() *Config {
	return r.cur.Load()
}

// Reload loads and validates the file with the original env and flags. An
// invalid file is rejected and logged ("config reload rejected") and the old
// config stays. Otherwise it logs one "config reloaded" line with the
// changed keys and those needing a restart, makes the new config current,
// calls apply and returns the changes.
func (r *Reloader) Reload() (Changes, error) {
	r.serial.Lock()
	defer r.serial.Unlock()
	old := r.cur.Load()
	o := &origin{file: r.file}
	if old.origin != nil {
		o.env, o.flags = old.origin.env, old.origin.flags
	} else {
		o.env = os.Environ()
	}
	next, err := load(o)
	if err == nil {
		keepDevKeys(old, next)
		err = next.Validate()
	}
	if err != nil {
		r.logger().Warn("config reload rejected", slog.String("file", r.file), slog.String("reason", err.Error()))
		r.result(ResultRejected)
		return nil, err
	}
	changes := Diff(old, next)
	attrs := append([]slog.Attr{slog.String("file", r.file)}, changes.Describe()...)
	r.logger().LogAttrs(context.Background(), slog.LevelInfo, "config reloaded", attrs...)
	r.cur.Store(next)
	if r.apply != nil {
		r.apply(old, next)
	}
	r.result(ResultOK)
	return changes, nil
}

// Watch reloads on every SIGHUP until ctx ends or stop is called. The
// handler is installed before Watch returns, so a SIGHUP sent right after
// is not lost (nor does it kill the process, SIGHUP's default). stop
// (idempotent) uninstalls it and waits for the watcher to exit; from then on SIGHUP has
// its default effect again unless someone else handles it.
func (r *Reloader) Watch(ctx context.Context) (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	safego.Go(ctx, "config.watch", func(ctx context.Context) {
		defer close(done)
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				// A panic in apply must not end the watcher: later SIGHUPs
				// would then kill the process.
				safego.Run(ctx, "config.reload", func() { _, _ = r.Reload() })
			}
		}
	})
	return func() { cancel(); <-done }
}

func (r *Reloader) logger() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return logx.L()
}

func (r *Reloader) result(s string) {
	if r.OnResult != nil {
		r.OnResult(s)
	}
}
