#!/usr/bin/env bash
# moto's server: a local stand-in for S3, DynamoDB, KMS, SQS and EventBridge that speaks
# the real wire protocol, for the AWS adapters' tests.
#
#   infra/moto.sh install         install moto into .cache/moto-venv (idempotent)
#   infra/moto.sh start [PORT]    start a server in the background on 127.0.0.1 (a free
#                                 port if none is given); prints its endpoint URL
#   infra/moto.sh stop            stop the server `start` started
#   infra/moto.sh serve [PORT]    print the endpoint, then run the server in the foreground
#                                 (exec: the caller's process becomes the server, so a
#                                 parent-death signal set by the caller still applies)
# The server is infra/moto_server.py: moto, one request at a time (it says why).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: 5.x honours S3's `If-None-Match: *` on PutObject, which write-once puts rely on.
MOTO_VERSION=5.2.5
VENV=.cache/moto-venv
PIDFILE=.cache/moto.pid
LOGFILE=.cache/moto.log

install() {
  if [ -x "$VENV/bin/python" ] \
      && [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" = "$MOTO_VERSION" ] \
      && "$VENV/bin/python" -c 'import moto.server, flask_cors' 2>/dev/null; then
    return 0
  fi
  mkdir -p .cache
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 ships venv separately.
    if command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
}

free_port() {
  "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_up() {
  local url=$1
  for _ in $(seq 1 200); do
    if "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=1)' "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "moto did not answer at $url within 20 s (see $LOGFILE)" >&2
  return 1
}

case "${1:-}" in
  install)
    install
    ;;
  start)
    install
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "moto is already running (pid $(cat "$PIDFILE")); run '$0 stop' first" >&2
      exit 1
    fi
    port=${2:-$(free_port)}
    nohup "$VENV/bin/python" infra/moto_server.py "$port" >"$LOGFILE" 2>&1 &
    echo $! >"$PIDFILE"
    wait_up "http://127.0.0.1:$port"
    echo "http://127.0.0.1:$port"
    ;;
  stop)
    if [ -f "$PIDFILE" ]; then
      kill "$(cat "$PIDFILE")" 2>/dev/null || true
      rm -f "$PIDFILE"
    fi
    ;;
  serve)
    install
    port=${2:-$(free_port)}
    echo "http://127.0.0.1:$port"
    exec "$VENV/bin/python" infra/moto_server.py "$port"
    ;;
  *)
    echo "usage: $0 install | start [PORT] | stop | serve [PORT]" >&2
    exit 2
    ;;
esac
