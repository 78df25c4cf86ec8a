package reactor

import (
	"context"

	"github.com/dws-gateway/dws/session"
)

// Resume after reconnect (SPEC §5a): a socket that comes back with
// since={seq} first gets, after ready, every event after since that it
// would have received, in seq order, then live events with no gap and no
// duplicate. The replay is read from the stream by a Replayer (the bridge
// implements it over JetStream), off the event loops.

// Resync reasons (SPEC §5a): the socket gets
// {"type":"resync","payload":{"reason":R}} and continues with live events.
const (
	// ResyncTooOld: since is older than the stream's first retained event
	// (or than resume.max_age).
	ResyncTooOld = "too_old"
	// ResyncEpochChanged: the client's epoch is not the stream's.
	ResyncEpochChanged = "epoch_changed"
	// ResyncTooMany: more than resume.max_events events would be replayed.
	ResyncTooMany = "too_many"
)

// ReplayRequest says what a resuming socket missed.
type ReplayRequest struct {
	// Admin is true for an admin socket: its agents events matching
	// Company/Agent (empty = all) are replayed; otherwise the chats of
	// (Company, Agent) and, when Chat is set, the messages of Chat.
	Admin   bool
	Company string
	Agent   string
	Chat    string
	// ChatOnly replays only the messages of Chat, not the chats: a
	// select_chat with since (the chats are already live).
	ChatOnly bool
	// Since is the last seq the client has; Epoch the epoch it had it in.
	Since uint64
	Epoch string
}

// ReplayEvent is one replayed event.
type ReplayEvent struct {
	Seq     uint64
	Route   session.Route // as Deliver would get it (admins: Company/Agent set)
	Payload []byte
	// Frame, when set, is the event's encoded text frame with its seq
	// (codec.EventFrameSeq), shared by every socket replaying the event
	// and never modified; nil: the reactor encodes Seq and Payload.
	Frame []byte
	Meta  Meta
}

// Replayer reads what a resuming socket missed (SPEC §5a). Replay calls
// emit with batches of events after req.Since matching req, in seq order,
// up to the stream's last event when the replay started; emit returns
// false when the socket is gone or cannot take more, and Replay then
// stops. emit keeps nothing of a batch once it returns: the Replayer may
// reuse the slice for the next one. It returns "" when the socket is caught up, or a Resync* reason
// (nothing emitted) when resume is impossible. It may block (it waits for
// a replay slot: resume.max_concurrent) and runs off the event loops; ctx
// ends it early.
type Replayer interface {
	Replay(ctx context.Context, req ReplayRequest, emit func([]ReplayEvent) bool) (resync string, err error)
}
