package codec

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

func TestReadyFrame_Bytes(t *testing.T) {
	want := append([]byte{0x81, 16}, `{"type":"ready"}`...)
	if !bytes.Equal(ReadyFrame, want) {
		t.Errorf("ReadyFrame = % x, want % x", ReadyFrame, want)
	}
}

func TestAppendEvent_PayloadPassedThrough(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    string
	}{
		{
			name:    "object kept byte for byte",
			payload: `{"event_id":"e1", "row_data":{"b":2,"a":1},"x":"\u00e9"}`,
			want:    `{"type":"event","payload":{"event_id":"e1", "row_data":{"b":2,"a":1},"x":"\u00e9"}}`,
		},
		{
			name:    "empty payload becomes null",
			payload: "",
			want:    `{"type":"event","payload":null}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AppendEvent([]byte("p"), []byte(tt.payload)); string(got) != "p"+tt.want {
				t.Errorf(
					"AppendEvent = %s, want %s",
					got, "p"+tt.want)
			}
			f := EventFrame([]byte(tt.payload))
			if len(f) != cap(f) {
				t.Errorf("EventFrame len %d cap %d: not sized exactly", len(f), cap(f))
			}
			if want := AppendFrame(nil, ws.OpText, []byte(tt.want)); !bytes.Equal(f, want) {
				t.Errorf(
					"EventFrame = %q, want %q",
					f, want)
			}
		})
	}
}

func TestEventFrame_AllLengthEncodings_ReadableByGobwas(t *testing.T) {
	for _, n := range []int{10, 97, 98, 200, 65508, 65509, 70000} {
		payload := []byte(`{"p":"` + strings.Repeat("x", n) + `"}`)
		f := EventFrame(payload)
		if len(f) != cap(f) || len(f) != HeaderLen(eventLen(payload))+eventLen(payload) {
			t.Errorf(
				"n=%d: len %d cap %d",
				n, len(f), cap(f))
		}
		gf, err := ws.ReadFrame(bytes.NewReader(f))
		if err != nil {
			t.Fatalf(
				"n=%d: gobwas: %v",
				n, err)
		}
		if !gf.Header.Fin || gf.Header.OpCode != ws.OpText || gf.Header.Masked ||
			!bytes.Equal(gf.Payload, AppendEvent(nil, payload)) {
			t.Errorf(
				"n=%d: header %+v",
				n, gf.Header)
		}
	}
}

func TestAppendErrorEnvelope_Bytes(t *testing.T) {
	e := NewError(CodeBadRequest, `chat_id "x" is required`).WithDetails("line\nbreak")
	want := `{"type":"error","payload":{"code":"BadRequest","message":"chat_id \"x\" is required","details":"line\nbreak"}}`
	if got := AppendErrorEnvelope([]byte("p"), e); string(got) != "p"+want {
		t.Errorf(
			"got  %s\nwant %s",
			got, "p"+want)
	}
	var v struct {
		Type    string `json:"type"`
		Payload Error  `json:"payload"`
	}
	if err := json.Unmarshal([]byte(want), &v); err != nil || v.Type != "error" || v.Payload != *e {
		t.Errorf(
			"does not decode back: %+v %v",
			v, err)
	}
}

func TestAppendErrorFrame_AllLengthEncodings(t *testing.T) {
	for _, n := range []int{0, 40, 100, 1000, 70000} {
		e := NewError(CodeRateLimitExceeded, "slow down").WithDetails(strings.Repeat("d", n))
		prefix := []byte("existing")
		got := AppendErrorFrame(prefix, e)
		if !bytes.HasPrefix(got, []byte("existing")) {
			t.Fatalf("n=%d: prefix lost", n)
		}
		want := AppendFrame([]byte("existing"), ws.OpText, AppendErrorEnvelope(nil, e))
		if !bytes.Equal(got, want) {
			t.Errorf(
				"n=%d: AppendErrorFrame differs from AppendFrame(AppendErrorEnvelope):\n%q\n%q",
				n, got[:min(len(got), 60)], want[:min(len(want), 60)])
		}
	}
}

func BenchmarkEventFrame(b *testing.B) {
	payload := []byte(`{"event_id":"0190f3c2-7b1e-7c3a-9f4e-2d1c5b6a7e8f","event_time":"2025-01-02T03:04:05Z",` +
		`"company_id":"acme","agent_id":"a1","chat_id":"c42","message_id":"m9",` +
		`"row_data":{"id":"m9","text":"hello there, how can I help?","status":"sent","from_me":true}}`)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		_ = EventFrame(payload)
	}
}

func TestEventFrameSeq_Shapes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		seq     uint64
		payload string
		want    string
	}{
		{0, `{"a":1}`, `{"type":"event","payload":{"a":1}}`},
		{1, `{"a":1}`, `{"type":"event","seq":1,"payload":{"a":1}}`},
		{18446744073709551615, `[]`, `{"type":"event","seq":18446744073709551615,"payload":[]}`},
		{42, ``, `{"type":"event","seq":42,"payload":null}`},
	}
	for _, tc := range cases {
		if got := string(AppendEventSeq(nil, tc.seq, []byte(tc.payload))); got != tc.want {
			t.Errorf("AppendEventSeq(%d) = %s, want %s", tc.seq, got, tc.want)
		}
		f := EventFrameSeq(tc.seq, []byte(tc.payload))
		if len(f) != cap(f) {
			t.Errorf("seq %d: frame len %d cap %d, want one exact allocation", tc.seq, len(f), cap(f))
		}
		h, err := ws.ReadHeader(bytes.NewReader(f))
		if err != nil || int(h.Length) != len(tc.want) || string(f[len(f)-len(tc.want):]) != tc.want {
			t.Errorf("seq %d: frame %q (header %+v, %v)", tc.seq, f, h, err)
		}
		if !json.Valid(f[len(f)-len(tc.want):]) {
			t.Errorf("seq %d: not JSON", tc.seq)
		}
		// The payload read back from the frame is the one encoded, and
		// an append to it cannot overwrite the frame.
		p := EventFramePayload(f, len(tc.payload))
		if string(p) != tc.payload || cap(p) != len(p) {
			t.Errorf("seq %d: payload in frame %q (cap %d), want %q", tc.seq, p, cap(p), tc.payload)
		}
		if len(p) > 0 && &p[0] != &f[len(f)-1-len(p)] {
			t.Errorf("seq %d: payload is a copy, want a view of the frame", tc.seq)
		}
	}
}

func TestReadyFrameEpoch(t *testing.T) {
	t.Parallel()
	if !bytes.Equal(ReadyFrameEpoch(""), ReadyFrame) {
		t.Fatal("no epoch must give the plain ready frame")
	}
	want := `{"type":"ready","epoch":"1733390000-\"x\""}`
	f := ReadyFrameEpoch(`1733390000-"x"`)
	if got := string(f[2:]); got != want {
		t.Fatalf("ready = %s, want %s", got, want)
	}
}

func TestReadyFrameAt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		epoch string
		seq   uint64
		want  string
	}{
		{"", 7, `{"type":"ready"}`},
		{"e1", 0, `{"type":"ready","epoch":"e1","seq":0}`},
		{"e1", 18446744073709551615, `{"type":"ready","epoch":"e1","seq":18446744073709551615}`},
	} {
		f := ReadyFrameAt(tc.epoch, tc.seq)
		if got := string(f[2:]); got != tc.want {
			t.Errorf("ReadyFrameAt(%q, %d) = %s, want %s", tc.epoch, tc.seq, got, tc.want)
		}
		if !json.Valid(f[2:]) {
			t.Errorf("ReadyFrameAt(%q, %d): not JSON", tc.epoch, tc.seq)
		}
	}
}
