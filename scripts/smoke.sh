#!/usr/bin/env bash
# The built binaries end to end, as a user runs them: the mock upstream and the gateway on
# SQLite in a temporary directory, then scripts/admin-smoke.sh against them. Part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p gpt-load-gateway -p gpt-load-e2e --bin gpt-load-gateway --bin mock-upstream
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug"
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
mock_port=$(free_port)
port=$(free_port)

"$target/mock-upstream" --host 127.0.0.1 --port "$mock_port" >"$work/mock.log" 2>&1 &
mock=$!
# `exec`, so that `$!` is the gateway itself and the cleanup stops it, not only a subshell.
(cd "$work" && HOST=127.0.0.1 PORT="$port" AUTH_KEY=sk-smoke-admin-key-0123456789XYZ exec "$target/gpt-load-gateway" >"$work/gateway.log" 2>&1) &
gateway=$!
cleanup() {
  kill "$gateway" "$mock" 2>/dev/null || true
  wait "$gateway" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break
  sleep 0.1
done
BASE="http://127.0.0.1:$port" UPSTREAM="http://127.0.0.1:$mock_port" AUTH_KEY=sk-smoke-admin-key-0123456789XYZ \
  scripts/admin-smoke.sh || { echo "--- gateway log"; tail -50 "$work/gateway.log"; exit 1; }
