package codec

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestRequest_Query_Decoding(t *testing.T) {
	r := Request{RawQuery: "user=u7&token=a%2Bb%3D&x-api-key=K+1&empty=&flag&dup=1&dup=2&bad=%zz&x%2Dy=enc&sp=a%20b"}
	tests := []struct {
		name string
		want string
	}{
		{name: "user", want: "u7"},
		{name: "token", want: "a+b="},
		{name: "x-api-key", want: "K 1"},
		{name: "empty", want: ""},
		{name: "flag", want: ""},
		{name: "dup", want: "1"},
		{name: "bad", want: ""},
		{name: "x-y", want: "enc"},
		{name: "sp", want: "a b"},
		{name: "missing", want: ""},
		{name: "USER", want: ""},
	}
	for _, tt := range tests {
		if got := r.Query(tt.name); got != tt.want {
			t.Errorf(
				"Query(%q) = %q, want %q",
				tt.name, got, tt.want)
		}
	}
	if got := (&Request{}).Query("user"); got != "" {
		t.Errorf("empty query: %q", got)
	}
}

func TestRequest_Query_NoEscapes_NoAlloc(t *testing.T) {
	r := Request{RawQuery: "user=u7&token=abc&x-api-key=K"}
	if n := testing.AllocsPerRun(100, func() { _ = r.Query("token") }); n != 0 {
		t.Errorf("%v allocs", n)
	}
}

func validUpgrade() Request {
	return Request{
		Method:     "GET",
		Path:       "/ws/c/a",
		Proto:      "HTTP/1.1",
		Host:       "h",
		Upgrade:    "websocket",
		Connection: "keep-alive, Upgrade",
		SecKey:     "dGhlIHNhbXBsZSBub25jZQ==",
		SecVersion: "13",
	}
}

func TestCheckUpgrade_Failures(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(*Request)
		wantCode ErrorCode
		wantText string // in the message
	}{
		{name: "valid", mutate: func(*Request) {}},
		{name: "upgrade token case-insensitive", mutate: func(r *Request) { r.Upgrade = "WebSocket"; r.Connection = "UPGRADE" }},
		{name: "upgrade among others", mutate: func(r *Request) { r.Upgrade = "h2c, websocket" }},
		{name: "HTTP/2.0 in the head", mutate: func(r *Request) { r.Proto = "HTTP/2.0" }},
		{name: "POST", mutate: func(r *Request) { r.Method = "POST" }, wantCode: CodeMethodNotAllowed, wantText: "GET"},
		{name: "lower-case get", mutate: func(r *Request) { r.Method = "get" }, wantCode: CodeMethodNotAllowed, wantText: "GET"},
		{name: "HTTP/1.0", mutate: func(r *Request) { r.Proto = "HTTP/1.0" }, wantCode: CodeBadRequest, wantText: "HTTP/1.1"},
		{name: "no Host", mutate: func(r *Request) { r.Host = "" }, wantCode: CodeBadRequest, wantText: "Host"},
		{name: "no Upgrade", mutate: func(r *Request) { r.Upgrade = "" }, wantCode: CodeBadRequest, wantText: "Upgrade"},
		{name: "wrong Upgrade", mutate: func(r *Request) { r.Upgrade = "websockets" }, wantCode: CodeBadRequest, wantText: "Upgrade"},
		{name: "no Connection", mutate: func(r *Request) { r.Connection = "" }, wantCode: CodeBadRequest, wantText: "Connection"},
		{name: "Connection without upgrade", mutate: func(r *Request) { r.Connection = "keep-alive" }, wantCode: CodeBadRequest, wantText: "Connection"},
		{name: "no key", mutate: func(r *Request) { r.SecKey = "" }, wantCode: CodeBadRequest, wantText: "Sec-WebSocket-Key"},
		{name: "short key", mutate: func(r *Request) { r.SecKey = "dGhlIHNhbXBsZQ==" }, wantCode: CodeBadRequest, wantText: "Sec-WebSocket-Key"},
		{name: "key not base64", mutate: func(r *Request) { r.SecKey = "dGhlIHNhbXBsZSBub25jZ!==" }, wantCode: CodeBadRequest, wantText: "Sec-WebSocket-Key"},
		{name: "key of 17 bytes", mutate: func(r *Request) { r.SecKey = "dGhlIHNhbXBsZSBub25jZTE=" }, wantCode: CodeBadRequest, wantText: "Sec-WebSocket-Key"},
		{name: "repeated key", mutate: func(r *Request) { r.SecKey = "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==" }, wantCode: CodeBadRequest, wantText: "Sec-WebSocket-Key"},
		{name: "no version", mutate: func(r *Request) { r.SecVersion = "" }, wantCode: CodeUpgradeRequired, wantText: "Sec-WebSocket-Version"},
		{name: "version 8", mutate: func(r *Request) { r.SecVersion = "8" }, wantCode: CodeUpgradeRequired, wantText: "Sec-WebSocket-Version"},
		{name: "version 13 twice", mutate: func(r *Request) { r.SecVersion = "13, 13" }, wantCode: CodeUpgradeRequired, wantText: "Sec-WebSocket-Version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validUpgrade()
			tt.mutate(&r)
			e := r.CheckUpgrade()
			if tt.wantCode == "" {
				if e != nil {
					t.Fatalf("CheckUpgrade = %v, want nil", e)
				}
				return
			}
			if e == nil || e.Code != tt.wantCode || !strings.Contains(e.Message, tt.wantText) {
				t.Fatalf(
					"CheckUpgrade = %v, want %s naming %q",
					e, tt.wantCode, tt.wantText)
			}
		})
	}
}

