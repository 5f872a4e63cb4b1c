#!/usr/bin/env python3
"""Throughput of gateway binaries side by side: `bench/ab.py NAME=BINARY[@CONFIG] ...`.

Where `make bench` compares the gateway with nginx, this compares gateways with each other (a
commit before and after a change, or one binary with and without some group settings), which
needs less time and less luck than two full runs: every binary runs at once on the proxy CPU,
each with its own SQLite data directory and the same benchmark group (100 keys on one mock
upstream), and wrk drives one of them at a time, in interleaved rounds, so a slower or faster
spell of the machine falls on all of them alike. Prints every round and the medians, relative to
the first binary, and each binary's resident memory after the rounds. With AB_LADDER (rates in
requests/s, e.g. `1000,3000`) each round also offers those fixed rates open-loop (oha -q, latency
corrected, 64 connections) to each binary and straight to the mock upstream, and reports the
median p50/p99 each binary adds over direct; AB_WRK=0 leaves the throughput rounds out.

    cargo build --release -p gpt-load-gateway -p gpt-load-e2e --bin gpt-load-gateway --bin mock-upstream
    bench/ab.py before=/tmp/gateway-before after=target/release/gpt-load-gateway \\
        'limited=target/release/gpt-load-gateway@{"key_rpm":1000000000}'

`@CONFIG` is the group's settings (JSON); its `"access_key"` entry, if any, is taken out and made
an access key with those fields (`{}` for one without limits), which wrk then presents instead of
the legacy proxy key. Knobs: AB_ROUNDS (4), AB_SECONDS (8 per measurement),
AB_MOCK (the mock upstream binary, default $CARGO_TARGET_DIR/release/mock-upstream), AB_LADDER,
AB_WRK, AB_OHA (default $CARGO_TARGET_DIR/bench-tools/bin/oha, where bench/run.sh installs it).
A binary may be a script that `exec`s the gateway with extra environment. Needs wrk (and oha for
the ladder) and taskset; loopback only; stops everything it started.
"""

import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROUNDS = int(os.environ.get("AB_ROUNDS", "4"))
SECONDS = int(os.environ.get("AB_SECONDS", "8"))
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
MOCK = os.environ.get("AB_MOCK", os.path.join(TARGET_DIR, "release", "mock-upstream"))
OHA = os.environ.get("AB_OHA", os.path.join(TARGET_DIR, "bench-tools", "bin", "oha"))
LADDER = [int(rate) for rate in os.environ.get("AB_LADDER", "").split(",") if rate]
THROUGHPUT = os.environ.get("AB_WRK", "1") != "0"
LOAD_CPU, PROXY_CPU = "0", str(max(os.sched_getaffinity(0)))
PROXY_KEY = "sk-bench-proxy-key-0123456789"
BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark."}]}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url):
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def api(base, admin_key, path, body):
    request = urllib.request.Request(
        base + path,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def start_gateway(binary, config, work, mock_url, started):
    """A gateway on its own port and data directory, with the benchmark group; its proxy URL and
    the key clients present."""
    port = free_port()
    data = tempfile.mkdtemp(dir=work)
    admin_key = "ab-" + secrets.token_hex(16)
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(port), AUTH_KEY=admin_key, DATA_DIR=data,
               MAX_CONCURRENT_REQUESTS="20000")
    log = open(os.path.join(data, "gateway.log"), "w")
    started.append(subprocess.Popen(["taskset", "-c", PROXY_CPU, binary], cwd=data, env=env,
                                    stdout=log, stderr=subprocess.STDOUT))
    base = f"http://127.0.0.1:{port}"
    wait_for(base + "/health")
    config = json.loads(config or "{}")
    access = config.pop("access_key", None)
    group = api(base, admin_key, "/api/groups", {
        "name": "bench", "channel_type": "openai", "test_model": "gpt-4o-mini",
        "upstreams": [{"url": mock_url, "weight": 1}], "proxy_keys": PROXY_KEY,
        "config": config,
    })
    keys = "\n".join(f"sk-bench-upstream-{i:04d}" for i in range(1, 101))
    api(base, admin_key, "/api/keys/add-multiple", {"group_id": group["data"]["id"], "keys_text": keys})
    bearer = PROXY_KEY
    if access is not None:
        bearer = api(base, admin_key, "/api/access-keys", {"name": "bench", **access})["data"]["key"]
    return base + "/proxy/bench/v1/chat/completions", bearer


def wrk(script, url, connections, seconds):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, shutil.which("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s",
         "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def oha(url, bearer, rate, seconds):
    """p50 and p99 latency (µs) at a fixed offered rate, open-loop, corrected for coordinated
    omission; fails unless every request succeeded."""
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, OHA, "-z", f"{seconds}s", "-c", "64", "-q", str(rate),
         "--latency-correction", "--no-tui", "--output-format", "json", "-m", "POST",
         "-T", "application/json", "-d", BODY, "-H", f"Authorization: Bearer {bearer}", url],
        capture_output=True, text=True, check=True,
    ).stdout
    data = json.loads(out)
    codes = data.get("statusCodeDistribution", {})
    if not codes or set(codes) != {"200"}:
        raise SystemExit(f"oha against {url}: status codes {codes}, errors {data.get('errorDistribution')}")
    percentiles = data["latencyPercentiles"]
    return percentiles["p50"] * 1e6, percentiles["p99"] * 1e6


