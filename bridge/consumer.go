package bridge

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dws-gateway/dws/internal/logx"
)

// reconnectWait is the pause between NATS reconnect attempts. Reconnects
// never stop (MaxReconnects -1): a pod without NATS is useless but its
// sockets are not, and the partition consumers keep their positions meanwhile.
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
