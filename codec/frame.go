package codec

import (
	"encoding/binary"
	"errors"
	"slices"

	"github.com/gobwas/ws"
)

// Errors of the frame layer, each mapping to the close code the reactor sends
// before it drops the connection.
var (
	// ErrProtocol: the peer broke RFC 6455 → close 1002 (RFC 6455 §7.4.1).
	ErrProtocol = errors.New("codec: websocket protocol error")
	// ErrInvalidUTF8: a text message or close reason is not valid UTF-8
	// → close 1007 (RFC 6455 §8.1).
	ErrInvalidUTF8 = errors.New("codec: invalid UTF-8 in text")
	// ErrTooBig: a frame or message is longer than allowed → close 1009.
	ErrTooBig = errors.New("codec: message too big")
)

// Bits of the first two header bytes (RFC 6455 §5.2).
const (
	bitFin    = 0x80 // byte 0: final fragment
	maskRsv   = 0x70 // byte 0: RSV1-3
	maskOp    = 0x0f // byte 0: opcode
	bitMasked = 0x80 // byte 1: payload is masked
	maskLen7  = 0x7f // byte 1: 7-bit length or 126/127 marker

	len16Marker = 126 // the length follows as 16 bits
	len64Marker = 127 // the length follows as 64 bits
)

// DecodeHeader decodes a frame header (RFC 6455 §5.2) from the start of b
// without blocking or allocating. If b does not yet hold the whole header it
// returns n == 0 and err == nil: "need more bytes". Otherwise n is the header
// length, 2 to 14 bytes, and the payload starts at b[n].
//
// A 64-bit length with the most significant bit set is ErrProtocol (§5.2:
// "the most significant bit MUST be 0"); it is reported as soon as that byte
// is in b. Lengths are not required to use the minimal encoding, as in gobwas.
func DecodeHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	n = 2
	l := b[1] & maskLen7
	switch l {
	case len16Marker:
		n += 2
	case len64Marker:
		if len(b) > 2 && b[2]&0x80 != 0 {
			return h, 0, ErrProtocol
		}
		n += 8
	}
	masked := b[1]&bitMasked != 0
	if masked {
		n += 4
	}
	if len(b) < n {
		return h, 0, nil
	}

	h.Fin = b[0]&bitFin != 0
	h.Rsv = (b[0] & maskRsv) >> 4
	h.OpCode = ws.OpCode(b[0] & maskOp)
	h.Masked = masked
	switch l {
	case len16Marker:
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
	case len64Marker:
		h.Length = int64(binary.BigEndian.Uint64(b[2:10]))
	default:
		h.Length = int64(l)
	}
	if masked {
		copy(h.Mask[:], b[n-4:n])
	}
	return h, n, nil
}

// CheckClientHeader applies the rules a server enforces on every client
// frame header and returns ErrProtocol on a violation:
//   - the frame is masked (§5.1: a server MUST close on an unmasked frame);
//   - RSV1-3 are zero, as no extension is negotiated (§5.2);
//   - the opcode is not reserved (§5.2: 0x3-0x7 and 0xB-0xF → fail);
//   - a control frame has FIN set and at most 125 bytes of payload (§5.5).
//
// With maxPayload > 0, a data frame longer than maxPayload is ErrTooBig
// (→ close 1009, §7.4.1). Fragment sequencing is stateful: see CheckSequence.
func CheckClientHeader(h ws.Header, maxPayload int64) error {
	switch {
	case !h.Masked:
		return ErrProtocol
	case h.Rsv != 0:
		return ErrProtocol
	case h.OpCode.IsReserved():
		return ErrProtocol
	case h.OpCode.IsControl():
		if !h.Fin || h.Length > ws.MaxControlFramePayloadSize {
			return ErrProtocol
		}
	case maxPayload > 0 && h.Length > maxPayload:
		return ErrTooBig
	}
	return nil
}

// CheckSequence applies the fragmentation rules of RFC 6455 §5.4 to a data
// frame: inMessage tells whether a fragmented message is open (a previous
// data frame had FIN clear). A continuation frame outside a message, or a new
// text/binary frame inside one, is ErrProtocol. Control frames may come at
// any time (§5.4: they can be injected between fragments) and always pass.
func CheckSequence(inMessage bool, op ws.OpCode) error {
	if op.IsControl() {
		return nil
	}
	if (op == ws.OpContinuation) != inMessage {
		return ErrProtocol
	}
	return nil
}

// HeaderLen returns the size of a server (unmasked) frame header for a
// payload of n bytes: 2, 4 or 10 (RFC 6455 §5.2, minimal length encoding).
func HeaderLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

// AppendHeader appends an unmasked server frame header (RFC 6455 §5.2; §5.1:
// a server MUST NOT mask) for opcode op and a payload of n bytes, FIN set when
// fin. It uses the minimal length encoding.
func AppendHeader(dst []byte, op ws.OpCode, fin bool, n int) []byte {
	b0 := byte(op) & maskOp
	if fin {
		b0 |= bitFin
	}
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, len16Marker, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, b0, len64Marker), uint64(n))
	}
}

// AppendFrame appends a complete unmasked server frame with FIN set: header
// and payload. It grows dst at most once.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	dst = slices.Grow(dst, HeaderLen(len(payload))+len(payload))
	dst = AppendHeader(dst, op, true, len(payload))
	return append(dst, payload...)
}

// AppendClientFrame appends a masked client frame (RFC 6455 §5.3), as a
// browser would send it, for tests and the bench client: FIN set when fin,
// the given mask, and payload masked into dst; payload itself is untouched.
func AppendClientFrame(dst []byte, op ws.OpCode, fin bool, mask [4]byte, payload []byte) []byte {
	dst = slices.Grow(dst, HeaderLen(len(payload))+4+len(payload))
	hdr := len(dst)
	dst = AppendHeader(dst, op, fin, len(payload))
	dst[hdr+1] |= bitMasked
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}
