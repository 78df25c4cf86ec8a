package session

import (
	"hash/fnv"
	"slices"
	"sort"
	"strconv"
)

// AssignPartitions returns the pod that should own each of n partitions
// (index = partition) given the live pods, or nil when there are none.
//
// It is rendezvous (highest-random-weight) hashing with bounded loads: each
// partition goes to its highest-weight pod that still has room, where room
// is n/len(pods), rounded up for as many pods as the remainder allows. So
//   - every pod that computes it from the same live set gets the same
//     answer, with no coordination beyond that set (SPEC §5: one owner);
//   - each pod holds its share ± 1 (plain rendezvous hashing drifts to
//     ±30 % at 64 partitions over 3 pods);
//   - a pod joining or leaving moves few partitions: most keep their
//     first-choice pod, and only the partitions that pod wins or loses,
//     plus the few displaced by the load bound, move (measured in
//     TestAssignPartitions_MovesFew).
func AssignPartitions(n int, pods []string) []string {
	if n <= 0 || len(pods) == 0 {
		return nil
	}
	pods = slices.Clone(pods)
	slices.Sort(pods)
	pods = slices.Compact(pods)
	base, extra := n/len(pods), n%len(pods)
	load := make([]int, len(pods))
	owners := make([]string, n)

	// Partitions choose in the order of how strongly they prefer their
	// first choice, so a partition displaced by the load bound is one
	// that cared least: that keeps the set of moved partitions small and
	// independent of partition numbering.
	type pref struct {
		part  int
		order []int // pod indexes, best first
		top   uint64
	}
	prefs := make([]pref, n)
	weights := make([]uint64, len(pods))
	for p := range n {
		for i, pod := range pods {
			weights[i] = weight(p, pod)
		}
		order := make([]int, len(pods))
		for i := range order {
			order[i] = i
		}
		sort.Slice(order, func(a, b int) bool { return weights[order[a]] > weights[order[b]] })
		prefs[p] = pref{part: p, order: order, top: weights[order[0]]}
	}
	sort.SliceStable(prefs, func(a, b int) bool { return prefs[a].top > prefs[b].top })

	for _, pr := range prefs {
		for _, i := range pr.order {
			if load[i] < base || (load[i] == base && extra > 0) {
				if load[i] == base {
					extra--
				}
				load[i]++
				owners[pr.part] = pods[i]
				break
			}
		}
	}
	return owners
}

// weight is the rendezvous score of pod for partition p: FNV-1a of both,
// finished with a 64-bit mixer so that pod ids differing in one character
// do not give correlated scores.
func weight(p int, pod string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(pod))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(strconv.AppendInt(nil, int64(p), 10))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
