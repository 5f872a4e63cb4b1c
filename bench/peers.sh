#!/usr/bin/env bash
# Peer gateways through the mock upstream of `make bench`: LiteLLM's proxy and Portkey's OSS
# gateway, next to direct, on loopback. Not part of `make bench` or CI. See bench/README.md.
#
# Installs LiteLLM (PyPI, in a venv) and Portkey (npm) once into a cache folder, starts the mock
# upstream and both peers on 127.0.0.1, measures direct and each peer with oha, wrk and
# bench-client, writes bench/results/<date>-peers.md (<date>-peers-quick.md for a smoke run) and
# stops everything it started.
#
#   bench/peers.sh                  # 10 s per load figure; about three minutes once installed
#   PEERS_QUICK=1 bench/peers.sh    # smoke run: 2 s per load figure, 50 SSE requests
#
# Knobs: PEERS_DURATION (seconds per latency and requests/s figure), PEERS_LITELLM_VERSION,
# PEERS_PORTKEY_VERSION, PEERS_LITELLM_WORKERS (default: the number of CPUs the peers get),
# PEERS_PIN=0 (no taskset), PEERS_KEEP=1 (keep the temporary directory with every log),
# PEERS_INSTALL_ONLY=1 (install the peers and stop), BENCH_PEERS_CACHE, CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib.sh
. bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gpt-load-rs/bench}"
CARGO="${CARGO:-cargo}"
CACHE="${BENCH_PEERS_CACHE:-$HOME/.cache/gpt-load-rs/peers}"
# From 1.108.8 on, litellm[proxy] pins companion packages (litellm-enterprise,
# litellm-proxy-extras, later litellm-proxy) at releases the package index did not serve when
# this was written; 1.108.7 is the newest that installed.
LITELLM_VERSION="${PEERS_LITELLM_VERSION:-1.108.7}"
PORTKEY_VERSION="${PEERS_PORTKEY_VERSION:-1.15.2}"
QUICK="${PEERS_QUICK:-0}"
case "$QUICK" in "" | 0) default_duration=10 ;; *) default_duration=2 ;; esac
DURATION="${PEERS_DURATION:-$default_duration}"

