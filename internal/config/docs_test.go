package config

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestDocsUpToDate fails when docs/config.md no longer matches the key
// definitions, so the reference cannot drift from config.go.
func TestDocsUpToDate(t *testing.T) {
	t.Parallel()
	var want bytes.Buffer
	if err := GenerateDocs(&want); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "docs", "config.md")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; generate it with: go generate ./internal/config", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("docs/config.md is out of date with internal/config/config.go; regenerate it with: go generate ./internal/config")
	}
	for _, k := range Keys() {
		if !bytes.Contains(got, []byte("| `"+k.Name+"` | `"+k.Env+"` |")) {
			t.Errorf("docs/config.md has no row for %s", k.Name)
		}
	}
}
