#!/usr/bin/env bash
# The release build: the web console, then the gateway binary that embeds it. The Dockerfile runs
# this same script (one step per stage), so running it here tests the image's build steps.
#
#   scripts/build-release.sh            both steps
#   scripts/build-release.sh console    cd web-console && npm ci && npm run build
#   scripts/build-release.sh binary     cargo build --release --locked -p gpt-load-gateway
#
# SKIP_CONSOLE_BUILD=1     use web-console/dist as it is (already built, e.g. by an earlier stage)
# GPT_LOAD_CONSOLE_DIST=D  embed the built console in D instead of web-console/dist (read by
#                          gpt-load-gateway/build.rs; implies SKIP_CONSOLE_BUILD=1)
# RELEASE_OUT_DIR=D        also copy the binary to D (the Dockerfile's build cache is not a layer)
set -euo pipefail
cd "$(dirname "$0")/.."

step="${1:-all}"
case "$step" in
  all | console | binary) ;;
  *) echo "usage: $0 [all|console|binary]" >&2; exit 2 ;;
esac

dist="${GPT_LOAD_CONSOLE_DIST:-web-console/dist}"

build_console() {
  if [ "${SKIP_CONSOLE_BUILD:-0}" = 1 ] || [ -n "${GPT_LOAD_CONSOLE_DIST:-}" ]; then
    echo "== web console: using $dist as it is"
    return
  fi
  if [ ! -f web-console/package.json ]; then
    echo "error: web-console/package.json not found" >&2
    exit 1
  fi
  if ! command -v npm >/dev/null; then
    echo "error: npm not found: install Node.js 20.19+ (or build the console elsewhere and set SKIP_CONSOLE_BUILD=1)" >&2
    exit 1
  fi
  echo "== web console: npm ci && npm run build"
  (cd web-console && npm_ci && npm run build)
}

# `npm ci`; when it refuses the lock file (npm 11 rejects lock files that leave out optional
# packages of other platforms, e.g. @rollup/rollup-darwin-*), `npm install --no-save`, which
# installs the locked versions and leaves package-lock.json as it is.
npm_ci() {
  npm ci --no-audit --no-fund && return
  echo "warning: npm ci failed; retrying with npm install --no-save (package-lock.json is not changed)" >&2
  npm install --no-save --no-audit --no-fund
}

build_binary() {
  # A release must carry the console: refuse to build the placeholder-only binary.
  if [ ! -f "$dist/index.html" ]; then
    echo "error: $dist/index.html not found: build the console first (scripts/build-release.sh console)" >&2
    exit 1
  fi
  echo "== gateway: cargo build --release --locked"
  cargo build --release --locked -p gpt-load-gateway --bin gpt-load-gateway
  target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  binary="$target_dir/release/gpt-load-gateway"
  if [ -n "${RELEASE_OUT_DIR:-}" ]; then
    mkdir -p "$RELEASE_OUT_DIR"
    cp "$binary" "$RELEASE_OUT_DIR/gpt-load-gateway"
    binary="$RELEASE_OUT_DIR/gpt-load-gateway"
  fi
  echo "== built $binary ($(du -h "$binary" | cut -f1)): $("$binary" --version)"
}

case "$step" in
  console) build_console ;;
  binary) build_binary ;;
  all) build_console && build_binary ;;
esac
