package codec

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const sampleHead = "GET /ws/acme/a1?user=u7&token=T%2Bk&x-api-key=K HTTP/1.1\r\n" +
	"Host: dws.example.com:8080\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Sec-WebSocket-Protocol: json.v1, chat\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
	"Origin: https://app.example.com\r\n" +
	"X-API-Key: secret-key\r\n" +
	"X-Forwarded-For: 203.0.113.7\r\n" +
	"User-Agent: test\r\n" +
	"\r\n"

var sampleRequest = Request{
	Method:       "GET",
	Path:         "/ws/acme/a1",
	RawQuery:     "user=u7&token=T%2Bk&x-api-key=K",
	Proto:        "HTTP/1.1",
	Host:         "dws.example.com:8080",
	Upgrade:      "websocket",
	Connection:   "Upgrade",
	SecKey:       "dGhlIHNhbXBsZSBub25jZQ==",
	SecVersion:   "13",
	Origin:       "https://app.example.com",
	APIKey:       "secret-key",
	ForwardedFor: "203.0.113.7",
	Protocols:    []string{"json.v1", "chat"},
	Extensions:   "permessage-deflate; client_max_window_bits",
}

func equalRequest(a, b Request) bool {
	if len(a.Protocols) == 0 && len(b.Protocols) == 0 {
		a.Protocols, b.Protocols = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

func TestParseRequest_CompleteHead_AllFields(t *testing.T) {
	req, n, err := ParseRequest([]byte(sampleHead), 8192)
	if err != nil || n != len(sampleHead) {
		t.Fatalf(
			"n = %d, err = %v; want %d, nil",
			n, err, len(sampleHead))
	}
	if !equalRequest(req, sampleRequest) {
		t.Errorf(
			"req =\n%+v\nwant\n%+v",
			req, sampleRequest)
	}
}

func TestParseRequest_SplitHead_NeedsMore(t *testing.T) {
	buf := []byte(sampleHead)
	for k := 0; k < len(buf); k++ {
		req, n, err := ParseRequest(buf[:k], 8192)
		if n != 0 || err != nil || !equalRequest(req, Request{}) {
			t.Fatalf(
				"%d of %d bytes: n = %d, err = %v; want need more",
				k, len(buf), n, err)
		}
	}
	if _, n, err := ParseRequest(buf, 8192); n != len(buf) || err != nil {
		t.Fatalf(
			"whole head: n = %d, err = %v",
			n, err)
	}
}

func TestParseRequest_PipelinedBytes_LeftAfterN(t *testing.T) {
	frame := AppendClientFrame(nil, 1, true, [4]byte{9, 8, 7, 6}, []byte(`{"type":"ping"}`))
	buf := append([]byte(sampleHead), frame...)
	_, n, err := ParseRequest(buf, 8192)
	if err != nil || n != len(sampleHead) {
		t.Fatalf(
			"n = %d, err = %v",
			n, err)
	}
	if !bytes.Equal(buf[n:], frame) {
		t.Errorf("pipelined bytes = % x", buf[n:])
	}
}

func TestParseRequest_HeaderNamesCaseInsensitive(t *testing.T) {
	head := "GET /ws/admin HTTP/1.1\r\n" +
		"HOST: h\r\n" +
		"uPgRaDe: websocket\r\n" +
		"connection: upgrade\r\n" +
		"SEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"sec-websocket-version: 13\r\n" +
		"sec-WebSocket-protocol: json.v1\r\n" +
		"ORIGIN: o\r\n" +
		"x-api-key: k\r\n" +
		"x-FORWARDED-for: 1.2.3.4\r\n\r\n"
	req, _, err := ParseRequest([]byte(head), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := Request{
		Method: "GET", Path: "/ws/admin", Proto: "HTTP/1.1", Host: "h",
		Upgrade: "websocket", Connection: "upgrade", SecKey: "dGhlIHNhbXBsZSBub25jZQ==",
		SecVersion: "13", Protocols: []string{"json.v1"}, Origin: "o", APIKey: "k",
		ForwardedFor: "1.2.3.4",
	}
	if !equalRequest(req, want) {
		t.Errorf(
			"req = %+v\nwant  %+v",
			req, want)
	}
}

func TestParseRequest_RepeatedHeaders_Combined(t *testing.T) {
	head := "GET / HTTP/1.1\r\n" +
		"Connection: keep-alive\r\n" +
		"Sec-WebSocket-Protocol: a, ,b\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Protocol:c\r\n" +
		"Sec-WebSocket-Protocol:\r\n" +
		"X-Forwarded-For: 1.1.1.1\r\n" +
		"X-Forwarded-For: 2.2.2.2\r\n" +
		"Sec-WebSocket-Key: k1\r\n" +
		"Sec-WebSocket-Key: k2\r\n\r\n"
	req, _, err := ParseRequest([]byte(head), 0)
	if err != nil {
		t.Fatal(err)
	}
	if req.Connection != "keep-alive, Upgrade" {
		t.Errorf("Connection = %q", req.Connection)
	}
	if !slices.Equal(req.Protocols, []string{"a", "b", "c"}) {
		t.Errorf("Protocols = %q", req.Protocols)
	}
	if req.ForwardedFor != "1.1.1.1, 2.2.2.2" {
		t.Errorf("ForwardedFor = %q", req.ForwardedFor)
	}
	if req.SecKey != "k1, k2" || validSecKey(req.SecKey) {
		t.Errorf("SecKey = %q, want an invalid combined key", req.SecKey)
	}
}

func TestParseRequest_TooLarge(t *testing.T) {
	head := []byte(sampleHead)
	tests := []struct {
		name    string
		buf     []byte
		max     int
		wantN   int
		wantErr error
	}{
		{name: "complete, exactly max", buf: head, max: len(head), wantN: len(head)},
		{name: "complete, one over max", buf: head, max: len(head) - 1, wantErr: ErrHeadTooLarge},
		{name: "complete within max, pipelined bytes beyond", buf: append(slices.Clone(head), make([]byte, 100)...), max: len(head), wantN: len(head)},
		{name: "incomplete, at max", buf: head[:100], max: 100},
		{name: "incomplete, over max", buf: head[:101], max: 100, wantErr: ErrHeadTooLarge},
		{name: "endless header line", buf: []byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 9000)), max: 8192, wantErr: ErrHeadTooLarge},
		{name: "no limit", buf: []byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 9000)), max: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, n, err := ParseRequest(tt.buf, tt.max)
			if n != tt.wantN || err != tt.wantErr {
				t.Errorf(
					"n = %d, err = %v; want %d, %v",
					n, err, tt.wantN, tt.wantErr)
			}
		})
	}
}

