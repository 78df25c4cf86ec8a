package session

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// leaseStores runs a test against both implementations; the Redis one on
// the machine's Redis under a fresh prefix.
func leaseStores(t *testing.T) map[string]func() PartitionLeases {
	return map[string]func() PartitionLeases{
		"memory": func() PartitionLeases { return NewMemoryPartitionLeases() },
		"redis": func() PartitionLeases {
			c := sharedRedis(t)
			return NewRedisPartitionLeases(c, testPrefix(t, c), "wa_stream_dws_p64")
		},
	}
}

// leaseOwner is the Owner lookup both stores have (tools and tests).
type leaseOwner interface {
	Owner(ctx context.Context, p int) (string, error)
}

// The rules of membership-bound leases, step by step on both stores: a
// lease counts while its pod is a member (or leaving); one heartbeat keeps
// all of a pod's leases; a pod whose membership lapsed, or that asks, has
// its leases checked and those it does not claim released.
func TestPartitionLeases_LeasesLiveWithTheMembership(t *testing.T) {
	t.Parallel()
	const ttl = 400 * time.Millisecond
	for name, mk := range leaseStores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, ctx := mk(), context.Background()
			owner := func(p int) string {
				o, err := s.(leaseOwner).Owner(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				return o
			}
			beat := func(pod string, check bool, owned ...int) string {
				pulse, err := s.Heartbeat(ctx, Beat{Pod: pod, TTL: ttl, Owned: owned, Check: check})
				if err != nil {
					t.Fatal(err)
				}
				if !pulse.Checked {
					return fmt.Sprintf("live %v", pulse.Live)
				}
				return fmt.Sprintf("live %v held %v", pulse.Live, pulse.Held)
			}
			acquire := func(pod string, ps ...int) string {
				got, err := s.Acquire(ctx, ps, pod)
				if err != nil {
					t.Fatal(err)
				}
				return fmt.Sprint(got)
			}
			release := func(pod string, ps ...int) string {
				if err := s.Release(ctx, ps, pod); err != nil {
					t.Fatal(err)
				}
				return "ok"
			}
			steps := []struct {
				what string
				do   func() string
				want string
			}{
				{"a's first beat is checked", func() string { return beat("a", true) }, "live [a] held []"},
				{"b joins: its first beat finds no previous membership, so it checks", func() string { return beat("b", false) }, "live [a b] held []"},
				{"a takes free 1 and 2", func() string { return acquire("a", 1, 2) }, "[true true]"},
				{"b takes free 3, not a's 1", func() string { return acquire("b", 1, 3) }, "[false true]"},
				{"b's release of a's 1 is a no-op", func() string { release("b", 1); return owner(1) }, "a"},
				{"a's next beat: membership stayed live, nothing to check", func() string { return beat("a", false, 1, 2) }, "live [a b]"},
				{"a checks claiming only 2: 1 is released", func() string { return beat("a", true, 2) + " owner1=" + owner(1) }, "live [a b] held [true] owner1="},
				{"a pod that never beat takes nothing", func() string { return acquire("z", 5) }, "[false]"},
				{"a leaves: out of the members at once", func() string {
					if err := s.Leave(ctx, "a", ttl); err != nil {
						t.Fatal(err)
					}
					return beat("b", false, 3)
				}, "live [b]"},
				{"a leaving still holds 2", func() string { return acquire("b", 2) + " owner2=" + owner(2) }, "[false] owner2=a"},
				{"released, 2 goes to b", func() string { release("a", 2); return acquire("b", 2) }, "[true]"},
				{"c joins and takes 5", func() string { beat("c", true); return acquire("c", 5) }, "[true]"},
				{"c lapses: its lease counts no more", func() string {
					time.Sleep(ttl + 150*time.Millisecond)
					return owner(5)
				}, ""},
				{"b lapsed too: its beat checks; it still holds what nobody took", func() string { return beat("b", false, 2, 3) }, "live [b] held [true true]"},
				{"b takes lapsed c's 5", func() string { return acquire("b", 5) }, "[true]"},
				{"c back: its beat checks, 5 is lost", func() string { return beat("c", false, 5) }, "live [b c] held [false]"},
				{"b gone for good (ttl 0): its leases count no more", func() string {
					if err := s.Leave(ctx, "b", 0); err != nil {
						t.Fatal(err)
					}
					return owner(2) + owner(5) + acquire("c", 5)
				}, "[true]"},
			}
			for _, st := range steps {
				if got := st.do(); got != st.want {
					t.Fatalf("%s: got %q, want %q", st.what, got, st.want)
				}
			}
		})
	}
}

