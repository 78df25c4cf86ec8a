package session

import (
	"fmt"
	"testing"
)

func podNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.0.0.%d:50051", i+1)
	}
	return out
}

func TestAssignPartitions_BalancedWithinOne(t *testing.T) {
	t.Parallel()
	for _, parts := range []int{1, 7, 64, 256} {
		for _, n := range []int{1, 2, 3, 5, 8} {
			owners := AssignPartitions(parts, podNames(n))
			count := map[string]int{}
			for p, o := range owners {
				if o == "" {
					t.Fatalf("%d partitions, %d pods: partition %d has no owner", parts, n, p)
				}
				count[o]++
			}
			lo, hi := parts/n, (parts+n-1)/n
			for _, pod := range podNames(n) {
				if c := count[pod]; c < lo || c > hi {
					t.Errorf("%d partitions, %d pods: %s owns %d, want %d..%d", parts, n, pod, c, lo, hi)
				}
			}
		}
	}
}

func TestAssignPartitions_SameAnswerWhateverTheOrder(t *testing.T) {
	t.Parallel()
	a := AssignPartitions(64, []string{"a:1", "b:1", "c:1"})
	b := AssignPartitions(64, []string{"c:1", "a:1", "b:1", "a:1"})
	for p := range a {
		if a[p] != b[p] {
			t.Fatalf("partition %d: %s vs %s", p, a[p], b[p])
		}
	}
	if AssignPartitions(64, nil) != nil {
		t.Fatal("no pods must give no owners")
	}
}

// TestAssignPartitions_MovesFew checks the join/leave cost: with P
// partitions going from n to n+1 pods, at least P/(n+1) must move to the
// newcomer; the load bound may displace a few more, never many.
func TestAssignPartitions_MovesFew(t *testing.T) {
	t.Parallel()
	const parts = 64
	for n := 1; n <= 6; n++ {
		before := AssignPartitions(parts, podNames(n))
		after := AssignPartitions(parts, podNames(n+1))
		moved := 0
		for p := range before {
			if before[p] != after[p] {
				moved++
			}
		}
		ideal := parts / (n + 1)
		t.Logf("%d -> %d pods: %d of %d partitions moved (ideal %d)", n, n+1, moved, parts, ideal)
		if moved > ideal*3/2+2 {
			t.Errorf("%d -> %d pods: %d partitions moved, want about %d", n, n+1, moved, ideal)
		}
	}
}

func BenchmarkAssignPartitions(b *testing.B) {
	b.ReportAllocs()
	ps := podNames(10)
	for b.Loop() {
		AssignPartitions(64, ps)
	}
}
