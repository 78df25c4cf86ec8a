package reactor

import (
	"context"
	"time"

	"github.com/gobwas/ws"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/session"
)

// readFrames parses every complete frame in the inbound buffer, then hands
// the pongs and error frames it queued to the kernel, one writev per
// socket. On loop.
func (s *Server) readFrames(c *conn) {
	s.parseFrames(c)
	if l := c.lp; len(l.dirty) > 0 {
		l.flushDirty()
	}
}

// parseFrames handles every complete frame in the inbound buffer, in place
// (Peek/Discard: the payload is unmasked where it lies). An incomplete frame
// stays in the buffer for the next read. On loop.
func (s *Server) parseFrames(c *conn) {
	lim := s.limits()
	// One clock read per read: frames that arrived together share it.
	var now uint32
	if lim.MessagesPerSecond > 0 {
		now = s.millis(time.Now())
	}
	for c.state == stOpen {
		buf, _ := c.gc.Peek(-1)
		if len(buf) == 0 {
			return
		}
		h, n, err := codec.DecodeHeader(buf)
		if err != nil {
			c.closeWith(codec.CloseProtocolError, "bad frame header")
			return
		}
		if n == 0 {
			return
		}
		if err := codec.CheckClientHeader(h, int64(lim.MaxMessageBytes)); err != nil {
			s.closeForError(c, err)
			return
		}
		total := n + int(h.Length)
		if len(buf) < total {
			return
		}
		payload := buf[n:total]
		codec.Unmask(payload, h.Mask, 0)
		s.onFrame(c, h, payload, lim, now)
		_, _ = c.gc.Discard(total)
	}
}

// closeForError maps a codec error to its close code (SPEC §6).
func (s *Server) closeForError(c *conn, err error) {
	switch err {
	case codec.ErrTooBig:
		c.closeWith(codec.CloseMessageTooBig, "message too big")
	case codec.ErrInvalidUTF8:
		c.closeWith(codec.CloseInvalidPayload, "invalid UTF-8")
	default:
		c.closeWith(codec.CloseProtocolError, "protocol error")
	}
}

// onFrame handles one unmasked frame that arrived at now (Server.millis).
// payload is valid only during the call.
func (s *Server) onFrame(c *conn, h ws.Header, payload []byte, lim *Limits, now uint32) {
	// SPEC §6: every frame counts against the socket's bucket, control
	// frames and fragments included, so pings cannot flood the loop for
	// free. A close is honoured whatever the bucket says: it ends the socket.
	allowed := h.OpCode == ws.OpClose || s.allowFrame(c, lim, now)
	if c.state != stOpen {
		return // closed 4429 by the bucket
	}
	switch h.OpCode {
	case ws.OpPing:
		if allowed {
			// RFC 6455 §5.5.3: a pong carries the ping's application
			// data. Queued on the ring like an event, so a client that
			// pings without reading is a slow consumer, not a leak.
			c.lp.pushControl(c, pongFrame(payload), lim)
		}
		return
	case ws.OpPong:
		if allowed {
			c.missed = 0
		}
		return
	case ws.OpClose:
		code, _, err := codec.ParseClosePayload(payload)
		if err != nil {
			s.closeForError(c, err)
			return
		}
		// RFC 6455 §5.5.1: echo the close, then the server closes TCP.
		if code == codec.CloseNoStatus {
			code = codec.CloseNormal
		}
		c.closeWith(code, "")
		return
	}
	if err := codec.CheckSequence(c.frag != nil, h.OpCode); err != nil {
		s.closeForError(c, err)
		return
	}
	op := h.OpCode
	if op == ws.OpContinuation {
		f := c.frag
		op = ws.OpCode(f.op)
		if len(f.buf)+len(payload) > lim.MaxMessageBytes {
			c.closeWith(codec.CloseMessageTooBig, "message too big")
			return
		}
		// A fragment over the rate drops its whole message, but the
		// message is still followed to its final frame so the sequence
		// rules of RFC 6455 §5.4 keep holding.
		f.limited = f.limited || !allowed
		f.buf = append(f.buf, payload...)
		if op == ws.OpText && !f.utf8.Write(payload) {
			s.closeForError(c, codec.ErrInvalidUTF8)
			return
		}
		if !h.Fin {
			return
		}
		if op == ws.OpText && !f.utf8.Valid() {
			s.closeForError(c, codec.ErrInvalidUTF8)
			return
		}
		c.frag = nil
		if !f.limited {
			s.onMessage(c, op, f.buf)
		}
		return
	}
	if !h.Fin {
		// RFC 6455 §5.4: the first fragment; copy it, the buffer moves on.
		f := &reassembly{op: byte(op), limited: !allowed, buf: append(make([]byte, 0, len(payload)*2), payload...)}
		c.frag = f
		if op == ws.OpText && !f.utf8.Write(payload) {
			s.closeForError(c, codec.ErrInvalidUTF8)
		}
		return
	}
	if !allowed {
		return // answered with RateLimitExceeded; never interpreted
	}
	if op == ws.OpText && !codec.ValidUTF8(payload) {
		s.closeForError(c, codec.ErrInvalidUTF8)
		return
	}
	s.onMessage(c, op, payload)
}

