#!/usr/bin/env bash
# The web console's tests: its unit and component tests (vitest), then the browser end-to-end
# tests (web-console/e2e: Debian's chromium driven by playwright-core against the real gateway
# binary with the console embedded, in front of the mock upstream). Part of `make test`.
#
# Builds what it needs, in this order: `npm ci` when web-console/node_modules is missing or older
# than package-lock.json, `npm run build` (type check, then web-console/dist), then the debug
# gateway and mock upstream (after the console, so the gateway embeds it).
#
# Needs node >= 20.19 with npm and chromium (/usr/bin/chromium, or CHROMIUM_PATH). Without them
# it prints a SKIP line and succeeds, except under CI=true, where it fails.
# Screenshots of every page: web-console/e2e/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "console-e2e: $1" >&2
    exit 1
  fi
  echo "SKIP console-e2e: $1"
  exit 0
}

command -v node >/dev/null && command -v npm >/dev/null || skip "node and npm are not installed"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' ||
  skip "node $(node --version) is older than 20.19"
chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
[ -x "$chromium" ] || skip "no chromium at $chromium (apt-get install -y chromium, or set CHROMIUM_PATH)"

# npm writes node_modules/.package-lock.json on every install: older than package-lock.json (or
# missing) means node_modules is stale.
installed=web-console/node_modules/.package-lock.json
if [ ! -f "$installed" ] || [ web-console/package-lock.json -nt "$installed" ] ||
  [ ! -f web-console/node_modules/playwright-core/package.json ]; then
  (cd web-console && npm ci --no-audit --no-fund)
fi

(cd web-console && npm run build)
cargo build -q -p gpt-load-gateway -p gpt-load-e2e --bin gpt-load-gateway --bin mock-upstream
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug"

(cd web-console && npm test)
(cd web-console && GATEWAY_BIN="$target/gpt-load-gateway" MOCK_BIN="$target/mock-upstream" CHROMIUM_PATH="$chromium" npm run e2e)
