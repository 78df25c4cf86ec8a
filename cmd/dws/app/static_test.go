package app

import (
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
)

// The reference client and its demo page are served by the ops listener
// (issue 11): the browser runs the module only with a JavaScript content
// type, and nosniff makes it refuse anything else.
func TestStatic_ClientFilesServed(t *testing.T) {
	a := startApp(t, nil)
	base := "http://" + a.OpsAddr()
	for _, tc := range []struct {
		path, contentType, mustContain string
	}{
		{"/client/dws-client.js", "text/javascript; charset=utf-8", "export class DwsClient"},
		{"/client/demo.html", "text/html; charset=utf-8", `import { DwsClient } from "./dws-client.js"`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(base + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type %q, want %q", got, tc.contentType)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q, want nosniff", got)
			}
			if got := resp.Header.Get("Cache-Control"); got != clientCacheControl {
				t.Errorf("Cache-Control %q, want %q", got, clientCacheControl)
			}
			if len(body) == 0 || !strings.Contains(string(body), tc.mustContain) {
				t.Errorf("body (%d bytes) lacks %q", len(body), tc.mustContain)
			}
		})
	}
}

// Only GET and HEAD read the files; another method, like another path
// under /client/, falls to the ops port's catch-all 404 (as POST /healthz
// does).
func TestStatic_OtherRequests(t *testing.T) {
	a := startApp(t, nil)
	base := "http://" + a.OpsAddr()
	for _, tc := range []struct {
		method, path string
		status       int
		emptyBody    bool
	}{
		{"HEAD", "/client/dws-client.js", 200, true},
		{"POST", "/client/dws-client.js", 404, false},
		{"GET", "/client/", 404, false},
		{"GET", "/client/static.go", 404, false},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.emptyBody && len(body) != 0 {
				t.Errorf("HEAD answered a %d-byte body", len(body))
			}
		})
	}
}

// The dev banner tells a newcomer where the demo page is, with the user
// URL (token and key included) url-encoded in its ws parameter.
func TestStatic_DevBannerLinksTheDemo(t *testing.T) {
	a := startApp(t, nil)
	banner, err := a.DevBanner("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var demo string
	for _, line := range strings.Split(banner, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Demo page:"); ok {
			demo = strings.Fields(rest)[0]
		}
	}
	u, err := url.Parse(demo)
	if err != nil || demo == "" {
		t.Fatalf("no demo URL in the banner (%v):\n%s", err, banner)
	}
	if want := "http://" + a.OpsAddr() + "/client/demo.html"; u.Scheme+"://"+u.Host+u.Path != want {
		t.Errorf("demo page %q, want %q", u.Scheme+"://"+u.Host+u.Path, want)
	}
	ws := u.Query().Get("ws")
	if !strings.HasPrefix(ws, "ws://") || !strings.Contains(ws, "/ws/demo/agent1?") ||
		!strings.Contains(ws, "token=") || !strings.Contains(ws, "x-api-key=") {
		t.Errorf("ws parameter %q is not the user URL with credentials", ws)
	}
}

// The reference client's own unit tests (close codes, a new epoch, the
// ready frame's position as the first since, resync, an old server,
// backoff) run on node's built-in runner; make test installs node
// (scripts/services.sh).
func TestStatic_ClientUnitTests(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: install it (Debian: apt-get install nodejs) to test the reference client")
	}
	out, err := exec.Command(node, "--test", "static/dws-client.test.mjs").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test static/dws-client.test.mjs: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "# fail 0") {
		t.Fatalf("node test output without '# fail 0':\n%s", out)
	}
}
