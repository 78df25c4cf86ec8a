#!/usr/bin/env bash
# End-to-end check of the reference browser client (cmd/dws/app/static,
# issue 11) in headless Chromium against a real dws in dev mode:
#   1. the demo page, served by the ops listener, connects with chat1
#      pre-selected (chat_id on the handshake);
#   2. 3 events are published (chats, chats, messages.chat1): seq 1..3;
#   3. the page simulates a network loss after its 3rd event (close 4000,
#      3 s away); 3 events are published meanwhile (seq 4..6);
#   4. the page reconnects with since=3&epoch=E&chat_id=chat1 and must get
#      4..6 replayed (SPEC §5a), then 3 live events (seq 7..9);
#   5. after the 9th event the page re-selects chat1 with since=0: the
#      server replays chat1's messages (seq 3 and 5) and the client must
#      drop both as duplicates.
# Asserted from the DOM: every seq 1..9 shown exactly once, in order, 2
# duplicates dropped, no resync, at least one reconnect. Before that,
# node --test runs the client's unit tests (dws-client.test.mjs).
# Not part of `make test` (Chromium is a large install); run it by hand:
#   bash scripts/browser-resume-check.sh
# Still to add: a server restart between publishes (kill, restart, assert
# every event once). It needs the same token keys and the same stream
# across the restart, i.e. a non-dev config with fixed auth keys and a
# fixed nats.embedded_dir; dev mode makes up new keys at every start, so a
# restarted dev pod refuses the page's token.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "browser-resume-check: install chromium (apt-get install chromium)" >&2; exit 1; }
command -v node >/dev/null || { echo "browser-resume-check: install node (apt-get install nodejs) for the client's unit tests" >&2; exit 1; }
# The client's own paths first (close codes, new epoch, old server, backoff).
node --test cmd/dws/app/static/dws-client.test.mjs > /dev/null ||
  { echo "browser-resume-check: node --test cmd/dws/app/static/dws-client.test.mjs FAILED" >&2; exit 1; }
ws_port=28180 ops_port=28181 grpc_port=28182 hold_port=28183 nats_port=28222
work=$(mktemp -d)
pid= hold= chrome=
trap 'kill $pid $hold $chrome 2>/dev/null || true; rm -rf "$work"' EXIT

# Chromium's --dump-dom prints the page at its load event. The demo page's
# hold= parameter loads an image from this server, which answers only once
# $work/release exists, so the load event waits for the scenario to end.
python3 - "$work/release" "$hold_port" <<'PY' &
import http.server, os, sys, time
release, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        deadline = time.time() + 90
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.1)
        self.send_response(200); self.send_header("Content-Type", "image/png"); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
PY
hold=$!

# As `make run` does, with ports of its own so it runs beside one.
go build -o bin/dws ./cmd/dws
sets=(--set server.ops_addr=127.0.0.1:$ops_port --set nats.embedded_port=$nats_port)
bin/dws serve "${sets[@]}" --set server.ws_addr=127.0.0.1:$ws_port \
  --set server.grpc_addr=127.0.0.1:$grpc_port --set server.pod_id=127.0.0.1:$grpc_port > "$work/dws.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q 'Connect: *ws://' "$work/dws.log" && break; sleep 0.1; done
url=$(grep -o 'ws://[^ "]*' "$work/dws.log" | head -1)
[ -n "$url" ] || { echo "browser-resume-check: dws printed no URL" >&2; cat "$work/dws.log" >&2; exit 1; }

enc=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$url")
page="http://127.0.0.1:$ops_port/client/demo.html?ws=$enc&chat=chat1&drop_after=3&drop_ms=3000&reselect_after=9&hold=http://127.0.0.1:$hold_port/hold.png"

# users: the number of open user sockets, from the pod's metrics.
users() {
  curl -s "http://127.0.0.1:$ops_port/metrics" | awk '/^dws_connections_active\{kind="user"\}/ {print $2}' | head -1
}
wait_users() { # want, what
  for _ in $(seq 1 100); do [ "$(users)" = "$1" ] && return 0; sleep 0.1; done
  echo "browser-resume-check: timed out waiting for $2 (user sockets: $(users))" >&2; exit 1
}
n=0
pub() { # subject suffix
  n=$((n + 1))
  local data
  data=$(printf '{"event_id":"check-%d","company_id":"demo","agent_id":"agent1","row_data":{"n":%d}}' $n $n)
  case $1 in messages.*)
    data=$(printf '{"event_id":"check-%d","company_id":"demo","agent_id":"agent1","chat_id":"%s","message_id":"m%d","row_data":{"n":%d}}' \
      $n "${1#messages.}" $n $n) ;;
  esac
  bin/dws publish "${sets[@]}" --subject "websocket.demo.agent1.$1" --data "$data" >/dev/null
}

timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --dump-dom "$page" > "$work/dom.html" 2>/dev/null &
chrome=$!

wait_users 1 "the page to connect"
pub chats; pub chats; pub messages.chat1                # seq 1..3, live
wait_users 0 "the page's simulated network loss"
pub chats; pub messages.chat1; pub chats                # seq 4..6, while away
wait_users 1 "the page to reconnect"
sleep 0.5                                               # let the replay land first
pub chats; pub chats; pub chats                         # seq 7..9, live
sleep 3                                                 # the re-select replay of chat1
touch "$work/release"
wait $chrome || true
chrome=

field() { grep -o "id=\"$1\">[^<]*<" "$work/dom.html" | sed 's/^[^>]*>//; s/<$//'; }
received=$(field received) dups=$(field dups) resyncs=$(field resyncs) reconnects=$(field reconnects) seqs=$(field seqs)
summary="received=$received seqs=$seqs dups=$dups resyncs=$resyncs reconnects=$reconnects"
if [ "$received" = 9 ] && [ "$seqs" = "1,2,3,4,5,6,7,8,9" ] && [ "$dups" = 2 ] && [ "$resyncs" = 0 ] &&
  [ "${reconnects:-0}" -ge 1 ]; then
  echo "browser-resume-check: ok ($summary)"
else
  echo "browser-resume-check: FAILED ($summary); page log:" >&2
  sed -n '/<pre id="log">/,/<\/pre>/p' "$work/dom.html" >&2
  curl -s "http://127.0.0.1:$ops_port/metrics" | grep -E '^dws_(resume|replay|drops)' >&2 || true
  grep -v '^ ' "$work/dws.log" | tail -20 >&2
  exit 1
fi
