package codec

import (
	"encoding/json"
	"testing"
)

func TestParseSince(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true}, {"42", 42, true}, {"18446744073709551615", 1<<64 - 1, true},
		{"", 0, false}, {"-1", 0, false}, {"+1", 0, false}, {" 1", 0, false}, {"1 ", 0, false},
		{"1.0", 0, false}, {"0x10", 0, false}, {"18446744073709551616", 0, false}, {"abc", 0, false},
	} {
		got, err := ParseSince(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSince(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && (err.Code != CodeBadRequest || err.Message != "since must be a non-negative integer") {
			t.Errorf("ParseSince(%q) error %+v", tc.in, err)
		}
	}
}

func TestResyncFrame_Shape(t *testing.T) {
	for _, reason := range []string{"too_old", "epoch_changed", "too_many", `odd"reason`} {
		f := ResyncFrame(reason)
		h, n, err := DecodeHeader(f)
		if err != nil || h.Fin != true || int(h.Length) != len(f)-n {
			t.Fatalf("%s: header %+v %v", reason, h, err)
		}
		var m struct {
			Type    string
			Payload struct{ Reason string }
		}
		if err := json.Unmarshal(f[n:], &m); err != nil || m.Type != "resync" || m.Payload.Reason != reason {
			t.Fatalf("%s: body %s (%v)", reason, f[n:], err)
		}
	}
}

func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"0", "123", "-1", "1e3", "18446744073709551616"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSince(s)
		if err != nil {
			return
		}
		for _, r := range s {
			if r < '0' || r > '9' {
				t.Fatalf("%q accepted as %d", s, v)
			}
		}
	})
}
