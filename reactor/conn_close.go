package reactor

import (
	"strconv"
	"time"

	"github.com/dws-gateway/dws/codec"
)

// Ending a socket: the close handshake (RFC 6455 §5.5.1), errors sent
// before it, the cases that end a socket (replaced, failed, aborted) and
// the cleanup when gnet closes it. Methods of the socket, so the receiver
// says what they act on; all run on the socket's loop.

// cleanup runs once per socket, on its loop, when gnet closes it.
func (c *conn) cleanup() {
	s := c.lp.srv
	l := c.lp
	wasOpen := c.ident != nil && (c.state == stOpen || c.state == stClosing)
	c.state = stClosed
	delete(l.pending, c)
	delete(l.backlog, c)
	l.wheel.remove(c)
	l.dropRing(c)
	c.frag = nil
	if !wasOpen {
		return
	}
	chats := c.chatsRoute()
	l.leave(c, chats)
	s.opts.Routes.Leave(chats)
	if r, ok := c.messagesRoute(); ok {
		l.leave(c, r)
		s.opts.Routes.Leave(r)
	}
	if s.index.release(c.ident.sessionKey, c) {
		s.opts.Locker.Release(c.ident.sessionKey)
	}
	s.mx.active[c.kind].Dec()
	s.mx.duration[c.kind].Observe(c.since(time.Now()).Seconds())
}

// closeWith sends a close frame with code and closes the socket. On loop.
func (c *conn) closeWith(code uint16, reason string) {
	c.closeAfter(nil, code, reason)
}

// closeAfter closes the socket with code, its close frame preceded by the
// error frame e when e is not nil. Frames already queued on the ring leave
// first (a close is the last frame, RFC 6455 §5.5.1). The final error and
// close frames bypass the outbound budget: there is one pair per socket,
// and they tell the client why it is closed. On loop.
func (c *conn) closeAfter(e *codec.Error, code uint16, reason string) {
	s := c.lp.srv
	if c.state >= stClosing {
		return
	}
	if c.state == stOpen {
		c.lp.flushFinal(c)
	}
	c.state = stClosing
	var out []byte
	if e != nil {
		out = codec.AppendErrorFrame(out, e)
	}
	out = codec.AppendCloseFrame(out, code, reason)
	_, _ = c.gc.Write(out)
	_ = c.gc.Close()
	s.m.ProtocolCloses.WithLabelValues(strconv.Itoa(int(code))).Inc()
}

// failed ends a socket whose callback panicked with the answer its state
// allows: 500 InternalServerError during the handshake, close 1011 once
// open. On loop.
func (c *conn) failed() {
	s := c.lp.srv
	switch c.state {
	case stHandshake, stAuthenticating:
		s.reject(c, c.kind, codec.NewError(codec.CodeInternalServerError, "internal error"))
	case stOpen:
		c.closeWith(codec.CloseInternalError, "internal error")
	}
}

// abort drops a socket without a close frame (handshake never finished).
func (c *conn) abort() {
	if c.state >= stClosing {
		return
	}
	c.state = stClosing
	_ = c.gc.Close()
}

// replaced tells a socket its session moved elsewhere. On loop.
func (c *conn) replaced() {
	if c.state != stOpen {
		return
	}
	c.closeAfter(codec.NewError(codec.CodeSessionConflict, "session replaced by a newer connection"),
		codec.CloseSessionReplaced, "session-replaced")

}

// sendError queues an error frame on c's ring, within its outbound budget
// (SPEC §6); a client that does not read its errors becomes a slow
// consumer. The end of the loop turn flushes it. On loop.
func (c *conn) sendError(e *codec.Error) {
	s := c.lp.srv
	c.lp.pushControl(c, codec.AppendErrorFrame(nil, e), s.limits())
}