func TestCheckUpgrade_ParsedSampleHead(t *testing.T) {
	req, _, err := ParseRequest([]byte(sampleHead), 0)
	if err != nil {
		t.Fatal(err)
	}
	if e := req.CheckUpgrade(); e != nil {
		t.Errorf("CheckUpgrade = %v", e)
	}
}

func TestRequest_HasProtocol_ExactMatch(t *testing.T) {
	r := Request{Protocols: []string{"chat", "json.v1"}}
	tests := []struct {
		p    string
		want bool
	}{
		{p: "json.v1", want: true},
		{p: "chat", want: true},
		{p: "JSON.V1", want: false},
		{p: "json", want: false},
		{p: "", want: false},
	}
	for _, tt := range tests {
		if got := r.HasProtocol(tt.p); got != tt.want {
			t.Errorf(
				"HasProtocol(%q) = %v, want %v",
				tt.p, got, tt.want)
		}
	}
}

func TestAcceptKey_RFC6455Example(t *testing.T) {
	// RFC 6455 §1.3.
	if got, want := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; got != want {
		t.Errorf("AcceptKey = %q, want %q", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { _ = AcceptKey("dGhlIHNhbXBsZSBub25jZQ==") }); n > 1 {
		t.Errorf("AcceptKey: %v allocs, want at most 1", n)
	}
	long := strings.Repeat("k", 200)
	if got := AcceptKey(long); len(got) != 28 {
		t.Errorf("long key: %q", got)
	}
}

// TestAppendUpgradeResponse_AcceptedByGobwasDialer runs gobwas's client
// handshake against ParseRequest + AppendUpgradeResponse over a pipe: gobwas
// checks the accept key and the protocol.
func TestAppendUpgradeResponse_AcceptedByGobwasDialer(t *testing.T) {
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	_ = server.SetDeadline(time.Now().Add(5 * time.Second))

	errc := make(chan error, 1)
	go func() {
		var buf []byte
		chunk := make([]byte, 64) // small reads: the head arrives in pieces
		for {
			k, err := server.Read(chunk)
			if err != nil {
				errc <- err
				return
			}
			buf = append(buf, chunk[:k]...)
			req, n, perr := ParseRequest(buf, 8192)
			if perr != nil {
				errc <- perr
				return
			}
			if n == 0 {
				continue
			}
			if e := req.CheckUpgrade(); e != nil {
				errc <- e
				return
			}
			proto := ""
			if req.HasProtocol("json.v1") {
				proto = "json.v1"
			}
			resp := AppendUpgradeResponse(nil, req.SecKey, proto)
			resp = append(resp, ReadyFrame...)
			_, err = server.Write(resp)
			errc <- err
			return
		}
	}()

	d := ws.Dialer{
		Protocols: []string{"chat", "json.v1"},
		NetDial: func(context.Context, string, string) (net.Conn, error) {
			return client, nil
		},
	}
	_, br, hs, err := d.Dial(context.Background(), "ws://dws.test/ws/c/a?user=u")
	if err != nil {
		t.Fatalf(
			"gobwas Dial: %v (server: %v)",
			err, <-errc)
	}
	if err := <-errc; err != nil {
		t.Fatalf(
			"server: %v",
			err)
	}
	if hs.Protocol != "json.v1" {
		t.Errorf("negotiated protocol %q", hs.Protocol)
	}
	if br == nil {
		t.Fatal("ready frame not buffered with the response")
	}
	f, err := ws.ReadFrame(br)
	if err != nil || string(f.Payload) != `{"type":"ready"}` || f.Header.OpCode != ws.OpText {
		t.Errorf(
			"first frame %+v %q %v",
			f.Header, f.Payload, err)
	}
}
