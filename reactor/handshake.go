package reactor

import (
	"context"
	"net"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
	"unique"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/session"
)

// pathHealthz on the WebSocket port lets load balancers probe the reactor
// itself (SPEC §1).
const pathHealthz = "/healthz"

// errDraining answers upgrades during shutdown: SPEC §6 fixes its code
// (InternalServerError) and its status (503) although the table says 500.
var errDraining = codec.NewError(codec.CodeInternalServerError, "draining").WithDetails("this pod is shutting down; reconnect to another")

// maxIDLen bounds ids from the path and the query: they become parts of
// NATS subjects (company, agent) and Redis keys (all of them).
const maxIDLen = 128

// handshakeReq is what the loop learned from the request head and hands to
// a worker.
type handshakeReq struct {
	kind     session.Kind
	company  string
	agent    string
	user     string
	token    string
	key      string // Sec-WebSocket-Key
	protocol string // echoed sub-protocol, "" when not offered
	// Resume (SPEC §5a): since= and epoch= from the query, and chat_id=,
	// a chat selected from the start.
	resume bool
	since  uint64
	epoch  string
	chat   string
	// ready is the ready frame as it was before the routes were joined:
	// the stream position it names is no later than any event the socket
	// can miss while joining (SPEC §5a).
	ready []byte
}

// onHandshakeBytes parses the request head once it is complete and runs the
// cheap checks of SPEC §2 on the loop; token and lock go to a worker.
func (s *Server) onHandshakeBytes(c *conn) {
	lim := s.limits()
	buf, _ := c.gc.Peek(-1)
	req, n, err := codec.ParseRequest(buf, lim.MaxHandshakeBytes)
	switch {
	case err == codec.ErrHeadTooLarge:
		s.reject(c, session.KindUser, codec.NewError(codec.CodeHeaderTooLarge, "request head too large"))
		return
	case err != nil:
		s.reject(c, session.KindUser, codec.NewError(codec.CodeBadRequest, "malformed request"))
		return
	case n == 0:
		return // need more; the handshake timeout bounds the wait
	}
	_, _ = c.gc.Discard(n)

	if req.Path == pathHealthz && req.Method == "GET" && req.Upgrade == "" {
		_, _ = c.gc.Write(codec.AppendHTTPResponse(nil, 200, "application/json", []byte(`{"status":"ok"}`)))
		c.abort()
		return
	}
	hs, e := s.checkRequest(c, &req)
	if e != nil {
		kind := session.KindUser
		if hs != nil {
			kind = hs.kind
		}
		s.reject(c, kind, e)
		return
	}
	c.state = stAuthenticating
	c.kind = hs.kind
	if !s.pace.submit(func() { s.authenticate(c, hs) }) {
		s.reject(c, hs.kind, codec.NewError(codec.CodeServiceUnavailable, "server busy").WithDetails("handshake queue full"))
	}
}

