package codec

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/gobwas/ws"
)

// gobwasHeader encodes h with gobwas, the reference encoder.
func gobwasHeader(t testing.TB, h ws.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := ws.WriteHeader(&buf, h); err != nil {
		t.Fatalf(
			"ws.WriteHeader(%+v): %v",
			h, err)
	}
	return buf.Bytes()
}

func TestDecodeHeader_LengthsFedInPieces_NeedMoreThenDecode(t *testing.T) {
	mask := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	tests := []struct {
		name   string
		header ws.Header
		n      int
	}{
		{name: "7-bit zero", header: ws.Header{Fin: true, OpCode: ws.OpText}, n: 2},
		{name: "7-bit 125", header: ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 125}, n: 2},
		{name: "16-bit 126", header: ws.Header{OpCode: ws.OpText, Length: 126}, n: 4},
		{name: "16-bit 65535", header: ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: 65535}, n: 4},
		{name: "64-bit 65536", header: ws.Header{Fin: true, OpCode: ws.OpText, Length: 65536}, n: 10},
		{name: "64-bit max", header: ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1<<63 - 1}, n: 10},
		{name: "masked 7-bit", header: ws.Header{Fin: true, OpCode: ws.OpPing, Masked: true, Mask: mask, Length: 5}, n: 6},
		{name: "masked 16-bit", header: ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: mask, Length: 300}, n: 8},
		{name: "masked 64-bit", header: ws.Header{OpCode: ws.OpBinary, Masked: true, Mask: mask, Length: 1 << 40}, n: 14},
		{name: "rsv bits", header: ws.Header{Fin: true, Rsv: 0x7, OpCode: ws.OpText, Length: 1}, n: 2},
		{name: "reserved opcode", header: ws.Header{Fin: true, OpCode: 0xb, Length: 1}, n: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wire := append(gobwasHeader(t, tt.header), "payload"...)
			for k := 0; k < tt.n; k++ {
				h, n, err := DecodeHeader(wire[:k])
				if n != 0 || err != nil || h != (ws.Header{}) {
					t.Fatalf(
						"DecodeHeader(%d of %d bytes) = %+v, %d, %v; want need more",
						k, tt.n, h, n, err)
				}
			}
			for _, k := range []int{tt.n, len(wire)} {
				h, n, err := DecodeHeader(wire[:k])
				if err != nil || n != tt.n || h != tt.header {
					t.Fatalf(
						"DecodeHeader(%d bytes) = %+v, %d, %v; want %+v, %d",
						k, h, n, err, tt.header, tt.n)
				}
			}
		})
	}
}

func TestDecodeHeader_64BitLengthTopBitSet_ProtocolError(t *testing.T) {
	wire := []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}
	for k := 3; k <= len(wire); k++ {
		if _, n, err := DecodeHeader(wire[:k]); err != ErrProtocol || n != 0 {
			t.Errorf(
				"DecodeHeader(%d bytes) = %d, %v; want ErrProtocol",
				k, n, err)
		}
	}
	if _, err := ws.ReadHeader(bytes.NewReader(wire)); err == nil {
		t.Errorf("gobwas accepts it; the test premise is wrong")
	}
}

func TestDecodeHeader_MatchesGobwasOnRandomHeaders(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		var b [14]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		switch rng.IntN(3) {
		case 0:
			b[1] = b[1]&0x80 | byte(rng.IntN(126))
		case 1:
			b[1] |= 0x7e
			b[1] &^= 0x01
		}
		checkAgainstGobwas(t, b[:])
	}
}

