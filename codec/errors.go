package codec

import "net/http"

// ErrorCode names a failure in the one error shape of SPEC §7. The string is
// what clients see in the "code" field.
type ErrorCode string

// Error codes of SPEC §7 and the HTTP-only codes of the handshake (SPEC §2).
const (
	// CodeInvalidAPIKey: API key wrong or missing (HTTP 401, close 4401).
	CodeInvalidAPIKey ErrorCode = "InvalidAPIKey"
	// CodeInvalidToken: token missing, malformed, expired or not matching
	// the path (HTTP 403, close 4403).
	CodeInvalidToken ErrorCode = "InvalidToken"
	// CodeSessionConflict: the session lock could not be settled, or this
	// socket was replaced by a newer one (HTTP 409, close 4402).
	CodeSessionConflict ErrorCode = "SessionConflict"
	// CodeBadRequest: malformed request or client message (HTTP 400, close
	// 4400 when the socket must close).
	CodeBadRequest ErrorCode = "BadRequest"
	// CodeRateLimitExceeded: handshake or message rate over its limit
	// (HTTP 429, close 4429).
	CodeRateLimitExceeded ErrorCode = "RateLimitExceeded"
	// CodeSlowConsumer: the socket's outbound ring stayed full (no HTTP
	// status, close 4408).
	CodeSlowConsumer ErrorCode = "SlowConsumer"
	// CodeSubscriptionFailure: routes could not be registered (HTTP 500,
	// close 1011).
	CodeSubscriptionFailure ErrorCode = "SubscriptionFailure"
	// CodeInternalServerError: anything else that is our fault (HTTP 500,
	// close 1011).
	CodeInternalServerError ErrorCode = "InternalServerError"
	// CodeNotFound: the path has no WebSocket endpoint (HTTP 404, close 4400).
	CodeNotFound ErrorCode = "NotFound"
	// CodeMethodNotAllowed: the upgrade request is not a GET (HTTP 405,
	// close 4400).
	CodeMethodNotAllowed ErrorCode = "MethodNotAllowed"
	// CodeForbidden: the Origin is not allowed (HTTP 403, close 4403).
	CodeForbidden ErrorCode = "Forbidden"
	// CodeHeaderTooLarge: the request head is larger than
	// websocket.max_handshake_bytes (HTTP 431, RFC 6585 §5; close 4400).
	CodeHeaderTooLarge ErrorCode = "RequestHeaderFieldsTooLarge"
	// CodeUpgradeRequired: Sec-WebSocket-Version missing or not 13
	// (HTTP 426, RFC 6455 §4.4; close 4400).
	CodeUpgradeRequired ErrorCode = "UpgradeRequired"
	// CodeServiceUnavailable: draining or a dependency is down (HTTP 503,
	// close 1011).
	CodeServiceUnavailable ErrorCode = "ServiceUnavailable"
)

// codeInfo is one row of the ErrorCode table.
type codeInfo struct {
	status int    // HTTP status; 0 = the code never travels over HTTP
	close  uint16 // WebSocket close code
}

// codeTable is the one place that maps ErrorCode → HTTP status → close code
// (SPEC §7). HTTP-only codes get 4400 so that a socket closed for one of them
// still carries a "bad request" code.
var codeTable = map[ErrorCode]codeInfo{
	CodeInvalidAPIKey:       {http.StatusUnauthorized, CloseInvalidAPIKey},
	CodeInvalidToken:        {http.StatusForbidden, CloseInvalidToken},
	CodeSessionConflict:     {http.StatusConflict, CloseSessionReplaced},
	CodeBadRequest:          {http.StatusBadRequest, CloseBadRequest},
	CodeRateLimitExceeded:   {http.StatusTooManyRequests, CloseRateLimited},
	CodeSlowConsumer:        {0, CloseSlowConsumer},
	CodeSubscriptionFailure: {http.StatusInternalServerError, CloseInternalError},
	CodeInternalServerError: {http.StatusInternalServerError, CloseInternalError},
	CodeNotFound:            {http.StatusNotFound, CloseBadRequest},
	CodeMethodNotAllowed:    {http.StatusMethodNotAllowed, CloseBadRequest},
	CodeForbidden:           {http.StatusForbidden, CloseInvalidToken},
	CodeHeaderTooLarge:      {http.StatusRequestHeaderFieldsTooLarge, CloseBadRequest},
	CodeUpgradeRequired:     {http.StatusUpgradeRequired, CloseBadRequest},
	CodeServiceUnavailable:  {http.StatusServiceUnavailable, CloseInternalError},
}

// HTTPStatus returns the HTTP status for c: 0 for SlowConsumer (it only
// happens on an open socket), 500 for an unknown code.
func (c ErrorCode) HTTPStatus() int {
	if info, ok := codeTable[c]; ok {
		return info.status
	}
	return http.StatusInternalServerError
}

// CloseCode returns the WebSocket close code for c; 1011 for an unknown code.
func (c ErrorCode) CloseCode() uint16 {
	if info, ok := codeTable[c]; ok {
		return info.close
	}
	return CloseInternalError
}

// Error is the one error shape of SPEC §7, used for HTTP bodies and socket
// error frames. It implements error.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	Details string    `json:"details,omitempty"`
}

// Error returns "Code: Message" with ": Details" appended when present.
func (e *Error) Error() string {
	s := string(e.Code) + ": " + e.Message
	if e.Details != "" {
		s += ": " + e.Details
	}
	return s
}

// NewError returns an Error with code and message.
func NewError(code ErrorCode, msg string) *Error {
	return &Error{Code: code, Message: msg}
}

// WithDetails returns a copy of e with Details set to d; e is unchanged, so
// shared package-level errors stay intact.
func (e *Error) WithDetails(d string) *Error {
	c := *e
	c.Details = d
	return &c
}

// HTTPStatus returns the HTTP status of e's code.
func (e *Error) HTTPStatus() int {
	return e.Code.HTTPStatus()
}

// AppendJSON appends {"code":..,"message":..,"details":..} to dst, details
// omitted when empty. Strings are escaped as encoding/json does without HTML
// escaping (RFC 8259 §7), with no reflection.
func (e *Error) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"code":`...)
	dst = appendJSONString(dst, string(e.Code))
	dst = append(dst, `,"message":`...)
	dst = appendJSONString(dst, e.Message)
	if e.Details != "" {
		dst = append(dst, `,"details":`...)
		dst = appendJSONString(dst, e.Details)
	}
	return append(dst, '}')
}