log() { printf '[peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Every peer talks to 127.0.0.1 only; an HTTP proxy from the environment must not catch it.
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

apt_install() {
  log "installing $* with apt-get"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. the peers, installed once --------------------------------------------------------------
missing=()
command -v npm >/dev/null || missing+=(nodejs npm)
command -v wrk >/dev/null || missing+=(wrk)
[ "${#missing[@]}" = 0 ] || apt_install "${missing[@]}"
mkdir -p "$CACHE"

# A marker file is written after a complete install, so an interrupted one is redone from scratch.
LITELLM_DIR="$CACHE/litellm-$LITELLM_VERSION"
if [ ! -e "$LITELLM_DIR/.installed" ] || ! "$LITELLM_DIR/bin/python" -c '' 2>/dev/null; then
  log "installing litellm[proxy]==$LITELLM_VERSION into $LITELLM_DIR (pip, a minute or two once)"
  rm -rf "$LITELLM_DIR"
  if ! python3 -m venv "$LITELLM_DIR" 2>/dev/null; then
    rm -rf "$LITELLM_DIR"
    apt_install python3-venv
    python3 -m venv "$LITELLM_DIR"
  fi
  "$LITELLM_DIR/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
  touch "$LITELLM_DIR/.installed"
fi

PORTKEY_DIR="$CACHE/portkey-$PORTKEY_VERSION"
PORTKEY_JS="$PORTKEY_DIR/node_modules/@portkey-ai/gateway/build/start-server.js"
if [ ! -e "$PORTKEY_DIR/.installed" ]; then
  log "installing @portkey-ai/gateway@$PORTKEY_VERSION into $PORTKEY_DIR (npm, seconds once)"
  rm -rf "$PORTKEY_DIR"
  mkdir -p "$PORTKEY_DIR"
  # --ignore-scripts: the package's postinstall runs patch-package on patches it does not ship.
  npm install --prefix "$PORTKEY_DIR" --no-audit --no-fund --omit=dev --ignore-scripts --loglevel=error \
    "@portkey-ai/gateway@$PORTKEY_VERSION" >/dev/null
  [ -f "$PORTKEY_JS" ] || die "no $PORTKEY_JS after npm install"
  touch "$PORTKEY_DIR/.installed"
fi
if [ "${PEERS_INSTALL_ONLY:-0}" = 1 ]; then
  log "installed: LiteLLM in $LITELLM_DIR, Portkey in $PORTKEY_DIR"
  exit 0
fi

# --- 2. the bench binaries and load generators ------------------------------------------------
BIN="$CARGO_TARGET_DIR/release"
if [ ! -x "$BIN/mock-upstream" ] || [ ! -x "$BIN/bench-client" ]; then
  log "building mock-upstream and bench-client (target dir $CARGO_TARGET_DIR)"
  "$CARGO" build --release -q -p gpt-load-e2e -p gpt-load-bench --bin mock-upstream --bin bench-client
fi
TOOLS="$CARGO_TARGET_DIR/bench-tools"
OHA="$TOOLS/bin/oha"
if [ ! -x "$OHA" ]; then
  log "installing oha into $TOOLS (cargo install, a few minutes once)"
  "$CARGO" install oha --locked --root "$TOOLS" -q
fi
WRK="$(command -v wrk)"

# --- 3. processes on 127.0.0.1 ------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpt-load-peers.XXXXXX")"
# Each process is started as the leader of a process group of its own (setsid), so that stopping
# the group also stops whatever it forked (uvicorn workers, the load generators of measure.py).
started_groups=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_processes "${started_groups[@]/#/-}"
  if [ "${PEERS_KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
    log "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Pinning as in bench/run.sh: the peers on the last CPU, the mock upstream and every load
# generator on the first.
pin_cpus "${PEERS_PIN:-1}" "LiteLLM and Portkey"
LITELLM_WORKERS="${PEERS_LITELLM_WORKERS:-$PROXY_CPUS}"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start <name> <dir> <command...>: runs the command in a session of its own, from <dir> with its
# output in <dir>/stdout.log and stderr.log (or where the script's goes, when <dir> is "-"); its
# pid, which is also its process group id, in STARTED_PID.
start() {
  local name="$1" dir="$2" pgid=""
  shift 2
  if [ "$dir" = - ]; then
    (exec setsid "$@") &
  else
    mkdir -p "$dir"
    (cd "$dir" && exec setsid "$@" >"$dir/stdout.log" 2>"$dir/stderr.log") &
  fi
  STARTED_PID=$!
  started_groups+=("$STARTED_PID")
  # setsid forks (and the pid above would not lead the group) only when called by a group
  # leader, which a background job of a script is not; check rather than assume.
  for _ in $(seq 50); do
    pgid="$(ps -o pgid= -p "$STARTED_PID" | tr -d ' ')" || die "$name exited at once"
    [ "$pgid" = "$STARTED_PID" ] && return 0
    sleep 0.1
  done
  die "$name is not the leader of its process group"
}

# wait_http <url> <pid> <seconds>: 0 once the url answers 2xx, 1 if the process exits or time is up.
wait_http() {
  local deadline=$((SECONDS + $3))
  while [ "$SECONDS" -lt "$deadline" ]; do
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# The listening sockets of a port must be on loopback only.
check_loopback() { # check_loopback <name> <port>
  command -v ss >/dev/null || return 0
  local addresses
  addresses="$(ss -Hltn "sport = :$2" | awk '{print $4}' | sort -u | tr '\n' ' ')"
  [ -n "$addresses" ] || die "$1: nothing listens on port $2"
  for address in $addresses; do
    case "$address" in
      127.0.0.1:* | "[::1]:"*) ;;
      *) die "$1 listens on $address, not on loopback only" ;;
    esac
  done
}

# The mock streams 2 text frames 10 ms apart by default, the shape measure.py asks for with
# x-mock-frames / x-mock-pace-ms: the peers do not forward those headers upstream.
start mock "$WORK/mock" "${ON_LOAD[@]}" "$BIN/mock-upstream" --host 127.0.0.1 --port 0 \
  --record-capacity 0 --sse-frames 2 --sse-pace-ms 10
MOCK_PID=$STARTED_PID
for _ in $(seq 100); do grep -q listening "$WORK/mock/stdout.log" 2>/dev/null && break; sleep 0.1; done
MOCK_URL="$(sed -n 's/^mock-upstream listening on //p' "$WORK/mock/stdout.log")"
[ -n "$MOCK_URL" ] || die "mock upstream did not start; logs in $WORK/mock"
log "mock upstream on $MOCK_URL (pid $MOCK_PID)"

UPSTREAM_KEY_1="sk-bench-upstream-0001"
UPSTREAM_KEY_2="sk-bench-upstream-0002"
LITELLM_KEY="sk-bench-litellm-master-0123456789"

# LiteLLM: two deployments of the model (one per upstream key) shuffled, 2 retries, the master key
# as client auth, no database. Logging: LITELLM_LOG=ERROR and uvicorn's access log off.
LITELLM_PORT="$(free_port)"
LITELLM_URL="http://127.0.0.1:$LITELLM_PORT"
mkdir -p "$WORK/litellm"
cat >"$WORK/litellm/config.yaml" <<YAML
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: "$MOCK_URL/v1", api_key: $UPSTREAM_KEY_1}
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: "$MOCK_URL/v1", api_key: $UPSTREAM_KEY_2}
router_settings: {routing_strategy: simple-shuffle, num_retries: 2}
litellm_settings: {telemetry: false}
general_settings: {master_key: $LITELLM_KEY}
YAML
cat >"$WORK/litellm/log_config.yaml" <<'YAML'
version: 1
disable_existing_loggers: false
handlers: {null: {class: logging.NullHandler}}
loggers: {uvicorn.access: {handlers: [null], level: WARNING, propagate: false}}
YAML
# LITELLM_LOCAL_MODEL_COST_MAP: without it every start tries to fetch the cost map from GitHub.
LITELLM_ENV=(LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR)
start litellm "$WORK/litellm" env "${LITELLM_ENV[@]}" "${ON_PROXY[@]}" "$LITELLM_DIR/bin/litellm" \
  --config "$WORK/litellm/config.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" \
  --num_workers "$LITELLM_WORKERS" --log_config "$WORK/litellm/log_config.yaml"
