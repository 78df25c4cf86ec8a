#!/usr/bin/env bash
# End-to-end check of the reference browser client (cmd/dws/app/static,
# issue 11) in headless Chromium against a real dws. First node --test runs
# the client's unit tests (dws-client.test.mjs: close codes, new epoch, old
# server, backoff). Then two scenarios, each asserted from the demo page's
# DOM (every seq exactly once, in order; duplicates dropped; no resync):
#
# A. network loss, dws in dev mode as `make run` starts it:
#    1. the demo page, served by the ops listener, connects with chat1
#       pre-selected (chat_id on the handshake);
#    2. 3 events are published (chats, chats, messages.chat1): seq 1..3;
#    3. the page simulates a network loss after its 3rd event (close 4000,
#       3 s away); 3 events are published meanwhile (seq 4..6);
#    4. the page reconnects with since=3&epoch=E&chat_id=chat1 and must get
#       4..6 replayed (SPEC §5a), then 3 live events (seq 7..9);
#    5. after the 9th event the page leaves chat1 and re-selects it with
#       since=0: the server replays chat1's messages (seq 3 and 5) and the
#       client must drop both as duplicates.
# B. server restart (a deploy of a single pod): dws with fixed keys and a
#    fixed JetStream directory, so the token and the stream (its epoch)
#    survive the restart, which dev mode's made-up keys do not. 2 events,
#    SIGTERM (close 1001), restart, 3 events published at once (before or
#    after the page is back: replayed or live, each must arrive once), then
#    1 more live.
# C. pod killed (kill -9, no close frame: the page sees 1006) and started
#    again on the same keys and JetStream directory; same checks as B.
#
# Part of `make test` (scripts/services.sh installs chromium when it may);
# by hand: bash scripts/browser-resume-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "browser-resume-check: install chromium (apt-get install chromium)" >&2; exit 1; }
command -v node >/dev/null || { echo "browser-resume-check: install node (apt-get install nodejs) for the client's unit tests" >&2; exit 1; }
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

go build -o bin/dws ./cmd/dws
sets=(--set server.ops_addr=127.0.0.1:$ops_port --set nats.embedded_port=$nats_port)

start_dws() { # extra serve args...; ports of its own so it runs beside `make run`
  bin/dws serve "${sets[@]}" --set server.ws_addr=127.0.0.1:$ws_port \
    --set server.grpc_addr=127.0.0.1:$grpc_port --set server.pod_id=127.0.0.1:$grpc_port "$@" >> "$work/dws.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ops_port/ready" >/dev/null && return 0; sleep 0.1; done
  echo "browser-resume-check: dws did not become ready" >&2; tail -20 "$work/dws.log" >&2; exit 1
}
stop_dws() { kill -"${1:-TERM}" "$pid"; { wait "$pid"; } 2>/dev/null || true; pid=; }

# users: the number of open user sockets, from the pod's metrics.
users() {
  curl -s "http://127.0.0.1:$ops_port/metrics" | awk '/^dws_connections_active\{kind="user"\}/ {print $2}' | head -1
}
wait_users() { # want, what
  for _ in $(seq 1 150); do [ "$(users)" = "$1" ] && return 0; sleep 0.1; done
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
open_page() { # ws URL, extra demo parameters
  local enc
  enc=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1")
  rm -f "$work/release"
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --dump-dom \
    "http://127.0.0.1:$ops_port/client/demo.html?ws=$enc&chat=chat1$2&hold=http://127.0.0.1:$hold_port/hold.png" \
    > "$work/dom.html" 2>/dev/null &
  chrome=$!
}
close_page() { touch "$work/release"; wait $chrome || true; chrome=; }
field() { grep -o "id=\"$1\">[^<]*<" "$work/dom.html" | sed 's/^[^>]*>//; s/<$//'; }
check() { # scenario, want seqs, want dups
  local received dups resyncs reconnects seqs summary replayed
  received=$(field received) dups=$(field dups) resyncs=$(field resyncs) reconnects=$(field reconnects) seqs=$(field seqs)
  replayed=$(curl -s "http://127.0.0.1:$ops_port/metrics" | awk '/^dws_resume_events_total / {print $2}')
  summary="received=$received seqs=$seqs dups=$dups resyncs=$resyncs reconnects=$reconnects; the pod replayed $replayed"
  if [ "$seqs" = "$2" ] && [ "$received" = "$(tr ',' '\n' <<<"$2" | wc -l)" ] && [ "$dups" = "$3" ] &&
    [ "$resyncs" = 0 ] && [ "${reconnects:-0}" -ge 1 ]; then
    echo "browser-resume-check: $1: ok ($summary)"
  else
    echo "browser-resume-check: $1: FAILED ($summary); page log:" >&2
    sed -n '/<pre id="log">/,/<\/pre>/p' "$work/dom.html" >&2
    curl -s "http://127.0.0.1:$ops_port/metrics" | grep -E '^dws_(resumes_total|resume_events|drops_total)' >&2 || true
    grep -v '^ ' "$work/dws.log" | tail -20 >&2
    exit 1
  fi
}

# A. network loss (dev mode).
start_dws
url=$(grep -o 'ws://[^ "]*' "$work/dws.log" | head -1)
[ -n "$url" ] || { echo "browser-resume-check: dws printed no URL" >&2; cat "$work/dws.log" >&2; exit 1; }
open_page "$url" "&drop_after=3&drop_ms=3000&reselect_after=9"
wait_users 1 "the page to connect"
pub chats; pub chats; pub messages.chat1                # seq 1..3, live
wait_users 0 "the page's simulated network loss"
pub chats; pub messages.chat1; pub chats                # seq 4..6, while away
wait_users 1 "the page to reconnect"
sleep 0.5                                               # let the replay land first
pub chats; pub chats; pub chats                         # seq 7..9, live
sleep 3                                                 # the re-select replay of chat1
close_page
check "network loss" "1,2,3,4,5,6,7,8,9" 2
stop_dws

# B. server restart (SIGTERM: close 1001) and C. pod killed (SIGKILL: no
# close frame), each on keys and a stream that survive the restart.
export DWS_AUTH_TOKEN_AES_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export DWS_AUTH_ADMIN_TOKEN_AES_KEY=$DWS_AUTH_TOKEN_AES_KEY DWS_AUTH_API_KEY=check-api-key DWS_GRPC_AUTH_TOKEN=check-grpc-token
restart_scenario() { # name, signal
  local restart=(--set nats.embedded_dir="$work/jetstream-$2")
  n=0
  start_dws "${restart[@]}"
  tok=$(bin/dws token user --company demo --agent agent1 --user dev --ttl 10m)
  open_page "ws://127.0.0.1:$ws_port/ws/demo/agent1?user=dev&token=$tok&x-api-key=$DWS_AUTH_API_KEY" ""
  wait_users 1 "the page to connect"
  pub chats; pub messages.chat1                         # seq 1..2, live
  sleep 0.5
  stop_dws "$2"                                         # TERM: close 1001; KILL: none
  start_dws "${restart[@]}"
  pub chats; pub messages.chat1; pub chats              # seq 3..5, replayed or live
  wait_users 1 "the page to reconnect after the $1"
  sleep 0.5
  pub chats                                             # seq 6, live
  sleep 1
  close_page
  check "$1" "1,2,3,4,5,6" 0
  stop_dws
}
restart_scenario "server restart" TERM
restart_scenario "pod killed" KILL
