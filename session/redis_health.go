package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/logx"
)

// On-store-down policies (config session.on_store_down).
const (
	// OnStoreDownAcceptLocal accepts new sockets with local-only
	// enforcement while Redis is unreachable.
	OnStoreDownAcceptLocal = "accept_local"
	// OnStoreDownReject answers new sockets 503 while Redis is unreachable.
	OnStoreDownReject = "reject"
)

// errStoreDown is what a store answers without a round trip while Redis
// is known to be unreachable.
var errStoreDown = errors.New("session store unavailable")

// isHealthy reports whether Redis is reachable and every owned key has been
// re-asserted since the last outage (see RedisStores.Healthy).
func (c *redisCore) isHealthy() bool { return c.healthy.Load() }

// fail records a failed Redis operation: it is counted under op and, when
// it means Redis is unreachable, the store degrades (SPEC §4, issue 3 §6).
// It reports whether err was an outage.
func (c *redisCore) fail(ctx context.Context, op string, err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return false
	}
	if ctx.Err() != nil {
		// The caller's own context ended (a handshake deadline, Close):
		// not Redis's fault. Our per-operation timeout is a child context,
		// so its expiry still counts below.
		return false
	}
	c.m.RedisErrors.WithLabelValues(op).Inc()
	if !isOutage(err) {
		logx.From(ctx).Error("redis operation failed", slog.String("op", op), slog.String("error", movedHint(err).Error()))
		return false
	}
	c.setHealthy(ctx, false, op, err)
	return true
}

// setHealthy flips the degraded state, logging each change once
// (issue 3 §6); going down wakes the refresher to probe.
func (c *redisCore) setHealthy(ctx context.Context, up bool, op string, err error) {
	if c.healthy.Swap(up) == up {
		return
	}
	if up {
		// Only the refresher brings the store up, after it re-asserted
		// every owned key: nothing left to wake it for.
		c.m.Degraded.Set(0)
		logx.From(ctx).Warn("session store reachable again; owned keys re-asserted",
			slog.String("pod_id", c.opt.PodID))
		return
	}
	c.m.Degraded.Set(1)
	logx.From(ctx).Warn("session store unreachable; degraded mode",
		slog.String("pod_id", c.opt.PodID), slog.String("op", op),
		slog.String("error", err.Error()), slog.String("on_store_down", c.onStoreDown()))
	c.wake()
}

// wake asks the refresher for a round now.
func (c *redisCore) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// requestFull makes the refresher's next round re-assert every owned key
// and runs it now (a missed kill notice, a recovery).
func (c *redisCore) requestFull() {
	c.needFull.Store(true)
	c.wake()
}

// isOutage tells "Redis is unreachable or not serving" from a bug (a script
// error, a wrong type): only the former degrades the store.
func isOutage(err error) bool {
	var ne net.Error
	switch {
	case errors.As(err, &ne),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout),
		redis.IsLoadingError(err), redis.IsReadOnlyError(err),
		redis.IsClusterDownError(err), redis.IsTryAgainError(err),
		redis.IsMasterDownError(err), redis.IsMaxClientsError(err):
		return true
	}
	return false
}

// onStoreDown is session.on_store_down as last set (setOnStoreDown).
func (c *redisCore) onStoreDown() string {
	if v, ok := c.storeDown.Load().(string); ok {
		return v
	}
	return c.opt.OnStoreDown
}

// setOnStoreDown changes session.on_store_down on a running store:
// reject or accept_local; anything else means accept_local.
func (c *redisCore) setOnStoreDown(mode string) {
	if mode != OnStoreDownReject {
		mode = OnStoreDownAcceptLocal
	}
	c.storeDown.Store(mode)
}
