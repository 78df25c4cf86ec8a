package codec

import (
	"math/rand/v2"
	"sync"
	"testing"
	"unicode/utf8"
)

var utf8Cases = []struct {
	name string
	in   string
	// prefixOK: no byte so far is invalid (the message may still be cut).
	prefixOK bool
	valid    bool
}{
	{name: "empty", in: "", prefixOK: true, valid: true},
	{name: "ASCII", in: "hello", prefixOK: true, valid: true},
	{name: "2-byte", in: "κόσμε", prefixOK: true, valid: true},
	{name: "3-byte", in: "世界€", prefixOK: true, valid: true},
	{name: "4-byte", in: "🎉𝄞", prefixOK: true, valid: true},
	{name: "U+007F", in: "\x7f", prefixOK: true, valid: true},
	{name: "U+0080", in: "\xc2\x80", prefixOK: true, valid: true},
	{name: "U+07FF", in: "\xdf\xbf", prefixOK: true, valid: true},
	{name: "U+0800", in: "\xe0\xa0\x80", prefixOK: true, valid: true},
	{name: "U+D7FF", in: "\xed\x9f\xbf", prefixOK: true, valid: true},
	{name: "U+E000", in: "\xee\x80\x80", prefixOK: true, valid: true},
	{name: "U+FFFF", in: "\xef\xbf\xbf", prefixOK: true, valid: true},
	{name: "U+10000", in: "\xf0\x90\x80\x80", prefixOK: true, valid: true},
	{name: "U+10FFFF", in: "\xf4\x8f\xbf\xbf", prefixOK: true, valid: true},
	{name: "cut 2-byte", in: "a\xc2", prefixOK: true},
	{name: "cut 3-byte", in: "a\xe2\x82", prefixOK: true},
	{name: "cut 4-byte", in: "a\xf0\x9f\x8e", prefixOK: true},
	{name: "overlong C0", in: "\xc0\x80"},
	{name: "overlong C1", in: "\xc1\xbf"},
	{name: "overlong 3-byte", in: "\xe0\x80\x80"},
	{name: "overlong 3-byte U+07FF", in: "\xe0\x9f\xbf"},
	{name: "overlong 4-byte", in: "\xf0\x80\x80\x80"},
	{name: "overlong 4-byte U+FFFF", in: "\xf0\x8f\xbf\xbf"},
	{name: "surrogate U+D800", in: "\xed\xa0\x80"},
	{name: "surrogate U+DFFF", in: "\xed\xbf\xbf"},
	{name: "surrogate pair", in: "\xed\xa0\x80\xed\xb0\x80"},
	{name: "U+110000", in: "\xf4\x90\x80\x80"},
	{name: "F5 lead", in: "\xf5\x80\x80\x80"},
	{name: "FF byte", in: "a\xff"},
	{name: "FE byte", in: "\xfe"},
	{name: "stray continuation", in: "a\x80b"},
	{name: "lead then ASCII", in: "\xc2a"},
	{name: "3-byte lead then ASCII", in: "\xe2\x82a"},
	{name: "Autobahn 6.4.1 fails fast", in: "κόσμε\xf4\x90\x80\x80edited"},
}

// feed writes parts into a fresh validator and returns every Write result.
func feed(parts ...[]byte) ([]bool, bool) {
	var v UTF8Validator
	oks := make([]bool, len(parts))
	for i, p := range parts {
		oks[i] = v.Write(p)
	}
	return oks, v.Valid()
}

func TestUTF8Validator_Cases_WholeAndEverySplit(t *testing.T) {
	for _, tt := range utf8Cases {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			if utf8.Valid(in) != tt.valid {
				t.Fatalf("case is wrong: utf8.Valid = %v", !tt.valid)
			}
			if ValidUTF8(in) != tt.valid {
				t.Errorf("ValidUTF8 = %v, want %v", !tt.valid, tt.valid)
			}
			oks, valid := feed(in)
			if oks[0] != tt.prefixOK || valid != tt.valid {
				t.Errorf(
					"whole: Write = %v, Valid = %v; want %v, %v",
					oks[0], valid, tt.prefixOK, tt.valid)
			}
			for cut := 0; cut <= len(in); cut++ {
				oks, valid := feed(in[:cut], in[cut:])
				if oks[1] != tt.prefixOK || valid != tt.valid {
					t.Errorf(
						"split at %d: Write = %v, Valid = %v; want %v, %v",
						cut, oks, valid, tt.prefixOK, tt.valid)
				}
			}
		})
	}
}

