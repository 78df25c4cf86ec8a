package bridge

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// jsonDoc is a JSON document of about n bytes with non-ASCII text.
func jsonDoc(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"type":"message","items":[`)
	for i := 0; b.Len() < n-50; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"id":12345,"text":"héllo wörld","ok":true}`)
	}
	b.WriteString(`],"end":null}`)
	return []byte(b.String())
}

// BenchmarkValidPayload measures the per-event validation cost, against
// the standard library pair it replaces.
func BenchmarkValidPayload(b *testing.B) {
	for _, size := range []int{256, 4096} {
		p := jsonDoc(size)
		for _, v := range []struct {
			name  string
			valid func([]byte) bool
		}{
			{"sonic", ValidPayload},
			{"stdlib", func(p []byte) bool { return utf8.Valid(p) && json.Valid(p) }},
		} {
			b.Run(v.name+"/"+sizeName(len(p)), func(b *testing.B) {
				if !v.valid(p) {
					b.Fatal("benchmark payload is invalid")
				}
				b.SetBytes(int64(len(p)))
				b.ReportAllocs()
				for b.Loop() {
					v.valid(p)
				}
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 1024 {
		return "4KiB"
	}
	return "256B"
}
