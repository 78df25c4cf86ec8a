package codec

import (
	"strconv"

	"github.com/gobwas/ws"
)

// Resume (SPEC §5a): the since parameter of the handshake and of
// select_chat, and the resync frame sent when resume is impossible.

// errSince is the answer to a since that is not a non-negative integer.
var errSince = NewError(CodeBadRequest, "since must be a non-negative integer")

// ParseSince parses the since query parameter: decimal digits only (no
// sign, no spaces), at most a uint64. A bad value is a BadRequest *Error
// for a 400 at the handshake.
func ParseSince(s string) (uint64, *Error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, errSince
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errSince
	}
	return v, nil
}

// CheckChatID reports whether id can be a chat id (SPEC §5): the rule of
// select_chat, for the handshake's chat_id parameter.
func CheckChatID(id string) *Error {
	if id == "" {
		return errChatIDRequired
	}
	return checkChatID(id)
}

// ResyncFrame returns the frame telling a resuming client that resume is
// impossible and why: {"type":"resync","payload":{"reason":R}}. The
// frames of the three reasons of SPEC §5a are built once; do not modify
// the result.
func ResyncFrame(reason string) []byte {
	if f, ok := resyncFrames[reason]; ok {
		return f
	}
	return buildResync(reason)
}

var resyncFrames = map[string][]byte{
	"too_old":       buildResync("too_old"),
	"epoch_changed": buildResync("epoch_changed"),
	"too_many":      buildResync("too_many"),
}

func buildResync(reason string) []byte {
	body := appendJSONString([]byte(`{"type":"resync","payload":{"reason":`), reason)
	body = append(body, `}}`...)
	return AppendFrame(nil, ws.OpText, body)
}
