#!/usr/bin/env bash
# `make bench`: the gateway against nginx and direct, on loopback. See bench/README.md.
#
# Builds the release binaries, installs nginx, wrk and oha when missing, starts the mock
# upstream, an nginx reverse proxy and the gateway on 127.0.0.1, runs bench/measure.py (which
# prints the table and writes bench/results/), and stops everything it started.
#
#   make bench                 # full run (3 rounds), about 10 minutes after the build
#   BENCH_QUICK=1 make bench   # smoke run: 1 round, short durations, 1,000 streams
#
# The two-node row: two gateway nodes in cluster mode (PostgreSQL from BENCH_PG_URL, their own
# redis-server) behind an nginx round robin; BENCH_CLUSTER=0 leaves it out. The hyper-alone
# row: a proxy of the gateway's HTTP crates with nothing else (bare-proxy); BENCH_HYPER=0 leaves it out.
# Other knobs: BENCH_ROUNDS, BENCH_STREAMS (stream target, default 10000), BENCH_STREAM_FRAMES,
# BENCH_STREAM_PACE_MS, BENCH_PIN=0 (no taskset), BENCH_KEEP=1 (keep the temporary directory with
# every log), BENCH_GROUP_CONFIG (the benchmark group's settings, a JSON object, e.g. key limits
# high enough never to refuse: what counting costs), BENCH_PROFILE=1 (instead of measuring: perf profile of the gateway under wrk c=32, and its flame graph).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CARGO="${CARGO:-cargo}"

# shellcheck source=bench/lib.sh
. bench/lib.sh
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- 1. release binaries -------------------------------------------------------------------
log "building release binaries (target dir $CARGO_TARGET_DIR)"
"$CARGO" build --release -q -p gpt-load-gateway -p gpt-load-e2e -p gpt-load-bench \
  --bin gpt-load-gateway --bin mock-upstream --bin bench-client --bin bare-proxy
BIN="$CARGO_TARGET_DIR/release"

