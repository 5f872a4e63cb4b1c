#!/usr/bin/env bash
# Instructions a request: the gateway's CPU work counted by valgrind's callgrind, which counts
# instructions, not time, so the figure is the same run after run whatever else the machine does
# (requests/s on a shared 2-core machine move by 10 % between rounds). See bench/README.md.
#
#   bench/instructions.sh                          # bare-proxy and the gateway of this tree
#   bench/instructions.sh before=/tmp/gw-before after=target/release/gpt-load-gateway
#
# For each target: the mock upstream (natively), the target under callgrind with collection off,
# the benchmark group (100 keys, SQLite, request logging and metrics on, as `make bench`),
# INSTR_WARMUP requests (1,000), then collection on for INSTR_REQUESTS requests (2,000) over 8
# keep-alive connections, 3 s for the request log to be written, and the count. Every thread of
# the process is counted (the log writer's SQLite thread too); the mock upstream and the client
# are not. Prints a table of instructions a request, against bare-proxy (hyper's server and
# pooled client with nothing else, bench/client/src/bin/bare-proxy.rs). INSTR_KEEP=1 keeps the
# callgrind files (read them with callgrind_annotate). Needs valgrind (Debian: valgrind); loopback
# only; stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
CARGO="${CARGO:-cargo}"
log() { printf '[instructions %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"

WARMUP="${INSTR_WARMUP:-1000}"
REQUESTS="${INSTR_REQUESTS:-2000}"
BIN="$CARGO_TARGET_DIR/release"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  log "building release binaries (target dir $CARGO_TARGET_DIR)"
  "$CARGO" build --release -q -p gpt-load-gateway --bin gpt-load-gateway
  targets=("gateway=$BIN/gpt-load-gateway")
fi
"$CARGO" build --release -q -p gpt-load-e2e -p gpt-load-bench --bin mock-upstream --bin bare-proxy

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpt-load-instructions.XXXXXX")"
started=()
cleanup() {
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${INSTR_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Exactly N chat requests (the body of `make bench`) over C keep-alive connections; any answer
# but 200 fails the run.
cat >"$WORK/client.py" <<'PY'
import http.client, json, sys, threading
host, port, path, auth, total, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}, separators=(",", ":"))
failed = []
def run(count):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    for _ in range(count):
        conn.request("POST", path, body, {"Content-Type": "application/json", "Authorization": auth})
        res = conn.getresponse()
        res.read()
        if res.status != 200:
            failed.append(res.status)
threads = [threading.Thread(target=run, args=(total // conns + (i < total % conns),)) for i in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
if failed:
    sys.exit(f"{len(failed)} of {total} requests failed: {sorted(set(failed))}")
PY
send() { python3 "$WORK/client.py" 127.0.0.1 "$1" "$2" "Bearer $3" "$4" 8; }

"$BIN/mock-upstream" --host 127.0.0.1 --port 0 --record-capacity 0 >"$WORK/mock.out" 2>&1 &
started+=($!)
for _ in $(seq 100); do grep -q listening "$WORK/mock.out" 2>/dev/null && break; sleep 0.1; done
MOCK_URL="$(sed -n 's/^mock-upstream listening on //p' "$WORK/mock.out")"
[ -n "$MOCK_URL" ] || die "mock upstream did not start"
UPSTREAM_KEY="sk-bench-upstream-0001"
PROXY_KEY="sk-bench-proxy-key-0123456789"

# callgrind_control finds a process by files named after $HOST, which the gateway's own HOST
# setting also names; both sides are given the same one.
VG_HOST=127.0.0.1

# count <name> <port> <path> <key> <pid> <out>: warm up, count REQUESTS requests, print Ir/request.
count() {
  local name=$1 port=$2 path=$3 key=$4 pid=$5 out=$6 file total
  send "$port" "$path" "$key" "$WARMUP"
  sleep 3
  HOST=$VG_HOST callgrind_control -i on "$pid" >/dev/null 2>&1
  send "$port" "$path" "$key" "$REQUESTS"
  sleep 3
  HOST=$VG_HOST callgrind_control -d "$pid" >/dev/null 2>&1
  HOST=$VG_HOST callgrind_control -i off "$pid" >/dev/null 2>&1
  file="$(ls -t "$out".* | head -1)"
  total="$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')"
  [ -n "$total" ] || die "no count for $name"
  echo $((total / REQUESTS))
}

# start_under_callgrind <out> <command...>: its pid in STARTED_PID.
start_under_callgrind() {
  local out=$1
  shift
  HOST=$VG_HOST valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "$@" &
  STARTED_PID=$!
  started+=("$STARTED_PID")
}

results=()

log "bare-proxy"
start_under_callgrind "$WORK/bare.cg" "$BIN/bare-proxy" --upstream "$MOCK_URL" \
  --authorization "Bearer $UPSTREAM_KEY" >"$WORK/bare.out" 2>"$WORK/bare.err"
for _ in $(seq 300); do grep -q listening "$WORK/bare.out" 2>/dev/null && break; sleep 0.1; done
bare_url="$(sed -n 's/^bare-proxy listening on //p' "$WORK/bare.out")"
[ -n "$bare_url" ] || die "bare-proxy did not start; logs in $WORK"
bare="$(count bare-proxy "${bare_url##*:}" /v1/chat/completions "$PROXY_KEY" "$STARTED_PID" "$WORK/bare.cg")"
kill "$STARTED_PID"
results+=("bare-proxy (hyper alone)|$bare")

for target in "${targets[@]}"; do
  name="${target%%=*}"
  binary="${target#*=}"
  [ -x "$binary" ] || die "$binary is not an executable"
  log "$name ($binary)"
  dir="$WORK/$name"
  mkdir -p "$dir"
  port="$(free_port)"
  auth="bench-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  (
    cd "$dir"
    exec env HOST="$VG_HOST" PORT="$port" AUTH_KEY="$auth" DATA_DIR="$dir" MAX_CONCURRENT_REQUESTS=20000 \
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/gw.cg" "$binary" \
      >"$dir/stdout.log" 2>"$dir/stderr.log"
  ) &
  pid=$!
  started+=("$pid")
  for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
  api() { curl -fsS -X "$1" "http://127.0.0.1:$port$2" -H "Authorization: Bearer $auth" -H 'Content-Type: application/json' -d "$3"; }
  group="$(api POST /api/groups "{\"name\":\"bench\",\"channel_type\":\"openai\",\"test_model\":\"gpt-4o-mini\",
    \"upstreams\":[{\"url\":\"$MOCK_URL\",\"weight\":1}],\"proxy_keys\":\"$PROXY_KEY\",\"config\":{}}")"
  group_id="$(printf '%s' "$group" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["id"])')"
  keys="$(python3 -c 'print("\\n".join(f"sk-bench-upstream-{i:04d}" for i in range(1, 101)))')"
  api POST /api/keys/add-multiple "{\"group_id\":$group_id,\"keys_text\":\"$keys\"}" >/dev/null
  ir="$(count "$name" "$port" /proxy/bench/v1/chat/completions "$PROXY_KEY" "$pid" "$dir/gw.cg")"
  kill "$pid"
  results+=("$name|$ir")
done

printf '\n| target | instructions a request | against bare-proxy |\n|---|---|---|\n'
for row in "${results[@]}"; do
  python3 -c 'import sys; name, ir, bare = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]); print(f"| {name} | {ir:,} | {ir / bare:.2f}x |")' \
    "${row%%|*}" "${row#*|}" "$bare"
done
printf '\n%s requests after %s of warm-up, 8 connections; callgrind counts every thread of the target.\n' "$REQUESTS" "$WARMUP"
