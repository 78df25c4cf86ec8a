#!/usr/bin/env bash
# Makes sure the services the integration tests use answer: Redis on
# 127.0.0.1:6379 and NATS with JetStream on 127.0.0.1:4222. Starts them when
# they are installed but down; installs redis-server with apt-get when it may;
# otherwise stops at once with one line saying what to install.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_up() {
  for _ in $(seq 1 50); do up "$1" && return 0; sleep 0.1; done
  return 1
}

# need CMD PKG WHY: installs Debian package PKG with apt-get when CMD is
# missing and this may (root with apt-get), else stops with one line.
need() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "services: installing $2 ($3)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2") >/dev/null
  else
    echo "services: $1 is not installed: install it (Debian: apt-get install $2)" >&2
    exit 1
  fi
}

# The fault tests start and kill redis-server processes of their own, so the
# binary is needed even when a Redis is already listening.
need redis-server redis-server "the fault tests start their own"
# The reference browser client's unit tests (cmd/dws/app/static) run on
# node's built-in test runner.
need node nodejs "the browser client's unit tests"
# The reference client's end-to-end check (scripts/browser-resume-check.sh)
# drives headless Chromium.
need chromium chromium "the browser check of make test"
if ! up 6379; then
  echo "services: starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_up 6379 || { echo "services: redis-server did not come up on 127.0.0.1:6379" >&2; exit 1; }
fi

if ! up 4222; then
  if command -v nats-server >/dev/null; then
    echo "services: starting nats-server -js on 127.0.0.1:4222"
    dir=$(mktemp -d)
    nohup nats-server -a 127.0.0.1 -p 4222 -js -sd "$dir" >/dev/null 2>&1 &
    wait_up 4222 || { echo "services: nats-server did not come up on 127.0.0.1:4222" >&2; exit 1; }
  else
    # The tests start embedded nats-servers of their own; the shared one is
    # only a convenience.
    echo "services: no NATS on 127.0.0.1:4222 (tests use embedded servers)"
  fi
fi
echo "services: redis ok, nats ok"