// checkRequest applies SPEC §2 steps 1–6 in order. It returns the parsed
// handshake, or the error to answer with.
func (s *Server) checkRequest(c *conn, req *codec.Request) (*handshakeReq, *codec.Error) {
	hs := &handshakeReq{}
	// Step 1: path shape, method, upgrade headers.
	switch p := req.Path; {
	case p == "/ws/admin":
		hs.kind = session.KindAdmin
	case strings.HasPrefix(p, "/ws/"):
		parts := strings.Split(p[len("/ws/"):], "/")
		if len(parts) != 2 {
			return nil, codec.NewError(codec.CodeNotFound, "no such endpoint").WithDetails("expected /ws/{company}/{agent} or /ws/admin")
		}
		if !validID(parts[0]) || !validID(parts[1]) {
			return hs, codec.NewError(codec.CodeBadRequest, "invalid company or agent id in path")
		}
		hs.company, hs.agent = parts[0], parts[1]
	default:
		return nil, codec.NewError(codec.CodeNotFound, "no such endpoint").WithDetails("expected /ws/{company}/{agent} or /ws/admin")
	}
	if e := req.CheckUpgrade(); e != nil {
		return hs, e
	}
	if s.draining.Load() {
		return hs, errDraining
	}
	lim := s.limits()
	// Step 3: Origin.
	if len(lim.AllowedOrigins) > 0 && !originAllowed(lim.AllowedOrigins, req.Origin) {
		return hs, codec.NewError(codec.CodeForbidden, "origin not allowed")
	}
	// Step 4: API key (query or header).
	key := req.Query("x-api-key")
	if key == "" {
		key = req.APIKey
	}
	okKey := s.opts.APIKeys.CheckUser(key)
	if hs.kind == session.KindAdmin {
		okKey = s.opts.APIKeys.CheckAdmin(key)
	}
	if !okKey {
		s.m.AuthFailures.WithLabelValues(session.ReasonAPIKey).Inc()
		return hs, codec.NewError(codec.CodeInvalidAPIKey, "invalid API key")
	}
	// Step 5 (cheap part): token and user present.
	hs.token = req.Query("token")
	if hs.token == "" {
		s.m.AuthFailures.WithLabelValues(session.ReasonMissing).Inc()
		return hs, codec.NewError(codec.CodeInvalidToken, "invalid token").WithDetails(session.ReasonMissing)
	}
	if hs.kind == session.KindUser {
		hs.user = req.Query("user")
		if hs.user == "" {
			return hs, codec.NewError(codec.CodeBadRequest, "user query parameter is required")
		}
		if !validUserID(hs.user) {
			return hs, codec.NewError(codec.CodeBadRequest, "invalid user id").
				WithDetails("up to 128 bytes of printable characters, no spaces")
		}
	}
	if e := parseResume(req.Query, hs); e != nil {
		return hs, e
	}
	// Step 6: per-IP handshake rate.
	if !s.perIP.Load().allow(remoteIP(c)) {
		return hs, codec.NewError(codec.CodeRateLimitExceeded, "too many handshakes from this address")
	}
	hs.key = req.SecKey
	if s.opts.Subprotocol != "" && req.HasProtocol(s.opts.Subprotocol) {
		hs.protocol = s.opts.Subprotocol
	}
	return hs, nil
}

// authenticate runs on a worker: token (step 5), session lock (step 7),
// then the chats route, so the first event after `ready` is routed here.
func (s *Server) authenticate(c *conn, hs *handshakeReq) {
	ctx, cancel := context.WithTimeout(context.Background(), s.limits().HandshakeTimeout)
	defer cancel()
	var (
		id session.Identity
		e  *codec.Error
	)
	if hs.kind == session.KindAdmin {
		id, e = s.opts.Tokens.ValidateAdmin(ctx, hs.token)
	} else {
		id, e = s.opts.Tokens.ValidateUser(ctx, hs.token, hs.company, hs.agent, hs.user)
	}
	if e != nil {
		reason := e.Details
		if e.Code != codec.CodeInvalidToken || reason == "" {
			reason = "store_unavailable" // e.g. the replay store is down
		}
		s.m.AuthFailures.WithLabelValues(reason).Inc()
		s.finish(c, func() { s.reject(c, hs.kind, e) })
		return
	}
	key := id.SessionKey()
	acq, err := s.opts.Locker.Acquire(ctx, key)
	if err != nil {
		ce, ok := err.(*codec.Error)
		if !ok {
			ce = codec.NewError(codec.CodeServiceUnavailable, "session store unavailable")
		}
		if ce.Code == codec.CodeSessionConflict {
			s.m.SessionConflicts.WithLabelValues("unresolved").Inc()
		}
		s.finish(c, func() { s.reject(c, hs.kind, ce) })
		return
	}
	if acq.Takeover != session.TakeoverNone {
		s.m.SessionTakeovers.WithLabelValues(acq.Takeover.String()).Inc()
	}
	// Interned: thousands of sockets of one company share one copy.
	it := &ident{sessionKey: key, company: intern(id.CompanyID), agent: intern(id.AgentID),
		subCompany: intern(id.SubscribedCompanyID), subAgent: intern(id.SubscribedAgentID)}
	probe := conn{kind: hs.kind, ident: it}
	route := probe.chatsRoute()
	hs.ready = s.readyFrame()
	err = s.opts.Routes.Join(ctx, route)
	if err == nil && hs.chat != "" {
		// chat_id= pre-selects a chat: its route is in place before ready,
		// as the chats route is, so a replay hands over without a gap.
		it.chat = hs.chat
		msgs, _ := probe.messagesRoute()
		if err = s.opts.Routes.Join(ctx, msgs); err != nil {
			s.opts.Routes.Leave(route)
		}
	}
	if err != nil {
		if s.index.owner(key) == nil {
			s.opts.Locker.Release(key)
		}
		logx.L().Warn("route join failed", "err", err.Error())
		s.finish(c, func() {
			s.reject(c, hs.kind, codec.NewError(codec.CodeSubscriptionFailure, "could not register route"))
		})
		return
	}
	c.lp.postLane(laneOpen, func(ok bool) {
		if ok {
			s.open(c, hs, it, route)
		} else {
			s.abandon(it, route)
		}
	})
}

