package bridge

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestEnsureStream_Absent_CreatedWithSpecSubjects(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	js := newJS(t, connect(t, url))
	cfg := testNATS()
	ctx := context.Background()

	s, err := EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := s.CachedInfo().Config
	if got.Name != cfg.Stream || !slices.Equal(got.Subjects, StreamSubjects) {
		t.Fatalf("stream = %s %v; want %s %v", got.Name, got.Subjects, cfg.Stream, StreamSubjects)
	}
	// Twice is the same stream, not an error.
	if _, err := EnsureStream(ctx, js, cfg); err != nil {
		t.Fatalf("second EnsureStream: %v", err)
	}
}

func TestEnsureStream_Existing_NeverModified(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	js := newJS(t, connect(t, url))
	cfg := testNATS()
	ctx := context.Background()
	upstream := jetstream.StreamConfig{Name: cfg.Stream, Subjects: []string{"websocket.>"}, MaxAge: time.Hour, Storage: jetstream.MemoryStorage}
	if _, err := js.CreateStream(ctx, upstream); err != nil {
		t.Fatal(err)
	}

	if _, err := EnsureStream(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Config; !slices.Equal(got.Subjects, upstream.Subjects) || got.MaxAge != upstream.MaxAge || got.Storage != upstream.Storage {
		t.Fatalf("existing stream changed: subjects %v max_age %s storage %s", got.Subjects, got.MaxAge, got.Storage)
	}
}

func TestEnsureStream_AbsentAndCreateOff_Fails(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	js := newJS(t, connect(t, url))
	cfg := testNATS()
	cfg.CreateStream = false
	if _, err := EnsureStream(context.Background(), js, cfg); err == nil {
		t.Fatal("EnsureStream with create_stream off and no stream: want an error")
	}
	if _, err := js.Stream(context.Background(), cfg.Stream); err == nil {
		t.Fatal("stream was created although create_stream is off")
	}
}

func TestEnsureConsumer_Existing_KeepsPositionAndSettings(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	js := newJS(t, nc)
	cfg := testNATS()
	ctx := context.Background()
	s, err := EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := EnsureConsumer(ctx, s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config; got.AckPolicy != jetstream.AckExplicitPolicy ||
		got.DeliverPolicy != jetstream.DeliverNewPolicy || got.MaxAckPending != cfg.MaxAckPending || got.AckWait != cfg.AckWait {
		t.Fatalf("consumer config = %+v", got)
	}
	for i := 0; i < 5; i++ {
		publish(t, nc, "websocket.c.a.chats", "{}", "")
	}
	batch, err := c.Fetch(2, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("fetched %d, want 2", n)
	}

	// A restart with other settings reuses the consumer as it is.
	again := cfg
	again.MaxAckPending = 7
	again.AckWait = 3 * time.Second
	c2, err := EnsureConsumer(ctx, s, again)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c2.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Consumer != 2 || info.NumPending != 3 {
		t.Fatalf("position lost: ack floor %d, pending %d; want 2 and 3", info.AckFloor.Consumer, info.NumPending)
	}
	if info.Config.MaxAckPending != cfg.MaxAckPending || info.Config.AckWait != cfg.AckWait {
		t.Fatalf("existing consumer modified: max_ack_pending %d ack_wait %s", info.Config.MaxAckPending, info.Config.AckWait)
	}
}

func TestEnsureConsumer_ExistingPushConsumer_Rejected(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	js := newJS(t, connect(t, url))
	cfg := testNATS()
	ctx := context.Background()
	s, err := EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePushConsumer(ctx, jetstream.ConsumerConfig{Durable: cfg.Consumer, DeliverSubject: "deliver.here", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureConsumer(ctx, s, cfg); err == nil {
		t.Fatal("EnsureConsumer accepted an existing push consumer")
	}
}

func TestStartEmbedded_ConfiguredDir_HoldsJetStream(t *testing.T) {
	t.Parallel()
	cfg := testNATS()
	cfg.EmbeddedDir = t.TempDir()
	s, url, err := StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	if !s.JetStreamEnabled() {
		t.Fatal("embedded server without JetStream")
	}
	nc := connect(t, url)
	if _, err := EnsureStream(context.Background(), newJS(t, nc), cfg); err != nil {
		t.Fatal(err)
	}
	if got := s.StoreDir(); filepath.Dir(got) != cfg.EmbeddedDir {
		t.Fatalf("store dir %q, want under %q", got, cfg.EmbeddedDir)
	}
}

func TestStartEmbedded_TempDir_RemovedOnShutdown(t *testing.T) {
	t.Parallel()
	s, _, err := StartEmbedded(testNATS())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(s.StoreDir())
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("temp store dir: %v", err)
	}
	s.Shutdown()
	eventually(t, 5*time.Second, "temp store dir removed", func() bool {
		_, err := os.Stat(dir)
		return os.IsNotExist(err)
	})
}