func TestUTF8Validator_ByteByByte_FailsOnFirstBadByte(t *testing.T) {
	for _, tt := range utf8Cases {
		t.Run(tt.name, func(t *testing.T) {
			var v UTF8Validator
			for i := 0; i < len(tt.in); i++ {
				want := validPrefix([]byte(tt.in[:i+1]))
				if got := v.Write([]byte{tt.in[i]}); got != want {
					t.Fatalf(
						"byte %d (%#x): Write = %v, want %v",
						i, tt.in[i], got, want)
				}
			}
			if v.Valid() != tt.valid {
				t.Errorf("Valid = %v, want %v", !tt.valid, tt.valid)
			}
		})
	}
}

func TestUTF8Validator_RuneSplitAcrossFragments(t *testing.T) {
	// "€" is E2 82 AC; "🎉" is F0 9F 8E 89.
	tests := []struct {
		name  string
		parts []string
		valid bool
	}{
		{name: "3-byte 1+2", parts: []string{"a\xe2", "\x82\xacb"}, valid: true},
		{name: "3-byte 2+1", parts: []string{"a\xe2\x82", "\xac"}, valid: true},
		{name: "4-byte 1+1+1+1", parts: []string{"\xf0", "\x9f", "\x8e", "\x89"}, valid: true},
		{name: "4-byte with empty fragments", parts: []string{"\xf0\x9f", "", "\x8e\x89", ""}, valid: true},
		{name: "cut at the end", parts: []string{"ok", "\xf0\x9f"}},
		{name: "surrogate split", parts: []string{"\xed", "\xa0\x80"}},
		{name: "above U+10FFFF split", parts: []string{"\xf4", "\x90\x80\x80"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v UTF8Validator
			for _, p := range tt.parts {
				v.Write([]byte(p))
			}
			if v.Valid() != tt.valid {
				t.Errorf("Valid = %v, want %v", !tt.valid, tt.valid)
			}
		})
	}
}

func TestUTF8Validator_StaysInvalidUntilReset(t *testing.T) {
	var v UTF8Validator
	if v.Write([]byte("\xff")) {
		t.Fatal("Write accepted 0xFF")
	}
	if v.Write([]byte("fine")) || v.Valid() {
		t.Fatal("validator recovered without Reset")
	}
	v.Reset()
	if !v.Valid() || !v.Write([]byte("fine")) || !v.Valid() {
		t.Fatal("Reset did not clear the state")
	}
	v.Write([]byte("\xe2"))
	v.Reset()
	if !v.Valid() {
		t.Fatal("Reset did not clear an open rune")
	}
}

// prefixes holds every proper prefix of every rune's UTF-8 encoding: the
// trailing bytes that valid text cut short may end with.
var prefixes = sync.OnceValue(func() map[string]bool {
	m := map[string]bool{}
	var b [utf8.UTFMax]byte
	for r := rune(0x80); r <= utf8.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		n := utf8.EncodeRune(b[:], r)
		for k := 1; k < n; k++ {
			m[string(b[:k])] = true
		}
	}
	return m
})

// validPrefix is the reference for Write: b can still be continued into
// valid UTF-8.
func validPrefix(b []byte) bool {
	if utf8.Valid(b) {
		return true
	}
	for k := 1; k < utf8.UTFMax && k <= len(b); k++ {
		if prefixes()[string(b[len(b)-k:])] && utf8.Valid(b[:len(b)-k]) {
			return true
		}
	}
	return false
}

func FuzzUTF8Validator(f *testing.F) {
	for _, tt := range utf8Cases {
		f.Add([]byte(tt.in), uint64(1))
	}
	f.Add([]byte("héllo wörld €🎉 plain text"), uint64(42))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, seed>>1))
		var v UTF8Validator
		failed := false
		for pos := 0; pos < len(data); {
			k := min(len(data)-pos, rng.IntN(9))
			ok := v.Write(data[pos : pos+k])
			pos += k
			if want := validPrefix(data[:pos]); ok != want {
				t.Fatalf(
					"%q split by seed %d: Write at %d = %v, want %v",
					data, seed, pos, ok, want)
			}
			failed = failed || !ok
			if failed && ok {
				t.Fatal("validator recovered after a failure")
			}
		}
		if got, want := v.Valid(), utf8.Valid(data); got != want {
			t.Fatalf(
				"%q split by seed %d: Valid = %v, utf8.Valid = %v",
				data, seed, got, want)
		}
	})
}

func BenchmarkUTF8Validator(b *testing.B) {
	text := []byte("The quick brown fox — «быстрая лиса» — 素早い狐 🦊 jumps over the lazy dog. ")
	msg := make([]byte, 0, 4096)
	for len(msg)+len(text) <= cap(msg) {
		msg = append(msg, text...)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	var v UTF8Validator
	for b.Loop() {
		v.Reset()
		// Fragments of 1000 bytes cut runes in the middle.
		for p := msg; len(p) > 0; {
			k := min(len(p), 1000)
			v.Write(p[:k])
			p = p[k:]
		}
		if !v.Valid() {
			b.Fatal("invalid")
		}
	}
}
