package client

import (
	"bytes"
	"time"
)

// Event is a {"type":"event"} frame as a Handler sees it.
type Event struct {
	// Payload is the whole text frame, envelope included. It aliases the
	// loop's read buffer: valid only during the Handler call.
	Payload []byte
	// Seq and TS are row_data.seq and row_data.ts (unix nanoseconds at
	// publish) of the bench's own events; -1 and 0 when absent.
	Seq, TS int64
	// Subject is row_data.subject, aliasing Payload; nil when absent.
	Subject []byte
	// Latency is receipt time minus TS; 0 when TS is absent.
	Latency time.Duration
	// Phase is row_data.phase, the step of a scenario the publisher was in
	// (so late frames are charged to the step that caused them); 0 when
	// absent.
	Phase int64
	// ServerSeq is the envelope's "seq" (the event's sequence in the
	// stream, SPEC §5); 0 from a server that sends none.
	ServerSeq int64
}

// The json.v1 envelopes as dws writes them (codec/envelope.go); a contains
// check covers a server that formats them differently.
var (
	readyFrame  = []byte(`{"type":"ready"}`)
	readyType   = []byte(`"type":"ready"`)
	eventPrefix = []byte(`{"type":"event"`)
	eventType   = []byte(`"type":"event"`)
	errorPrefix = []byte(`{"type":"error"`)
	errorType   = []byte(`"type":"error"`)

	seqKey     = []byte(`"seq":`)
	tsKey      = []byte(`"ts":`)
	subjectKey = []byte(`"subject":"`)
	phaseKey   = []byte(`"phase":`)
	payloadKey = []byte(`"payload":`)
)

func isReady(p []byte) bool {
	return bytes.Equal(p, readyFrame) || bytes.Contains(p, readyType)
}

func isEvent(p []byte) bool {
	return bytes.HasPrefix(p, eventPrefix) || bytes.Contains(p, eventType)
}

func isError(p []byte) bool {
	return bytes.HasPrefix(p, errorPrefix) || bytes.Contains(p, errorType)
}

// scanEvent fills ev's Seq, TS and Subject from the payload's row_data
// fields without decoding the JSON: the bench publishes these keys once each,
// so a byte search is exact for its own events and costs no allocation.
//
// The envelope's own "seq" precedes "payload" (codec.AppendEventSeq), so
// the row_data keys are searched after it and the envelope's before it.
func scanEvent(p []byte, ev *Event) {
	ev.Payload = p
	ev.ServerSeq = 0
	if i := bytes.Index(p, payloadKey); i >= 0 {
		ev.ServerSeq = intAfter(p[:i], seqKey, 0)
		p = p[i:]
	}
	ev.Seq = intAfter(p, seqKey, -1)
	ev.TS = intAfter(p, tsKey, 0)
	ev.Phase = intAfter(p, phaseKey, 0)
	ev.Subject = nil
	if i := bytes.Index(p, subjectKey); i >= 0 {
		s := p[i+len(subjectKey):]
		if j := bytes.IndexByte(s, '"'); j >= 0 {
			ev.Subject = s[:j]
		}
	}
}

// intAfter parses the non-negative decimal integer following key in p, or
// returns def.
func intAfter(p, key []byte, def int64) int64 {
	i := bytes.Index(p, key)
	if i < 0 {
		return def
	}
	p = p[i+len(key):]
	for len(p) > 0 && p[0] == ' ' {
		p = p[1:]
	}
	var v int64
	n := 0
	for ; n < len(p) && n < 19 && p[n] >= '0' && p[n] <= '9'; n++ {
		v = v*10 + int64(p[n]-'0')
	}
	if n == 0 {
		return def
	}
	return v
}