// finish runs a handshake's answer on c's loop, on the open lane: in a
// reconnect storm thousands of them are ready at once, and live events
// must not wait for all of them (lane.go).
func (s *Server) finish(c *conn, fn func()) {
	c.lp.postLane(laneOpen, func(ok bool) {
		if ok {
			fn()
		}
	})
}

// abandon undoes what authenticate took for a socket that will not open:
// its routes and, unless a newer socket holds it, its session lock.
func (s *Server) abandon(it *ident, route session.Route) {
	s.opts.Routes.Leave(route)
	if it.chat != "" {
		s.opts.Routes.Leave(session.Route{Kind: session.RouteMessages, Company: it.company, Agent: it.agent, Chat: it.chat})
	}
	if s.index.owner(it.sessionKey) == nil {
		s.opts.Locker.Release(it.sessionKey)
	}
}

// open finishes a handshake on the loop: 101, ready, index, timers.
func (s *Server) open(c *conn, hs *handshakeReq, it *ident, route session.Route) {
	if c.state != stAuthenticating {
		// The client left (or timed out) while we were authenticating.
		s.abandon(it, route)
		return
	}
	l := c.lp
	s.m.HandshakeDuration.Observe(c.since(time.Now()).Seconds())
	c.state = stOpen
	c.ident = it
	c.started = time.Now().UnixNano()
	delete(l.pending, c)
	l.join(c, route)
	if msgs, ok := c.messagesRoute(); ok {
		l.join(c, msgs)
	}
	resume := hs.resume && s.resume != nil
	if resume {
		// From here live frames wait until the replay is done.
		c.ident.replay, c.replaying = &replayState{}, true
	}
	if old := s.index.claim(it.sessionKey, c); old != nil && old != c {
		s.m.SessionConflicts.WithLabelValues("local").Inc()
		old.lp.exec(func() { old.replaced() })
	}
	l.schedulePing(c, time.Now())
	s.mx.active[c.kind].Inc()
	s.mx.accepted[c.kind].Inc()
	// Written last: once the client sees ready, Deliver must find it.
	out := codec.AppendUpgradeResponse(make([]byte, 0, 256), hs.key, hs.protocol)
	_, _ = c.gc.Writev([][]byte{out, hs.ready})
	if resume {
		s.resume.submit(resumeJob{c: c, req: replayRequest(c, hs.since, hs.epoch)})
	}
	if c.gc.InboundBuffered() > 0 {
		s.readFrames(c) // frames the client pipelined behind its handshake
	}
}

