#!/usr/bin/env bash
# `make run`: the web console built, then the gateway (which embeds it) on SQLite
# (./data/gpt-load.db, port 3001) in front of the workspace's mock upstream (127.0.0.1:8080), with
# a demo group, so a curl works on a fresh clone.
# Set GPT_LOAD_BOOTSTRAP, DATABASE_DSN, AUTH_KEY… (or a .env file) to run it your way.
set -euo pipefail
cd "$(dirname "$0")/.."

MOCK_PORT="${MOCK_PORT:-8080}"
export PORT="${PORT:-3001}"

# The web console, embedded by the gateway's build: `npm ci` when node_modules is missing or older
# than package-lock.json, then `npm run build`. Without npm the gateway starts without it.
if [ -f web-console/package.json ]; then
  if command -v npm >/dev/null; then
    # npm rewrites node_modules/.package-lock.json on every install: it dates node_modules best.
    installed=web-console/node_modules/.package-lock.json
    [ -e "$installed" ] || installed=web-console/node_modules
    if [ ! -f web-console/package-lock.json ]; then
      (cd web-console && npm install --no-audit --no-fund)
    elif [ ! -e "$installed" ] || [ web-console/package-lock.json -nt "$installed" ]; then
      # npm 11 may refuse a lock file without other platforms' optional packages: install the
      # locked versions without rewriting package-lock.json then.
      (cd web-console && { npm ci --no-audit --no-fund ||
        npm install --no-save --no-audit --no-fund; })
    fi
    (cd web-console && npm run build)
  else
    echo "warning: npm not found: starting without the web console (install Node.js 20.19+ and npm, then run make run again)" >&2
  fi
fi

cargo build -q -p gpt-load-gateway -p gpt-load-e2e --bin gpt-load-gateway --bin mock-upstream
target="${CARGO_TARGET_DIR:-target}/debug"

"$target/mock-upstream" --host 127.0.0.1 --port "$MOCK_PORT" --sse-pace-ms 100 >/dev/null &
mock=$!
trap 'kill "$mock" 2>/dev/null || true' EXIT INT TERM

mkdir -p data
if [ -z "${GPT_LOAD_BOOTSTRAP:-}" ]; then
  export GPT_LOAD_BOOTSTRAP=data/demo-bootstrap.json
  cat > "$GPT_LOAD_BOOTSTRAP" <<JSON
{"groups": [{
  "name": "demo",
  "channel_type": "openai",
  "test_model": "gpt-4o-mini",
  "upstreams": [{"url": "http://127.0.0.1:$MOCK_PORT", "weight": 1}],
  "proxy_keys": "sk-demo-proxy-key",
  "keys": ["sk-demo-upstream-0001", "sk-demo-upstream-0002", "mock-401-demo-upstream-0003"]
}]}
JSON
fi

cat <<MSG

gpt-load-gateway on http://127.0.0.1:$PORT (the web console; SQLite: ./data/gpt-load.db), mock upstream on
127.0.0.1:$MOCK_PORT. The demo group has three upstream keys; the mock always rejects the third (401),
so it is retried on another key and blacklisted after three failures. Try:

  curl http://127.0.0.1:$PORT/proxy/demo/v1/chat/completions \\
    -H 'Authorization: Bearer sk-demo-proxy-key' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'

  curl -N http://127.0.0.1:$PORT/proxy/demo/v1/chat/completions \\
    -H 'Authorization: Bearer sk-demo-proxy-key' \\
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[]}'

  curl http://127.0.0.1:$PORT/health ; curl http://127.0.0.1:$PORT/metrics

MSG

"$target/gpt-load-gateway"
