package codec

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Close codes (RFC 6455 §7.4.1) and the private codes of SPEC §7
// (4000-4999 are for private use, RFC 6455 §7.4.2).
const (
	// CloseNormal: the purpose of the connection was fulfilled.
	CloseNormal uint16 = 1000
	// CloseGoingAway: server shutting down or a peer missed its pongs.
	CloseGoingAway uint16 = 1001
	// CloseProtocolError: the peer broke RFC 6455.
	CloseProtocolError uint16 = 1002
	// CloseUnsupportedData: a data type the endpoint cannot accept.
	CloseUnsupportedData uint16 = 1003
	// CloseNoStatus: the close frame carried no code. Never sent on the wire
	// (RFC 6455 §7.4.1).
	CloseNoStatus uint16 = 1005
	// CloseAbnormal: the connection dropped without a close frame. Never sent
	// on the wire (RFC 6455 §7.4.1).
	CloseAbnormal uint16 = 1006
	// CloseInvalidPayload: a text message was not valid UTF-8 (RFC 6455 §8.1).
	CloseInvalidPayload uint16 = 1007
	// ClosePolicyViolation: a message violated the endpoint's policy.
	ClosePolicyViolation uint16 = 1008
	// CloseMessageTooBig: a message exceeded websocket.max_message_bytes.
	CloseMessageTooBig uint16 = 1009
	// CloseInternalError: the server hit an unexpected condition.
	CloseInternalError uint16 = 1011

	// CloseBadRequest: the socket must close after a BadRequest (SPEC §7).
	CloseBadRequest uint16 = 4400
	// CloseInvalidAPIKey: InvalidAPIKey (SPEC §7).
	CloseInvalidAPIKey uint16 = 4401
	// CloseSessionReplaced: a newer connection took this session over
	// (SPEC §4, reason "session-replaced").
	CloseSessionReplaced uint16 = 4402
	// CloseInvalidToken: InvalidToken (SPEC §7).
	CloseInvalidToken uint16 = 4403
	// CloseSlowConsumer: the outbound ring stayed full past the grace
	// (SPEC §6, reason "slow-consumer").
	CloseSlowConsumer uint16 = 4408
	// CloseRateLimited: inbound rate stayed over the limit (SPEC §6).
	CloseRateLimited uint16 = 4429
)

// ParseClosePayload validates the body of a received close frame
// (RFC 6455 §5.5.1). An empty body means "no status": (CloseNoStatus, nil,
// nil). A 1-byte body cannot hold a code: ErrProtocol. The code must be one an
// endpoint may send (validCloseCode) or the result is ErrProtocol; the reason
// must be valid UTF-8 (RFC 6455 §5.5.1) or the result is ErrInvalidUTF8.
//
// reason aliases p.
func ParseClosePayload(p []byte) (code uint16, reason []byte, err error) {
	switch len(p) {
	case 0:
		return CloseNoStatus, nil, nil
	case 1:
		return 0, nil, ErrProtocol
	}
	code = binary.BigEndian.Uint16(p)
	if !validCloseCode(code) {
		return code, nil, ErrProtocol
	}
	reason = p[2:]
	if !utf8.Valid(reason) {
		return code, nil, ErrInvalidUTF8
	}
	return code, reason, nil
}

// validCloseCode reports whether code may appear in a close frame on the wire
// (RFC 6455 §7.4): the defined codes 1000-1003 and 1007-1011, and 3000-4999
// (registered and private use). 1004 is reserved, 1005, 1006 and 1015 are for
// reporting only, other codes below 3000 are unassigned, 5000 and up are not
// allowed.
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// maxCloseReason is the longest reason that fits a close frame: control frame
// payloads are at most 125 bytes (RFC 6455 §5.5), 2 of them the code.
const maxCloseReason = ws.MaxControlFramePayloadSize - 2

// AppendCloseFrame appends a complete unmasked server close frame (FIN,
// opcode 8) carrying code and reason (RFC 6455 §5.5.1). The reason is cut to
// 123 bytes on a UTF-8 boundary so the payload fits the 125-byte control
// frame limit. code 0 or CloseNoStatus produce an empty body, which is how a
// close without status is echoed (1005 must not be sent, RFC 6455 §7.4.1).
func AppendCloseFrame(dst []byte, code uint16, reason string) []byte {
	if code == 0 || code == CloseNoStatus {
		return AppendHeader(dst, ws.OpClose, true, 0)
	}
	reason = truncateUTF8(reason, maxCloseReason)
	dst = AppendHeader(dst, ws.OpClose, true, 2+len(reason))
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}

// truncateUTF8 returns the longest prefix of s of at most n bytes that does
// not end inside a multi-byte rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Back off over continuation bytes (10xxxxxx, RFC 3629 §3) so the cut
	// lands on the start of a rune; a rune is at most 4 bytes.
	i := n
	for j := 0; j < utf8.UTFMax-1 && i > 0 && !utf8.RuneStart(s[i]); j++ {
		i--
	}
	return s[:i]
}