// checkAgainstGobwas decodes b with DecodeHeader and with gobwas
// ws.ReadHeader and fails when they disagree.
func checkAgainstGobwas(t *testing.T, b []byte) {
	t.Helper()
	h, n, err := DecodeHeader(b)
	r := bytes.NewReader(b)
	gh, gerr := ws.ReadHeader(r)
	gn := len(b) - r.Len()
	switch {
	case gerr == nil:
		if err != nil || n != gn || h != gh {
			t.Fatalf(
				"% x: DecodeHeader = %+v, %d, %v; gobwas = %+v, %d",
				b, h, n, err, gh, gn)
		}
	case errors.Is(gerr, io.EOF) || errors.Is(gerr, io.ErrUnexpectedEOF):
		// Short input: need more, or the bad 64-bit length already seen.
		if n != 0 || (err != nil && err != ErrProtocol) {
			t.Fatalf(
				"% x: DecodeHeader = %d, %v; gobwas = %v",
				b, n, err, gerr)
		}
		if err == ErrProtocol && (b[1]&0x7f != 127 || b[2]&0x80 == 0) {
			t.Fatalf("% x: spurious ErrProtocol", b)
		}
	case gerr == ws.ErrHeaderLengthMSB:
		if err != ErrProtocol || n != 0 {
			t.Fatalf(
				"% x: DecodeHeader = %d, %v; want ErrProtocol",
				b, n, err)
		}
	default:
		t.Fatalf(
			"% x: unexpected gobwas error %v",
			b, gerr)
	}
}

func FuzzDecodeHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x82, 0x7e, 0x01, 0x00})
	f.Add([]byte{0x02, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9})
	f.Add([]byte{0x88, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x81})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAgainstGobwas(t, b)
		// Fed in any prefix, the answer is need more or the same header.
		h, n, err := DecodeHeader(b)
		for k := 0; k < len(b) && k < 15; k++ {
			ph, pn, perr := DecodeHeader(b[:k])
			if pn != 0 && (pn != n || ph != h || perr != nil) {
				t.Fatalf(
					"% x: prefix %d decoded as %+v %d %v, whole as %+v %d %v",
					b, k, ph, pn, perr, h, n, err)
			}
		}
	})
}

func TestCheckClientHeader_Violations(t *testing.T) {
	m := [4]byte{1, 2, 3, 4}
	tests := []struct {
		name       string
		header     ws.Header
		maxPayload int64
		want       error
	}{
		{name: "masked text ok", header: ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: m, Length: 10}},
		{name: "masked continuation ok", header: ws.Header{OpCode: ws.OpContinuation, Masked: true, Length: 10}},
		{name: "unmasked", header: ws.Header{Fin: true, OpCode: ws.OpText, Length: 10}, want: ErrProtocol},
		{name: "rsv1", header: ws.Header{Fin: true, Rsv: 0x4, OpCode: ws.OpText, Masked: true}, want: ErrProtocol},
		{name: "rsv2", header: ws.Header{Fin: true, Rsv: 0x2, OpCode: ws.OpText, Masked: true}, want: ErrProtocol},
		{name: "rsv3", header: ws.Header{Fin: true, Rsv: 0x1, OpCode: ws.OpText, Masked: true}, want: ErrProtocol},
		{name: "reserved data opcode 3", header: ws.Header{Fin: true, OpCode: 0x3, Masked: true}, want: ErrProtocol},
		{name: "reserved data opcode 7", header: ws.Header{Fin: true, OpCode: 0x7, Masked: true}, want: ErrProtocol},
		{name: "reserved control opcode B", header: ws.Header{Fin: true, OpCode: 0xb, Masked: true}, want: ErrProtocol},
		{name: "reserved control opcode F", header: ws.Header{Fin: true, OpCode: 0xf, Masked: true}, want: ErrProtocol},
		{name: "ping 125 ok", header: ws.Header{Fin: true, OpCode: ws.OpPing, Masked: true, Length: 125}},
		{name: "ping 126", header: ws.Header{Fin: true, OpCode: ws.OpPing, Masked: true, Length: 126}, want: ErrProtocol},
		{name: "pong fragmented", header: ws.Header{OpCode: ws.OpPong, Masked: true}, want: ErrProtocol},
		{name: "close fragmented", header: ws.Header{OpCode: ws.OpClose, Masked: true, Length: 2}, want: ErrProtocol},
		{name: "close 200 bytes", header: ws.Header{Fin: true, OpCode: ws.OpClose, Masked: true, Length: 200}, want: ErrProtocol},
		{name: "control ignores maxPayload", header: ws.Header{Fin: true, OpCode: ws.OpPing, Masked: true, Length: 100}, maxPayload: 10},
		{name: "data at maxPayload ok", header: ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Length: 1024}, maxPayload: 1024},
		{name: "data over maxPayload", header: ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Length: 1025}, maxPayload: 1024, want: ErrTooBig},
		{name: "continuation over maxPayload", header: ws.Header{OpCode: ws.OpContinuation, Masked: true, Length: 1 << 40}, maxPayload: 1024, want: ErrTooBig},
		{name: "no limit", header: ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Length: 1 << 40}},
		{name: "protocol error wins over too big", header: ws.Header{Fin: true, OpCode: ws.OpText, Length: 1 << 40}, maxPayload: 1, want: ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckClientHeader(tt.header, tt.maxPayload); got != tt.want {
				t.Errorf(
					"CheckClientHeader(%+v, %d) = %v, want %v",
					tt.header, tt.maxPayload, got, tt.want)
			}
		})
	}
}

