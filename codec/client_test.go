package codec

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestDecodeClientMessage_Table(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     ClientMessage
		wantMsg  string // error message, "" for success
		wantPart string // substring of the message when it varies
	}{
		{
			name: "select_chat top-level chat_id",
			in:   `{"type":"select_chat","chat_id":"X"}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "X"},
		},
		{
			name: "select_chat in payload",
			in:   `{"type":"select_chat","payload":{"chat_id":"chat-42"}}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "chat-42"},
		},
		{
			name: "select_chat with since",
			in:   `{"type":"select_chat","chat_id":"X","since":1234}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "X", Since: 1234, HasSince: true},
		},
		{
			name: "select_chat with since 0",
			in:   `{"type":"select_chat","chat_id":"X","since":0}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "X", HasSince: true},
		},
		{
			name: "since in payload",
			in:   `{"type":"select_chat","payload":{"chat_id":"X","since":7}}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "X", Since: 7, HasSince: true},
		},
		{
			name: "null since is absent",
			in:   `{"type":"select_chat","chat_id":"X","since":null}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "X"},
		},
		{name: "negative since", in: `{"type":"select_chat","chat_id":"X","since":-1}`, wantMsg: "since must be a non-negative integer"},
		{name: "fractional since", in: `{"type":"select_chat","chat_id":"X","since":1.5}`, wantMsg: "since must be a non-negative integer"},
		{name: "exponent since", in: `{"type":"select_chat","chat_id":"X","since":1e3}`, wantMsg: "since must be a non-negative integer"},
		{name: "string since", in: `{"type":"select_chat","chat_id":"X","since":"12"}`, wantMsg: "since must be a non-negative integer"},
		{name: "huge since", in: `{"type":"select_chat","chat_id":"X","since":99999999999999999999999}`, wantMsg: "since must be a non-negative integer"},
		{
			name: "top-level chat_id wins",
			in:   `{"payload":{"chat_id":"p"},"chat_id":"top","type":"select_chat"}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "top"},
		},
		{
			name: "null chat_id falls back to payload",
			in:   `{"type":"select_chat","chat_id":null,"payload":{"chat_id":"p"}}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "p"},
		},
		{
			name: "whitespace and unknown fields",
			in:   " \n{ \"type\" : \"select_chat\" , \"extra\":[1,{\"a\":null}], \"chat_id\" : \"X\" }\r\n",
			want: ClientMessage{Type: TypeSelectChat, ChatID: "X"},
		},
		{
			name: "escaped chat_id decoded",
			in:   `{"type":"select_chat","chat_id":"ab\u0063-\u00e9"}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "abc-é"},
		},
		{
			name: "escaped type decoded",
			in:   `{"type":"select\u005fchat","chat_id":"X"}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "X"},
		},
		{
			name: "non-ASCII chat_id",
			in:   `{"type":"select_chat","chat_id":"чат-1"}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: "чат-1"},
		},
		{
			name: "chat_id of 256 bytes",
			in:   `{"type":"select_chat","chat_id":"` + strings.Repeat("a", 256) + `"}`,
			want: ClientMessage{Type: TypeSelectChat, ChatID: strings.Repeat("a", 256)},
		},
		{
			name: "ping",
			in:   `{"type":"ping"}`,
			want: ClientMessage{Type: TypePing},
		},
		{
			name: "ping with extra fields",
			in:   `{"type":"ping","ts":123}`,
			want: ClientMessage{Type: TypePing},
		},
		{name: "empty", in: ``, wantMsg: "invalid JSON"},
		{name: "not JSON", in: `hello`, wantMsg: "invalid JSON"},
		{name: "truncated", in: `{"type":"select_chat","chat_id":"X"`, wantMsg: "invalid JSON"},
		{name: "trailing comma", in: `{"type":"ping",}`, wantMsg: "invalid JSON"},
		{name: "trailing garbage", in: `{"type":"ping"} {}`, wantMsg: "invalid JSON"},
		{name: "raw control char in string", in: "{\"type\":\"ping\",\"x\":\"a\x01b\"}", wantMsg: "invalid JSON"},
		{name: "array", in: `[{"type":"ping"}]`, wantMsg: "invalid JSON"},
		{name: "string", in: `"ping"`, wantMsg: "invalid JSON"},
		{name: "null", in: `null`, wantMsg: "invalid JSON"},
		{name: "missing type", in: `{"chat_id":"X"}`, wantMsg: "missing message type"},
		{name: "null type", in: `{"type":null}`, wantMsg: "missing message type"},
		{name: "numeric type", in: `{"type":1}`, wantMsg: "message type must be a string"},
		{name: "unknown type", in: `{"type":"subscribe"}`, wantPart: "subscribe"},
		{name: "empty type", in: `{"type":""}`, wantPart: "unknown message type"},
		{name: "type case matters", in: `{"type":"SELECT_CHAT","chat_id":"X"}`, wantPart: "SELECT_CHAT"},
		{name: "long unknown type cut", in: `{"type":"` + strings.Repeat("t", 1000) + `"}`, wantPart: strings.Repeat("t", 64)},
		{name: "no chat_id", in: `{"type":"select_chat"}`, wantMsg: "chat_id is required"},
		{name: "empty chat_id", in: `{"type":"select_chat","chat_id":""}`, wantMsg: "chat_id is required"},
		{name: "numeric chat_id", in: `{"type":"select_chat","chat_id":42}`, wantMsg: "chat_id is required"},
		{name: "object chat_id", in: `{"type":"select_chat","chat_id":{"id":"X"}}`, wantMsg: "chat_id is required"},
		{name: "payload not an object", in: `{"type":"select_chat","payload":"X"}`, wantMsg: "chat_id is required"},
		{name: "payload without chat_id", in: `{"type":"select_chat","payload":{}}`, wantMsg: "chat_id is required"},
		{name: "chat_id of 257 bytes", in: `{"type":"select_chat","chat_id":"` + strings.Repeat("a", 257) + `"}`, wantMsg: "chat_id is too long"},
		{name: "dot", in: `{"type":"select_chat","chat_id":"a.b"}`, wantMsg: "chat_id contains invalid characters"},
		{name: "star", in: `{"type":"select_chat","chat_id":"*"}`, wantMsg: "chat_id contains invalid characters"},
		{name: "greater than", in: `{"type":"select_chat","chat_id":"a>"}`, wantMsg: "chat_id contains invalid characters"},
		{name: "space", in: `{"type":"select_chat","chat_id":"a b"}`, wantMsg: "chat_id contains invalid characters"},
		{name: "escaped tab", in: `{"type":"select_chat","chat_id":"a\tb"}`, wantMsg: "chat_id contains invalid characters"},
		{name: "escaped NUL", in: `{"type":"select_chat","chat_id":"a\u0000"}`, wantMsg: "chat_id contains invalid characters"},
		{name: "DEL", in: "{\"type\":\"select_chat\",\"chat_id\":\"a\x7f\"}", wantMsg: "chat_id contains invalid characters"},
		{name: "no-break space", in: `{"type":"select_chat","chat_id":"a\u00a0b"}`, wantMsg: "chat_id contains invalid characters"},
		{name: "ideographic space", in: `{"type":"select_chat","chat_id":"a\u3000b"}`, wantMsg: "chat_id contains invalid characters"},
		{name: "lone surrogate escape", in: `{"type":"select_chat","chat_id":"a\ud800"}`, wantMsg: "chat_id contains invalid characters"},
		{name: "dot in payload form", in: `{"type":"select_chat","payload":{"chat_id":"a.b"}}`, wantMsg: "chat_id contains invalid characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, e := DecodeClientMessage([]byte(tt.in))
			if tt.wantMsg == "" && tt.wantPart == "" {
				if e != nil || got != tt.want {
					t.Fatalf(
						"got %+v, %v; want %+v",
						got, e, tt.want)
				}
				return
			}
			if e == nil {
				t.Fatalf(
					"got %+v, want an error",
					got)
			}
			if e.Code != CodeBadRequest || got != (ClientMessage{}) {
				t.Errorf(
					"code %s, message %+v",
					e.Code, got)
			}
			if tt.wantMsg != "" && e.Message != tt.wantMsg {
				t.Errorf(
					"message %q, want %q",
					e.Message, tt.wantMsg)
			}
			if !strings.Contains(e.Message, tt.wantPart) {
				t.Errorf(
					"message %q does not contain %q",
					e.Message, tt.wantPart)
			}
			if len(e.Message)+len(e.Details) > 200 {
				t.Errorf("error echoes too much: %d bytes", len(e.Message)+len(e.Details))
			}
		})
	}
}

func TestDecodeClientMessage_ChatIDIsACopy(t *testing.T) {
	for _, in := range []string{
		`{"type":"select_chat","chat_id":"chat-1"}`,
		`{"type":"select_chat","payload":{"chat_id":"chat-1"}}`,
		`{"type":"select_chat","chat_id":"chat\u002d1"}`,
	} {
		b := []byte(in)
		m, e := DecodeClientMessage(b)
		if e != nil {
			t.Fatal(e)
		}
		for i := range b {
			b[i] = '#'
		}
		if m.ChatID != "chat-1" || m.Type != TypeSelectChat {
			t.Errorf("%s: message changed with the buffer: %+v", in, m)
		}
	}
}

func FuzzDecodeClientMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"select_chat","chat_id":"X"}`,
		`{"type":"select_chat","payload":{"chat_id":"X"}}`,
		`{"type":"ping"}`,
		`{"type":"select\u005fchat","chat_id":"a\u0062"}`,
		`{"type":1}`, `[]`, `null`, `{"type":"select_chat","chat_id":"a.b"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := string(b)
		m, e := DecodeClientMessage(b)
		if e != nil {
			if e.Code != CodeBadRequest || m != (ClientMessage{}) {
				t.Fatalf("%q: %+v %v", in, m, e)
			}
			if !utf8.ValidString(e.Message) && utf8.ValidString(in) {
				t.Fatalf("%q: message not UTF-8: %q", in, e.Message)
			}
			return
		}
		switch m.Type {
		case TypePing:
			if m.ChatID != "" {
				t.Fatalf("%q: ping with chat id", in)
			}
		case TypeSelectChat:
			if m.ChatID == "" || len(m.ChatID) > MaxChatIDLen || !utf8.ValidString(m.ChatID) {
				t.Fatalf("%q: chat id %q", in, m.ChatID)
			}
			for _, r := range m.ChatID {
				if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) {
					t.Fatalf("%q: chat id %q has %q", in, m.ChatID, r)
				}
			}
		default:
			t.Fatalf("%q: type %q", in, m.Type)
		}
		// Whatever was accepted must survive the input being reused.
		for i := range b {
			b[i] = 0
		}
		if m2, _ := DecodeClientMessage([]byte(in)); m2 != m {
			t.Fatalf("%q: %+v then %+v", in, m, m2)
		}
	})
}

func BenchmarkDecodeClientMessage(b *testing.B) {
	msg := []byte(`{"type":"select_chat","chat_id":"0190f3c2-7b1e-7c3a-9f4e-2d1c5b6a7e8f"}`)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, e := DecodeClientMessage(msg); e != nil {
			b.Fatal(e)
		}
	}
}

func TestPretouch_NoError(t *testing.T) {
	if err := Pretouch(); err != nil {
		t.Fatal(err)
	}
	if _, e := DecodeClientMessage([]byte(`{"type":"ping"}`)); e != nil {
		t.Fatal(e)
	}
}