LITELLM_PID=$STARTED_PID

# Portkey listens on every interface (it takes --port only); a preloaded module makes its
# listen() bind 127.0.0.1. NODE_ENV=production and --headless leave out the console UI.
PORTKEY_PORT="$(free_port)"
PORTKEY_URL="http://127.0.0.1:$PORTKEY_PORT"
mkdir -p "$WORK/portkey"
cat >"$WORK/portkey/listen-loopback.cjs" <<'JS'
// Preloaded with `node --require`: listen(port[, host]…) and listen({port}) bind 127.0.0.1.
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    if (args[1] === undefined || args[1] === null) args[1] = '127.0.0.1';
    else if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  } else if (args[0] && typeof args[0] === 'object' && args[0].port !== undefined) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
JS
start portkey "$WORK/portkey" env NODE_ENV=production "${ON_PROXY[@]}" node \
  --require "$WORK/portkey/listen-loopback.cjs" "$PORTKEY_JS" --port="$PORTKEY_PORT" --headless
PORTKEY_PID=$STARTED_PID
# The per-request config: both upstream keys load balanced, 2 retries, like LiteLLM's.
PORTKEY_CONFIG="$(printf '{"strategy":{"mode":"loadbalance"},"retry":{"attempts":2},"targets":[%s,%s]}' \
  "{\"provider\":\"openai\",\"api_key\":\"$UPSTREAM_KEY_1\",\"custom_host\":\"$MOCK_URL/v1\",\"weight\":1}" \
  "{\"provider\":\"openai\",\"api_key\":\"$UPSTREAM_KEY_2\",\"custom_host\":\"$MOCK_URL/v1\",\"weight\":1}")"

# A peer that does not come up is reported as such in the results, not hidden by aborting.
LITELLM_START_ERROR=""
PORTKEY_START_ERROR=""
started_at=$SECONDS
if wait_http "$LITELLM_URL/health/liveliness" "$LITELLM_PID" 180; then
  check_loopback LiteLLM "$LITELLM_PORT"
  log "LiteLLM $LITELLM_VERSION on $LITELLM_URL (pid $LITELLM_PID, $LITELLM_WORKERS worker(s), up after $((SECONDS - started_at)) s)"
else
  LITELLM_START_ERROR="did not answer on /health/liveliness: $(tail -n 3 "$WORK/litellm/stderr.log" | tr '\n' ' ')"
  log "LiteLLM $LITELLM_START_ERROR"
fi
if wait_http "$PORTKEY_URL/" "$PORTKEY_PID" 60; then
  check_loopback Portkey "$PORTKEY_PORT"
  log "Portkey $PORTKEY_VERSION on $PORTKEY_URL (pid $PORTKEY_PID)"
else
  PORTKEY_START_ERROR="did not answer on /: $(tail -n 3 "$WORK/portkey/stderr.log" | tr '\n' ' ')"
  log "Portkey $PORTKEY_START_ERROR"
fi

# --- 4. measurement ----------------------------------------------------------------------------
cat >"$WORK/measure.py" <<'PY'
"""Direct, LiteLLM and Portkey measured one after the other, figure by figure; writes the table."""

