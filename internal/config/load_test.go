package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoad_Precedence_DefaultsFileEnvFlags(t *testing.T) {
	t.Parallel()
	file := writeYAML(t, `
server:
  ws_addr: ":9001"
websocket:
  ping_interval: 5s
redis:
  addrs: [file:6379]
`)
	cases := []struct {
		name     string
		file     string
		env      []string
		flags    map[string]string
		wantAddr string
		wantPing time.Duration
		wantRdb  []string
	}{
		{name: "defaults only", wantAddr: ":8080", wantPing: 20 * time.Second},
		{name: "file over defaults", file: file, wantAddr: ":9001", wantPing: 5 * time.Second, wantRdb: []string{"file:6379"}},
		{
			name: "env over file", file: file,
			env:      []string{"DWS_SERVER_WS_ADDR=:9002", "DWS_REDIS_ADDRS=env1:6379, env2:6379"},
			wantAddr: ":9002", wantPing: 5 * time.Second, wantRdb: []string{"env1:6379", "env2:6379"},
		},
		{
			name: "flag over env", file: file,
			env:      []string{"DWS_SERVER_WS_ADDR=:9002", "DWS_WEBSOCKET_PING_INTERVAL=7s"},
			flags:    map[string]string{"server.ws_addr": ":9003", "redis.addrs": "flag:6379"},
			wantAddr: ":9003", wantPing: 7 * time.Second, wantRdb: []string{"flag:6379"},
		},
		{
			name: "empty env clears a file list", file: file,
			env:      []string{"DWS_REDIS_ADDRS="},
			wantAddr: ":9001", wantPing: 5 * time.Second,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := mustLoad(t, LoadOptions{File: tc.file, Env: tc.env, Flags: tc.flags})
			if c.Server.WSAddr != tc.wantAddr {
				t.Errorf("server.ws_addr = %q, want %q", c.Server.WSAddr, tc.wantAddr)
			}
			if c.WebSocket.PingInterval != tc.wantPing {
				t.Errorf("websocket.ping_interval = %s, want %s", c.WebSocket.PingInterval, tc.wantPing)
			}
			if !slices.Equal(c.Redis.Addrs, tc.wantRdb) {
				t.Errorf("redis.addrs = %q, want %q", c.Redis.Addrs, tc.wantRdb)
			}
			if c.SourceFile() != tc.file {
				t.Errorf("SourceFile = %q, want %q", c.SourceFile(), tc.file)
			}
			// Keys no layer touched keep their defaults.
			if c.NATS.Stream != "wa_stream" {
				t.Errorf("nats.stream = %q, want the default", c.NATS.Stream)
			}
		})
	}
}

func TestLoad_EveryKey_SettableByEnvAndFlag(t *testing.T) {
	t.Parallel()
	// A value of each kind that differs from every default.
	sample := map[kind]string{
		kindString: "x1", kindInt: "7", kindFloat: "2.5", kindBool: "true",
		kindDuration: "1m7s", kindList: "a:1,b:2",
	}
	for _, k := range Keys() {
		raw := sample[k.kind]
		if k.kind == kindBool && k.Default == "true" {
			raw = "false"
		}
		for _, opts := range []LoadOptions{
			{Env: []string{k.Env + "=" + raw}},
			{Env: []string{}, Flags: map[string]string{k.Name: raw}},
		} {
			c := mustLoad(t, opts)
			if got := k.format(k.field(c)); got != k.format(k.field(mustConvert(t, k, raw))) {
				t.Errorf("%s via %v: got %q, want %q", k.Name, opts, got, raw)
			}
		}
	}
}

// mustConvert returns a Config whose only interesting field is k = raw.
func mustConvert(t *testing.T, k Key, raw string) *Config {
	t.Helper()
	v, err := k.convert(raw)
	if err != nil {
		t.Fatalf("%s: %v", k.Name, err)
	}
	c := Defaults()
	k.set(c, v)
	return c
}

