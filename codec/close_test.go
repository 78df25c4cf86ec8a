package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

func closeBody(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func TestParseClosePayload_Validation(t *testing.T) {
	tests := []struct {
		name       string
		payload    []byte
		wantCode   uint16
		wantReason string
		wantErr    error
	}{
		{name: "empty is no status", payload: nil, wantCode: CloseNoStatus},
		{name: "one byte", payload: []byte{0x03}, wantErr: ErrProtocol},
		{name: "0", payload: closeBody(0, ""), wantErr: ErrProtocol},
		{name: "999", payload: closeBody(999, ""), wantErr: ErrProtocol},
		{name: "1000", payload: closeBody(1000, ""), wantCode: 1000},
		{name: "1001", payload: closeBody(1001, ""), wantCode: 1001},
		{name: "1002", payload: closeBody(1002, ""), wantCode: 1002},
		{name: "1003", payload: closeBody(1003, ""), wantCode: 1003},
		{name: "1004 reserved", payload: closeBody(1004, ""), wantErr: ErrProtocol},
		{name: "1005 not on the wire", payload: closeBody(1005, ""), wantErr: ErrProtocol},
		{name: "1006 not on the wire", payload: closeBody(1006, ""), wantErr: ErrProtocol},
		{name: "1007", payload: closeBody(1007, ""), wantCode: 1007},
		{name: "1008", payload: closeBody(1008, ""), wantCode: 1008},
		{name: "1009", payload: closeBody(1009, ""), wantCode: 1009},
		{name: "1010", payload: closeBody(1010, ""), wantCode: 1010},
		{name: "1011", payload: closeBody(1011, ""), wantCode: 1011},
		{name: "1012 not in RFC 6455", payload: closeBody(1012, ""), wantErr: ErrProtocol},
		{name: "1014 not in RFC 6455", payload: closeBody(1014, ""), wantErr: ErrProtocol},
		{name: "1015 not on the wire", payload: closeBody(1015, ""), wantErr: ErrProtocol},
		{name: "1016 unassigned", payload: closeBody(1016, ""), wantErr: ErrProtocol},
		{name: "2999 unassigned", payload: closeBody(2999, ""), wantErr: ErrProtocol},
		{name: "3000", payload: closeBody(3000, ""), wantCode: 3000},
		{name: "3999", payload: closeBody(3999, ""), wantCode: 3999},
		{name: "4000", payload: closeBody(4000, ""), wantCode: 4000},
		{name: "4999", payload: closeBody(4999, ""), wantCode: 4999},
		{name: "5000", payload: closeBody(5000, ""), wantErr: ErrProtocol},
		{name: "65535", payload: closeBody(65535, ""), wantErr: ErrProtocol},
		{name: "reason", payload: closeBody(1000, "bye"), wantCode: 1000, wantReason: "bye"},
		{name: "non-ASCII reason", payload: closeBody(1001, "κόσμε"), wantCode: 1001, wantReason: "κόσμε"},
		{name: "invalid UTF-8 reason", payload: closeBody(1000, "a\xffb"), wantCode: 1000, wantErr: ErrInvalidUTF8},
		{name: "surrogate in reason", payload: closeBody(1000, "\xed\xa0\x80"), wantCode: 1000, wantErr: ErrInvalidUTF8},
		{name: "cut rune in reason", payload: closeBody(1000, "\xce"), wantCode: 1000, wantErr: ErrInvalidUTF8},
		{name: "bad code wins over bad reason", payload: closeBody(1005, "\xff"), wantErr: ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, reason, err := ParseClosePayload(tt.payload)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf(
					"err = %v, want %v",
					err, tt.wantErr)
			}
			if err == nil && code != tt.wantCode {
				t.Errorf(
					"code = %d, want %d",
					code, tt.wantCode)
			}
			if string(reason) != tt.wantReason {
				t.Errorf(
					"reason = %q, want %q",
					reason, tt.wantReason)
			}
		})
	}
}

func TestAppendCloseFrame_BytesAndTruncation(t *testing.T) {
	long := strings.Repeat("x", 122) + "é" + "tail" // é straddles byte 123
	tests := []struct {
		name       string
		code       uint16
		reason     string
		wantBody   []byte
		wantReason string
	}{
		{
			name:     "code only",
			code:     CloseNormal,
			wantBody: []byte{0x03, 0xe8},
		},
		{
			name:       "code and reason",
			code:       CloseSlowConsumer,
			reason:     "slow-consumer",
			wantBody:   closeBody(4408, "slow-consumer"),
			wantReason: "slow-consumer",
		},
		{
			name:       "reason of exactly 123 bytes kept",
			code:       CloseGoingAway,
			reason:     strings.Repeat("r", 123),
			wantBody:   closeBody(1001, strings.Repeat("r", 123)),
			wantReason: strings.Repeat("r", 123),
		},
		{
			name:       "long reason cut on a rune boundary",
			code:       CloseSessionReplaced,
			reason:     long,
			wantBody:   closeBody(4402, strings.Repeat("x", 122)),
			wantReason: strings.Repeat("x", 122),
		},
		{
			name:     "no status sends empty body",
			code:     CloseNoStatus,
			reason:   "ignored",
			wantBody: []byte{},
		},
		{
			name:     "zero code sends empty body",
			code:     0,
			wantBody: []byte{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendCloseFrame([]byte("pre"), tt.code, tt.reason)
			if !bytes.HasPrefix(got, []byte("pre")) {
				t.Fatalf("prefix lost: %q", got)
			}
			f, err := ws.ReadFrame(bytes.NewReader(got[3:]))
			if err != nil {
				t.Fatalf(
					"gobwas ReadFrame: %v",
					err)
			}
			if !f.Header.Fin || f.Header.OpCode != ws.OpClose || f.Header.Masked {
				t.Errorf("header = %+v", f.Header)
			}
			if !bytes.Equal(f.Payload, tt.wantBody) && len(f.Payload)+len(tt.wantBody) > 0 {
				t.Errorf(
					"body = %q, want %q",
					f.Payload, tt.wantBody)
			}
			if len(f.Payload) > ws.MaxControlFramePayloadSize {
				t.Errorf("payload %d > 125", len(f.Payload))
			}
			if len(got[3:]) != 2+len(f.Payload) {
				t.Errorf("trailing bytes after the frame")
			}
			if len(tt.wantBody) >= 2 {
				code, reason, err := ParseClosePayload(f.Payload)
				if err != nil || code != tt.code || string(reason) != tt.wantReason {
					t.Errorf(
						"round trip = %d %q %v",
						code, reason, err)
				}
			}
		})
	}
}

func TestTruncateUTF8_NeverSplitsARune(t *testing.T) {
	s := "a€𝄞b€" // 1 + 3 + 4 + 1 + 3 bytes
	for n := 0; n <= len(s)+1; n++ {
		got := truncateUTF8(s, n)
		if len(got) > n || !utf8.ValidString(got) || !strings.HasPrefix(s, got) {
			t.Errorf(
				"truncateUTF8(%q, %d) = %q",
				s, n, got)
		}
		if n >= len(s) && got != s {
			t.Errorf("truncateUTF8 cut a string that fits: %q", got)
		}
	}
}