import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ENV = os.environ
ROOT = Path(ENV["PEERS_ROOT"])
WORK = Path(ENV["PEERS_WORK"])
# The helpers bench/measure.py has too (git, versions, the CPU's name).
sys.path.insert(0, str(ROOT / "bench"))
import measure as shared  # noqa: E402
from measure import git  # noqa: E402
QUICK = ENV["PEERS_QUICK"] not in ("", "0")
DURATION = int(ENV["PEERS_DURATION"])
WARMUP_S = 1 if QUICK else 2
# Before the requests/s figures: Portkey's throughput still climbs for several seconds of load
# (V8 optimising its hot paths), so a couple of seconds would leave it half warm.
LOAD_WARMUP_S = 1 if QUICK else 5
SSE_REQUESTS, SSE_WARMUP = (50, 10) if QUICK else (400, 40)
SETTLE_S = 2 if QUICK else 5
CONCURRENCIES = (32, 64)
# wrk counts an answer slower than its timeout (2 s by default) as an error; the peers are slow
# enough at c=64 that this would hide latency as errors.
WRK_TIMEOUT = "30s"
BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]},
    separators=(",", ":"),
)
STREAM_BODY = json.dumps(
    {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Say hello to the benchmark."}]},
    separators=(",", ":"),
)
# Processes that would share the CPUs with the measurement if another run or a build were going on.
BUSY_NAMES = {"cargo", "rustc", "wrk", "oha", "bench-client"}
BUSY_SCRIPTS = ("bench/run.sh", "bench/ab.py")
FIGURES = {"warmup": "warm-up", "latency": "c=1", "rps32": "c=32", "rps64": "c=64", "ttff": "SSE"}


def log(message):
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def targets():
    t = [
        {
            "name": "direct", "label": "direct", "url": ENV["PEERS_MOCK_URL"] + "/v1/chat/completions",
            "headers": [f"Authorization: Bearer {ENV['PEERS_UPSTREAM_KEY']}"], "pid": None, "error": "",
        },
        {
            "name": "litellm", "label": f"LiteLLM {ENV['PEERS_LITELLM_VERSION']}",
            "url": ENV["PEERS_LITELLM_URL"] + "/v1/chat/completions",
            "headers": [f"Authorization: Bearer {ENV['PEERS_LITELLM_KEY']}"],
            "pid": int(ENV["PEERS_LITELLM_PID"]), "log": WORK / "litellm" / "stderr.log",
            "error": ENV["PEERS_LITELLM_START_ERROR"],
        },
        {
            "name": "portkey", "label": f"Portkey {ENV['PEERS_PORTKEY_VERSION']}",
            "url": ENV["PEERS_PORTKEY_URL"] + "/v1/chat/completions",
            "headers": [f"x-portkey-config: {ENV['PEERS_PORTKEY_CONFIG']}"],
            "pid": int(ENV["PEERS_PORTKEY_PID"]), "log": WORK / "portkey" / "stderr.log",
            "error": ENV["PEERS_PORTKEY_START_ERROR"],
        },
    ]
    return t


# --- processes ------------------------------------------------------------------------------


def proc_stat(pid):
    """(comm, ppid, pgrp) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return comm, int(fields[1]), int(fields[2])


def pids():
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def group_rss_kib(pgid):
    """VmRSS summed over every process of the peer's process group (its whole tree), and their count."""
    total, count = 0, 0
    for pid in pids():
        stat = proc_stat(pid)
        if not stat or stat[2] != pgid:
            continue
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    count += 1
        except OSError:
            pass
    return total, count


def alive(target):
    return target["pid"] is None or proc_stat(target["pid"]) is not None


class RssPeak:
    """Samples one peer's RSS every 100 ms while the block runs; keeps the maximum."""

    def __init__(self, pgid):
        self.pgid, self.peak = pgid, 0

    def __enter__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, group_rss_kib(self.pgid)[0])
            self.stop.wait(0.1)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, group_rss_kib(self.pgid)[0])
        return False


def busy_now():
    """Names of CPU-hungry processes that this run did not start."""
    mine = os.getpid()
    found = set()
    for pid in pids():
        stat = proc_stat(pid)
        if not stat:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        script = next((s for s in BUSY_SCRIPTS if s in cmdline), None)
        if stat[0] not in BUSY_NAMES and not script:
            continue
        ancestor, own = pid, False
        while ancestor > 1:
            if ancestor == mine:
                own = True
                break
            parent = proc_stat(ancestor)
            ancestor = parent[1] if parent else 1
        if not own:
            found.add(script or stat[0])
    return found


# --- load generators ------------------------------------------------------------------------


def run(cmd, timeout):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} exited with {result.returncode}: {result.stderr.strip()[-500:]}")
    return result.stdout


