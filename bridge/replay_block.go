package bridge

import (
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/session"
)

// The replay cache's blocks (replay_cache.go): consecutive stream
// sequences parsed once and indexed by subject, and the match of a
// socket's subjects against them.

// cachedMsg is one stored message, parsed once for every replay.
type cachedMsg struct {
	seq     uint64
	subject string
	route   session.Route // ParseSubject(subject), when routeOK
	routeOK bool
	valid   bool // ValidPayload(data)
	data    []byte
	// frame is the event's text frame with its seq, encoded once here
	// for every socket that replays it (DESIGN "encode once per event"):
	// a storm's sockets of one group replay the same ~100 events, and a
	// frame per socket made the storm's garbage (a GC cycle every
	// 150 ms, perf/resume-20261206.md). Nil when the event is dropped.
	frame     []byte
	requestID string
	published time.Time
}

func newCachedMsg(msg jetstream.Msg, md *jetstream.MsgMetadata) cachedMsg {
	data := msg.Data()
	m := cachedMsg{
		seq:       md.Sequence.Stream,
		subject:   msg.Subject(),
		valid:     ValidPayload(data),
		data:      data,
		requestID: requestID(msg),
		published: md.Timestamp,
	}
	m.route, m.routeOK = ParseSubject(m.subject)
	if m.valid && m.routeOK {
		m.frame = codec.EventFrameSeq(m.seq, data)
		// The payload is kept as a view of the frame, not as the NATS
		// message's buffer: the cache holds each event's bytes once (the
		// frame adds ~40 bytes of envelope to the payload), not twice.
		m.data = codec.EventFramePayload(m.frame, len(data))
	} else {
		m.data = nil // dropped on replay (event), never read
	}
	return m
}

// size is what m costs the cache: data is a view of frame, not counted
// twice.
func (m *cachedMsg) size() int {
	return len(m.subject) + len(m.frame) + len(m.requestID) + cacheMsgOverhead
}

// cacheBlock holds the messages of stream sequences [blockFirst(k),
// blockLast(k)] that exist, in seq order: every one with seq <= upto is
// in msgs. Immutable once built: an extension builds a new block.
type cacheBlock struct {
	k    uint64
	upto uint64
	msgs []cachedMsg
	// bySubject indexes msgs by subject; agents lists the messages on
	// websocket.*.*.agents (admin filters with a wildcard walk it).
	bySubject map[string][]int32
	agents    []int32
	bytes     int
}

func newCacheBlock(k, upto uint64, msgs []cachedMsg) *cacheBlock {
	b := &cacheBlock{k: k, upto: upto, msgs: msgs, bySubject: make(map[string][]int32, 16)}
	for i := range msgs {
		m := &msgs[i]
		b.bySubject[m.subject] = append(b.bySubject[m.subject], int32(i))
		if _, _, ok := agentsTokens(m.subject); ok {
			b.agents = append(b.agents, int32(i))
		}
		b.bytes += m.size()
	}
	return b
}

// agentsTokens splits websocket.{C}.{A}.agents, the subjects an admin
// filter with a wildcard matches.
func agentsTokens(subject string) (company, agent string, ok bool) {
	rest, ok := strings.CutPrefix(subject, subjectPrefix)
	if !ok {
		return "", "", false
	}
	company, rest, ok = strings.Cut(rest, ".")
	if !ok || company == "" {
		return "", "", false
	}
	agent, rest, ok = strings.Cut(rest, ".")
	if !ok || agent == "" || rest != "agents" {
		return "", "", false
	}
	return company, agent, true
}

// replayMatch selects a socket's events in a block, by the NATS subject
// rules of its replayFilters: exact subjects, or (admin with a wildcard)
// company and agent tokens, "*" matching any.
type replayMatch struct {
	subjects       []string
	wild           bool
	company, agent string
}

func newReplayMatch(filters []string) replayMatch {
	if len(filters) == 1 && strings.Contains(filters[0], "*") {
		c, a, _ := agentsTokens(filters[0])
		return replayMatch{wild: true, company: c, agent: a}
	}
	return replayMatch{subjects: filters}
}

// each calls fn with the block's messages matching m with since < seq <=
// last, in seq order, until fn returns false; it reports whether fn did not.
func (b *cacheBlock) each(m *replayMatch, since, last uint64, fn func(*cachedMsg) bool) bool {
	in := func(i int32) bool {
		s := b.msgs[i].seq
		return s > since && s <= last
	}
	if m.wild {
		for _, i := range b.agents {
			c, a, _ := agentsTokens(b.msgs[i].subject)
			if (m.company == "*" || m.company == c) && (m.agent == "*" || m.agent == a) && in(i) && !fn(&b.msgs[i]) {
				return false
			}
		}
		return true
	}
	// Merge the subjects' index lists (at most two: chats and a chat).
	var lists [2][]int32
	n := 0
	for _, s := range m.subjects {
		if l := b.bySubject[s]; len(l) > 0 {
			if n == len(lists) {
				return b.eachScan(m, since, last, fn)
			}
			lists[n] = l
			n++
		}
	}
	a, c := lists[0], lists[1]
	for len(a) > 0 || len(c) > 0 {
		var i int32
		if len(c) == 0 || (len(a) > 0 && a[0] < c[0]) {
			i, a = a[0], a[1:]
		} else {
			i, c = c[0], c[1:]
		}
		if in(i) && !fn(&b.msgs[i]) {
			return false
		}
	}
	return true
}

// eachScan is each for more than two exact subjects (none today).
func (b *cacheBlock) eachScan(m *replayMatch, since, last uint64, fn func(*cachedMsg) bool) bool {
	for i := range b.msgs {
		msg := &b.msgs[i]
		if msg.seq > since && msg.seq <= last && slices.Contains(m.subjects, msg.subject) && !fn(msg) {
			return false
		}
	}
	return true
}
