package codec

import (
	"bytes"
	"reflect"
	"unicode/utf8"

	"github.com/bytedance/sonic"
)

// Client → server message types (SPEC §5).
const (
	// TypeSelectChat selects the chat whose messages the socket receives.
	TypeSelectChat = "select_chat"
	// TypePing is an application-level ping; it needs no answer beyond not
	// being an error.
	TypePing = "ping"
)

// MaxChatIDLen bounds a chat id: it becomes part of NATS subjects and Redis
// keys (SPEC §5), and an id from the upstream platform is far shorter.
const MaxChatIDLen = 256

// ClientMessage is a decoded client → server message.
type ClientMessage struct {
	Type   string // TypeSelectChat or TypePing
	ChatID string // the selected chat, for TypeSelectChat
	// Since is select_chat's "since" (SPEC §5a): replay the chat's
	// messages after this seq; HasSince tells 0 from absent.
	Since    uint64
	HasSince bool
}

// clientWire is the JSON shape of a client message. Values stay raw (they
// alias the input) until their type is known, so a wrong type becomes a
// BadRequest naming the field rather than a decode error.
type clientWire struct {
	Type    sonic.NoCopyRawMessage `json:"type"`
	ChatID  sonic.NoCopyRawMessage `json:"chat_id"`
	Since   sonic.NoCopyRawMessage `json:"since"`
	Payload sonic.NoCopyRawMessage `json:"payload"`
}

// clientPayload is the nested form {"payload":{"chat_id":"X"}}.
type clientPayload struct {
	ChatID sonic.NoCopyRawMessage `json:"chat_id"`
	Since  sonic.NoCopyRawMessage `json:"since"`
}

// clientJSON rejects raw control characters in strings (RFC 8259 §7) and
// copies decoded strings, which must outlive the inbound buffer.
var clientJSON = sonic.Config{ValidateString: true, CopyString: true}.Froze()

// Shared errors of DecodeClientMessage; callers must not modify them.
var (
	errInvalidJSON    = NewError(CodeBadRequest, "invalid JSON")
	errNotObject      = NewError(CodeBadRequest, "invalid JSON").WithDetails("a message must be a JSON object")
	errMissingType    = NewError(CodeBadRequest, "missing message type")
	errTypeNotString  = NewError(CodeBadRequest, "message type must be a string")
	errChatIDRequired = NewError(CodeBadRequest, "chat_id is required")
	errChatIDTooLong  = NewError(CodeBadRequest, "chat_id is too long")
	errChatIDInvalid  = NewError(CodeBadRequest, "chat_id contains invalid characters").
				WithDetails("'.', '*', '>', whitespace and control characters are not allowed")
)

// Pretouch compiles the JSON decoders of DecodeClientMessage ahead of time.
// sonic compiles a decoder per type on first use, which takes tens of
// milliseconds; call Pretouch once at start-up so that cost is not paid by
// the first client message on an event loop. Safe for concurrent use;
// skipping it only delays the compilation.
func Pretouch() error {
	return sonic.PretouchMany([]reflect.Type{
		reflect.TypeFor[clientWire](),
		reflect.TypeFor[clientPayload](),
		reflect.TypeFor[string](),
	})
}

// maxTypeEcho bounds how much of an unknown type is echoed in the error.
const maxTypeEcho = 64

// DecodeClientMessage decodes a client text message (SPEC §5):
//
//	{"type":"select_chat","chat_id":"X"}
//	{"type":"select_chat","payload":{"chat_id":"X"}}
//	{"type":"ping"}
//
// Anything else is a BadRequest *Error for an error frame (the socket stays
// open): invalid JSON or not an object → "invalid JSON"; a missing, non-string
// or unknown type → a message naming it; select_chat without a non-empty
// string chat_id → "chat_id is required"; a chat_id longer than MaxChatIDLen
// bytes or holding '.', '*', '>', whitespace or control characters (they
// would break NATS subjects and Redis keys) → BadRequest. A top-level
// chat_id wins over payload.chat_id. Returned strings are copies of b.
// Returned errors may be shared: use WithDetails to change one.
func DecodeClientMessage(b []byte) (ClientMessage, *Error) {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return ClientMessage{}, errNotObject
	}
	var w clientWire
	if err := clientJSON.Unmarshal(b, &w); err != nil {
		return ClientMessage{}, errInvalidJSON
	}
	switch string(w.Type) {
	case `"` + TypeSelectChat + `"`:
	case `"` + TypePing + `"`:
		return ClientMessage{Type: TypePing}, nil
	case "", "null":
		return ClientMessage{}, errMissingType
	default:
		typ, ok := jsonString(w.Type)
		switch {
		case !ok:
			return ClientMessage{}, errTypeNotString
		case typ == TypePing:
			return ClientMessage{Type: TypePing}, nil
		case typ != TypeSelectChat:
			return ClientMessage{}, NewError(CodeBadRequest,
				"unknown message type: "+truncateUTF8(typ, maxTypeEcho))
		}
	}

	raw, rawSince := w.ChatID, w.Since
	if len(raw) == 0 || isNull(raw) {
		var p clientPayload
		if len(w.Payload) > 0 && w.Payload[0] == '{' {
			if err := clientJSON.Unmarshal(w.Payload, &p); err != nil {
				return ClientMessage{}, errInvalidJSON
			}
		}
		raw = p.ChatID
		if len(rawSince) == 0 {
			rawSince = p.Since
		}
	}
	id, ok := jsonString(raw)
	if !ok || id == "" {
		return ClientMessage{}, errChatIDRequired
	}
	if err := checkChatID(id); err != nil {
		return ClientMessage{}, err
	}
	m := ClientMessage{Type: TypeSelectChat, ChatID: id}
	if len(rawSince) > 0 && !isNull(rawSince) {
		// A JSON number of digits only: no sign, fraction or exponent.
		v, err := ParseSince(string(rawSince))
		if err != nil {
			return ClientMessage{}, err
		}
		m.Since, m.HasSince = v, true
	}
	return m, nil
}

// checkChatID rejects ids that cannot be a NATS subject token or a Redis key
// part: '.' separates subject tokens, '*' and '>' are wildcards, whitespace
// and control characters are not allowed in subjects.
func checkChatID(id string) *Error {
	if len(id) > MaxChatIDLen {
		return errChatIDTooLong
	}
	for _, r := range id {
		switch {
		case r == '.' || r == '*' || r == '>':
			return errChatIDInvalid
		case r <= ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f):
			return errChatIDInvalid // ASCII and C1 control characters, space
		case r == utf8.RuneError:
			return errChatIDInvalid
		case isUnicodeSpace(r):
			return errChatIDInvalid
		}
	}
	return nil
}

// isUnicodeSpace reports the non-ASCII white space of unicode.IsSpace.
func isUnicodeSpace(r rune) bool {
	switch r {
	case 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// isNull reports whether a raw JSON value is null.
func isNull(raw []byte) bool {
	return string(raw) == "null"
}

// jsonString decodes a raw JSON value that is a string; ok is false for any
// other JSON type. The result is a copy of raw. raw was already validated by
// the decoder, so a string without escapes needs no second parse.
func jsonString(raw []byte) (s string, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	if err := clientJSON.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}
