#!/usr/bin/env bash
# The deployment of the README's "Deploying" section, on this machine:
# PostgreSQL (a fresh database), `parcours web` and two `parcours worker` processes, nginx in
# front (deploy/nginx.conf as it is). Ports: nginx 127.0.0.1:18080, the web server 18081.
#
#   deploy/example.sh          start (stops a previous run first), wait until healthy
#   deploy/example.sh stop     SIGTERM to each process, wait for each to exit
#
# Variables: PARCOURS_EXAMPLE_DIR (run folder: logs, pids, settings; default
# /tmp/parcours-example), PARCOURS_EXAMPLE_PG (server URL, default postgresql://postgres@127.0.0.1:5432).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
RUN="${PARCOURS_EXAMPLE_DIR:-/tmp/parcours-example}"
PG="${PARCOURS_EXAMPLE_PG:-postgresql://postgres@127.0.0.1:5432}"
DB=parcours_example
PUBLIC=http://127.0.0.1:18080
if [ -x "$ROOT/.venv/bin/parcours" ]; then PARCOURS="$ROOT/.venv/bin/parcours"; else PARCOURS=parcours; fi

say() { printf '%s\n' "$*"; }

find_nginx() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

install_nginx() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "nginx is missing: sudo apt-get install nginx" >&2
    exit 1
  fi
  say "installing nginx (Debian package)"
  # The package would start the system's nginx on port 80: keep services down while it installs.
  local guard=/usr/sbin/policy-rc.d made=""
  if [ ! -e "$guard" ]; then printf '#!/bin/sh\nexit 101\n' >"$guard" && chmod +x "$guard" && made=1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  if [ -n "$made" ]; then rm -f "$guard"; fi
}

stop_pid() { # name: SIGTERM, then wait (the worker writes its batch, the server its requests)
  local file="$RUN/$1.pid" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then say "$1 did not stop within 60 s; killing it"; kill -KILL "$pid"; fi
    say "$1 stopped"
  fi
  rm -f "$file"
}

stop() {
  if [ -f "$RUN/nginx/nginx.pid" ]; then
    "$(find_nginx)" -p "$RUN/nginx" -c "$RUN/nginx/main.conf" -e "$RUN/nginx/error.log" -s quit || true
    for _ in $(seq 100); do [ -f "$RUN/nginx/nginx.pid" ] || break; sleep 0.1; done
    say "nginx stopped"
  fi
  stop_pid web
  stop_pid worker-1
  stop_pid worker-2
}

start() {
  [ -d "$RUN" ] && stop
  local nginx
  nginx="$(find_nginx)"
  if [ -z "$nginx" ]; then install_nginx; nginx="$(find_nginx)"; fi
  say "nginx: $("$nginx" -v 2>&1)"

  # A fresh database on the PostgreSQL server.
  dropdb --if-exists --force --maintenance-db="$PG/postgres" "$DB"
  createdb --maintenance-db="$PG/postgres" "$DB"
  say "database $DB created on ${PG#*@}"

  mkdir -p "$RUN/nginx"
  rm -rf "$RUN/metrics" && mkdir -p "$RUN/metrics"  # the counters of every process, for /metrics
  local key
  key="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
  umask 077
  cat >"$RUN/env" <<ENV
PARCOURS_DATABASE_URL=$PG/$DB
PARCOURS_DATA_DIR=$RUN/data
PARCOURS_SCENARIOS_DIR=$HERE/scenarios
PARCOURS_HOST=127.0.0.1
PARCOURS_PORT=18081
PARCOURS_PUBLIC_URL=$PUBLIC
PARCOURS_PROXY_HOPS=1
PARCOURS_WEB_WORKERS=2
PARCOURS_WEB_THREADS=8
PARCOURS_API_KEY=$key
PROMETHEUS_MULTIPROC_DIR=$RUN/metrics
ENV
  umask 022
  set -a; . "$RUN/env"; set +a

  "$PARCOURS" db upgrade
  "$PARCOURS" publish
  nohup "$PARCOURS" web >"$RUN/web.log" 2>&1 &
  echo $! >"$RUN/web.pid"
  for n in 1 2; do
    nohup "$PARCOURS" worker >"$RUN/worker-$n.log" 2>&1 &
    echo $! >"$RUN/worker-$n.pid"
  done
  say "parcours web (pid $(cat "$RUN/web.pid")), workers (pids $(cat "$RUN/worker-1.pid") $(cat "$RUN/worker-2.pid"))"

  cat >"$RUN/nginx/main.conf" <<CONF
worker_processes 1;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log warn;
events { worker_connections 256; }
http {
    access_log $RUN/nginx/access.log;
    client_body_temp_path $RUN/nginx/body;
    proxy_temp_path $RUN/nginx/proxy;
    fastcgi_temp_path $RUN/nginx/fastcgi;
    uwsgi_temp_path $RUN/nginx/uwsgi;
    scgi_temp_path $RUN/nginx/scgi;
    include $HERE/nginx.conf;
}
CONF
  "$nginx" -p "$RUN/nginx" -c "$RUN/nginx/main.conf" -e "$RUN/nginx/error.log"
  say "nginx on $PUBLIC (deploy/nginx.conf)"

  for _ in $(seq 600); do
    if health="$(curl -fsS "$PUBLIC/api/health" 2>/dev/null)"; then
      say "healthy through nginx: $health"
      say "API key: $key   settings: $RUN/env   logs: $RUN/*.log   stop: deploy/example.sh stop"
      return 0
    fi
    sleep 0.1
  done
  say "no answer on $PUBLIC/api/health within 60 s; see $RUN/web.log" >&2
  exit 1
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) say "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