// emptyPong answers the common empty ping without an allocation; shared by
// every socket, never modified.
var emptyPong = codec.AppendFrame(nil, ws.OpPong, nil)

// pongFrame returns the pong for a ping carrying payload. A ping's payload
// lives in the inbound buffer, so a non-empty pong gets its own copy.
func pongFrame(payload []byte) []byte {
	if len(payload) == 0 {
		return emptyPong
	}
	return codec.AppendFrame(make([]byte, 0, 2+len(payload)), ws.OpPong, payload)
}

// onMessage handles a complete data message within the rate: json.v1.
func (s *Server) onMessage(c *conn, op ws.OpCode, msg []byte) {
	if op != ws.OpText {
		c.sendError(codec.NewError(codec.CodeBadRequest, "binary frames are not supported").WithDetails("send json.v1 text frames"))
		return
	}
	m, e := codec.DecodeClientMessage(msg)
	if e != nil {
		c.sendError(e)
		return
	}
	if m.Type == codec.TypeSelectChat {
		s.selectChat(c, m)
	}
}

// rateLimitedFrame is the RateLimitExceeded error frame, encoded once and
// shared: a client over its rate must not cost an encode per frame.
var rateLimitedFrame = codec.AppendErrorFrame(nil, codec.NewError(codec.CodeRateLimitExceeded, "too many frames"))

// allowFrame is the per-socket token bucket of SPEC §6, taken by every
// inbound frame: over the rate an error frame, sustained excess (
// RateLimitCloseAfter frames over the rate in a row) a 4429 close.
func (s *Server) allowFrame(c *conn, lim *Limits, now uint32) bool {
	if lim.MessagesPerSecond <= 0 {
		return true
	}
	if c.bucket.allow(now, lim.MessagesPerSecond, lim.MessageBurst) {
		c.overLimit = 0
		return true
	}
	if c.overLimit < ^uint16(0) {
		c.overLimit++
	}
	s.m.RateLimitedFrames.Inc()
	if int(c.overLimit) >= lim.RateLimitCloseAfter {
		s.m.RateLimitCloses.Inc()
		c.closeWith(codec.CloseRateLimited, "rate limit exceeded")
		return false
	}
	c.lp.pushControl(c, rateLimitedFrame, lim)
	return false
}

// selectChat moves the socket's message route to chat (SPEC §5). The chats
// route stays. The registry call runs on a worker; a newer select_chat
// supersedes an older one still in flight.
func (s *Server) selectChat(c *conn, m codec.ClientMessage) {
	chat := m.ChatID
	if c.kind == session.KindAdmin {
		c.sendError(codec.NewError(codec.CodeBadRequest, "select_chat is for user sockets"))
		return
	}
	if c.ident.chat == chat {
		// Already selected. A select of another chat still joining is
		// superseded (X, Y, X ends on X, not on Y); only a since asks for
		// something more, the chat's messages after it again (a client
		// rebuilding its view).
		c.selectSeq++
		if m.HasSince {
			s.replayChat(c, chat, m.Since)
		}
		return
	}
	c.selectSeq++
	seq := c.selectSeq
	r := session.Route{Kind: session.RouteMessages, Company: c.ident.company, Agent: c.ident.agent, Chat: chat}
	ok := s.work.submit(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.opts.Routes.Join(ctx, r)
		cancel()
		c.lp.exec(func() { s.selected(c, r, seq, err, m) })
	})
	if !ok {
		c.sendError(codec.NewError(codec.CodeSubscriptionFailure, "server busy, retry select_chat"))
	}
}

// selected applies a finished select_chat on the loop.
func (s *Server) selected(c *conn, r session.Route, seq uint32, err error, m codec.ClientMessage) {
	if err != nil {
		if c.state == stOpen && c.selectSeq == seq {
			c.sendError(codec.NewError(codec.CodeSubscriptionFailure, "could not subscribe to chat"))
		}
		return
	}
	if c.state != stOpen || c.selectSeq != seq {
		s.opts.Routes.Leave(r) // superseded or gone
		return
	}
	if old, ok := c.messagesRoute(); ok {
		c.lp.leave(c, old)
		s.opts.Routes.Leave(old)
	}
	c.ident.chat = r.Chat
	// A new subscription: the old chat's last seq says nothing about it.
	c.ident.seqs.messages = 0
	c.lp.join(c, r)
	if m.HasSince {
		s.replayChat(c, r.Chat, m.Since)
	}
}

// replayChat replays the messages of c's selected chat after since before
// its live ones (select_chat with "since", SPEC §5a). While another replay
// of this socket runs, the chat is live only. On loop.
func (s *Server) replayChat(c *conn, chat string, since uint64) {
	if s.resume == nil || c.ident.replay != nil {
		return
	}
	// The client asked for what came after since, even what this socket
	// already had: the seq rule lets it through once more.
	c.ident.seqs.messages = min(c.ident.seqs.messages, since)
	c.ident.replay, c.replaying = &replayState{}, true
	s.resume.submit(resumeJob{c: c, req: ReplayRequest{Company: c.ident.company, Agent: c.ident.agent,
		Chat: chat, ChatOnly: true, Since: since}})
}
