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

// pairsInOneSet returns n distinct pairs that share a set of the table.
func pairsInOneSet(n int) []uint64 {
	first := pairHash("c", "0")
	out := []uint64{first}
	for i := 1; len(out) < n; i++ {
		if h := pairHash("c", strconv.Itoa(i)); h%adminSeqSets == first%adminSeqSets && h != first {
			out = append(out, h)
		}
	}
	return out
}

// Pairs of one set keep their own seqs as long as they fit in its ways:
// a redelivery of any of them is still caught.
func TestAdminSeqs_SharedSetKeepsEveryWay(t *testing.T) {
	t.Parallel()
	var a adminSeqs
	ps := pairsInOneSet(adminSeqWays)
	for i, p := range ps {
		if !a.admit(p, uint64(100-i)) {
			t.Fatalf("pair %d: first event not admitted", i)
		}
	}
	for i, p := range ps {
		if a.admit(p, uint64(100-i)) {
			t.Fatalf("pair %d: redelivery admitted though the set had room", i)
		}
	}
}

// A full set evicts its quietest pair (lowest seq); an evicted pair's next
// event is still admitted: at worst a duplicate slips by, never a drop.
func TestAdminSeqs_FullSetEvictsQuietestNeverDropsNew(t *testing.T) {
	t.Parallel()
	var a adminSeqs
	ps := pairsInOneSet(adminSeqWays + 1)
	for i, p := range ps[:adminSeqWays] {
		a.admit(p, uint64(10+i)) // ps[0] is the quietest
	}
	if !a.admit(ps[adminSeqWays], 50) {
		t.Fatal("new pair not admitted")
	}
	if a.admit(ps[1], 11) {
		t.Fatal("a busier pair lost its entry; want the quietest evicted")
	}
	if !a.admit(ps[0], 10) {
		t.Fatal("evicted pair's event dropped; want it admitted")
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
