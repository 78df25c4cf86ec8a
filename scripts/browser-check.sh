#!/usr/bin/env bash
# End-to-end check with a real browser: starts dws in dev mode as `make run`
# does, opens the printed URL from a page in headless Chromium (Debian's
# chromium package) and asserts the page received {"type":"ready"} with the
# json.v1 sub-protocol. Not part of `make test` (Chromium is a large install);
# run it by hand: bash scripts/browser-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "browser-check: install chromium (apt-get install chromium)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $pid $slow 2>/dev/null || true; rm -rf "$work"' EXIT
# Chromium dumps the DOM at the load event; a script served after 3 s by this
# tiny server holds the load event back while the WebSocket talks.
python3 -c '
import http.server, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(3); self.send_response(200); self.send_header("Content-Type", "text/javascript"); self.end_headers(); self.wfile.write(b"//")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", 28083), H).serve_forever()' &
slow=$!
go build -o "$work/dws" ./cmd/dws
"$work/dws" --set server.ws_addr=127.0.0.1:28080 --set server.ops_addr=127.0.0.1:28081 \
  --set server.grpc_addr=127.0.0.1:28082 --set server.pod_id=127.0.0.1:28082 \
  --set nats.embedded_port=-1 > "$work/dws.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do grep -q 'ws://' "$work/dws.log" && break; sleep 0.1; done
url=$(grep -o 'ws://[^ "]*' "$work/dws.log" | head -1)

cat > "$work/page.html" <<HTML
<html><body><pre id="log"></pre><script>
const log = m => document.getElementById("log").textContent += m + "\n";
const ws = new WebSocket("$url", "json.v1");
ws.onopen = () => log("open protocol=" + ws.protocol);
ws.onmessage = e => log(e.data);
ws.onclose = e => log("close " + e.code);
</script><script src="http://127.0.0.1:28083/wait.js"></script></body></html>
HTML
dom=$(timeout 30 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --dump-dom "file://$work/page.html" 2>/dev/null)
if grep -q 'open protocol=json.v1' <<<"$dom" && grep -q '{"type":"ready"}' <<<"$dom"; then
  echo "browser-check: ok (Chromium received {\"type\":\"ready\"} over json.v1)"
else
  echo "browser-check: FAILED; page log:" >&2
  grep -A5 '<pre' <<<"$dom" >&2 || true
  exit 1
fi
