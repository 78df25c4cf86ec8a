package client

import (
	"strings"
	"testing"

	"github.com/dws-gateway/dws/codec"
)

func TestParseResponseHead_Outcomes(t *testing.T) {
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	accept := codec.AcceptKey(key)
	ok := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + accept + "\r\nSec-WebSocket-Protocol: json.v1\r\n\r\n"
	cases := []struct {
		name     string
		in       string
		protocol string
		wantN    int // -1: the head's length
		wantKind string
	}{
		{"valid 101 with frames after it", ok + "\x81\x10", "json.v1", len(ok), ""},
		{"head not complete yet", ok[:40], "json.v1", 0, ""},
		{"head ends but for the last CRLF", ok[:len(ok)-2], "json.v1", 0, ""},
		{"403 with a JSON body", "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}", "json.v1", -1, "http_403"},
		{"unusual status keeps its number", "HTTP/1.1 418 Teapot\r\n\r\n", "json.v1", -1, "http_418"},
		{"wrong accept", "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\nSec-WebSocket-Protocol: json.v1\r\n\r\n", "json.v1", -1, ErrBadHandshake},
		{"no accept", "HTTP/1.1 101 OK\r\nSec-WebSocket-Protocol: json.v1\r\n\r\n", "json.v1", -1, ErrBadHandshake},
		{"sub-protocol not selected", "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n", "json.v1", -1, ErrBadProtocol},
		{"no sub-protocol offered, none selected", "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n", "", -1, ""},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", "json.v1", -1, ErrBadHandshake},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wantN < 0 { // the head is everything up to the blank line
				tc.wantN = strings.Index(tc.in, "\r\n\r\n") + 4
			}
			n, kind := parseResponseHead([]byte(tc.in), accept, tc.protocol)
			if n != tc.wantN || kind != tc.wantKind {
				t.Errorf("got (%d, %q), want (%d, %q)", n, kind, tc.wantN, tc.wantKind)
			}
		})
	}
}

func TestParseResponseHead_FedByteByByte_CompletesOnlyAtTheEnd(t *testing.T) {
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	accept := codec.AcceptKey(key)
	head := "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + accept + "\r\nSec-WebSocket-Protocol: json.v1\r\n\r\n"
	for i := 1; i < len(head); i++ {
		if n, kind := parseResponseHead([]byte(head[:i]), accept, "json.v1"); n != 0 || kind != "" {
			t.Fatalf("prefix of %d bytes: got (%d, %q), want need-more", i, n, kind)
		}
	}
	if n, kind := parseResponseHead([]byte(head), accept, "json.v1"); n != len(head) || kind != "" {
		t.Fatalf("whole head: got (%d, %q)", n, kind)
	}
}

func TestScanEvent_ReadsRowDataFields(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		seq, ts int64
		subject string
		server  int64
	}{
		{"bench event", `{"type":"event","payload":{"event_id":"e","company_id":"c","row_data":{"seq":42,"ts":1700000000123456789,"subject":"websocket.c.a.chats"}}}`, 42, 1700000000123456789, "websocket.c.a.chats", 0},
		{"foreign event", `{"type":"event","payload":{"event_id":"e","row_data":{"id":7}}}`, -1, 0, "", 0},
		{"spaces after colons", `{"type":"event","payload":{"row_data":{"seq": 3,"ts": 9}}}`, 3, 9, "", 0},
		{"envelope seq is the server's", `{"type":"event","seq":9001,"payload":{"row_data":{"seq":42,"ts":7}}}`, 42, 7, "", 9001},
		{"envelope seq, foreign payload", `{"type":"event","seq":5,"payload":{"row_data":{"id":1}}}`, -1, 0, "", 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ev Event
			scanEvent([]byte(tc.in), &ev)
			if ev.Seq != tc.seq || ev.TS != tc.ts || string(ev.Subject) != tc.subject || ev.ServerSeq != tc.server {
				t.Errorf("got seq %d ts %d subject %q server seq %d", ev.Seq, ev.TS, ev.Subject, ev.ServerSeq)
			}
		})
	}
}

func BenchmarkScanEvent(b *testing.B) {
	p := []byte(`{"type":"event","payload":{"event_id":"e","company_id":"c","row_data":{"seq":42,"ts":1700000000123456789,"subject":"websocket.c.a.chats"}}}`)
	var ev Event
	b.ReportAllocs()
	for b.Loop() {
		scanEvent(p, &ev)
	}
}