# --- 2. tools ------------------------------------------------------------------------------
find_nginx() { command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
missing=()
[ -n "$(find_nginx)" ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} with apt-get"
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX="$(find_nginx)"
[ -n "$NGINX" ] || die "nginx not found after installation"
WRK="$(command -v wrk)"
TOOLS="$CARGO_TARGET_DIR/bench-tools"
OHA="$TOOLS/bin/oha"
if [ ! -x "$OHA" ]; then
  log "installing oha into $TOOLS (cargo install, a few minutes once)"
  "$CARGO" install oha --locked --root "$TOOLS" -q
fi
if [ "${BENCH_PROFILE:-0}" = 1 ] && [ ! -x "$TOOLS/bin/inferno-flamegraph" ]; then
  log "installing inferno (flame graphs) into $TOOLS (cargo install, a few minutes once)"
  "$CARGO" install inferno --locked --root "$TOOLS" -q
fi

# --- 3. processes on 127.0.0.1 --------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpt-load-bench.XXXXXX")"
started=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_processes "${started[@]}"
  if [ -n "${BENCH_DB:-}" ]; then
    psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $BENCH_DB" >/dev/null 2>&1 || log "could not drop the database $BENCH_DB"
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
    log "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Streams need two descriptors each in a proxy: raise the soft limit to the hard one.
hard="$(ulimit -Hn)"
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard"

# Pinning: proxies (nginx, gateway) on one CPU, load generators and the mock on another.
pin_cpus "${BENCH_PIN:-1}" "nginx and the gateway"
if [ "$PROXY_CPUS" = 1 ]; then NGINX_WORKERS=1; else NGINX_WORKERS=auto; fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_http() { # wait_http <url> <what> <pid>
  for _ in $(seq 200); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || die "$2 exited; logs in $WORK"
    sleep 0.1
  done
  die "$2 did not answer on $1"
}

# Mock upstream: no request recording (it would cost memory and time), default pace; each
# benchmark request sets x-mock-frames / x-mock-pace-ms itself.
"${ON_LOAD[@]}" "$BIN/mock-upstream" --host 127.0.0.1 --port 0 --record-capacity 0 >"$WORK/mock.out" 2>"$WORK/mock.err" &
MOCK_PID=$!
started+=("$MOCK_PID")
for _ in $(seq 100); do grep -q listening "$WORK/mock.out" 2>/dev/null && break; sleep 0.1; done
MOCK_URL="$(sed -n 's/^mock-upstream listening on //p' "$WORK/mock.out")"
[ -n "$MOCK_URL" ] || die "mock upstream did not start; logs in $WORK"
log "mock upstream on $MOCK_URL (pid $MOCK_PID)"

UPSTREAM_KEY="sk-bench-upstream-0001"
PROXY_KEY="sk-bench-proxy-key-0123456789"
GROUP="bench"

# start_nginx <dir> <port> <extra directive> <upstream URL>...: nginx as a plain reverse proxy
# to the upstreams (round robin over a keep-alive pool of 64), no buffering either way, no access
# log, in the foreground with every file in <dir>, where the proxies run; its pid in STARTED_PID.
start_nginx() {
  local dir="$1" port="$2" extra="$3" servers="" address
  shift 3
  for address in "$@"; do servers+="    server ${address#http://};"$'\n'; done
  mkdir -p "$dir/logs" "$dir/tmp"
  cat >"$dir/nginx.conf" <<NGINX
user $(id -un) $(id -gn);
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile $hard;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections $((hard + 4096)); }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  upstream backends {
${servers}    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      $extra
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
NGINX
  "${ON_PROXY[@]}" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" >"$dir/logs/stdout" 2>&1 &
  STARTED_PID=$!
  started+=("$STARTED_PID")
}

# nginx in front of the mock, the baseline: it injects one upstream key.
NGINX_PORT="$(free_port)"
start_nginx "$WORK/nginx" "$NGINX_PORT" "proxy_set_header Authorization \"Bearer $UPSTREAM_KEY\";" "$MOCK_URL"
NGINX_PID=$STARTED_PID
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
wait_http "$NGINX_URL/v1/models" nginx "$NGINX_PID"
log "nginx $("$NGINX" -v 2>&1 | sed 's/.*version: //') on $NGINX_URL (master pid $NGINX_PID, workers: $NGINX_WORKERS)"

# The HTTP stack alone: a proxy of hyper's server and pooled client with nothing else
# (bench/client/src/bin/bare-proxy.rs), where the gateway runs: what the gateway's own work costs
# beyond the crates it is built on. BENCH_HYPER=0 leaves it out.
HYPER_URL=""
if [ "${BENCH_HYPER:-1}" != 0 ]; then
  "${ON_PROXY[@]}" "$BIN/bare-proxy" --upstream "$MOCK_URL" --authorization "Bearer $UPSTREAM_KEY" \
    >"$WORK/bare-proxy.out" 2>"$WORK/bare-proxy.err" &
  HYPER_PID=$!
  started+=("$HYPER_PID")
  for _ in $(seq 100); do grep -q listening "$WORK/bare-proxy.out" 2>/dev/null && break; sleep 0.1; done
  HYPER_URL="$(sed -n 's/^bare-proxy listening on //p' "$WORK/bare-proxy.out")"
  [ -n "$HYPER_URL" ] || die "bare-proxy did not start; logs in $WORK"
  log "hyper alone on $HYPER_URL (pid $HYPER_PID)"
fi

# Gateway: SQLite in a temporary DATA_DIR, started from that directory so no .env is read.
# Request logging and metrics stay at their defaults (on). MAX_CONCURRENT_REQUESTS is raised
# above the stream count, or the concurrency limit would shed the stream test with 429s.
GW_PORT="$(free_port)"
GW_DIR="$WORK/gateway"
mkdir -p "$GW_DIR"
AUTH_KEY="bench-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
GW_URL="http://127.0.0.1:$GW_PORT"
(
  cd "$GW_DIR"
  exec env HOST=127.0.0.1 PORT="$GW_PORT" AUTH_KEY="$AUTH_KEY" DATA_DIR="$GW_DIR" \
    MAX_CONCURRENT_REQUESTS=20000 "${ON_PROXY[@]}" "$BIN/gpt-load-gateway" >"$GW_DIR/stdout.log" 2>"$GW_DIR/stderr.log"
) &
GW_PID=$!
started+=("$GW_PID")
wait_http "$GW_URL/health" gateway "$GW_PID"
log "gateway on $GW_URL (pid $GW_PID)"

api_on() { # api_on <url> <method> <path> [json]
  curl -fsS -X "$2" "$1$3" -H "Authorization: Bearer $AUTH_KEY" -H 'Content-Type: application/json' ${4:+-d "$4"}
}
create_group() { # create_group <url>: the benchmark group with 100 upstream keys
  local out group_id keys
  out="$(api_on "$1" POST /api/groups "{\"name\":\"$GROUP\",\"channel_type\":\"openai\",\"test_model\":\"gpt-4o-mini\",
    \"upstreams\":[{\"url\":\"$MOCK_URL\",\"weight\":1}],\"proxy_keys\":\"$PROXY_KEY\",
    \"config\":${BENCH_GROUP_CONFIG:-{\}}}")"
  group_id="$(printf '%s' "$out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["id"])')"
  keys="$(python3 -c 'print("\\n".join(f"sk-bench-upstream-{i:04d}" for i in range(1, 101)))')"
  out="$(api_on "$1" POST /api/keys/add-multiple "{\"group_id\":$group_id,\"keys_text\":\"$keys\"}")"
  [[ "$out" == *'"added_count":100'* ]] || die "adding 100 keys failed: $out"
  log "group $GROUP (id $group_id) with 100 keys on $1"
}
create_group "$GW_URL"

