package reactor

import (
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/session"
)

// state is a connection's place in its life: handshake → authenticating →
// open → closing. Only the owning loop reads or writes it.
type state uint8

const (
	stHandshake state = iota
	stAuthenticating
	stOpen
	stClosing
	stClosed
)

// conn is everything dws keeps per socket. It is touched only on its event
// loop, so it needs no locks; other goroutines reach it through loop.exec.
// Kept small on purpose: an idle socket costs this struct, its peer's index
// entries and nothing else (no goroutine, no buffer: the ring and the
// reassembly buffer are allocated only while in use).
type conn struct {
	gc gnet.Conn
	lp *loop

	state   state
	kind    session.Kind
	missed  uint8 // pings sent since the last pong
	evicted bool  // closed because another socket took the session over
	wheel   int32 // timer-wheel slot, -1 when not on the wheel
	due     int64 // timer-wheel deadline, wheel ticks (wheelTick)
	prev    *conn // timer-wheel list links
	next    *conn

	pos     [2]int32 // index in the loop's member lists (see slot)
	started int64    // unix nanos: first byte (handshake), then open time
	ident   *ident

	// Outbound ring (DESIGN invariant 2): frames shared with other sockets,
	// queued by reference until the kernel takes them.
	ring      [][]byte
	ringBytes int
	slowSince int64 // unix nanos when the ring first overflowed; 0 = healthy

	// Inbound reassembly of a fragmented message (RFC 6455 §5.4); nil
	// unless one is in progress, so idle sockets do not carry it.
	frag *reassembly

	bucket    frameBucket // inbound rate (SPEC §6), every frame counts
	overLimit uint16      // consecutive over-limit frames
	// replaying mirrors ident.replay != nil, so the fan-out loop need not
	// load each socket's ident to learn it (it fits in padding).
	replaying bool
	selectSeq uint32 // latest select_chat, to drop stale completions
}

// reassembly holds a fragmented message until its final frame.
type reassembly struct {
	buf     []byte
	op      byte // the first frame's opcode
	limited bool // a fragment was over the rate: drop the message at its end
	utf8    codec.UTF8Validator
}

// since returns how long ago the socket's clock started.
func (c *conn) since(now time.Time) time.Duration {
	return time.Duration(now.UnixNano() - c.started)
}

// ident is what the handshake established; immutable once open except chat.
type ident struct {
	sessionKey string
	company    string
	agent      string
	chat       string // selected chat, "" = none
	// admin subscription filter (SPEC §5): empty = all.
	subCompany string
	subAgent   string
	// Last seq written per subscription (SPEC §5 exactly-once): 16 bytes
	// for a user; an admin's per-pair table is allocated on its first
	// sequenced event, so admins that see none carry nothing.
	seqs      userSeqs
	adminSeqs *adminSeqs
	// replay is set while the socket catches up after a reconnect (SPEC
	// §5a): live frames wait in it. nil otherwise. Here, not in conn, so
	// an idle socket does not pay for it.
	replay *replayState
}

// chatsRoute is the route every open socket sits on.
func (c *conn) chatsRoute() session.Route {
	if c.kind == session.KindAdmin {
		return session.Route{Kind: session.RouteAdmin}
	}
	return session.Route{Kind: session.RouteChats, Company: c.ident.company, Agent: c.ident.agent}
}

// messagesRoute is the socket's selected-chat route; ok is false when none.
func (c *conn) messagesRoute() (r session.Route, ok bool) {
	if c.ident == nil || c.ident.chat == "" {
		return r, false
	}
	return session.Route{Kind: session.RouteMessages, Company: c.ident.company, Agent: c.ident.agent, Chat: c.ident.chat}, true
}

// admit applies the socket's exactly-once rule to an event of kind k with
// sequence seq (pair is the admin table key of its company and agent):
// false when the socket already wrote that seq or a newer one on the same
// subscription. On loop.
func (c *conn) admit(k session.RouteKind, pair, seq uint64) bool {
	if seq == 0 {
		return true
	}
	it := c.ident
	switch k {
	case session.RouteChats:
		return admitSeq(&it.seqs.chats, seq)
	case session.RouteMessages:
		return admitSeq(&it.seqs.messages, seq)
	default:
		if it.adminSeqs == nil {
			it.adminSeqs = new(adminSeqs)
		}
		return it.adminSeqs.admit(pair, seq)
	}
}

// wants reports whether an admin event for company/agent passes this admin
// socket's subscription (SPEC §5: empty = all).
func (c *conn) wants(r session.Route) bool {
	if r.Kind != session.RouteAdmin {
		return true
	}
	return (c.ident.subCompany == "" || c.ident.subCompany == r.Company) &&
		(c.ident.subAgent == "" || c.ident.subAgent == r.Agent)
}
