package bridge

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/logx"
)

// reconnectWait is the pause between NATS reconnect attempts. Reconnects
// never stop (MaxReconnects -1): a pod without NATS is useless but its
// sockets are not, and the durable consumer keeps the position meanwhile.
const reconnectWait = 250 * time.Millisecond

// Connect dials NATS at url (comma-separated URLs are a cluster) for a pod
// named name, reconnecting forever and logging disconnects and reconnects.
func Connect(url, name string) (*nats.Conn, error) {
	return nats.Connect(url,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logx.L().Warn("nats disconnected", "err", err.Error())
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			logx.L().Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			logx.L().Warn("nats async error", "subject", subj, "err", err.Error())
		}),
	)
}

// consume starts the shared durable pull consumer feeding d. Consume keeps
// up to fetchBatch messages requested ahead (PullMaxMessages) and re-issues
// its pull after a reconnect, so a NATS restart costs a pause, not the
// position: that lives on the server with the durable consumer. Pull beat
// push with a queue group in perf/fanout-consumer.md.
func consume(ctx context.Context, c jetstream.Consumer, d *dispatcher, fetchBatch int) (jetstream.ConsumeContext, error) {
	if fetchBatch <= 0 {
		fetchBatch = 256
	}
	return c.Consume(d.enqueue,
		jetstream.PullMaxMessages(fetchBatch),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				logx.From(ctx).Error("consumer gone; this pod receives no events until restarted", "err", err.Error())
				return
			}
			logx.From(ctx).Warn("consume", "err", err.Error())
		}),
	)
}
