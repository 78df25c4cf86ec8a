package reactor

import (
	"strconv"
	"testing"
)

func TestAdmitSeq(t *testing.T) {
	t.Parallel()
	var last uint64
	for _, tc := range []struct {
		seq  uint64
		want bool
	}{
		{5, true}, {5, false}, {4, false}, {6, true}, {0, true}, {6, false}, {100, true},
	} {
		if got := admitSeq(&last, tc.seq); got != tc.want {
			t.Fatalf("seq %d: admitted %v, want %v (last %d)", tc.seq, got, tc.want, last)
		}
	}
	if last != 100 {
		t.Fatalf("last = %d", last)
	}
}

func TestAdminSeqs_PerPair(t *testing.T) {
	t.Parallel()
	var a adminSeqs
	p1, p2 := pairHash("c1", "a1"), pairHash("c1", "a2")
	if p1 == p2 || p1 == 0 {
		t.Fatal("pair hashes must differ and be non-zero")
	}
	steps := []struct {
		pair, seq uint64
		want      bool
	}{
		{p1, 10, true}, {p2, 5, true}, // other pair, older seq: its own order
		{p1, 10, false}, {p2, 5, false}, // redeliveries
		{p1, 11, true}, {p2, 6, true}, {p1, 0, true},
	}
	for i, s := range steps {
		if got := a.admit(s.pair, s.seq); got != s.want {
			t.Fatalf("step %d: admitted %v, want %v", i, got, s.want)
		}
	}
}

// TestAdminSeqs_CollisionNeverDropsNew: pairs sharing a slot evict each
// other; a new event is still admitted (at worst a duplicate slips by).
func TestAdminSeqs_CollisionNeverDropsNew(t *testing.T) {
	t.Parallel()
	var a adminSeqs
	// Find two pairs in one slot.
	first := pairHash("c", "0")
	var other uint64
	for i := 1; other == 0; i++ {
		if h := pairHash("c", strconv.Itoa(i)); h%adminSeqSlots == first%adminSeqSlots && h != first {
			other = h
		}
	}
	if !a.admit(first, 100) || !a.admit(other, 3) || !a.admit(first, 50) {
		t.Fatal("an evicted pair's next event must be admitted")
	}
}

func BenchmarkAdminSeqsAdmit(b *testing.B) {
	b.ReportAllocs()
	var a adminSeqs
	p := pairHash("company", "agent")
	var seq uint64
	for b.Loop() {
		seq++
		a.admit(p, seq)
	}
}