func TestCheckSequence_Fragmentation(t *testing.T) {
	tests := []struct {
		name      string
		inMessage bool
		op        ws.OpCode
		want      error
	}{
		{name: "text starts a message", op: ws.OpText},
		{name: "binary starts a message", op: ws.OpBinary},
		{name: "continuation without a message", op: ws.OpContinuation, want: ErrProtocol},
		{name: "continuation inside a message", inMessage: true, op: ws.OpContinuation},
		{name: "text inside a message", inMessage: true, op: ws.OpText, want: ErrProtocol},
		{name: "binary inside a message", inMessage: true, op: ws.OpBinary, want: ErrProtocol},
		{name: "ping between fragments", inMessage: true, op: ws.OpPing},
		{name: "close between fragments", inMessage: true, op: ws.OpClose},
		{name: "pong outside a message", op: ws.OpPong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckSequence(tt.inMessage, tt.op); got != tt.want {
				t.Errorf(
					"CheckSequence(%v, %v) = %v, want %v",
					tt.inMessage, tt.op, got, tt.want)
			}
		})
	}
}

func TestHeaderLen_Boundaries(t *testing.T) {
	tests := []struct {
		n    int
		want int
	}{
		{n: 0, want: 2},
		{n: 125, want: 2},
		{n: 126, want: 4},
		{n: 65535, want: 4},
		{n: 65536, want: 10},
		{n: 1 << 40, want: 10},
	}
	for _, tt := range tests {
		if got := HeaderLen(tt.n); got != tt.want {
			t.Errorf(
				"HeaderLen(%d) = %d, want %d",
				tt.n, got, tt.want)
		}
		if got := len(AppendHeader(nil, ws.OpText, true, tt.n)); got != tt.want {
			t.Errorf(
				"len(AppendHeader(%d)) = %d, want %d",
				tt.n, got, tt.want)
		}
	}
}

func TestAppendHeader_MatchesGobwasWriteHeader(t *testing.T) {
	ops := []ws.OpCode{ws.OpContinuation, ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong}
	lengths := []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 32, 1<<63 - 1}
	for _, op := range ops {
		for _, fin := range []bool{true, false} {
			for _, n := range lengths {
				got := AppendHeader([]byte{0xee}, op, fin, n)
				want := gobwasHeader(t, ws.Header{Fin: fin, OpCode: op, Length: int64(n)})
				if !bytes.Equal(got[1:], want) || got[0] != 0xee {
					t.Errorf(
						"AppendHeader(%v, %v, %d) = % x, gobwas % x",
						op, fin, n, got[1:], want)
				}
			}
		}
	}
}

func TestAppendFrame_ReadableByGobwas(t *testing.T) {
	for _, n := range []int{0, 5, 125, 126, 65535, 65536, 70000} {
		payload := bytes.Repeat([]byte{'p'}, n)
		wire := AppendFrame([]byte("x"), ws.OpBinary, payload)
		f, err := ws.ReadFrame(bytes.NewReader(wire[1:]))
		if err != nil {
			t.Fatalf(
				"n=%d: gobwas ReadFrame: %v",
				n, err)
		}
		want := ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(n)}
		if f.Header != want || !bytes.Equal(f.Payload, payload) {
			t.Errorf(
				"n=%d: header %+v, want %+v",
				n, f.Header, want)
		}
		if len(wire) != 1+HeaderLen(n)+n {
			t.Errorf(
				"n=%d: len %d",
				n, len(wire))
		}
	}
}

