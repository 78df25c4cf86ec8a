// Package logx is dws logging: slog JSON lines carrying the request id found
// in the context, so one event can be followed across the consumer, the
// dispatcher and the pod it was forwarded to.
package logx

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
)

type ctxKey struct{}

// level is shared by every logger made here so SIGHUP can change it live.
var level = new(slog.LevelVar)

var base atomic.Pointer[slog.Logger]

func init() { base.Store(New(os.Stderr)) }

// New returns a JSON logger writing to w whose records carry the request id
// of the context they are logged with.
func New(w io.Writer) *slog.Logger {
	return slog.New(requestIDHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})})
}

// SetDefault replaces the process logger. Safe for concurrent use.
func SetDefault(l *slog.Logger) { base.Store(l); slog.SetDefault(l) }

// L returns the process logger.
func L() *slog.Logger { return base.Load() }

// From returns the process logger; records logged with it through the
// *Context methods, or directly via From, carry ctx's request id.
func From(ctx context.Context) *slog.Logger {
	if id := RequestID(ctx); id != "" {
		return base.Load().With(slog.String("request_id", id))
	}
	return base.Load()
}

// SetLevel parses "debug", "info", "warn" or "error" and applies it to every
// logger at once; it reports false for an unknown name.
func SetLevel(name string) bool {
	var l slog.Level
	switch strings.ToLower(name) {
	case "debug":
		l = slog.LevelDebug
	case "info", "":
		l = slog.LevelInfo
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return false
	}
	level.Set(l)
	return true
}

// WithRequestID returns ctx carrying id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// RequestID returns the request id carried by ctx, or "".
func RequestID(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// requestIDHandler adds request_id from the record's context when the
// logger was not already bound to one.
type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(a)}
}

func (h requestIDHandler) WithGroup(n string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(n)}
}
