#!/usr/bin/env bash
# fleet.sh start|stop — a local Redis fleet for people (issue 13), the same
# topologies internal/fleettest starts for tests: a 3-master Redis Cluster
# and a Sentinel setup (1 master, 1 replica, 3 sentinels, quorum 2) on free
# ports, from the installed redis-server / redis-cli. State lives in
# $FLEET_DIR (default /tmp/dws-fleet); the machine's 6379/4222 are never used.
set -euo pipefail
DIR=${FLEET_DIR:-/tmp/dws-fleet}
SERVER=${REDIS_SERVER:-redis-server}
CLI=${REDIS_CLI:-redis-cli}

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
  local join; join() { local IFS=,; echo "$*"; }
  echo "cluster redis.addrs=$(join "${c[@]}")  sentinel redis.addrs=$(join "${s[@]}") redis.master_name=mymaster" | tee "$DIR/addrs"
}

stop() {
  [ -d "$DIR" ] || { echo "not running"; return; }
  for f in "$DIR"/*/redis.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$DIR"; echo "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
