package reactor

import (
	"time"

	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/session"
)

// KeyChecker checks API keys in constant time; session.APIKeyGuard is one.
type KeyChecker interface {
	CheckUser(given string) bool
	CheckAdmin(given string) bool
}

// Limits are the per-socket bounds of DESIGN invariant 2 and the timings of
// SPEC §6. The hot-reloadable ones are read through Server.SetLimits.
type Limits struct {
	MaxHandshakeBytes    int
	HandshakeTimeout     time.Duration
	AllowedOrigins       []string
	PingInterval         time.Duration
	MaxMissedPongs       int
	MaxMessageBytes      int
	OutboundRingBytes    int
	OutboundRingMessages int
	SlowConsumerGrace    time.Duration
	MessagesPerSecond    float64
	MessageBurst         int
	// RateLimitCloseAfter consecutive over-limit frames close 4429.
	RateLimitCloseAfter int
	HandshakesPerIP     float64
	HandshakeBurst      int
	// HandshakePaceLag is the live events' wait in a loop past which new
	// handshakes are paced (pacer.go); 0 never paces. HandshakePaceMaxWait
	// bounds one handshake's wait there (and half HandshakeTimeout does).
	HandshakePaceLag     time.Duration
	HandshakePaceMaxWait time.Duration
}

// DefaultLimits are SPEC §6/§9 defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxHandshakeBytes:    8 << 10,
		HandshakeTimeout:     10 * time.Second,
		PingInterval:         20 * time.Second,
		MaxMissedPongs:       2,
		MaxMessageBytes:      64 << 10,
		OutboundRingBytes:    1 << 20,
		OutboundRingMessages: 1024,
		SlowConsumerGrace:    5 * time.Second,
		MessagesPerSecond:    10,
		MessageBurst:         20,
		RateLimitCloseAfter:  20,
		HandshakeBurst:       20,
		HandshakePaceLag:     defaultPaceLag,
		HandshakePaceMaxWait: defaultPaceMaxWait,
	}
}

// Options configure a Server.
type Options struct {
	// Addr is the WebSocket listener, e.g. ":8080".
	Addr string
	// Loops is the number of event loops; 0 = one per core.
	Loops int
	// Workers and WorkerQueue bound the handshake worker pool.
	Workers     int
	WorkerQueue int
	// Subprotocol is echoed when the client offers it ("json.v1").
	Subprotocol string
	Limits      Limits

	APIKeys KeyChecker
	Tokens  session.TokenValidator
	Locker  session.Locker
	Routes  session.Routes
	Metrics *metrics.Metrics

	// Replayer serves resume (SPEC §5a): a handshake with since= is
	// replayed what it missed. nil = since is validated and ignored.
	Replayer Replayer
	// ReplayWorkers is how many replays run at once (resume.max_concurrent);
	// the rest wait in a queue. Default 64.
	ReplayWorkers int
}
