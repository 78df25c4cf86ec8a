package codec

import "unicode/utf8"

// UTF8Validator checks UTF-8 incrementally, across the fragments of a text
// message (RFC 6455 §8.1: a text message that is not valid UTF-8 fails the
// connection with 1007; §5.6: only the whole message need be valid, so a rune
// may be split between fragments). The zero value is ready to use.
//
// It fails fast: Write reports false on the first byte that no valid UTF-8
// text can continue with. Complete runes go through utf8.Valid (fast on
// ASCII); the few bytes of a rune cut at a fragment boundary go through a
// DFA in the style of Björn Höhrmann's decoder
// (https://bjoern.hoehrmann.de/utf-8/decoder/dfa/), so only one byte of state
// is kept between writes.
//
// A UTF8Validator is not safe for concurrent use.
type UTF8Validator struct {
	state uint8
}

// Write feeds the next bytes of the message. It returns false once invalid
// UTF-8 has been seen (and from then on until Reset).
func (v *UTF8Validator) Write(p []byte) bool {
	s := v.state
	if s == utf8Reject {
		return false
	}
	i := 0
	// Finish the rune the previous fragment left open (states above
	// utf8Reject are mid-rune).
	for ; s > utf8Reject && i < len(p); i++ {
		s = utf8Step(s, p[i])
	}
	if s == utf8Accept && i < len(p) {
		rest := p[i:]
		cut := completeRunes(rest)
		if !utf8.Valid(rest[:cut]) {
			s = utf8Reject
		} else {
			for _, c := range rest[cut:] {
				if s = utf8Step(s, c); s == utf8Reject {
					break
				}
			}
		}
	}
	v.state = s
	return s != utf8Reject
}

// Valid reports whether every byte written so far forms complete valid
// UTF-8: no invalid byte seen and not in the middle of a rune. Call it when
// the final fragment (FIN set) has been written.
func (v *UTF8Validator) Valid() bool {
	return v.state == utf8Accept
}

// Reset readies v for the next message.
func (v *UTF8Validator) Reset() {
	v.state = utf8Accept
}

// ValidUTF8 reports whether p alone is complete valid UTF-8: the check for an
// unfragmented text message (RFC 6455 §8.1).
func ValidUTF8(p []byte) bool {
	return utf8.Valid(p)
}

// completeRunes returns the length of p without a trailing rune that is cut
// short (at most 3 bytes, a rune being at most 4, RFC 3629 §3). Whether the
// bytes are valid is not its concern.
func completeRunes(p []byte) int {
	n := len(p)
	for i := n - 1; i >= 0 && i >= n-(utf8.UTFMax-1); i-- {
		c := p[i]
		if c < 0x80 {
			return n // ASCII: nothing open
		}
		if c < 0xc0 {
			continue // continuation byte: look further back for the lead
		}
		need := 4
		switch {
		case c < 0xe0:
			need = 2
		case c < 0xf0:
			need = 3
		}
		if n-i < need {
			return i
		}
		return n
	}
	return n
}

// DFA states. From utf8Accept a lead byte leads to a state that knows how
// many continuation bytes are still due and which range the next one must be
// in; utf8Reject is final.
const (
	utf8Accept  uint8 = iota // between runes
	utf8Reject               // invalid; sticky
	utf8Cont1                // 1 more continuation byte, 80..BF
	utf8Cont2                // 2 more, next 80..BF
	utf8Cont3                // 3 more, next 80..BF (after F1..F3)
	utf8AfterE0              // 2 more, next A0..BF (no overlong 3-byte form)
	utf8AfterED              // 2 more, next 80..9F (no surrogates U+D800..DFFF)
	utf8AfterF0              // 3 more, next 90..BF (no overlong 4-byte form)
	utf8AfterF4              // 3 more, next 80..8F (nothing above U+10FFFF)
	utf8States
)

// Byte classes: bytes that every state treats alike (the table of
// well-formed byte sequences, RFC 3629 §4 / Unicode Table 3-7).
const (
	clASCII   = iota // 00..7F
	clCont8          // 80..8F
	clCont9          // 90..9F
	clContAB         // A0..BF
	clInvalid        // C0, C1 (overlong 2-byte), F5..FF (above U+10FFFF)
	clLead2          // C2..DF
	clE0             // E0
	clLead3          // E1..EC, EE, EF
	clED             // ED
	clF0             // F0
	clLead4          // F1..F3
	clF4             // F4
	utf8Classes
)

// utf8Class maps a byte to its class; utf8Trans[state*utf8Classes+class] is
// the next state. Both are built once from the rules above.
var utf8Class, utf8Trans = buildUTF8DFA()

// utf8Step moves the DFA by one byte.
func utf8Step(s uint8, c byte) uint8 {
	return utf8Trans[int(s)*utf8Classes+int(utf8Class[c])]
}

func buildUTF8DFA() (class [256]uint8, trans [utf8States * utf8Classes]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case c <= 0x7f:
			class[c] = clASCII
		case c <= 0x8f:
			class[c] = clCont8
		case c <= 0x9f:
			class[c] = clCont9
		case c <= 0xbf:
			class[c] = clContAB
		case c <= 0xc1:
			class[c] = clInvalid
		case c <= 0xdf:
			class[c] = clLead2
		case c == 0xe0:
			class[c] = clE0
		case c == 0xed:
			class[c] = clED
		case c <= 0xef:
			class[c] = clLead3
		case c == 0xf0:
			class[c] = clF0
		case c <= 0xf3:
			class[c] = clLead4
		case c == 0xf4:
			class[c] = clF4
		default:
			class[c] = clInvalid
		}
	}
	for i := range trans {
		trans[i] = utf8Reject
	}
	set := func(s uint8, next uint8, classes ...int) {
		for _, cl := range classes {
			trans[int(s)*utf8Classes+cl] = next
		}
	}
	set(utf8Accept, utf8Accept, clASCII)
	set(utf8Accept, utf8Cont1, clLead2)
	set(utf8Accept, utf8AfterE0, clE0)
	set(utf8Accept, utf8Cont2, clLead3)
	set(utf8Accept, utf8AfterED, clED)
	set(utf8Accept, utf8AfterF0, clF0)
	set(utf8Accept, utf8Cont3, clLead4)
	set(utf8Accept, utf8AfterF4, clF4)
	set(utf8Cont1, utf8Accept, clCont8, clCont9, clContAB)
	set(utf8Cont2, utf8Cont1, clCont8, clCont9, clContAB)
	set(utf8Cont3, utf8Cont2, clCont8, clCont9, clContAB)
	set(utf8AfterE0, utf8Cont1, clContAB)
	set(utf8AfterED, utf8Cont1, clCont8, clCont9)
	set(utf8AfterF0, utf8Cont2, clCont9, clContAB)
	set(utf8AfterF4, utf8Cont2, clCont8)
	return class, trans
}
