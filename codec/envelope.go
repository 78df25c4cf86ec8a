package codec

import "github.com/gobwas/ws"

// The json.v1 envelopes (SPEC §2, §5, §7) are written by hand: their shape is
// fixed and event payloads must pass through byte for byte.
const (
	readyJSON   = `{"type":"ready"}`
	eventPrefix = `{"type":"event","payload":`
	errorPrefix = `{"type":"error","payload":`
	envelopeEnd = `}`
)

// ReadyFrame is the complete server text frame carrying {"type":"ready"},
// sent right after the 101 (SPEC §2). It is shared: do not modify it.
var ReadyFrame = AppendFrame(nil, ws.OpText, []byte(readyJSON))

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
func EventFrame(payload []byte) []byte {
	m := eventLen(payload)
	f := make([]byte, 0, HeaderLen(m)+m)
	f = AppendHeader(f, ws.OpText, true, m)
	return AppendEvent(f, payload)
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
