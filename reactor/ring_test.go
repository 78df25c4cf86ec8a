package reactor

import "testing"

// reserveRing makes room for a replay batch with at most one allocation,
// and releaseEmptyRing gives back a ring nothing was queued in, so an
// idle socket holds none.
func TestReserveRing(t *testing.T) {
	frame := []byte("x")
	cases := []struct {
		name     string
		spare    int // cap of the loop's one spare ring (0: none)
		queued   int // frames already in the socket's ring
		n        int
		wantCap  int // at least
		wantNil  bool
		fromPool bool
	}{
		{"nothing to reserve keeps no ring", 0, 0, 0, 0, true, false},
		{"no ring takes a spare and grows it once", 4, 0, 64, 64, false, false},
		{"a big enough spare is used as is", 64, 0, 10, 64, false, true},
		{"a ring with frames keeps them and grows", 0, 3, 64, 67, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := &loop{}
			var spare [][]byte
			if tc.spare > 0 {
				spare = make([][]byte, 0, tc.spare)
				l.freeRings = append(l.freeRings, spare)
			}
			c := &conn{}
			for range tc.queued {
				c.ring = append(c.ring, frame)
			}
			l.reserveRing(c, tc.n)
			if tc.wantNil {
				if c.ring != nil {
					t.Fatalf("ring %d/%d, want none", len(c.ring), cap(c.ring))
				}
				return
			}
			if len(c.ring) != tc.queued {
				t.Fatalf("ring holds %d frames, want %d", len(c.ring), tc.queued)
			}
			if cap(c.ring) < tc.wantCap {
				t.Fatalf("cap %d, want ≥ %d", cap(c.ring), tc.wantCap)
			}
			if tc.fromPool && &c.ring[:1][0] != &spare[:1][0] {
				t.Fatal("the spare ring was not reused")
			}
			if tc.n > 0 && cap(c.ring) > tc.wantCap && tc.queued+tc.n <= ringPoolCap && !tc.fromPool {
				t.Fatalf("cap %d: past ringPoolCap, the pool would not take it back", cap(c.ring))
			}
			before := len(l.freeRings)
			l.releaseEmptyRing(c)
			if tc.queued == 0 {
				if c.ring != nil || len(l.freeRings) != before+1 {
					t.Fatal("an empty reserved ring must go back to the pool")
				}
			} else if len(c.ring) != tc.queued {
				t.Fatal("releaseEmptyRing dropped queued frames")
			}
		})
	}
}