func TestLoad_FileResolution_ExplicitThenEnvThenDefaultPath(t *testing.T) {
	// t.Chdir: not parallel, and it restores the directory itself.
	dir := t.TempDir()
	t.Chdir(dir)
	explicit := writeYAML(t, "server:\n  ws_addr: \":1001\"\n")
	fromEnv := writeYAML(t, "server:\n  ws_addr: \":1002\"\n")

	c := mustLoad(t, LoadOptions{})
	if c.Server.WSAddr != ":8080" || c.SourceFile() != "" {
		t.Fatalf("no file anywhere: ws_addr %q file %q, want defaults and no file", c.Server.WSAddr, c.SourceFile())
	}

	if err := os.MkdirAll(filepath.Join(dir, "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, DefaultFile), []byte("server:\n  ws_addr: \":1003\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		opts     LoadOptions
		wantAddr string
		wantFile string
	}{
		{"default path when present", LoadOptions{Env: []string{}}, ":1003", DefaultFile},
		{"DWS_CONFIG over default path", LoadOptions{Env: []string{"DWS_CONFIG=" + fromEnv}}, ":1002", fromEnv},
		{"explicit over DWS_CONFIG", LoadOptions{File: explicit, Env: []string{"DWS_CONFIG=" + fromEnv}}, ":1001", explicit},
	}
	for _, tc := range cases {
		c := mustLoad(t, tc.opts)
		if c.Server.WSAddr != tc.wantAddr || c.SourceFile() != tc.wantFile {
			t.Errorf("%s: ws_addr %q file %q, want %q %q", tc.name, c.Server.WSAddr, c.SourceFile(), tc.wantAddr, tc.wantFile)
		}
	}

	missing := filepath.Join(dir, "nope.yaml")
	for _, opts := range []LoadOptions{{File: missing, Env: []string{}}, {Env: []string{"DWS_CONFIG=" + missing}}} {
		if _, err := Load(opts); err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("named file missing: err = %v, want one naming %s", err, missing)
		}
	}
}

