package config

import (
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reloadLine is the JSON log line of one reload.
type reloadLine struct {
	Msg             string   `json:"msg"`
	Changed         []string `json:"changed"`
	RestartRequired []string `json:"restart_required"`
	Reason          string   `json:"reason"`
}

func parseLines(t *testing.T, buf *syncBuffer) []reloadLine {
	t.Helper()
	var out []reloadLine
	for _, l := range buf.Lines() {
		if l == "" {
			continue
		}
		var r reloadLine
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

func rewrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newTestReloader loads file with env, wires apply and result recorders and
// a private logger.
func newTestReloader(t *testing.T, file string, env []string, flags map[string]string) (*Reloader, *syncBuffer, *[][2]*Config, *[]string) {
	t.Helper()
	cur := mustLoad(t, LoadOptions{File: file, Env: env, Flags: flags})
	if err := cur.Validate(); err != nil {
		t.Fatal(err)
	}
	var applied [][2]*Config
	var results []string
	buf := &syncBuffer{}
	r := NewReloader("", cur, func(old, new *Config) { applied = append(applied, [2]*Config{old, new}) })
	r.Log = slog.New(slog.NewJSONHandler(buf, nil))
	r.OnResult = func(res string) { results = append(results, res) }
	return r, buf, &applied, &results
}

func TestReloader_GoodFile_AppliesAndLogsOneLine(t *testing.T) {
	t.Parallel()
	file := writeYAML(t, "log:\n  level: info\nauth:\n  api_key: k1\n")
	r, buf, applied, results := newTestReloader(t, file, nil, nil)
	first := r.Current()

	rewrite(t, file, "log:\n  level: debug\nauth:\n  api_key: k2-SECRET\nserver:\n  grpc_addr: \":6000\"\n")
	changes, err := r.Reload()
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	wantChanged := []string{"server.grpc_addr", "server.pod_id", "auth.api_key", "log.level"}
	if !slices.Equal(changes.Keys(), wantChanged) {
		t.Errorf("changes = %v, want %v", changes.Keys(), wantChanged)
	}
	lines := parseLines(t, buf)
	if len(lines) != 1 || lines[0].Msg != "config reloaded" {
		t.Fatalf("want one 'config reloaded' line, got %q", buf.String())
	}
	if !slices.Equal(lines[0].Changed, wantChanged) {
		t.Errorf("logged changed = %v", lines[0].Changed)
	}
	if want := []string{"server.grpc_addr", "server.pod_id", "auth.api_key"}; !slices.Equal(lines[0].RestartRequired, want) {
		t.Errorf("logged restart_required = %v, want %v", lines[0].RestartRequired, want)
	}
	if strings.Contains(buf.String(), "k2-SECRET") {
		t.Error("the log line leaks a secret value")
	}
	if len(*applied) != 1 || (*applied)[0][0] != first || (*applied)[0][1].Log.Level != "debug" {
		t.Fatalf("apply calls = %v", *applied)
	}
	if r.Current() != (*applied)[0][1] {
		t.Error("Current must be the applied config")
	}
	if !slices.Equal(*results, []string{ResultOK}) {
		t.Errorf("results = %v", *results)
	}

	// Reloading an unchanged file is still a successful reload.
	changes, err = r.Reload()
	if err != nil || len(changes) != 0 {
		t.Fatalf("unchanged reload: %v %v", changes, err)
	}
	if lines := parseLines(t, buf); len(lines) != 2 || len(lines[1].Changed) != 0 || lines[1].Changed == nil {
		t.Errorf("unchanged reload must log changed=[]: %q", buf.String())
	}
}

func TestReloader_BadFile_RejectedOldConfigStays(t *testing.T) {
	t.Parallel()
	file := writeYAML(t, "log:\n  level: warn\n")
	r, buf, applied, results := newTestReloader(t, file, nil, nil)
	before := r.Current()

	for _, bad := range []struct{ yaml, reason string }{
		{"log:\n  levle: debug\n", `unknown key "log.levle"`},
		{"session:\n  ttl: 5s\n", "session.refresh_interval: must be less than session.ttl"},
		{"auth:\n  token_aes_key: BAD-SECRET-KEY\n", "auth.token_aes_key: must be 64 hex characters"},
		{"log: [\n", "yaml"},
	} {
		rewrite(t, file, bad.yaml)
		changes, err := r.Reload()
		if err == nil || !strings.Contains(err.Error(), bad.reason) {
			t.Fatalf("%q: err = %v, want %q", bad.yaml, err, bad.reason)
		}
		if changes != nil || r.Current() != before {
			t.Fatalf("%q: a rejected reload must keep the old config", bad.yaml)
		}
	}
	if len(*applied) != 0 {
		t.Errorf("apply called %d times for rejected files", len(*applied))
	}
	lines := parseLines(t, buf)
	if len(lines) != 4 {
		t.Fatalf("want 4 log lines, got %q", buf.String())
	}
	for _, l := range lines {
		if l.Msg != "config reload rejected" || l.Reason == "" {
			t.Errorf("line %+v: want 'config reload rejected' with a reason", l)
		}
	}
	if strings.Contains(buf.String(), "BAD-SECRET-KEY") {
		t.Error("the rejection reason leaks a secret value")
	}
	if !slices.Equal(*results, []string{ResultRejected, ResultRejected, ResultRejected, ResultRejected}) {
		t.Errorf("results = %v", *results)
	}
}

func TestReloader_EnvAndFlagOverrides_Kept(t *testing.T) {
	t.Parallel()
	file := writeYAML(t, "log:\n  level: info\nserver:\n  workers: 10\n")
	r, _, _, _ := newTestReloader(t, file,
		[]string{"DWS_SERVER_WORKERS=33", "POD_IP=10.2.2.2"},
		map[string]string{"log.level": "error"})

	rewrite(t, file, "log:\n  level: debug\nserver:\n  workers: 11\nsession:\n  kill_wait: 4s\n")
	changes, err := r.Reload()
	if err != nil {
		t.Fatal(err)
	}
	c := r.Current()
	if c.Server.Workers != 33 || c.Log.Level != "error" || c.Server.PodID != "10.2.2.2:50051" {
		t.Errorf("overrides lost: workers %d level %q pod_id %q", c.Server.Workers, c.Log.Level, c.Server.PodID)
	}
	if !slices.Equal(changes.Keys(), []string{"session.kill_wait"}) || c.Session.KillWait != 4*time.Second {
		t.Errorf("changes = %v kill_wait %s", changes.Keys(), c.Session.KillWait)
	}
}

func TestReloader_DevKeys_CarriedOver(t *testing.T) {
	t.Parallel()
	file := writeYAML(t, "log:\n  level: info\n")
	cur := mustLoad(t, LoadOptions{File: file})
	user, admin, api := cur.ApplyDevKeys()
	r := NewReloader(file, cur, nil)
	r.Log = slog.New(slog.NewJSONHandler(&syncBuffer{}, nil))

	rewrite(t, file, "log:\n  level: debug\n")
	changes, err := r.Reload()
	if err != nil {
		t.Fatal(err)
	}
	c := r.Current()
	if c.Auth.TokenAESKey != user || c.Auth.AdminTokenAESKey != admin || c.Auth.APIKey != api || !c.Auth.Dev {
		t.Error("dev keys must survive a reload of a file without keys")
	}
	if !slices.Equal(changes.Keys(), []string{"log.level"}) {
		t.Errorf("changes = %v, want only log.level", changes.Keys())
	}

	// A file that now configures keys ends dev mode (after a restart).
	rewrite(t, file, "auth:\n  token_aes_key: \""+strings.Repeat("ab", 32)+"\"\n  api_key: k1\ngrpc:\n  auth_token: t1\n")
	changes, err = r.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if r.Current().Auth.Dev || !slices.Contains(changes.RestartRequired(), "auth.token_aes_key") {
		t.Errorf("configured keys: dev %v changes %v", r.Current().Auth.Dev, changes)
	}
}

// TestWatch_SIGHUP_Reloads sends a real SIGHUP to this test process. The
// handler is installed by Watch before the signal is sent and removed by
// stop (via t.Cleanup even on failure), so SIGHUP never reaches its default
// action (terminate) here.
func TestWatch_SIGHUP_Reloads(t *testing.T) {
	file := writeYAML(t, "log:\n  level: info\n")
	cur := mustLoad(t, LoadOptions{File: file})
	applied := make(chan *Config, 4)
	results := make(chan string, 4)
	r := NewReloader(file, cur, func(_, new *Config) { applied <- new })
	r.Log = slog.New(slog.NewJSONHandler(&syncBuffer{}, nil))
	r.OnResult = func(res string) { results <- res }
	stop := r.Watch(t.Context())
	t.Cleanup(stop)

	signal := func(t *testing.T) string {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case res := <-results:
			return res
		case <-time.After(5 * time.Second):
			t.Fatal("no reload within 5s of SIGHUP")
			return ""
		}
	}

	rewrite(t, file, "log:\n  level: debug\n")
	if res := signal(t); res != ResultOK {
		t.Fatalf("result = %s, want ok", res)
	}
	if c := <-applied; c.Log.Level != "debug" {
		t.Errorf("applied level %q, want debug", c.Log.Level)
	}

	rewrite(t, file, "log:\n  level: shout\n")
	if res := signal(t); res != ResultRejected {
		t.Fatalf("result = %s, want rejected", res)
	}
	if r.Current().Log.Level != "debug" {
		t.Errorf("rejected SIGHUP reload changed the config to %q", r.Current().Log.Level)
	}
}