# Two nodes: the same gateway in cluster mode, on a PostgreSQL database of this run and a
# redis-server of its own, behind a second nginx that balances them round robin. The nodes and
# that nginx run where the gateway runs; PostgreSQL is the machine's service, unpinned.
CLUSTER_URL=""
if [ "${BENCH_CLUSTER:-1}" != 0 ]; then
  PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
  REDIS_SERVER="${BENCH_REDIS_SERVER:-/usr/bin/redis-server}"
  command -v psql >/dev/null || die "psql not found (Debian package postgresql-client); BENCH_CLUSTER=0 leaves the two-node row out"
  [ -x "$REDIS_SERVER" ] || die "no redis-server at $REDIS_SERVER; BENCH_CLUSTER=0 leaves the two-node row out"
  BENCH_DB="gptload_bench_$$"
  psql "$PG_URL" -qc "CREATE DATABASE $BENCH_DB" >/dev/null || die "cannot create a database on $PG_URL"
  REDIS_PORT="$(free_port)"
  "${ON_PROXY[@]}" "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  started+=("$!")
  NODE_URLS=()
  for node in a b; do
    port="$(free_port)"
    dir="$WORK/node-$node"
    mkdir -p "$dir"
    (
      cd "$dir"
      exec env HOST=127.0.0.1 PORT="$port" AUTH_KEY="$AUTH_KEY" DATA_DIR="$dir" \
        DATABASE_DSN="${PG_URL%/*}/$BENCH_DB" REDIS_DSN="redis://127.0.0.1:$REDIS_PORT" \
        CLUSTER_NODE_ID="bench-$node" MAX_CONCURRENT_REQUESTS=20000 \
        "${ON_PROXY[@]}" "$BIN/gpt-load-gateway" >"$dir/stdout.log" 2>"$dir/stderr.log"
    ) &
    pid=$!
    started+=("$pid")
    wait_http "http://127.0.0.1:$port/health" "node $node" "$pid"
    NODE_URLS+=("http://127.0.0.1:$port")
    [ "$node" = a ] && CLUSTER_PIDS="$pid" || CLUSTER_PIDS="$CLUSTER_PIDS,$pid"
  done
  create_group "${NODE_URLS[0]}"
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "${NODE_URLS[1]}/proxy/$GROUP/v1/chat/completions" -H "Authorization: Bearer $PROXY_KEY" \
      -H 'Content-Type: application/json' -d '{"model":"gpt-4o-mini","messages":[]}' 2>/dev/null && break
    sleep 0.1
  done
  LB_PORT="$(free_port)"
  start_nginx "$WORK/nginx-lb" "$LB_PORT" "" "${NODE_URLS[@]}"
  lb_pid=$STARTED_PID
  CLUSTER_URL="http://127.0.0.1:$LB_PORT"
  wait_http "$CLUSTER_URL/health" "nginx in front of the nodes" "$lb_pid"
  log "two nodes ${NODE_URLS[*]} on PostgreSQL ($BENCH_DB) and redis-server :$REDIS_PORT, behind nginx on $CLUSTER_URL"
