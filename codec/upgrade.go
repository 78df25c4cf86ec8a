package codec

import (
	"bytes"
	"errors"
	"strings"
)

// Errors of ParseRequest.
var (
	// ErrHeadTooLarge: the request head is longer than the limit → 431
	// (RFC 6585 §5).
	ErrHeadTooLarge = errors.New("codec: request head too large")
	// ErrMalformedHead: the request line or a header line breaks RFC 7230
	// §3 → 400.
	ErrMalformedHead = errors.New("codec: malformed request head")
)

// Request is a parsed HTTP/1.1 request head: the request line and the header
// fields the WebSocket handshake (RFC 6455 §4.2.1) and the gateway use.
// Other header fields are skipped. All strings are copies, safe to keep
// after the parsed buffer changes; they share one allocation.
type Request struct {
	Method   string // request method, case-sensitive (RFC 7230 §3.1.1)
	Path     string // request target up to '?', still percent-encoded
	RawQuery string // request target after '?', without it
	Proto    string // "HTTP/1.1"

	Host         string // Host
	Upgrade      string // Upgrade
	Connection   string // Connection, repeated fields joined with ", "
	SecKey       string // Sec-WebSocket-Key
	SecVersion   string // Sec-WebSocket-Version
	Origin       string // Origin
	APIKey       string // X-API-Key
	ForwardedFor string // X-Forwarded-For, repeated fields joined with ", "

	// Protocols are the Sec-WebSocket-Protocol tokens in the client's order
	// of preference (RFC 6455 §4.1), from all such fields, trimmed.
	Protocols []string
	// Extensions is Sec-WebSocket-Extensions as sent, repeated fields
	// joined with ", ". dws negotiates none.
	Extensions string
}

// field numbers the parts of a Request that ParseRequest fills.
type field uint8

const (
	fMethod field = iota
	fPath
	fQuery
	fProto
	fHost
	fUpgrade
	fConnection
	fSecKey
	fSecVersion
	fOrigin
	fAPIKey
	fForwardedFor
	fProtocols
	fExtensions
	numFields
)

// knownHeaders maps the lower-cased header names (RFC 7230 §3.2: field names
// are case-insensitive) to their field.
var knownHeaders = [...]struct {
	name string
	f    field
}{
	{"host", fHost},
	{"upgrade", fUpgrade},
	{"connection", fConnection},
	{"sec-websocket-key", fSecKey},
	{"sec-websocket-version", fSecVersion},
	{"origin", fOrigin},
	{"x-api-key", fAPIKey},
	{"x-forwarded-for", fForwardedFor},
	{"sec-websocket-protocol", fProtocols},
	{"sec-websocket-extensions", fExtensions},
}

// span is where one field value sits in the head being parsed.
type span struct {
	f    field
	a, b int
}

// ParseRequest looks for a complete request head at the start of buf: the
// request line and header fields up to an empty line (CRLF CRLF; bare LF is
// tolerated, RFC 7230 §3.5). Empty lines before the request line are skipped
// (RFC 7230 §3.5).
//
// Incomplete head: n == 0 and err == nil, unless len(buf) already exceeds
// max: ErrHeadTooLarge. Complete head: n is its length including the
// terminating empty line; bytes after n are pipelined data the caller keeps.
// A head longer than max is ErrHeadTooLarge even when complete. max <= 0
// means no limit. A malformed request line or header line, or a repeated
// Host (RFC 7230 §5.4), is ErrMalformedHead.
//
// Header names are case-insensitive. Repeated fields are joined with ", "
// (RFC 7230 §3.2.2), which makes a repeated single-valued field such as
// Sec-WebSocket-Key fail its later check.
func ParseRequest(buf []byte, max int) (req Request, n int, err error) {
	limit := buf
	if max > 0 && len(limit) > max {
		limit = limit[:max]
	}
	n = headEnd(limit)
	if n == 0 {
		if max > 0 && len(buf) > max {
			return req, 0, ErrHeadTooLarge
		}
		return req, 0, nil
	}
	if err := parseHead(buf[:n], &req); err != nil {
		return Request{}, 0, err
	}
	return req, n, nil
}

