package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// writeReportFiles writes prefix.json (v) and prefix.md (md), creating the
// directory.
func writeReportFiles(prefix string, v any, md string) (jsonPath, mdPath string, err error) {
	if err := os.MkdirAll(filepath.Dir(prefix), 0o755); err != nil {
		return "", "", err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", "", err
	}
	jsonPath, mdPath = prefix+".json", prefix+".md"
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(mdPath, []byte(md), 0o644); err != nil {
		return "", "", err
	}
	return jsonPath, mdPath, nil
}

// WriteFiles writes prefix.json and prefix.md.
func (rep *FanoutReport) WriteFiles(prefix string) (string, string, error) {
	return writeReportFiles(prefix, rep, rep.Markdown())
}