func TestParseRequest_Malformed(t *testing.T) {
	tests := []struct {
		name string
		head string
	}{
		{name: "no target", head: "GET HTTP/1.1\r\n\r\n"},
		{name: "double space", head: "GET  / HTTP/1.1\r\n\r\n"},
		{name: "trailing space", head: "GET / HTTP/1.1 \r\n\r\n"},
		{name: "lower-case version", head: "GET / http/1.1\r\n\r\n"},
		{name: "bad version", head: "GET / HTTP/11\r\n\r\n"},
		{name: "target not a path", head: "GET ws/x HTTP/1.1\r\n\r\n"},
		{name: "control byte in target", head: "GET /\x01 HTTP/1.1\r\n\r\n"},
		{name: "method not a token", head: "G(T / HTTP/1.1\r\n\r\n"},
		{name: "not HTTP at all", head: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n"},
		{name: "header without colon", head: "GET / HTTP/1.1\r\nHost\r\n\r\n"},
		{name: "empty header name", head: "GET / HTTP/1.1\r\n: v\r\n\r\n"},
		{name: "space before colon", head: "GET / HTTP/1.1\r\nHost : h\r\n\r\n"},
		{name: "obs-fold", head: "GET / HTTP/1.1\r\nX: a\r\n  b\r\n\r\n"},
		{name: "bare CR in value", head: "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"},
		{name: "NUL in value", head: "GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n"},
		{name: "DEL in value", head: "GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n"},
		{name: "two Host headers", head: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, n, err := ParseRequest([]byte(tt.head), 8192)
			if !errors.Is(err, ErrMalformedHead) || n != 0 {
				t.Errorf(
					"n = %d, err = %v; want ErrMalformedHead",
					n, err)
			}
		})
	}
}