// skipEmptyLines returns the offset of the first byte of b that does not
// belong to a leading run of empty lines (RFC 7230 §3.5).
func skipEmptyLines(b []byte) int {
	i := 0
	for i < len(b) {
		switch {
		case b[i] == '\n':
			i++
		case b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n':
			i += 2
		default:
			return i
		}
	}
	return i
}

// headEnd returns the length of the head at the start of b through its
// terminating empty line, or 0 when b holds no complete head yet.
func headEnd(b []byte) int {
	i := skipEmptyLines(b)
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1 // start of the next line
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// parseHead parses a complete head (as delimited by headEnd) into req.
func parseHead(head []byte, req *Request) error {
	var spanBuf [16]span
	spans := spanBuf[:0]
	hosts := 0

	i := skipEmptyLines(head)
	line, i := nextLine(head, i)
	spans, ok := parseRequestLine(head, line, spans)
	if !ok {
		return ErrMalformedHead
	}
	for {
		var ln lineSpan
		ln, i = nextLine(head, i)
		if !ln.ok {
			return ErrMalformedHead
		}
		if ln.a == ln.b {
			break // the empty line ending the head
		}
		f, va, vb, ok := parseHeaderLine(head, ln)
		if !ok {
			return ErrMalformedHead
		}
		if f == numFields || va == vb {
			continue // a header we do not use, or an empty value
		}
		if f == fHost {
			if hosts++; hosts > 1 {
				return ErrMalformedHead // RFC 7230 §5.4
			}
		}
		spans = append(spans, span{f, va, vb})
	}
	fill(req, head, spans)
	return nil
}

// lineSpan is one line of the head without its CRLF or LF; ok is false when
// the line holds a bare CR (RFC 7230 §3.5 lets a recipient reject it).
type lineSpan struct {
	a, b int
	ok   bool
}

// nextLine returns the line starting at i and the start of the line after it.
// The head is complete, so every line ends with LF.
func nextLine(head []byte, i int) (lineSpan, int) {
	j := i + bytes.IndexByte(head[i:], '\n')
	end := j
	if end > i && head[end-1] == '\r' {
		end--
	}
	ok := bytes.IndexByte(head[i:end], '\r') < 0
	return lineSpan{i, end, ok}, j + 1
}

// parseRequestLine parses "method SP request-target SP HTTP-version"
// (RFC 7230 §3.1.1) and records method, path, query and version.
func parseRequestLine(head []byte, ln lineSpan, spans []span) ([]span, bool) {
	if !ln.ok {
		return spans, false
	}
	line := head[ln.a:ln.b]
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return spans, false
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return spans, false
	}
	method, target, proto := line[:sp1], rest[:sp2], rest[sp2+1:]
	if !isToken(method) || !validTarget(target) || !validVersion(proto) {
		return spans, false
	}

	m := ln.a
	t := m + sp1 + 1
	// RFC 7230 §5.3.2: a server MUST accept the absolute form; keep only
	// its path and query.
	skip := absoluteFormPrefix(target)
	target = target[skip:]
	t += skip
	p := t + len(target)
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		p = t + q
		spans = append(spans, span{fQuery, p + 1, t + len(target)})
	}
	spans = append(spans,
		span{fMethod, m, m + sp1},
		span{fPath, t, p},
		span{fProto, ln.b - len(proto), ln.b})
	return spans, true
}

// absoluteFormPrefix returns the length of "scheme://authority" at the start
// of an absolute-form target (RFC 7230 §5.3.2), 0 for origin form.
func absoluteFormPrefix(t []byte) int {
	if len(t) == 0 || t[0] == '/' || t[0] == '*' {
		return 0
	}
	i := bytes.Index(t, []byte("://"))
	if i <= 0 {
		return 0
	}
	j := bytes.IndexByte(t[i+3:], '/')
	if j < 0 {
		return len(t) // no path: the empty path of "http://host"
	}
	return i + 3 + j
}