def oha(target, seconds):
    cmd = [ENV["PEERS_OHA"], "-z", f"{seconds}s", "-c", "1", "--no-tui", "--output-format", "json",
           "-m", "POST", "-T", "application/json", "-d", BODY]
    for header in target["headers"]:
        cmd += ["-H", header]
    data = json.loads(run(cmd + [target["url"]], timeout=seconds + 60))
    codes = data.get("statusCodeDistribution", {})
    total, ok = sum(codes.values()), codes.get("200", 0)
    if total == 0 or ok != total:
        raise RuntimeError(f"status codes {codes}, errors {data.get('errorDistribution')}")
    pct = data["latencyPercentiles"]
    return {"p50_us": pct["p50"] * 1e6, "p99_us": pct["p99"] * 1e6, "rps": data["summary"]["requestsPerSec"]}


def lua_string(text):
    return "[==[" + text + "]==]"


def wrk(target, concurrency, seconds, threads):
    script = WORK / f"wrk-{target['name']}.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(BODY)}", 'wrk.headers["Content-Type"] = "application/json"']
    for header in target["headers"]:
        name, value = header.split(":", 1)
        lines.append(f'wrk.headers["{name.strip()}"] = {lua_string(value.strip())}')
    lines.append(
        """function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nPEERS {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\\n', summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end"""
    )
    script.write_text("\n".join(lines) + "\n")
    out = run(
        [ENV["PEERS_WRK"], f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", WRK_TIMEOUT,
         "-s", str(script), target["url"]],
        timeout=seconds + 90,
    )
    line = next(l for l in out.splitlines() if l.startswith("PEERS "))
    data = json.loads(line.removeprefix("PEERS "))
    errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]}
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6), "p50_us": data["p50_us"], "p99_us": data["p99_us"],
        "requests": data["requests"], "errors": errors,
    }


def first_error_answer(target):
    """One streaming request with urllib: the status and start of the body of a failing answer."""
    headers = {"Content-Type": "application/json"}
    for header in target["headers"]:
        name, value = header.split(":", 1)
        headers[name.strip()] = value.strip()
    request = urllib.request.Request(target["url"], data=STREAM_BODY.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return f"status {response.status}"
    except urllib.error.HTTPError as error:
        return f"status {error.code}: {error.read(300).decode(errors='replace').strip()}"
    except OSError as error:
        return str(error)


def last_log_error(target):
    """The last line of the peer's stderr that names an error (stack frames left out)."""
    try:
        lines = target["log"].read_text(errors="replace").splitlines()
    except (KeyError, OSError):
        return ""
    for line in reversed(lines):
        if "Error" in line and not line.lstrip().startswith("at "):
            return " ".join(line.split())[:200]
    return ""


def ttff(target):
    cmd = [ENV["PEERS_CLIENT"], "ttff", "--url", target["url"], "--body", STREAM_BODY,
           "--requests", str(SSE_REQUESTS), "--warmup", str(SSE_WARMUP)]
    for header in target["headers"]:
        cmd += ["-H", header]
    data = json.loads(run(cmd, timeout=900))
    if data["errors"]:
        detail = first_error_answer(target)
        logged = last_log_error(target)
        raise RuntimeError(
            f"{data['errors']} of {SSE_REQUESTS + SSE_WARMUP} streams failed ({data['last_error']}); "
            f"one more request: {detail}" + (f"; peer log: {logged}" if logged else "")
        )
    return {
        "p50_us": data["first_frame_us"]["p50"], "p99_us": data["first_frame_us"]["p99"],
        "total_p50_us": data["total_us"]["p50"], "frames": data["frames_per_response"],
    }


# --- measurement ----------------------------------------------------------------------------


def measure():
    t = targets()
    threads = 1 if ENV["PEERS_PINNING"].startswith("yes") else 2
    res = {x["name"]: {"error": x["error"]} for x in t}
    busy = {}  # process name -> the figures it ran alongside

    def attempt(target, figure, fn):
        """Runs one figure; a failure is recorded in the cell, not raised."""
        seen = busy_now()
        if seen:
            log(f"  other load before {target['label']} {FIGURES[figure]}: {', '.join(sorted(seen))}")
        for name in seen:
            busy.setdefault(name, []).append(f"{target['label']} {FIGURES[figure]}")
        if res[target["name"]]["error"]:
            return None
        if not alive(target):
            res[target["name"]]["error"] = f"exited during the run: {last_log_error(target) or 'see its log'}"
            return None
        try:
            return fn()
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError, StopIteration) as error:
            res[target["name"]][figure] = {"failed": str(error)}
            log(f"  {target['label']}: {FIGURES[figure]} failed: {error}")
            return None

    time.sleep(SETTLE_S)
    for x in t:
        if x["pid"] and not x["error"]:
            kib, count = group_rss_kib(x["pid"])
            res[x["name"]]["rss_idle"] = {"kib": kib, "processes": count}
            log(f"idle RSS: {x['label']} {kib / 1024:.1f} MiB ({count} process(es))")

    for x in t:
        attempt(x, "warmup", lambda: oha(x, WARMUP_S))
        r = attempt(x, "latency", lambda: oha(x, DURATION))
        if r:
            res[x["name"]]["latency"] = r
            log(f"  {x['label']:16} c=1  p50 {r['p50_us']:9.1f} µs  p99 {r['p99_us']:9.1f} µs  ({r['rps']:,.0f} req/s)")

    for x in t:
        attempt(x, "warmup", lambda: wrk(x, CONCURRENCIES[0], LOAD_WARMUP_S, threads))
        with RssPeak(x["pid"]) if x["pid"] else contextlib.nullcontext() as peak:
            for c in CONCURRENCIES:
                r = attempt(x, f"rps{c}", lambda: wrk(x, c, DURATION, threads))
                if r:
                    res[x["name"]][f"rps{c}"] = r
                    log(f"  {x['label']:16} c={c:<3} {r['rps']:9,.0f} req/s  p50 {r['p50_us']} µs  p99 {r['p99_us']} µs"
                        + (f"  errors {r['errors']}" if r["errors"] else ""))
        if peak and not res[x["name"]]["error"]:
            res[x["name"]]["rss_load_kib"] = peak.peak
            log(f"  {x['label']:16} RSS peak under load {peak.peak / 1024:.1f} MiB")

    for x in t:
        r = attempt(x, "ttff", lambda: ttff(x))
        if r:
            res[x["name"]]["ttff"] = r
            log(f"  {x['label']:16} SSE first frame p50 {r['p50_us']:9.1f} µs  p99 {r['p99_us']:9.1f} µs  "
                f"(whole stream {r['total_p50_us'] / 1e3:.1f} ms, {r['frames']} data frames)")
    for name in busy_now():
        busy.setdefault(name, []).append("the end")
    return t, res, busy


