package reactor

import (
	"testing"
	"time"
)

// Items come out in order, a limit refuses past it (the pacer's bound on
// held handshakes), and close wakes a waiting pop and drops the rest.
func TestFIFO(t *testing.T) {
	q := newFIFO[int]()
	for i := range 3 {
		if n, ok := q.push(i, 3); !ok || n != i+1 {
			t.Fatalf("push %d: n %d ok %v", i, n, ok)
		}
	}
	if _, ok := q.push(3, 3); ok {
		t.Fatal("push past the limit accepted")
	}
	if _, ok := q.push(3, 0); !ok {
		t.Fatal("push with no limit refused")
	}
	for want := range 4 {
		if v, ok := q.pop(); !ok || v != want {
			t.Fatalf("pop %d: got %d ok %v", want, v, ok)
		}
	}
	got := make(chan bool)
	go func() { _, ok := q.pop(); got <- ok }()
	time.Sleep(10 * time.Millisecond)
	q.push(9, 0)
	if ok := <-got; !ok {
		t.Fatal("a waiting pop missed a push")
	}
	go func() { _, ok := q.pop(); got <- ok }()
	time.Sleep(10 * time.Millisecond)
	q.push(1, 0) // taken by nobody before close: dropped
	// The goroutine may take it first; either way close must end it.
	if dropped := q.close(); dropped > 1 {
		t.Fatalf("close dropped %d, want ≤ 1", dropped)
	}
	select {
	case <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("close did not wake a waiting pop")
	}
	if _, ok := q.pop(); ok {
		t.Fatal("pop after close returned an item")
	}
	if _, ok := q.push(1, 0); ok || !q.isClosed() {
		t.Fatal("push after close accepted")
	}
}
