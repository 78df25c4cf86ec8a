package bridge

import (
	"strings"

	"github.com/dws-gateway/dws/session"
)

// Subject shapes of SPEC §5. The stream is created with exactly these
// patterns, so anything else on it is a publisher bug.
const (
	subjectPrefix = "websocket."
	// SubjectChats, SubjectMessages and SubjectAgents are the stream's
	// subject filters.
	SubjectChats    = "websocket.*.*.chats"
	SubjectMessages = "websocket.*.*.messages.*"
	SubjectAgents   = "websocket.*.*.agents"
)

// StreamSubjects are the subjects a stream created by dws carries.
var StreamSubjects = []string{SubjectChats, SubjectMessages, SubjectAgents}

// ParseSubject maps websocket.{C}.{A}.chats, websocket.{C}.{A}.messages.{X}
// and websocket.{C}.{A}.agents to the route whose sockets receive the event
// (agents → session.RouteAdmin filtered by Company/Agent). It reports false
// for any other shape, an empty token or a wildcard token. The route's
// strings are substrings of subject: no allocation.
func ParseSubject(subject string) (session.Route, bool) {
	rest, ok := strings.CutPrefix(subject, subjectPrefix)
	if !ok {
		return session.Route{}, false
	}
	company, rest, ok := cutToken(rest)
	if !ok {
		return session.Route{}, false
	}
	agent, rest, ok := cutToken(rest)
	if !ok {
		return session.Route{}, false
	}
	r := session.Route{Company: company, Agent: agent}
	switch {
	case rest == "chats":
		r.Kind = session.RouteChats
	case rest == "agents":
		r.Kind = session.RouteAdmin
	case strings.HasPrefix(rest, "messages."):
		chat := rest[len("messages."):]
		if !validToken(chat) || strings.IndexByte(chat, '.') >= 0 {
			return session.Route{}, false
		}
		r.Kind = session.RouteMessages
		r.Chat = chat
	default:
		return session.Route{}, false
	}
	return r, true
}

// Subject is the inverse of ParseSubject: the subject an event for r is
// published on. It reports false when r has a token a subject cannot carry.
func Subject(r session.Route) (string, bool) {
	if !validToken(r.Company) || !validToken(r.Agent) ||
		strings.IndexByte(r.Company, '.') >= 0 || strings.IndexByte(r.Agent, '.') >= 0 {
		return "", false
	}
	base := subjectPrefix + r.Company + "." + r.Agent + "."
	switch r.Kind {
	case session.RouteChats:
		return base + "chats", true
	case session.RouteAdmin:
		return base + "agents", true
	case session.RouteMessages:
		if !validToken(r.Chat) || strings.IndexByte(r.Chat, '.') >= 0 {
			return "", false
		}
		return base + "messages." + r.Chat, true
	}
	return "", false
}

// cutToken splits s at its first '.', requiring a valid non-empty token
// before it and something after it.
func cutToken(s string) (tok, rest string, ok bool) {
	i := strings.IndexByte(s, '.')
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	tok = s[:i]
	if !validToken(tok) {
		return "", "", false
	}
	return tok, s[i+1:], true
}

// validToken rejects empty tokens, the NATS wildcards and whitespace (which
// NATS treats as a subject separator in the protocol line).
func validToken(t string) bool {
	if t == "" || t == "*" || t == ">" {
		return false
	}
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case ' ', '\t', '\r', '\n':
			return false
		}
	}
	return true
}