# --- report ---------------------------------------------------------------------------------


def dur(us, signed=False):
    sign = ("+" if us >= 0 else "−") if signed else ("−" if us < 0 else "")
    v = abs(us)
    if v >= 10_000:
        text = f"{v / 1000:,.0f} ms"
    elif v >= 1000:
        text = f"{v / 1000:.1f} ms"
    elif v >= 10:
        text = f"{v:.0f} µs"
    else:
        text = f"{v:.1f} µs"
    return sign + text


def cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def failed(figure):
    return f"failed: {figure['failed']}" if isinstance(figure, dict) and "failed" in figure else None


def rows(t, res):
    direct = res["direct"]
    base = direct.get("latency")

    def latency_cell(name):
        r = res[name]
        if r["error"]:
            return f"failed: {r['error']}"
        if failed(r.get("latency")) or "latency" not in r:
            return failed(r.get("latency")) or failed(r.get("warmup")) or "–"
        lat = r["latency"]
        if name == "direct":
            return f"0 / 0 (base {dur(lat['p50_us'])} / {dur(lat['p99_us'])})"
        if not base:
            return f"{dur(lat['p50_us'])} / {dur(lat['p99_us'])} (no direct baseline)"
        return (f"{dur(lat['p50_us'] - base['p50_us'], True)} / {dur(lat['p99_us'] - base['p99_us'], True)} "
                f"({dur(lat['p50_us'])} / {dur(lat['p99_us'])})")

    def rps_cell(name):
        r = res[name]
        if r["error"]:
            return "failed"
        parts = []
        for c in CONCURRENCIES:
            f = r.get(f"rps{c}")
            if f is None or "failed" in f:
                parts.append(failed(f) or "–")
                continue
            text = f"{f['rps']:,.0f}"
            if f["errors"]:
                text += f" ({sum(f['errors'].values()):,} errors of {f['requests']:,}: {f['errors']})"
            parts.append(text)
        return " / ".join(parts)

    def load_latency_cell(name):
        r = res[name]
        if r["error"]:
            return "failed"
        parts = []
        for c in CONCURRENCIES:
            f = r.get(f"rps{c}")
            parts.append("–" if f is None or "failed" in f else f"{dur(f['p50_us'])} / {dur(f['p99_us'])}")
        return "; ".join(parts)

    def ttff_cell(name):
        r = res[name]
        if r["error"]:
            return "failed"
        f = r.get("ttff")
        if f is None or "failed" in f:
            return failed(f) or "–"
        text = f"{dur(f['p50_us'])} / {dur(f['p99_us'])}"
        d = direct.get("ttff")
        if name != "direct" and d and "failed" not in d:
            text += f" ({dur(f['p50_us'] - d['p50_us'], True)})"
        return text

    def stream_cell(name):
        r = res[name]
        f = r.get("ttff")
        if r["error"] or f is None or "failed" in f:
            return "failed" if (r["error"] or f) else "–"
        return f"{dur(f['total_p50_us'])}, {f['frames']} `data:` frames"

    def rss_cell(name):
        r = res[name]
        if name == "direct":
            return "–"
        if "rss_idle" not in r:
            return "failed" if r["error"] else "–"
        idle = r["rss_idle"]
        load = r.get("rss_load_kib")
        text = f"{idle['kib'] / 1024:.0f} MB / " + (f"{load / 1024:.0f} MB" if load else "–")
        return text + (f" ({idle['processes']} processes)" if idle["processes"] > 1 else "")

    names = [x["name"] for x in t]
    return [
        ("added latency p50 / p99 at concurrency 1 (absolute in brackets)", [latency_cell(n) for n in names]),
        ("requests/s at concurrency 32 / 64", [rps_cell(n) for n in names]),
        ("latency p50 / p99 under load, c=32; c=64", [load_latency_cell(n) for n in names]),
        ("SSE time to first frame p50 / p99, c=1 (difference to direct)", [ttff_cell(n) for n in names]),
        ("SSE whole stream p50 (2 text frames 10 ms apart)", [stream_cell(n) for n in names]),
        ("RSS idle / under load (peak at c=32 and c=64)", [rss_cell(n) for n in names]),
    ]


