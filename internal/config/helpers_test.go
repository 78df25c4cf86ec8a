package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// writeYAML writes content to a fresh file under t.TempDir.
func writeYAML(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dws.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// mustLoad loads with an explicit, empty-by-default env so the test
// process's own environment never leaks in.
func mustLoad(t *testing.T, opts LoadOptions) *Config {
	t.Helper()
	if opts.Env == nil {
		opts.Env = []string{}
	}
	c, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

// validConfig is the defaults, finalized: it must pass Validate.
func validConfig() *Config {
	c := Defaults()
	c.Finalize([]string{})
	return c
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Lines() []string {
	return strings.Split(strings.TrimSpace(s.String()), "\n")
}
