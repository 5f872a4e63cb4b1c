#!/usr/bin/env python3
"""Throughput of gateway binaries side by side: `bench/ab.py NAME=BINARY[@CONFIG] ...`.

Where `make bench` compares the gateway with nginx, this compares gateways with each other (a
commit before and after a change, or one binary with and without some group settings), which
needs less time and less luck than two full runs: every binary runs at once on the proxy CPU,
each with its own SQLite data directory and the same benchmark group (100 keys on one mock
upstream), and wrk drives one of them at a time, in interleaved rounds, so a slower or faster
spell of the machine falls on all of them alike. Prints every round and the medians, relative to
the first binary, and each binary's resident memory after the rounds.

    cargo build --release -p gpt-load-gateway -p gpt-load-e2e --bin gpt-load-gateway --bin mock-upstream
    bench/ab.py before=/tmp/gateway-before after=target/release/gpt-load-gateway \\
        'limited=target/release/gpt-load-gateway@{"key_rpm":1000000000}'

`@CONFIG` is the group's settings (JSON); its `"access_key"` entry, if any, is taken out and made
an access key with those fields (`{}` for one without limits), which wrk then presents instead of
the legacy proxy key. Knobs: AB_ROUNDS (4), AB_SECONDS (8 per measurement),
AB_MOCK (the mock upstream binary, default $CARGO_TARGET_DIR/release/mock-upstream). Needs wrk
and taskset; loopback only; stops everything it started.
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
        urls, scripts, processes = {}, {}, {}
        for name, spec in targets:
            binary, _, config = spec.partition("@")
            urls[name], bearer = start_gateway(binary, config, work, mock_url, started)
            processes[name] = started[-1]
            scripts[name] = os.path.join(work, f"post-{len(scripts)}.lua")
            with open(scripts[name], "w") as f:
                f.write(f'wrk.method = "POST"\nwrk.body = [[{BODY}]]\n'
                        f'wrk.headers["Content-Type"] = "application/json"\n'
                        f'wrk.headers["Authorization"] = "Bearer {bearer}"\n')
        for name, url in urls.items():
            wrk(scripts[name], url, 32, 2)
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