// An idle tick of a pod costs Redis two commands in one round trip
// (ZRANGE + ZADD pipelined), however many leases it holds; the checking
// script runs on the first beat (it calibrates the clock) and when asked.
func TestPartitionLeases_IdleBeat_TwoCommandsOneRoundTrip(t *testing.T) {
	t.Parallel()
	hook, c := countedClient(t, sharedRedisAddr)
	s := NewRedisPartitionLeases(c, testPrefix(t, c), "g")
	ctx := context.Background()
	if _, err := s.Heartbeat(ctx, Beat{Pod: "a", TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	all := make([]int, 64)
	for i := range all {
		all[i] = i
	}
	if got, err := s.Acquire(ctx, all, "a"); err != nil || slices.Contains(got, false) {
		t.Fatalf("acquire: %v %v", got, err)
	}
	hook.reset()
	for range 5 {
		pulse, err := s.Heartbeat(ctx, Beat{Pod: "a", TTL: time.Second, Owned: all})
		if err != nil || pulse.Checked {
			t.Fatalf("idle beat: %+v %v", pulse, err)
		}
	}
	if rt, n := hook.roundTrips.Load(), hook.commands.Load(); rt != 5 || n != 10 {
		t.Fatalf("5 idle beats with 64 leases: %s, want 5 round trips, 10 commands", hook)
	}
}

func TestLiveMembers(t *testing.T) {
	t.Parallel()
	z := func(m string, exp int64) redis.Z { return redis.Z{Member: m, Score: float64(exp)} }
	const maxInt = int64(^uint64(0) >> 1)
	tests := []struct {
		name           string
		zs             []redis.Z
		lo             int64
		live           string
		prev, earliest int64
	}{
		{"empty set: only the pod", nil, 100, "[a]", 0, maxInt},
		{"own expiry reported, not used for liveness", []redis.Z{z("a", 90)}, 100, "[a]", 90, 90},
		{"expired at lo is not live", []redis.Z{z("b", 100), z("c", 101)}, 100, "[a c]", 0, 100},
		{"sorted", []redis.Z{z("d", 500), z("b", 400), z("a", 300)}, 100, "[a b d]", 300, 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live, prev, earliest := liveMembers(tt.zs, "a", tt.lo)
			if fmt.Sprint(live) != tt.live || prev != tt.prev || earliest != tt.earliest {
				t.Fatalf("got %v %d %d, want %s %d %d", live, prev, earliest, tt.live, tt.prev, tt.earliest)
			}
		})
	}
}

func TestServerClock_BoundsTheServerClock(t *testing.T) {
	t.Parallel()
	base := time.Now()
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	slack := clockSlack.Milliseconds()
	tests := []struct {
		name       string
		calibrated bool
		send, recv int // local ms
		t          int // local ms of the reading
		ok         bool
		lo, hi     int64 // server ms, before slack
	}{
		{"never calibrated", false, 0, 0, 10, false, 0, 0},
		{"instant round trip", true, 0, 0, 1000, true, 6000, 6000},
		{"a 40 ms round trip widens the bounds by it", true, 0, 40, 1040, true, 6000, 6040},
		{"just young enough", true, 0, 0, int(clockMaxAge.Milliseconds()), true, 5000 + clockMaxAge.Milliseconds(), 5000 + clockMaxAge.Milliseconds()},
		{"too old", true, 0, 0, int(clockMaxAge.Milliseconds()) + 1, false, 0, 0},
		{"before the calibration was sent", true, 100, 100, 50, false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newServerClock()
			if tt.calibrated {
				c.calibrate(5, 0, at(tt.send), at(tt.recv)) // the server read 5.000000 s
			}
			lo, hi, ok := c.at(at(tt.t))
			if ok != tt.ok || ok && (lo != tt.lo-slack || hi != tt.hi+slack) {
				t.Fatalf("got %d..%d %v, want %d..%d %v", lo, hi, ok, tt.lo-slack, tt.hi+slack, tt.ok)
			}
		})
	}
}
