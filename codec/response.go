package codec

import (
	"net/http"
	"strconv"
)

// AppendUpgradeResponse appends the server's opening handshake
// (RFC 6455 §4.2.2): "HTTP/1.1 101 Switching Protocols" with Upgrade,
// Connection and Sec-WebSocket-Accept for key, and Sec-WebSocket-Protocol
// when protocol != "" (it must be one the client offered, §4.2.2 item 5.5).
func AppendUpgradeResponse(dst []byte, key string, protocol string) []byte {
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\n"+
		"Upgrade: websocket\r\n"+
		"Connection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: "...)
	dst = AppendAcceptKey(dst, key)
	dst = append(dst, "\r\n"...)
	if protocol != "" {
		dst = append(dst, "Sec-WebSocket-Protocol: "...)
		dst = append(dst, protocol...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// AppendHTTPError appends a complete HTTP/1.1 response for e: status
// e.HTTPStatus() (500 when the code has none), Content-Type:
// application/json, Content-Length, Connection: close, the extra header
// lines given as "Name: value" (for instance "Sec-WebSocket-Version: 13"
// with a 426, RFC 6455 §4.4), and e.AppendJSON as the body. Extra headers
// are written as given: they must not hold CR or LF.
func AppendHTTPError(dst []byte, e *Error, extraHeaders ...string) []byte {
	return AppendHTTPErrorStatus(dst, e.HTTPStatus(), e, extraHeaders...)
}

// AppendHTTPErrorStatus is AppendHTTPError with an explicit status, for the
// few answers whose status is not the code's own (SPEC §6: 503 while
// draining).
func AppendHTTPErrorStatus(dst []byte, status int, e *Error, extraHeaders ...string) []byte {
	// Error bodies are short; the buffer spills to the heap only for a long
	// message or details.
	var buf [256]byte
	body := e.AppendJSON(buf[:0])
	dst = appendHead(dst, status, "application/json", len(body))
	for _, h := range extraHeaders {
		dst = append(dst, h...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

// AppendHTTPResponse appends a complete HTTP/1.1 response with status,
// Content-Type (left out when contentType is ""), Content-Length,
// Connection: close and body, as for GET /healthz on the ws port. For 1xx,
// 204 and 304 the body and Content-Length are left out (RFC 7230 §3.3).
func AppendHTTPResponse(dst []byte, status int, contentType string, body []byte) []byte {
	if bodyless(status) {
		body = nil
	}
	dst = appendHead(dst, status, contentType, len(body))
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

// bodyless reports whether a response with status has no body
// (RFC 7230 §3.3.2, §3.3.3).
func bodyless(status int) bool {
	return (status >= 100 && status < 200) || status == http.StatusNoContent || status == http.StatusNotModified
}

// appendHead appends the status line and the common header fields, without
// the empty line that ends the head. The connection closes after the
// response (RFC 7230 §6.6), so no pipelined request is answered.
func appendHead(dst []byte, status int, contentType string, n int) []byte {
	if status < 100 || status > 999 {
		status = http.StatusInternalServerError
	}
	text := http.StatusText(status)
	if text == "" {
		text = "Unknown" // any reason-phrase will do (RFC 7230 §3.1.2)
	}
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, text...)
	dst = append(dst, "\r\n"...)
	if contentType != "" {
		dst = append(dst, "Content-Type: "...)
		dst = append(dst, contentType...)
		dst = append(dst, "\r\n"...)
	}
	if !bodyless(status) {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, int64(n), 10)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "Connection: close\r\n"...)
}