fi

if [ "${BENCH_PROFILE:-0}" = 1 ]; then
  # Profile the gateway with perf while wrk drives it at c=32; prints the hottest symbols.
  command -v perf >/dev/null || die "perf not found (Debian package linux-perf)"
  set +o pipefail # head closes the pipes early
  lua="$WORK/profile.lua"
  printf '%s\n' 'wrk.method = "POST"' \
    'wrk.body = [[{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark."}]}]]' \
    'wrk.headers["Content-Type"] = "application/json"' "wrk.headers[\"Authorization\"] = \"Bearer $PROXY_KEY\"" >"$lua"
  url="$GW_URL/proxy/$GROUP/v1/chat/completions"
  "${ON_LOAD[@]}" "$WRK" -t1 -c32 -d3s -s "$lua" "$url" >/dev/null
  "${ON_LOAD[@]}" "$WRK" -t1 -c32 -d14s -s "$lua" "$url" >"$WORK/profile-wrk.txt" &
  wrk_pid=$!
  started+=("$wrk_pid")
  sleep 2
  perf record -F 499 --call-graph dwarf,16384 -o "$WORK/perf.data" -p "$GW_PID" -- sleep 10 2>"$WORK/perf-record.log" >/dev/null
  wait "$wrk_pid" || true
  grep -E 'Requests/sec' "$WORK/profile-wrk.txt" >&2 || true
  echo "## self time (top 30)"
  perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep '%' | sed 's/ *$//' | head -30
  echo "## inclusive time (self + callees) of gateway, library, diesel, hyper and tokio frames (top 40)"
  perf report -i "$WORK/perf.data" --children --sort symbol --stdio -g none 2>/dev/null | grep '%' |
    grep -E 'gpt_load|diesel|sqlite3_step|blocking::pool|hyper::proto|metrics' | sed 's/ *$//' | head -40
  # The flame graph of the same recording, named by date and commit like the results tables.
  flame="bench/results/$(date -u +%Y-%m-%d)-$(git rev-parse --short=12 HEAD)-flame.svg"
  # --no-inline: resolving inlined frames runs addr2line for every address, for many minutes.
  perf script --no-inline -i "$WORK/perf.data" 2>/dev/null | "$TOOLS/bin/inferno-collapse-perf" |
    "$TOOLS/bin/inferno-flamegraph" --title "gpt-load-gateway, wrk c=32, $(git rev-parse --short=12 HEAD)" >"$flame"
  echo "## flame graph: $flame"
  exit 0
fi

export BENCH_MOCK_URL="$MOCK_URL" BENCH_NGINX_URL="$NGINX_URL" BENCH_GATEWAY_URL="$GW_URL" \
  BENCH_MOCK_PID="$MOCK_PID" BENCH_NGINX_PID="$NGINX_PID" BENCH_GATEWAY_PID="$GW_PID" \
  BENCH_GROUP="$GROUP" BENCH_PROXY_KEY="$PROXY_KEY" BENCH_UPSTREAM_KEY="$UPSTREAM_KEY" \
  BENCH_OHA="$OHA" BENCH_WRK="$WRK" BENCH_NGINX_BIN="$NGINX" BENCH_CLIENT="$BIN/bench-client" \
  BENCH_PINNING="$PINNING" BENCH_WORK="$WORK" BENCH_NGINX_WORKERS="$NGINX_WORKERS" \
  BENCH_CLUSTER_URL="$CLUSTER_URL" BENCH_CLUSTER_PIDS="${CLUSTER_PIDS:-}" \
  BENCH_HYPER_URL="$HYPER_URL" BENCH_HYPER_PID="${HYPER_PID:-}" \
  BENCH_GROUP_CONFIG="${BENCH_GROUP_CONFIG:-}"
"${ON_LOAD[@]}" python3 bench/measure.py
