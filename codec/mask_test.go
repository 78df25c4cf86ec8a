package codec

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestUnmask_InPieces_MatchesWholeXOR(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	for _, n := range []int{0, 1, 3, 15, 16, 17, 64, 1000, 4099} {
		orig := make([]byte, n)
		for i := range orig {
			orig[i] = byte(rng.Uint32())
		}
		masked := make([]byte, n)
		for i := range orig {
			masked[i] = orig[i] ^ mask[i%4] // RFC 6455 §5.3: j = i MOD 4
		}
		for range 20 {
			p := bytes.Clone(masked)
			pos := 0
			for pos < n {
				k := min(n-pos, 1+rng.IntN(40))
				next := Unmask(p[pos:pos+k], mask, pos)
				if next != pos+k {
					t.Fatalf(
						"Unmask returned %d, want %d",
						next, pos+k)
				}
				pos = next
			}
			if !bytes.Equal(p, orig) {
				t.Fatalf("n=%d: pieces unmasked wrong", n)
			}
		}
	}
}

func BenchmarkUnmask(b *testing.B) {
	p := make([]byte, 1024)
	mask := [4]byte{1, 2, 3, 4}
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		Unmask(p, mask, 0)
	}
}