def version(cmd):
    # LiteLLM's Python and Node can take long to start on a busy machine.
    return shared.version(cmd, timeout=30)


def machine():
    cpu = shared.cpu_model()
    mem = next((int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal:")), 0)
    os_name = "?"
    try:
        os_name = next(l.split("=", 1)[1].strip('"') for l in Path("/etc/os-release").read_text().splitlines()
                       if l.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem / 1024 / 1024:.0f} GiB; {os_name}, Linux {platform.release()}"


def render(t, res, busy, started, finished):
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    changed = [l.split(None, 1)[1] for l in git("status", "--porcelain", "--", ".", ":!bench/results").splitlines()]
    client = Path(ENV["PEERS_CLIENT"])
    built = datetime.datetime.fromtimestamp(client.stat().st_mtime, datetime.timezone.utc)
    took = int((finished - started).total_seconds())
    table = rows(t, res)
    labels = [x["label"] for x in t]
    lines = [
        f"# Peer gateways through the bench mock upstream: direct, LiteLLM, Portkey{' (quick smoke run)' if QUICK else ''}",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC (run took {took // 60} min {took % 60} s); written by `bench/peers.sh`",
        f"- git commit: {commit}" + (f" plus uncommitted changes to {', '.join(changed)}" if changed else "")
        + f"; mock-upstream and bench-client from `{client.parent}`, built {built:%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- pinned: {ENV['PEERS_PINNING']}",
        "- other load seen during the run: "
        + ("; ".join(f"{name} (seen before {', '.join(figures)})" for name, figures in sorted(busy.items())) if busy else "none"),
        f"- versions: LiteLLM {ENV['PEERS_LITELLM_VERSION']} (`litellm[proxy]`, PyPI; "
        f"{version([ENV['PEERS_LITELLM_PYTHON'], '--version'])}), Portkey gateway {ENV['PEERS_PORTKEY_VERSION']} "
        f"(`@portkey-ai/gateway`, npm; Node {version(['node', '--version'])}); "
        f"{version([ENV['PEERS_OHA'], '--version'])}; {version([ENV['PEERS_WRK'], '-v']).split(' Copyright')[0]}",
        "",
        "| figure | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
        *[f"| {name} | " + " | ".join(cell(c) for c in cells) + " |" for name, cells in table],
        "",
        "Latency cells are p50 / p99. Added latency is the peer's percentile minus direct's in the same run. "
        "RSS is VmRSS summed over the peer's process tree.",
        "",
        "## Configuration",
        "",
        "Both peers have the same job: one model (`gpt-4o-mini`) on the mock upstream with two upstream keys, "
        "balanced, 2 retries. The project's gateway in `make bench` has 100 keys and logs every request to "
        "SQLite; neither peer logs requests anywhere here.",
        "",
        f"- **LiteLLM**: `litellm --config config.yaml --host 127.0.0.1 --num_workers {ENV['PEERS_LITELLM_WORKERS']} "
        "--log_config log_config.yaml` (uvicorn), environment "
        f"`{ENV['PEERS_LITELLM_ENV']}` (no cost-map download at start; errors only), uvicorn's access log "
        "off through `log_config.yaml`, clients authenticate with the master key, no database. `config.yaml`:",
        "",
        "```yaml",
        (WORK / "litellm" / "config.yaml").read_text().replace(ENV["PEERS_MOCK_URL"], "http://127.0.0.1:MOCK").strip(),
        "```",
        "",
        "- **Portkey**: `NODE_ENV=production node start-server.js --port=PORT --headless` (one Node process, "
        "default logging: errors to stderr), preloaded with a module that makes it listen on 127.0.0.1 "
        "instead of every interface. The OSS gateway has no client authentication; every request carries "
        "the routing config with the upstream keys:",
        "",
        "```",
        "x-portkey-config: " + ENV["PEERS_PORTKEY_CONFIG"].replace(ENV["PEERS_MOCK_URL"], "http://127.0.0.1:MOCK"),
        "```",
        "",
        "- **direct**: the client talks to the mock upstream with one upstream key.",
        "- **mock upstream**: `mock-upstream --record-capacity 0 --sse-frames 2 --sse-pace-ms 10` "
        "(streams of 2 text frames 10 ms apart, then the finish chunk and `[DONE]`).",
        "",
        "## Method",
        "",
        f"- One pass, target after target for each figure: c=1 latency with `oha -c 1` for {DURATION} s after a "
        f"{WARMUP_S} s warm-up (non-streaming `POST /v1/chat/completions`, keep-alive); requests/s with "
        f"`wrk -t{1 if ENV['PEERS_PINNING'].startswith('yes') else 2} -c32` and `-c64`, {DURATION} s each after "
        f"{LOAD_WARMUP_S} s at c=32, same request from a Lua script, timeout {WRK_TIMEOUT} (errors are counted in the "
        "cell, not hidden); SSE time to first "
        f"frame with `bench-client ttff` ({SSE_REQUESTS} streaming requests one after the other on one keep-alive "
        f"connection after {SSE_WARMUP} warm-up ones; time from sending the request to the first body chunk "
        "holding `data:`).",
        f"- RSS: idle {SETTLE_S} s after both peers answered their health check, before any request; under "
        "load, sampled every 100 ms while wrk runs against that peer.",
        "- Both peers run at the same time on the proxy CPU; only one is loaded at a time.",
        "- On two cores with everything co-located the figures are noisy: compare the columns of one run "
        "(see the caveats in `bench/README.md`).",
        "",
    ]
    return "\n".join(lines)


def main():
    started = datetime.datetime.now(datetime.timezone.utc)
    t, res, busy = measure()
    finished = datetime.datetime.now(datetime.timezone.utc)
    text = render(t, res, busy, started, finished)
    # A smoke run must not overwrite the day's full run.
    path = ROOT / "bench" / "results" / f"{started:%Y-%m-%d}-peers{'-quick' if QUICK else ''}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    log(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
PY

export PEERS_ROOT="$ROOT" PEERS_WORK="$WORK" PEERS_QUICK="$QUICK" PEERS_DURATION="$DURATION" \
  PEERS_MOCK_URL="$MOCK_URL" PEERS_UPSTREAM_KEY="$UPSTREAM_KEY_1" \
  PEERS_LITELLM_URL="$LITELLM_URL" PEERS_LITELLM_PID="$LITELLM_PID" PEERS_LITELLM_KEY="$LITELLM_KEY" \
  PEERS_LITELLM_VERSION="$LITELLM_VERSION" PEERS_LITELLM_START_ERROR="$LITELLM_START_ERROR" \
  PEERS_LITELLM_WORKERS="$LITELLM_WORKERS" PEERS_LITELLM_ENV="${LITELLM_ENV[*]}" \
  PEERS_LITELLM_PYTHON="$LITELLM_DIR/bin/python" \
  PEERS_PORTKEY_URL="$PORTKEY_URL" PEERS_PORTKEY_PID="$PORTKEY_PID" PEERS_PORTKEY_CONFIG="$PORTKEY_CONFIG" \
  PEERS_PORTKEY_VERSION="$PORTKEY_VERSION" PEERS_PORTKEY_START_ERROR="$PORTKEY_START_ERROR" \
  PEERS_OHA="$OHA" PEERS_WRK="$WRK" PEERS_CLIENT="$BIN/bench-client" PEERS_PINNING="$PINNING"
# In the background and waited for, so that INT or TERM reach the trap at once; in a group of its
# own, so that the cleanup also stops a load generator it is running.
start measure - "${ON_LOAD[@]}" python3 "$WORK/measure.py"
wait "$STARTED_PID"
