package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/internal/fleettest"
)

// silence reads the source's Active, a stall from sourceStallAfter on,
// and counts a leader that has not heard from the source at all (-1) from
// when the watch first saw it, a stall from sourceUnheardAfter on.
func TestSourceWatch_Silence(t *testing.T) {
	l := PartitionLayout{Source: "src", Consumer: "c", Partitions: 4}
	t0 := time.Unix(1000, 0)
	type look struct {
		sources []*jetstream.StreamSourceInfo
		at      time.Duration // after t0
		silent  time.Duration
		stalled bool
	}
	src := func(active time.Duration) []*jetstream.StreamSourceInfo {
		return []*jetstream.StreamSourceInfo{{Name: "src", Active: active}}
	}
	for _, tc := range []struct {
		name  string
		looks []look
	}{
		{"heard recently", []look{{src(200 * time.Millisecond), 0, 200 * time.Millisecond, false}}},
		{"silent", []look{{src(5 * time.Second), 0, 5 * time.Second, true}}},
		{"never heard, counted from the first look", []look{
			{src(-1), 0, 0, false},
			{src(-1), 500 * time.Millisecond, 500 * time.Millisecond, false},
			{src(-1), 1500 * time.Millisecond, 1500 * time.Millisecond, true},
		}},
		{"heard again resets the count", []look{
			{src(-1), 0, 0, false},
			{src(100 * time.Millisecond), 2 * time.Second, 100 * time.Millisecond, false},
			{src(-1), 3 * time.Second, 0, false},
		}},
		{"another stream's source is not ours", []look{
			{[]*jetstream.StreamSourceInfo{{Name: "other", Active: time.Minute}}, 0, 0, false},
		}},
		{"no source reported", []look{{nil, 0, 0, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &sourceWatch{layout: l}
			for i, lk := range tc.looks {
				silent, stalled := w.silence(lk.sources, t0.Add(lk.at))
				if silent != lk.silent || stalled != lk.stalled {
					t.Fatalf("look %d: silence %v stalled %v, want %v %v", i, silent, stalled, lk.silent, lk.stalled)
				}
			}
		})
	}
}

// A silent source is restarted at once, then again after 3 s, 6 s, 12 s…
// while it stays silent; once heard again the next stall restarts at once.
func TestSourceWatch_RestartBackoff(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := &sourceWatch{}
	for i, step := range []struct {
		at      time.Duration // after t0
		stalled bool
		due     bool
	}{
		{0, false, false},
		{time.Second, true, true}, // restarted: next after 3 s
		{2 * time.Second, true, false},
		{4 * time.Second, true, true}, // next after 6 s
		{9 * time.Second, true, false},
		{10 * time.Second, true, true},   // next after 12 s
		{11 * time.Second, false, false}, // heard: backoff over
		{15 * time.Second, true, true},
	} {
		now := t0.Add(step.at)
		due := w.due(step.stalled, now)
		if due != step.due {
			t.Fatalf("step %d (at %v, stalled %v): due %v, want %v", i, step.at, step.stalled, due, step.due)
		}
		if due {
			w.restarted(now)
		}
	}
	for range 20 {
		w.restarted(t0)
	}
	if w.backoff != sourceRestartMaxBackoff {
		t.Fatalf("backoff %v after many restarts, want the %v cap", w.backoff, sourceRestartMaxBackoff)
	}
}

// stepDown moves a replicated stream's leader to another node, and
// reports the server's refusal on a single server.
func TestStepDown(t *testing.T) {
	t.Run("cluster", func(t *testing.T) {
		cl := fleettest.StartJetStreamCluster(t)
		nc := connect(t, cl.URL())
		js := newJS(t, nc)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}, Replicas: 3}); err != nil {
			t.Fatal(err)
		}
		before, err := cl.StreamLeader("S")
		if err != nil {
			t.Fatal(err)
		}
		if err := stepDown(ctx, nc, "S"); err != nil {
			t.Fatalf("step-down: %v", err)
		}
		eventually(t, 10*time.Second, "another node leads S", func() bool {
			now, err := cl.StreamLeader("S")
			return err == nil && now != before
		})
	})
	t.Run("single server", func(t *testing.T) {
		_, url := startNATS(t)
		nc := connect(t, url)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := newJS(t, nc).CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}}); err != nil {
			t.Fatal(err)
		}
		if err := stepDown(ctx, nc, "S"); err == nil {
			t.Fatal("step-down on a single server succeeded")
		}
	})
}