func TestAppendClientFrame_MaskedAndDecodable(t *testing.T) {
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	for _, n := range []int{0, 5, 200, 70000} {
		for _, fin := range []bool{true, false} {
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = byte(i)
			}
			orig := bytes.Clone(payload)
			wire := AppendClientFrame(nil, ws.OpText, fin, mask, payload)
			if !bytes.Equal(payload, orig) {
				t.Fatalf("payload modified")
			}
			h, hn, err := DecodeHeader(wire)
			if err != nil || CheckClientHeader(h, 0) != nil {
				t.Fatalf(
					"DecodeHeader: %+v %v",
					h, err)
			}
			want := ws.Header{Fin: fin, OpCode: ws.OpText, Masked: true, Mask: mask, Length: int64(n)}
			if h != want {
				t.Errorf(
					"header %+v, want %+v",
					h, want)
			}
			gf, err := ws.ReadFrame(bytes.NewReader(wire))
			if err != nil {
				t.Fatalf(
					"gobwas ReadFrame: %v",
					err)
			}
			gf = ws.UnmaskFrameInPlace(gf)
			if !bytes.Equal(gf.Payload, orig) {
				t.Errorf("n=%d: gobwas unmasked payload differs", n)
			}
			body := bytes.Clone(wire[hn:])
			Unmask(body, mask, 0)
			if !bytes.Equal(body, orig) {
				t.Errorf("n=%d: Unmask payload differs", n)
			}
		}
	}
}

func TestHotPath_ZeroAllocs(t *testing.T) {
	wire := AppendClientFrame(nil, ws.OpText, true, [4]byte{1, 2, 3, 4}, make([]byte, 300))
	payload := make([]byte, 1024)
	dst := make([]byte, 0, 2048)
	var v UTF8Validator
	text := []byte("héllo wörld, plain ASCII and some more text €")
	tests := []struct {
		name string
		fn   func()
	}{
		{name: "DecodeHeader", fn: func() { _, _, _ = DecodeHeader(wire) }},
		{name: "AppendHeader", fn: func() { _ = AppendHeader(dst[:0], ws.OpText, true, 70000) }},
		{name: "AppendFrame", fn: func() { _ = AppendFrame(dst[:0], ws.OpText, payload) }},
		{name: "AppendCloseFrame", fn: func() { _ = AppendCloseFrame(dst[:0], CloseGoingAway, "bye") }},
		{name: "Unmask", fn: func() { _ = Unmask(payload, [4]byte{1, 2, 3, 4}, 3) }},
		{name: "UTF8Validator.Write", fn: func() { v.Reset(); _ = v.Write(text[:5]); _ = v.Write(text[5:]) }},
		{name: "CheckClientHeader", fn: func() { _ = CheckClientHeader(ws.Header{Masked: true, OpCode: ws.OpText}, 10) }},
		{name: "AppendErrorFrame", fn: func() { _ = AppendErrorFrame(dst[:0], errChatIDRequired) }},
		{name: "AppendAcceptKey", fn: func() { _ = AppendAcceptKey(dst[:0], "dGhlIHNhbXBsZSBub25jZQ==") }},
	}
	for _, tt := range tests {
		if got := testing.AllocsPerRun(100, tt.fn); got != 0 {
			t.Errorf(
				"%s: %v allocs/op, want 0",
				tt.name, got)
		}
	}
}

func BenchmarkDecodeHeader(b *testing.B) {
	wire := AppendClientFrame(nil, ws.OpText, true, [4]byte{1, 2, 3, 4}, make([]byte, 300))
	b.ReportAllocs()
	for b.Loop() {
		_, _, _ = DecodeHeader(wire)
	}
}

func BenchmarkAppendHeader(b *testing.B) {
	dst := make([]byte, 0, 16)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendHeader(dst[:0], ws.OpText, true, 300)
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	payload := make([]byte, 1024)
	dst := make([]byte, 0, 2048)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendFrame(dst[:0], ws.OpText, payload)
	}
}
