package bench

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The scenario tests run a real dws, built once per test binary from this
// module with `go build`.
var (
	dwsOnce sync.Once
	dwsBin  string
	dwsErr  error
	dwsDir  string
)

// buildDWS returns the path of a freshly built dws binary.
func buildDWS(t *testing.T) string {
	t.Helper()
	dwsOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			dwsErr = err
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dwsDir, dwsErr = os.MkdirTemp("", "dws-bench-test-")
		if dwsErr != nil {
			return
		}
		dwsBin = filepath.Join(dwsDir, "dws")
		cmd := exec.Command("go", "build", "-o", dwsBin, "./cmd/dws")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			dwsErr = &buildError{out: string(b), err: err}
		}
	})
	if dwsErr != nil {
		t.Fatalf("build dws: %v", dwsErr)
	}
	return dwsBin
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// cleanupDWS removes the built binary; TestMain calls it after the run.
func cleanupDWS() {
	if dwsDir != "" {
		os.RemoveAll(dwsDir)
	}
}

// needRedis fails the test unless Redis answers at addr.
func needRedis(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("Redis is not reachable at %s (start it: make services): %v", addr, err)
	}
	c.Close()
}
