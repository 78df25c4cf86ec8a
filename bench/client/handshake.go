package client

import (
	"bytes"
	"strconv"
)

// maxResponseHead bounds the 101 response head we buffer; dws's is a few
// hundred bytes, so anything near this is a broken server.
const maxResponseHead = 8 << 10

// requestTail is everything after the request target: the same bytes for
// every socket of an engine, built once.
func requestTail(host, key, protocol string) []byte {
	b := []byte(" HTTP/1.1\r\nHost: ")
	b = append(b, host...)
	b = append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "...)
	b = append(b, key...)
	b = append(b, "\r\nSec-WebSocket-Version: 13\r\n"...)
	if protocol != "" {
		b = append(b, "Sec-WebSocket-Protocol: "...)
		b = append(b, protocol...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// appendRequest appends the upgrade request for target (path and query).
func appendRequest(dst []byte, target string, tail []byte) []byte {
	dst = append(dst, "GET "...)
	dst = append(dst, target...)
	return append(dst, tail...)
}

var headEnd = []byte("\r\n\r\n")

// parseResponseHead parses the server's answer to the upgrade request from
// the start of b. It returns n == 0 and kind == "" while the head is still
// incomplete; otherwise n is the head's length (the frames start at b[n]) and
// kind is "" for a valid 101 or the error kind that fails the socket.
// accept is the expected Sec-WebSocket-Accept; protocol, when set, must be
// the selected sub-protocol.
func parseResponseHead(b []byte, accept, protocol string) (n int, kind string) {
	end := bytes.Index(b, headEnd)
	if end < 0 {
		if len(b) > maxResponseHead {
			return len(b), ErrBadHandshake
		}
		return 0, ""
	}
	n = end + len(headEnd)
	head := b[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	// RFC 7230 §3.1.2: status-line = HTTP-version SP status-code SP reason
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return n, ErrBadHandshake
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return n, ErrBadHandshake
	}
	if status != 101 {
		return n, httpKind(status)
	}
	var gotAccept, gotProtocol bool
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return n, ErrBadHandshake
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")):
			// RFC 6455 §4.1: a wrong accept value fails the connection.
			if string(value) != accept {
				return n, ErrBadHandshake
			}
			gotAccept = true
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Protocol")):
			if string(value) != protocol {
				return n, ErrBadProtocol
			}
			gotProtocol = true
		}
	}
	if !gotAccept {
		return n, ErrBadHandshake
	}
	if protocol != "" && !gotProtocol {
		// Browsers fail a connection whose offered sub-protocol was not
		// selected; the bench must see what a browser would.
		return n, ErrBadProtocol
	}
	return n, ""
}

// httpKinds caches the error kinds of common statuses so a storm of 503s
// does not allocate a string per socket.
var httpKinds = func() map[int]string {
	m := make(map[int]string)
	for _, s := range []int{200, 400, 401, 403, 404, 405, 409, 426, 429, 431, 500, 502, 503} {
		m[s] = ErrHTTPPrefix + strconv.Itoa(s)
	}
	return m
}()

func httpKind(status int) string {
	if k, ok := httpKinds[status]; ok {
		return k
	}
	return ErrHTTPPrefix + strconv.Itoa(status)
}