def ladder(urls, bearers, mock_url):
    """The fixed-rate rounds: each rate to each binary and to the mock directly, interleaved."""
    direct = mock_url + "/v1/chat/completions"
    added = {(name, rate): [] for name in urls for rate in LADDER}
    for round_ in range(1, ROUNDS + 1):
        for rate in LADDER:
            base = oha(direct, "sk-bench-upstream-0001", rate, SECONDS)
            for name, url in urls.items():
                p50, p99 = oha(url, bearers[name], rate, SECONDS)
                added[(name, rate)].append((p50 - base[0], p99 - base[1]))
                print(f"round {round_} {rate}/s {name}: p50 {p50:,.0f} µs, p99 {p99:,.0f} µs "
                      f"(direct {base[0]:,.0f} / {base[1]:,.0f})", flush=True)
    print(f"\nmedian latency added over direct at fixed rates, {ROUNDS} rounds of {SECONDS} s (p50 / p99):")
    for rate in LADDER:
        for name in urls:
            rounds = added[(name, rate)]
            p50 = statistics.median(r[0] for r in rounds)
            p99 = statistics.median(r[1] for r in rounds)
            print(f"  {rate:,}/s {name}: {p50:+,.0f} µs / {p99:+,.0f} µs; "
                  f"p99 rounds {', '.join(f'{r[1]:+,.0f}' for r in rounds)}")


def throughput(urls, scripts):
    """The wrk rounds: requests/s at c=32 and c=64, interleaved."""
    results = {(name, c): [] for name in urls for c in (32, 64)}
    for round_ in range(1, ROUNDS + 1):
        for connections in (32, 64):
            for name, url in urls.items():
                rps = wrk(scripts[name], url, connections, SECONDS)
                results[(name, connections)].append(rps)
                print(f"round {round_} c={connections} {name}: {rps:,.0f} requests/s", flush=True)
    first = next(iter(urls))
    print(f"\nmedian requests/s over {ROUNDS} rounds ({SECONDS} s each), relative to {first}:")
    for connections in (32, 64):
        reference = statistics.median(results[(first, connections)])
        for name in urls:
            rounds = results[(name, connections)]
            median = statistics.median(rounds)
            print(f"  c={connections} {name}: {median:,.0f} ({median / reference * 100:.1f} %); "
                  f"rounds {', '.join(f'{r:,.0f}' for r in rounds)}")


def log_records(base):
    """The request-log counters of a gateway: written, dropped by the sink, lost by the writer."""
    with urllib.request.urlopen(base + "/metrics") as answer:
        text = answer.read().decode()
    counts = {}
    for name in ("written", "dropped", "lost"):
        metric = f"gpt_load_log_records_{name}_total"
        counts[name] = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith(metric) and not line.startswith("#"))
    return counts


def caught_up(base, limit=60):
    """Waits until a gateway's log writer has written what it was sent (its counters stop
    moving for 1.5 s); its counters and how long that took after the load stopped."""
    started = time.monotonic()
    last = log_records(base)
    while time.monotonic() - started < limit:
        # Longer than the writer's one-second flush interval.
        time.sleep(1.5)
        now = log_records(base)
        if now == last:
            break
        last = now
    return last, time.monotonic() - started


def memory(pid):
    """A process's resident memory now and at its peak, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS", "VmHWM")))
    mib = {name: int(value.split()[0]) / 1024 for name, value in fields.items()}
    return f"{mib['VmRSS']:.1f} MiB now, {mib['VmHWM']:.1f} MiB peak"


def main():
    targets = [arg.partition("=")[::2] for arg in sys.argv[1:]]
    if not targets or any(not name or not spec for name, spec in targets):
        raise SystemExit(__doc__)
    work = tempfile.mkdtemp(prefix="gpt-load-ab-")
    started = []
    try:
        mock = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, MOCK, "--host", "127.0.0.1", "--port", "0", "--record-capacity", "0"],
            stdout=subprocess.PIPE, text=True,
        )
        started.append(mock)
        mock_url = mock.stdout.readline().strip().split("listening on ")[1]
        urls, scripts, processes, bearers = {}, {}, {}, {}
        for name, spec in targets:
            binary, _, config = spec.partition("@")
            urls[name], bearer = start_gateway(binary, config, work, mock_url, started)
            bearers[name] = bearer
            processes[name] = started[-1]
            scripts[name] = os.path.join(work, f"post-{len(scripts)}.lua")
            with open(scripts[name], "w") as f:
                f.write(f'wrk.method = "POST"\nwrk.body = [[{BODY}]]\n'
                        f'wrk.headers["Content-Type"] = "application/json"\n'
                        f'wrk.headers["Authorization"] = "Bearer {bearer}"\n')
        for name, url in urls.items():
            wrk(scripts[name], url, 32, 2)
        if LADDER:
            ladder(urls, bearers, mock_url)
        if THROUGHPUT:
            throughput(urls, scripts)
        print("\nrequest-log records once each writer caught up (the counters stopped for 1.5 s):")
        for name, url in urls.items():
            counts, took = caught_up(url.split("/proxy/")[0])
            print(f"  {name}: written {counts['written']:,.0f}, dropped {counts['dropped']:,.0f}, "
                  f"lost {counts['lost']:,.0f}; caught up {took:.1f} s after the load stopped")
        print("\nmemory after the rounds (VmRSS now, VmHWM the peak):")
        for name, process in processes.items():
            print(f"  {name}: {memory(process.pid)}")
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
