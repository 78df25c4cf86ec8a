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
