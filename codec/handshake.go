package codec

import (
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"strings"
)

// Query returns the value of the first query parameter called name in
// RawQuery, percent-decoded ('+' is a space, as in HTML forms); "" when it is
// absent or its value is not valid percent-encoding. It allocates only when
// the value holds escapes.
func (r *Request) Query(name string) string {
	for q := r.RawQuery; q != ""; {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(pair, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		uv, err := url.QueryUnescape(v)
		if err != nil {
			return ""
		}
		return uv
	}
	return ""
}

// HasProtocol reports whether the client offered sub-protocol p in
// Sec-WebSocket-Protocol. Sub-protocol names are compared exactly
// (RFC 6455 §4.1, §11.3.4).
func (r *Request) HasProtocol(p string) bool {
	for _, o := range r.Protocols {
		if o == p {
			return true
		}
	}
	return false
}

// CheckUpgrade validates the request as a WebSocket opening handshake
// (RFC 6455 §4.2.1) and returns nil when it is one:
//   - the method is GET, else 405 CodeMethodNotAllowed;
//   - HTTP/1.1 or higher, a Host, an Upgrade listing "websocket" and a
//     Connection listing "upgrade" (both case-insensitive), and a
//     Sec-WebSocket-Key that is the base64 of 16 bytes, else 400
//     CodeBadRequest naming what is wrong;
//   - Sec-WebSocket-Version is 13, else 426 CodeUpgradeRequired (§4.4: the
//     caller adds the header "Sec-WebSocket-Version: 13").
func (r *Request) CheckUpgrade() *Error {
	switch {
	case r.Method != "GET":
		return NewError(CodeMethodNotAllowed, "method must be GET")
	case !atLeastHTTP11(r.Proto):
		return NewError(CodeBadRequest, "HTTP/1.1 or higher required")
	case r.Host == "":
		return NewError(CodeBadRequest, "missing Host header")
	case !hasToken(r.Upgrade, "websocket"):
		return NewError(CodeBadRequest, `Upgrade header must be "websocket"`)
	case !hasToken(r.Connection, "upgrade"):
		return NewError(CodeBadRequest, `Connection header must include "Upgrade"`)
	case r.SecKey == "":
		return NewError(CodeBadRequest, "missing Sec-WebSocket-Key header")
	case !validSecKey(r.SecKey):
		return NewError(CodeBadRequest, "invalid Sec-WebSocket-Key header")
	case r.SecVersion == "":
		return NewError(CodeUpgradeRequired, "missing Sec-WebSocket-Version header").
			WithDetails("supported version: 13")
	case r.SecVersion != "13":
		return NewError(CodeUpgradeRequired, "unsupported Sec-WebSocket-Version").
			WithDetails("supported version: 13")
	}
	return nil
}

// atLeastHTTP11 reports whether proto ("HTTP/x.y", checked by ParseRequest)
// is HTTP/1.1 or higher (RFC 6455 §4.1, item 1).
func atLeastHTTP11(proto string) bool {
	if len(proto) != 8 {
		return false
	}
	major, minor := proto[5], proto[7]
	return major > '1' || (major == '1' && minor >= '1')
}

// hasToken reports whether the comma-separated list h (RFC 7230 §7) holds
// token, compared case-insensitively (RFC 7230 §6.1, §6.7).
func hasToken(h, token string) bool {
	for e := range strings.SplitSeq(h, ",") {
		if strings.EqualFold(trimOWS(e), token) {
			return true
		}
	}
	return false
}

// validSecKey reports whether k is the base64 encoding (RFC 4648 §4, with
// padding) of 16 bytes: 22 alphabet characters and "==" (RFC 6455 §4.1,
// item 7; §4.2.1, item 5).
func validSecKey(k string) bool {
	if len(k) != 24 || k[22:] != "==" {
		return false
	}
	for i := range 22 {
		c := k[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

// websocketGUID is the GUID of RFC 6455 §1.3 that the accept key hashes.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptKeyLen is base64.StdEncoding.EncodedLen(sha1.Size).
const acceptKeyLen = 28

// AcceptKey computes Sec-WebSocket-Accept for key: base64 of the SHA-1 of
// key followed by the GUID (RFC 6455 §4.2.2, item 5.4). The only allocation
// is the returned string.
func AcceptKey(key string) string {
	var buf [acceptKeyLen]byte
	return string(AppendAcceptKey(buf[:0], key))
}

// AppendAcceptKey appends AcceptKey(key) to dst without allocating when dst
// has room.
func AppendAcceptKey(dst []byte, key string) []byte {
	// Keys are 24 bytes (validSecKey); a longer one spills to the heap.
	var in [64]byte
	p := append(append(in[:0], key...), websocketGUID...)
	sum := sha1.Sum(p)
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}