func TestParseRequest_Tolerated(t *testing.T) {
	tests := []struct {
		name string
		head string
		want Request
	}{
		{
			name: "bare LF line endings",
			head: "GET /healthz HTTP/1.0\nHost: h\n\n",
			want: Request{Method: "GET", Path: "/healthz", Proto: "HTTP/1.0", Host: "h"},
		},
		{
			name: "empty lines before the request line",
			head: "\r\n\n\r\nGET /x?y HTTP/1.1\r\n\r\n",
			want: Request{Method: "GET", Path: "/x", RawQuery: "y", Proto: "HTTP/1.1"},
		},
		{
			name: "absolute form",
			head: "GET http://h:80/ws/c/a?user=u HTTP/1.1\r\n\r\n",
			want: Request{Method: "GET", Path: "/ws/c/a", RawQuery: "user=u", Proto: "HTTP/1.1"},
		},
		{
			name: "value whitespace and tabs trimmed",
			head: "POST /x HTTP/1.1\r\nOrigin:\t  o p \t\r\nIgnored: \x80\xff\r\n\r\n",
			want: Request{Method: "POST", Path: "/x", Proto: "HTTP/1.1", Origin: "o p"},
		},
		{
			name: "empty query",
			head: "GET /x? HTTP/1.1\r\n\r\n",
			want: Request{Method: "GET", Path: "/x", Proto: "HTTP/1.1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, n, err := ParseRequest([]byte(tt.head), 8192)
			if err != nil || n != len(tt.head) {
				t.Fatalf(
					"n = %d, err = %v",
					n, err)
			}
			if !equalRequest(req, tt.want) {
				t.Errorf(
					"req = %+v\nwant  %+v",
					req, tt.want)
			}
		})
	}
}

func TestParseRequest_FieldsAreCopies(t *testing.T) {
	buf := []byte(sampleHead)
	req, _, err := ParseRequest(buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 'Z'
	}
	if !equalRequest(req, sampleRequest) {
		t.Errorf("fields changed with the buffer: %+v", req)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(sampleHead), 8192)
	f.Add([]byte("GET /healthz HTTP/1.0\n\n"), 100)
	f.Add([]byte("\r\nGET http://h/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 0)
	f.Add([]byte("GET / HTTP/1.1\r\nConnection: a\r\nConnection: b\r\n\r\nrest"), 40)
	f.Fuzz(func(t *testing.T, buf []byte, max int) {
		req, n, err := ParseRequest(buf, max)
		switch {
		case err != nil:
			if n != 0 || !equalRequest(req, Request{}) {
				t.Fatalf("error %v with n = %d, req = %+v", err, n, req)
			}
			if err != ErrHeadTooLarge && err != ErrMalformedHead {
				t.Fatalf("unexpected error %v", err)
			}
			if err == ErrHeadTooLarge && (max <= 0 || len(buf) <= max) {
				t.Fatalf("ErrHeadTooLarge with len %d, max %d", len(buf), max)
			}
		case n == 0:
			if max > 0 && len(buf) > max {
				t.Fatalf("need more with len %d > max %d", len(buf), max)
			}
		default:
			if n > len(buf) || (max > 0 && n > max) {
				t.Fatalf("n = %d, len %d, max %d", n, len(buf), max)
			}
			// The head is self-delimiting: parsing just it gives the same.
			req2, n2, err2 := ParseRequest(buf[:n], 0)
			if n2 != n || err2 != nil || !equalRequest(req, req2) {
				t.Fatalf("head alone: %d %v, whole: %d", n2, err2, n)
			}
			for _, s := range []string{req.Method, req.Path, req.RawQuery, req.Proto,
				req.Host, req.Upgrade, req.Connection, req.SecKey, req.SecVersion,
				req.Origin, req.APIKey, req.ForwardedFor, req.Extensions} {
				if strings.ContainsAny(s, "\r\n\x00") {
					t.Fatalf("field %q holds a line break or NUL", s)
				}
			}
			for _, p := range req.Protocols {
				if p == "" || strings.Contains(p, ",") || trimOWS(p) != p {
					t.Fatalf("protocol %q", p)
				}
			}
		}
		// Fed the first half, the parser must not report a different head.
		if n > 0 {
			if _, hn, herr := ParseRequest(buf[:n/2], max); hn != 0 || herr == ErrMalformedHead {
				t.Fatalf("half the head: n = %d, err = %v", hn, herr)
			}
		}
	})
}

func BenchmarkParseRequest(b *testing.B) {
	buf := []byte(sampleHead)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseRequest(buf, 8192); err != nil {
			b.Fatal(err)
		}
	}
}
