package codec

import (
	"strconv"

	"github.com/gobwas/ws"
)

// The json.v1 envelopes (SPEC §2, §5, §7) are written by hand: their shape is
// fixed and event payloads must pass through byte for byte.
const (
	readyJSON   = `{"type":"ready"}`
	eventPrefix = `{"type":"event","payload":`
	// eventSeqPrefix and eventSeqMid frame the seq field (SPEC §5):
	// {"type":"event","seq":N,"payload":...}. seq comes first so a client
	// reading the frame sees it before a large payload.
	eventSeqPrefix = `{"type":"event","seq":`
	eventSeqMid    = `,"payload":`
	readyEpochPre  = `{"type":"ready","epoch":`
	errorPrefix    = `{"type":"error","payload":`
	envelopeEnd    = `}`
)

// ReadyFrame is the complete server text frame carrying {"type":"ready"},
// sent right after the 101 (SPEC §2). It is shared: do not modify it.
var ReadyFrame = AppendFrame(nil, ws.OpText, []byte(readyJSON))

// ReadyFrameEpoch returns the ready frame naming the stream's epoch (SPEC
// §5): {"type":"ready","epoch":"E"}. An empty epoch gives ReadyFrame. Build
// it once per epoch and share it: do not modify the result.
func ReadyFrameEpoch(epoch string) []byte {
	if epoch == "" {
		return ReadyFrame
	}
	body := appendJSONString([]byte(readyEpochPre), epoch)
	body = append(body, envelopeEnd...)
	return AppendFrame(nil, ws.OpText, body)
}

// ReadyFrameAt returns the ready frame naming the stream's epoch and its
// last sequence number as the socket opened:
// {"type":"ready","epoch":"E","seq":N}. Every event after N reaches the
// socket, live or by resume, so a client that drops before its first event
// still has a since to come back with (SPEC §5a). Build it once per
// position and share it: do not modify the result.
func ReadyFrameAt(epoch string, seq uint64) []byte {
	if epoch == "" {
		return ReadyFrame
	}
	body := appendJSONString([]byte(readyEpochPre), epoch)
	body = append(body, `,"seq":`...)
	body = strconv.AppendUint(body, seq, 10)
	body = append(body, envelopeEnd...)
	return AppendFrame(nil, ws.OpText, body)
}

// AppendEvent appends {"type":"event","payload":<payload>} (SPEC §5). The
// payload is already JSON and is passed through byte for byte, never
// re-encoded or validated; an empty payload is written as null so the
// envelope stays valid JSON.
func AppendEvent(dst []byte, payload []byte) []byte {
	dst = append(dst, eventPrefix...)
	if len(payload) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, payload...)
	}
	return append(dst, envelopeEnd...)
}

// AppendEventSeq appends {"type":"event","seq":N,"payload":<payload>}
// (SPEC §5): N is the event's sequence in nats.stream. seq 0 means "not
// known" and writes AppendEvent's shape without the field.
func AppendEventSeq(dst []byte, seq uint64, payload []byte) []byte {
	if seq == 0 {
		return AppendEvent(dst, payload)
	}
	dst = append(dst, eventSeqPrefix...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, eventSeqMid...)
	if len(payload) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, payload...)
	}
	return append(dst, envelopeEnd...)
}

// eventSeqLen is len(AppendEventSeq(nil, seq, payload)).
func eventSeqLen(seq uint64, payload []byte) int {
	if seq == 0 {
		return eventLen(payload)
	}
	n := len(payload)
	if n == 0 {
		n = len("null")
	}
	return len(eventSeqPrefix) + digits(seq) + len(eventSeqMid) + n + len(envelopeEnd)
}

func digits(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// eventLen is len(AppendEvent(nil, payload)).
func eventLen(payload []byte) int {
	n := len(payload)
	if n == 0 {
		n = len("null")
	}
	return len(eventPrefix) + n + len(envelopeEnd)
}

// EventFrame returns one complete unmasked text frame carrying
// AppendEvent(payload), in a single freshly allocated slice of exactly its
// size. This is the frame the dispatcher encodes once per event and shares
// among all receiving sockets (DESIGN invariant 3): server frames are not
// masked (RFC 6455 §5.1), so the same bytes serve every socket. Treat the
// result as read-only.
func EventFrame(payload []byte) []byte { return EventFrameSeq(0, payload) }

// EventFrameSeq is EventFrame with the event's seq (AppendEventSeq): one
// exact-size allocation, shared read-only by every receiving socket.
func EventFrameSeq(seq uint64, payload []byte) []byte {
	m := eventSeqLen(seq, payload)
	f := make([]byte, 0, HeaderLen(m)+m)
	f = AppendHeader(f, ws.OpText, true, m)
	return AppendEventSeq(f, seq, payload)
}

// EventFramePayload returns the payload inside a frame EventFrameSeq (or
// EventFrame) built from a payload of n bytes: a view of the frame, capped
// so an append cannot write into it. A cache that keeps the frame can keep
// the payload this way instead of a second copy. n = 0 gives an empty
// slice (the frame says null).
func EventFramePayload(frame []byte, n int) []byte {
	end := len(frame) - len(envelopeEnd)
	if n == 0 {
		return frame[end:end:end]
	}
	return frame[end-n : end : end]
}

// AppendErrorEnvelope appends {"type":"error","payload":{"code":..,
// "message":..,"details":..}} (SPEC §7).
func AppendErrorEnvelope(dst []byte, e *Error) []byte {
	dst = append(dst, errorPrefix...)
	dst = e.AppendJSON(dst)
	return append(dst, envelopeEnd...)
}

// AppendErrorFrame appends a complete unmasked text frame carrying
// AppendErrorEnvelope(e).
func AppendErrorFrame(dst []byte, e *Error) []byte {
	// The envelope's length is known only once it is written: write it
	// after room for the largest header, then move it next to the header
	// it turns out to need.
	const maxHdr = 10 // RFC 6455 §5.2: 2 bytes + 64-bit length, unmasked
	start := len(dst)
	dst = append(dst, make([]byte, maxHdr)...)
	dst = AppendErrorEnvelope(dst, e)
	m := len(dst) - start - maxHdr
	hl := HeaderLen(m)
	AppendHeader(dst[:start], ws.OpText, true, m)
	copy(dst[start+hl:], dst[start+maxHdr:])
	return dst[:start+hl+m]
}