// reject answers a failed handshake with its HTTP status and JSON body and
// closes the socket. On loop.
func (s *Server) reject(c *conn, kind session.Kind, e *codec.Error) {
	if c.state >= stClosing {
		return
	}
	var extra []string
	if e.Code == codec.CodeUpgradeRequired {
		extra = append(extra, "Sec-WebSocket-Version: 13")
	}
	status := e.HTTPStatus()
	if e == errDraining {
		status = 503
	}
	_, _ = c.gc.Write(codec.AppendHTTPErrorStatus(nil, status, e, extra...))
	s.m.ConnectionsTotal.WithLabelValues(kind.String(), string(e.Code)).Inc()
	s.m.HandshakeDuration.Observe(c.since(time.Now()).Seconds())
	c.abort()
}

// validID accepts a company or agent id. Both become tokens of NATS
// subjects (websocket.{C}.{A}...) and parts of Redis keys, so the subject
// separators and wildcards ('.', '*', '>'), the key separator ':', '/',
// spaces and control bytes are refused.
func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case b <= ' ', b == '.', b == '*', b == '>', b == '/', b == ':', b == 0x7f:
			return false
		}
	}
	return true
}

// validUserID accepts a user id: up to maxIDLen bytes of valid UTF-8,
// printable and without spaces, so e-mail addresses ("ann.lee@example.com")
// and ids with ':' pass. A user id never reaches a NATS subject, and in the
// session key "{C}:{A}:{U}" it is the last part after a company and agent
// that cannot hold ':', so a ':' in it cannot be mistaken for a separator.
func validUserID(id string) bool {
	if id == "" || len(id) > maxIDLen || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if r == ' ' || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// originAllowed reports whether origin matches an entry of allowed
// (websocket.allowed_origins): "*" matches any origin; an entry whose host
// starts with "*." ("https://*.example.com") matches exactly one DNS label
// in that place, with the same scheme and port; any other entry matches
// the origin exactly, ignoring case.
func originAllowed(allowed []string, origin string) bool {
	for _, a := range allowed {
		if strings.Contains(a, "://*.") {
			if wildcardOriginMatch(a, origin) {
				return true
			}
			continue
		}
		if a == "*" || strings.EqualFold(a, origin) {
			return true
		}
	}
	return false
}

// wildcardOriginMatch matches origin against a "scheme://*.suffix[:port]"
// pattern: same scheme, same port (an absent port is the scheme's default),
// and a host that is one non-empty label followed by the suffix.
func wildcardOriginMatch(pattern, origin string) bool {
	ps, ph, pp, ok := splitOrigin(pattern)
	if !ok || !strings.HasPrefix(ph, "*.") {
		return false
	}
	osc, oh, op, ok := splitOrigin(origin)
	if !ok || !strings.EqualFold(ps, osc) || pp != op {
		return false
	}
	suffix := ph[1:] // ".example.com"
	if len(oh) <= len(suffix) || !strings.EqualFold(oh[len(oh)-len(suffix):], suffix) {
		return false
	}
	label := oh[:len(oh)-len(suffix)]
	return !strings.ContainsAny(label, ".*[]")
}

// splitOrigin splits a serialised origin "scheme://host[:port]" (RFC 6454
// §6.2: no path, no user info). An absent port is reported as the scheme's
// default, so "https://a.example.com" and "https://a.example.com:443" are
// the same origin.
func splitOrigin(s string) (scheme, host, port string, ok bool) {
	scheme, rest, found := strings.Cut(s, "://")
	if !found || scheme == "" || rest == "" || strings.ContainsAny(rest, "/?#@\\ ") {
		return "", "", "", false
	}
	host = rest
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		host, port = rest[:i], rest[i+1:]
		if port == "" {
			return "", "", "", false
		}
		for j := 0; j < len(port); j++ {
			if port[j] < '0' || port[j] > '9' {
				return "", "", "", false
			}
		}
	}
	if host == "" {
		return "", "", "", false
	}
	if port == "" {
		switch strings.ToLower(scheme) {
		case "https", "wss":
			port = "443"
		case "http", "ws":
			port = "80"
		}
	}
	return scheme, host, port, true
}

func remoteIP(c *conn) string {
	if a, ok := c.gc.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return ""
}

// intern returns the canonical copy of s (Go's unique package): ids repeat
// across sockets, and an idle socket should not carry its own copies.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}
