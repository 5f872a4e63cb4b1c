#!/usr/bin/env bash
# Starts the mock upstream and the hyper_server example on loopback, prints how to call them,
# and stops both on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

MOCK_PORT="${MOCK_PORT:-8080}"
PORT="${PORT:-3001}"

cargo build -q -p gpt-load-e2e --bin mock-upstream -p examples --bin hyper_server
target="${CARGO_TARGET_DIR:-target}/debug"

"$target/mock-upstream" --host 127.0.0.1 --port "$MOCK_PORT" --sse-pace-ms 200 &
mock=$!
trap 'kill "$mock" 2>/dev/null || true' EXIT INT TERM

cat <<MSG

The gateway server is not part of this release; this runs the library's hyper_server example
in front of the mock upstream, with upstream keys "sk-demo-upstream-0001" and
"mock-500-demo-upstream-0002". The mock always answers 500 for the second one, so a request
that draws it is retried on the first until the failing key is blacklisted (see the log).

  curl http://127.0.0.1:$PORT/proxy/demo/v1/chat/completions \\
    -H 'Authorization: Bearer sk-proxy-demo' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'

  curl -N http://127.0.0.1:$PORT/proxy/demo/v1/chat/completions \\
    -H 'Authorization: Bearer sk-proxy-demo' \\
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[]}'

MSG

LISTEN="127.0.0.1:$PORT" UPSTREAM_URL="http://127.0.0.1:$MOCK_PORT" \
  UPSTREAM_KEYS="sk-demo-upstream-0001,mock-500-demo-upstream-0002" RUST_LOG="${RUST_LOG:-info}" \
  "$target/hyper_server"