// validTarget reports whether t can be a request-target: origin form
// ("/path?query"), absolute form ("http://host/path") or asterisk form ("*"),
// with no whitespace or control bytes (RFC 7230 §5.3).
func validTarget(t []byte) bool {
	if len(t) == 0 {
		return false
	}
	for _, c := range t {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	switch {
	case t[0] == '/':
		return true
	case len(t) == 1 && t[0] == '*':
		return true
	default:
		i := bytes.Index(t, []byte("://"))
		return i > 0 && isToken(t[:i])
	}
}

// validVersion reports whether v is "HTTP/" DIGIT "." DIGIT (RFC 7230 §2.6).
func validVersion(v []byte) bool {
	return len(v) == 8 && string(v[:5]) == "HTTP/" &&
		isDigit(v[5]) && v[6] == '.' && isDigit(v[7])
}

// parseHeaderLine splits "name: value" (RFC 7230 §3.2). f is numFields for a
// header Request does not keep; [va, vb) is the value without surrounding
// whitespace. Whitespace before the colon and obs-fold continuation lines
// are rejected (RFC 7230 §3.2.4).
func parseHeaderLine(head []byte, ln lineSpan) (f field, va, vb int, ok bool) {
	line := head[ln.a:ln.b]
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) {
		return 0, 0, 0, false
	}
	va, vb = ln.a+colon+1, ln.b
	for va < vb && isOWS(head[va]) {
		va++
	}
	for vb > va && isOWS(head[vb-1]) {
		vb--
	}
	for _, c := range head[va:vb] {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return 0, 0, 0, false
		}
	}
	f = numFields
	name := line[:colon]
	for _, h := range knownHeaders {
		if equalFoldLower(name, h.name) {
			f = h.f
			break
		}
	}
	return f, va, vb, true
}

// fill copies the recorded values into one string and points req's fields
// at it. Repeated fields are joined with ", " in the order received.
func fill(req *Request, head []byte, spans []span) {
	size := 0
	for _, s := range spans {
		size += s.b - s.a + 2
	}
	var sb strings.Builder
	sb.Grow(size)
	var at [numFields][2]int
	for f := range numFields {
		start := sb.Len()
		for _, s := range spans {
			if s.f != f {
				continue
			}
			if sb.Len() > start {
				sb.WriteString(", ")
			}
			sb.Write(head[s.a:s.b])
		}
		at[f] = [2]int{start, sb.Len()}
	}
	all := sb.String()
	get := func(f field) string { return all[at[f][0]:at[f][1]] }

	req.Method = get(fMethod)
	req.Path = get(fPath)
	req.RawQuery = get(fQuery)
	req.Proto = get(fProto)
	req.Host = get(fHost)
	req.Upgrade = get(fUpgrade)
	req.Connection = get(fConnection)
	req.SecKey = get(fSecKey)
	req.SecVersion = get(fSecVersion)
	req.Origin = get(fOrigin)
	req.APIKey = get(fAPIKey)
	req.ForwardedFor = get(fForwardedFor)
	req.Extensions = get(fExtensions)
	req.Protocols = splitTokens(get(fProtocols))
}

// splitTokens splits a comma-separated list (RFC 7230 §7) into its trimmed,
// non-empty elements; nil when there are none.
func splitTokens(s string) []string {
	n := 0
	for e := range strings.SplitSeq(s, ",") {
		if trimOWS(e) != "" {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make([]string, 0, n)
	for e := range strings.SplitSeq(s, ",") {
		if e = trimOWS(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// trimOWS trims optional whitespace, SP and HTAB (RFC 7230 §3.2.3).
func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isToken reports whether b is a non-empty token (RFC 7230 §3.2.6).
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return true
}

// tokenChar marks tchar: "!#$%&'*+-.^_`|~", DIGIT and ALPHA (RFC 7230
// §3.2.6).
var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// equalFoldLower reports whether b equals the lower-case ASCII string lower,
// ignoring the case of b's letters.
func equalFoldLower(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
