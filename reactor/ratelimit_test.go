package reactor

import (
	"testing"
	"unsafe"
)

func TestFrameBucket_BurstThenRate(t *testing.T) {
	var b frameBucket
	const start = 1000
	for i := 0; i < 3; i++ {
		if !b.allow(start, 2, 3) {
			t.Fatalf("frame %d of the burst refused", i)
		}
	}
	if b.allow(start, 2, 3) {
		t.Fatal("frame over the burst allowed")
	}
	if b.allow(start+400, 2, 3) { // 0.8 token
		t.Fatal("allowed before a whole token refilled")
	}
	if !b.allow(start+500, 2, 3) { // 1.0 token
		t.Fatal("refused after a token refilled")
	}
	// A long silence refills up to the burst, no more.
	n := 0
	for b.allow(start+60_000, 2, 3) {
		n++
	}
	if n != 3 {
		t.Fatalf("%d frames after a minute, want the burst (3)", n)
	}
	// A reload that lowers the burst applies to the open socket.
	if b.allow(start+120_000, 2, 1) && b.allow(start+120_000, 2, 1) {
		t.Fatal("burst 1 allowed two frames")
	}
}

func TestFrameBucket_WrapsWithTheClock(t *testing.T) {
	b := frameBucket{tokens: 0, at: ^uint32(0) - 100}
	if !b.allow(400, 10, 5) { // 501 ms later, across the wrap: 5 tokens
		t.Fatal("refused across the clock wrap")
	}
}

// An idle socket costs this struct (DESIGN invariant 2; perf/connect.md):
// the inline bucket must not make it grow.
func TestConn_Size(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 144 {
		t.Fatalf("conn is %d bytes, was 144", n)
	}
}
