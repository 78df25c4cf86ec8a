#!/usr/bin/env bash
# fleet.sh start|pods [cluster|sentinel]|up|stop — a local fleet for people
# (issue 13), the topologies internal/fleettest starts for tests:
#   start  a 3-master Redis Cluster, a Sentinel setup (1 master, 1 replica,
#          3 sentinels, quorum 2) and a 3-node NATS JetStream cluster, on free
#          ports, from the installed redis-server / redis-cli and a
#          nats-server >= 2.10 ($NATS_SERVER, default bin/nats-server, built
#          from go.mod's nats-server module when missing);
#   pods   3 dws pods (bin/dws) on that fleet: nats.url = the 3 NATS nodes,
#          nats.replicas 3, redis.addrs = the Redis Cluster (or Sentinel);
#   up     start + pods cluster (make fleet);
#   stop   everything (make fleet-stop).
# State, logs and the keys the pods share live in $FLEET_DIR (default
# /tmp/dws-fleet); the machine's 6379/4222 are never used.
set -euo pipefail
DIR=${FLEET_DIR:-/tmp/dws-fleet}
SERVER=${REDIS_SERVER:-redis-server}
CLI=${REDIS_CLI:-redis-cli}
NATS=${NATS_SERVER:-bin/nats-server}
DWS=${DWS_BIN:-bin/dws}

free_port() { # a free port whose +10000 (cluster bus) is free too
  python3 - <<'PY'
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p in (6379, 4222) or p + 10000 > 65535: continue
    b = socket.socket()
    try: b.bind(("127.0.0.1", p + 10000))
    except OSError: continue
    finally: b.close()
    print(p); break
PY
}

wait_ping() { for _ in $(seq 100); do "$CLI" -p "$1" ping >/dev/null 2>&1 && return; sleep 0.1; done; echo "redis on $1 did not start" >&2; exit 1; }

server() { # port dir [args...]
  local port=$1 d=$2; shift 2; mkdir -p "$d"
  "$SERVER" --port "$port" --bind 127.0.0.1 --dir "$d" --save "" --appendonly no \
    --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log" "$@"
  wait_ping "$port"
}

start() {
  [ -e "$DIR/addrs" ] && { echo "already running: $(cat "$DIR/addrs") (fleet.sh stop first)"; exit 1; }
  mkdir -p "$DIR"
  local c=() p
  for i in 1 2 3; do
    p=$(free_port); c+=("127.0.0.1:$p")
    server "$p" "$DIR/cluster-$i" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
  done
  "$CLI" --cluster create "${c[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/cluster-create.log"
  local m r s=()
  m=$(free_port); server "$m" "$DIR/sentinel-master"
  r=$(free_port); server "$r" "$DIR/sentinel-replica" --replicaof 127.0.0.1 "$m"
  for i in 1 2 3; do
    p=$(free_port); s+=("127.0.0.1:$p"); mkdir -p "$DIR/sentinel-$i"
    cat >"$DIR/sentinel-$i/sentinel.conf" <<CONF
port $p
bind 127.0.0.1
dir $DIR/sentinel-$i
daemonize yes
pidfile $DIR/sentinel-$i/redis.pid
logfile $DIR/sentinel-$i/redis.log
sentinel monitor mymaster 127.0.0.1 $m 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 10000
CONF
    "$SERVER" "$DIR/sentinel-$i/sentinel.conf" --sentinel; wait_ping "$p"
  done
  local n; n=$(start_nats)
  local join; join() { local IFS=,; echo "$*"; }
  echo "cluster_addrs=$(join "${c[@]}")" >"$DIR/addrs"
  echo "sentinel_addrs=$(join "${s[@]}")" >>"$DIR/addrs"
  echo "nats_url=$n" >>"$DIR/addrs"
  echo "redis cluster: redis.addrs=$(join "${c[@]}")  sentinel: redis.addrs=$(join "${s[@]}") redis.master_name=mymaster  nats: nats.url=$n nats.replicas=3"
}

