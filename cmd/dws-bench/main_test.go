package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRun_ExitStatusAndMessages(t *testing.T) {
	t.Setenv("DWS_AUTH_TOKEN_AES_KEY", "")
	t.Setenv("DWS_AUTH_API_KEY", "")
	cases := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
		wantStdout string
	}{
		{"no scenario", nil, 2, "usage: dws-bench", ""},
		{"unknown scenario", []string{"bogus"}, 2, `unknown scenario "bogus"`, ""},
		{"cluster without a binary", []string{"cluster"}, 2, "--spawn-server is required", ""},
		{"ab without binaries", []string{"ab", "--a", "/x"}, 2, "--a and --b", ""},
		{"cluster flags", []string{"cluster", "-h"}, 0, "one durable consumer shared", ""},
		{"ab flags", []string{"ab", "-h"}, 0, "-assert-ratio", ""},
		{"floor without a binary", []string{"floor"}, 2, "--spawn-server (the dws binary) is required", ""},
		{"floor flags", []string{"floor", "-h"}, 0, "-max-p99-ratio", ""},
		{"floor bad sweep", []string{"floor", "--spawn-server", "/x", "--sweep", "fast"}, 2, "--sweep", ""},
		{"floor-server bad flag", []string{"floor-server", "--bogus"}, 2, "flag provided but not defined", ""},
		{"soak's fraction flag is gone", []string{"soak", "--spawn-server", "/x", "--assert-rss-drift", "1"}, 2, "--assert-rss-drift-pct", ""},
		{"soak drift must be positive", []string{"soak", "--spawn-server", "/x", "--assert-rss-drift-pct", "0"}, 2, "must be > 0", ""},
		{"help", []string{"help"}, 0, "", "connect"},
		{"connect flags", []string{"connect", "-h"}, 0, "-token-key", ""},
		{"bad address", []string{"connect", "--addr", "localhost"}, 2, "--addr", ""},
		{"stray argument", []string{"connect", "extra"}, 2, "unexpected argument", ""},
		{"no keys", []string{"connect", "--addr", "127.0.0.1:1", "-n", "1"}, 1, "token key and an API key are required", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"dws-bench"}, tc.args...), &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.wantStderr)
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tc.wantStdout)
			}
		})
	}
}

func TestRedactedCommand_MasksSecretsInBothForms(t *testing.T) {
	got := redactedCommand([]string{"/usr/bin/dws-bench", "connect", "--token-key", "00ff", "-api-key=s3cret", "-n", "10", "--api-keys-file", "x"})
	want := "dws-bench connect --token-key *** -api-key=*** -n 10 --api-keys-file x"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