func TestLoad_UnknownYAMLKey_ErrorNamesKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"typo in a key", "server:\n  ws_adr: \":1\"\n", []string{`unknown key "server.ws_adr"`, `did you mean "server.ws_addr"`}},
		{"unknown section", "metrics:\n  enabled: true\n", []string{`unknown key "metrics.enabled"`}},
		{"key under a leaf", "log:\n  level:\n    value: debug\n", []string{`unknown key "log.level.value"`}},
		{"section given a scalar", "server: 5\n", []string{"server: must be a mapping"}},
		{"dev flag is not a key", "auth:\n  dev: true\n", []string{`unknown key "auth.dev"`}},
		{"all typos reported", "server:\n  wsaddr: x\nnats:\n  steam: y\n", []string{`"server.wsaddr"`, `"nats.steam"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(LoadOptions{File: writeYAML(t, tc.yaml), Env: []string{}})
			if err == nil {
				t.Fatal("Load accepted a file with an unknown key")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLoad_EmptyOrNullYAML_KeepsDefaults(t *testing.T) {
	t.Parallel()
	for _, y := range []string{"", "server:\n", "server: {}\n", "auth:\n  api_key:\n"} {
		c := mustLoad(t, LoadOptions{File: writeYAML(t, y)})
		if c.Server.WSAddr != ":8080" || c.Auth.APIKey != "" {
			t.Errorf("%q: got ws_addr %q api_key set=%v, want defaults", y, c.Server.WSAddr, c.Auth.APIKey != "")
		}
	}
}

func TestLoad_ListsFromEnv_CommaSeparated(t *testing.T) {
	t.Parallel()
	c := mustLoad(t, LoadOptions{Env: []string{
		"DWS_REDIS_ADDRS=a:6379,b:6379",
		"DWS_WEBSOCKET_ALLOWED_ORIGINS= https://a.example.com , ,https://b.example.com",
	}})
	if want := []string{"a:6379", "b:6379"}; !slices.Equal(c.Redis.Addrs, want) {
		t.Errorf("redis.addrs = %q, want %q", c.Redis.Addrs, want)
	}
	if want := []string{"https://a.example.com", "https://b.example.com"}; !slices.Equal(c.WebSocket.AllowedOrigins, want) {
		t.Errorf("websocket.allowed_origins = %q, want %q", c.WebSocket.AllowedOrigins, want)
	}
	// YAML may give a list either way.
	c = mustLoad(t, LoadOptions{File: writeYAML(t, "redis:\n  addrs: \"c:1,d:2\"\n")})
	if want := []string{"c:1", "d:2"}; !slices.Equal(c.Redis.Addrs, want) {
		t.Errorf("redis.addrs from a YAML string = %q, want %q", c.Redis.Addrs, want)
	}
}

func TestLoad_SecretFromFile_ReadsAndTrims(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := strings.Repeat("ab", 32)
	keyFile := filepath.Join(dir, "token_key")
	pwFile := filepath.Join(dir, "redis_pw")
	if err := os.WriteFile(keyFile, []byte("  "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte("pw-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	c := mustLoad(t, LoadOptions{
		File: writeYAML(t, "auth:\n  token_aes_key: \""+strings.Repeat("cd", 32)+"\"\n"),
		Env:  []string{"DWS_AUTH_TOKEN_AES_KEY_FILE=" + keyFile, "DWS_REDIS_PASSWORD_FILE=" + pwFile},
	})
	if c.Auth.TokenAESKey != key {
		t.Error("auth.token_aes_key: the _FILE value (trimmed) must override the file")
	}
	if c.Redis.Password != "pw-from-file" {
		t.Error("redis.password: not read from DWS_REDIS_PASSWORD_FILE")
	}
	c = mustLoad(t, LoadOptions{
		Env:   []string{"DWS_AUTH_TOKEN_AES_KEY_FILE=" + keyFile},
		Flags: map[string]string{"auth.token_aes_key": strings.Repeat("ef", 32)},
	})
	if c.Auth.TokenAESKey != strings.Repeat("ef", 32) {
		t.Error("a flag must override a _FILE secret")
	}

	bad := []struct {
		name string
		env  []string
		want string
	}{
		{"missing file", []string{"DWS_AUTH_API_KEY_FILE=" + filepath.Join(dir, "nope")}, "auth.api_key: DWS_AUTH_API_KEY_FILE: open "},
		{"both forms", []string{"DWS_AUTH_API_KEY=k", "DWS_AUTH_API_KEY_FILE=" + pwFile}, "set DWS_AUTH_API_KEY or DWS_AUTH_API_KEY_FILE, not both"},
		{"empty path", []string{"DWS_REDIS_PASSWORD_FILE="}, "DWS_REDIS_PASSWORD_FILE is empty"},
		{"not a secret", []string{"DWS_SERVER_WS_ADDR_FILE=" + pwFile}, "DWS_SERVER_WS_ADDR_FILE is only read for secrets"},
	}
	for _, tc := range bad {
		_, err := Load(LoadOptions{Env: tc.env})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw-from-file") {
			t.Errorf("%s: error leaks the secret file's content", tc.name)
		}
	}
}

func TestLoad_BadValues_ErrorNamesKeyRuleAndSource(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts LoadOptions
		want string
	}{
		{"env int", LoadOptions{Env: []string{"DWS_SERVER_WORKERS=lots"}}, `server.workers: must be an integer, got "lots" (env DWS_SERVER_WORKERS)`},
		{"env bool", LoadOptions{Env: []string{"DWS_NATS_CREATE_STREAM=maybe"}}, `nats.create_stream: must be true or false, got "maybe" (env DWS_NATS_CREATE_STREAM)`},
		{"env float", LoadOptions{Env: []string{"DWS_RATELIMIT_MESSAGES_PER_SECOND=NaN"}}, `ratelimit.messages_per_second: must be a number`},
		{"flag duration", LoadOptions{Env: []string{}, Flags: map[string]string{"session.ttl": "30"}}, `session.ttl: must be a Go duration such as "30s"`},
		{"flag unknown", LoadOptions{Env: []string{}, Flags: map[string]string{"sesion.ttl": "30s"}}, `flag: unknown key "sesion.ttl" (did you mean "session.ttl"?)`},
		{"file duration number", LoadOptions{Env: []string{}, File: "ttl"}, `session.ttl: must be a Go duration such as "30s" or "1m30s", got 30 (config file`},
		{"file list of maps", LoadOptions{Env: []string{}, File: "addrs"}, `redis.addrs: must be a list of strings, got an element that is a mapping`},
		{"file secret as number", LoadOptions{Env: []string{}, File: "secretnum"}, `auth.api_key: must be a string (quote it in YAML)`},
	}
	files := map[string]string{
		"ttl":       "session:\n  ttl: 30\n",
		"addrs":     "redis:\n  addrs:\n    - host: a\n",
		"secretnum": "auth:\n  api_key: 123456789\n",
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if y, ok := files[tc.opts.File]; ok {
				tc.opts.File = writeYAML(t, y)
			}
			_, err := Load(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoad_ManyProblems_AllReported(t *testing.T) {
	t.Parallel()
	_, err := Load(LoadOptions{
		File:  writeYAML(t, "server:\n  nope: 1\n"),
		Env:   []string{"DWS_SERVER_WORKERS=x"},
		Flags: map[string]string{"log.nope": "x"},
	})
	if err == nil {
		t.Fatal("Load accepted three bad layers")
	}
	for _, w := range []string{`"server.nope"`, "server.workers", `"log.nope"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %s", err, w)
		}
	}
}

func TestLoad_Durations_GoSyntax(t *testing.T) {
	t.Parallel()
	c := mustLoad(t, LoadOptions{File: writeYAML(t, "session:\n  ttl: 1m30s\n  kill_wait: 250ms\nroute:\n  cache_ttl: 0\n")})
	if c.Session.TTL != 90*time.Second || c.Session.KillWait != 250*time.Millisecond || c.Route.CacheTTL != 0 {
		t.Errorf("got ttl %s kill_wait %s cache_ttl %s", c.Session.TTL, c.Session.KillWait, c.Route.CacheTTL)
	}
}

func TestLoad_UnrelatedDWSEnv_Ignored(t *testing.T) {
	t.Parallel()
	c := mustLoad(t, LoadOptions{Env: []string{"DWS_CONFIG_EXTRA=1", "DWS_BENCH_CONNS=10", "HOME=/root"}})
	if c.Server.WSAddr != ":8080" {
		t.Errorf("ws_addr = %q", c.Server.WSAddr)
	}
}