# start_nats starts a 3-node JetStream cluster and prints its nats.url once
# the JetStream meta group has a leader (a stream with 3 replicas can be
# created from then on).
start_nats() {
  if [ ! -x "$NATS" ]; then
    go build -o "$NATS" github.com/nats-io/nats-server/v2 >&2
  fi
  local cp=() pp=() mp=() urls=() i routes
  for i in 1 2 3; do cp+=("$(free_port)"); pp+=("$(free_port)"); mp+=("$(free_port)"); done
  routes=$(printf 'nats-route://127.0.0.1:%s,' "${pp[@]}"); routes=${routes%,}
  for i in 0 1 2; do
    local d="$DIR/nats-$((i + 1))"; mkdir -p "$d"
    cat >"$d/nats.conf" <<CONF
server_name: n$((i + 1))
listen: 127.0.0.1:${cp[$i]}
http: 127.0.0.1:${mp[$i]}
pid_file: $d/nats.pid
jetstream { store_dir: "$d/js" }
cluster { name: dws-fleet, listen: 127.0.0.1:${pp[$i]}, routes: [$routes] }
CONF
    nohup "$NATS" -c "$d/nats.conf" >"$d/nats.log" 2>&1 &
    urls+=("nats://127.0.0.1:${cp[$i]}")
  done
  for _ in $(seq 150); do
    if curl -fs "http://127.0.0.1:${mp[0]}/jsz" 2>/dev/null | grep -q '"leader"'; then
      local IFS=,; echo "${urls[*]}"; return
    fi
    sleep 0.2
  done
  echo "nats cluster: no JetStream meta leader within 30 s (see $DIR/nats-*/nats.log)" >&2; exit 1
}

# pods starts 3 dws pods on the fleet with keys shared through $DIR/keys.env
# and prints one line: their WebSocket and ops URLs and a user token.
pods() {
  local redis=${1:-cluster}
  [ -e "$DIR/addrs" ] || { echo "fleet not running: $0 start first" >&2; exit 1; }
  [ -x "$DWS" ] || { echo "$DWS missing: make build first" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$DIR/addrs"
  local raddrs=$cluster_addrs extra=()
  if [ "$redis" = sentinel ]; then raddrs=$sentinel_addrs; extra=(--set redis.master_name=mymaster); fi
  if [ ! -e "$DIR/keys.env" ]; then
    hex() { head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
    { echo "export DWS_AUTH_TOKEN_AES_KEY=$(hex)"; echo "export DWS_AUTH_ADMIN_TOKEN_AES_KEY=$(hex)"
      echo "export DWS_AUTH_API_KEY=fleet-$(hex | head -c16)"; echo "export DWS_AUTH_ISSUER_API_KEY=issuer-$(hex | head -c16)"
      echo "export DWS_GRPC_AUTH_TOKEN=$(hex)"; } >"$DIR/keys.env"
  fi
  # shellcheck disable=SC1091
  . "$DIR/keys.env"
  mkdir -p "$DIR/pods"
  local ws=() i w o g
  for i in 1 2 3; do
    w=$(free_port); o=$(free_port); g=$(free_port)
    nohup "$DWS" serve --set server.ws_addr="127.0.0.1:$w" --set server.ops_addr="127.0.0.1:$o" \
      --set server.grpc_addr="127.0.0.1:$g" --set redis.addrs="$raddrs" "${extra[@]}" \
      --set nats.url="$nats_url" --set nats.replicas=3 \
      >"$DIR/pods/dws-$i.log" 2>&1 &
    echo $! >"$DIR/pods/dws-$i.pid"
    ws+=("ws://127.0.0.1:$w (ops http://127.0.0.1:$o)")
    for _ in $(seq 100); do
      curl -fs "http://127.0.0.1:$o/ready" >/dev/null 2>&1 && break
      kill -0 "$(cat "$DIR/pods/dws-$i.pid")" 2>/dev/null || { echo "pod $i exited: $(tail -3 "$DIR/pods/dws-$i.log")" >&2; exit 1; }
      sleep 0.2
    done
  done
  local tok; tok=$("$DWS" token user --company demo --agent agent1 --user u1 --ttl 24h)
  echo "pods on redis $redis: ${ws[*]}; user URL path /ws/demo/agent1?user=u1&token=$tok&x-api-key=$DWS_AUTH_API_KEY; keys in $DIR/keys.env; publish: DWS_NATS_URL=$nats_url $DWS publish --subject websocket.demo.agent1.chats"
}

stop() {
  [ -d "$DIR" ] || { echo "not running"; return; }
  for f in "$DIR"/pods/dws-*.pid "$DIR"/*/nats.pid "$DIR"/*/redis.pid; do
    [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 1
  rm -rf "$DIR"; echo "stopped"
}

case "${1:-}" in
  start) start ;;
  pods) pods "${2:-cluster}" ;;
  up) start && pods cluster ;;
  stop) stop ;;
  *) echo "usage: $0 start|pods [cluster|sentinel]|up|stop" >&2; exit 2 ;;
esac
