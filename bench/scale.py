#!/usr/bin/env python3
"""The gateway with a very large key pool: `bench/scale.py BINARY [KEYS]` (default 1,000,000).

Starts the release binary on SQLite in a fresh data directory, imports KEYS upstream keys into
one group through `POST /api/keys/add-async` (one request, as an operator would upload a file),
and measures what an operator sizing a machine for such a pool asks:

- how long the import takes, and the gateway's resident memory right after it;
- after a restart: the time from start to `/health/ready`, and the resident memory per key;
- the keys page: the first page, a page near the end, and an exact key search, each timed over
  SCALE_REPEAT requests (p50 and p95), through the admin API as the console calls it.

Prints a Markdown table. Loopback only; stops everything it started. Knobs: SCALE_REPEAT (20);
SCALE_KEEP=1 keeps the data directory (its path is printed) to profile start-up against it.
"""

import json
import math
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPEAT = int(os.environ.get("SCALE_REPEAT", "20"))
PAGE_SIZE = 50


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, admin_key, method, path, body=None, timeout=600):
    request = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.load(answer)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Gateway:
    def __init__(self, binary, data, admin_key):
        self.binary, self.data, self.admin_key = binary, data, admin_key
        self.process = None
        self.base = None
        # Extra environment (a `DATABASE_DSN`, say).
        self.env = {}

    def start(self):
        """Starts the gateway; seconds until it answers `/health/ready`."""
        port = free_port()
        env = dict(os.environ, HOST="127.0.0.1", PORT=str(port), AUTH_KEY=self.admin_key,
                   DATA_DIR=self.data, LOG_LEVEL="warn", **self.env)
        log = open(os.path.join(self.data, "gateway.log"), "a")
        began = time.monotonic()
        self.process = subprocess.Popen([self.binary], cwd=self.data, env=env, stdout=log,
                                        stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the gateway exited; see {self.data}/gateway.log")
            try:
                urllib.request.urlopen(self.base + "/health/ready", timeout=1)
                return time.monotonic() - began
            except OSError:
                time.sleep(0.02)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, method, path, body=None):
        return call(self.base, self.admin_key, method, path, body)


def timed(gateway, path, repeat=REPEAT):
    """p50 and p95 in milliseconds of `repeat` GETs of `path`, and the last answer."""
    times, answer = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        answer = gateway.api("GET", path)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    # Nearest rank: the 95th percentile of 10 requests is the slowest.
    return statistics.median(times), times[math.ceil(len(times) * 0.95) - 1], answer


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) == 3 else 1_000_000
    work = tempfile.mkdtemp(prefix="gpt-load-scale-")
    gateway = Gateway(binary, work, "scale-" + secrets.token_hex(16))
    rows = []
    try:
        gateway.start()
        group = gateway.api("POST", "/api/groups", {
            "name": "scale", "channel_type": "openai", "test_model": "gpt-4o-mini",
            "upstreams": [{"url": "http://127.0.0.1:9", "weight": 1}],
        })["data"]["id"]
        # Keys of a realistic length (51 characters, like an OpenAI project key's tail).
        keys = [f"sk-scale-{i:09d}-{secrets.token_hex(16)}" for i in range(count)]
        began = time.monotonic()
        gateway.api("POST", "/api/keys/add-async", {"group_id": group, "keys_text": "\n".join(keys)})
        while True:
            status = gateway.api("GET", "/api/tasks/status")["data"]
            if not status.get("is_running"):
                break
            time.sleep(0.2)
        imported = time.monotonic() - began
        if status.get("error"):
            raise SystemExit(f"the import failed: {status['error']}")
        after_import = rss_mib(gateway.process.pid)
        time.sleep(5)
        settled = rss_mib(gateway.process.pid)
        rows.append(("import", f"{count:,} keys in {imported:.1f} s ({count / imported:,.0f} keys/s)",
                     "≤ 30 s"))
        rows.append(("RSS right after the import / 5 s later",
                     f"{after_import:,.0f} MiB / {settled:,.0f} MiB", "near the steady state"))

        gateway.stop()
        ready = gateway.start()
        steady = rss_mib(gateway.process.pid)
        idle = 20.0  # the gateway's idle RSS with a small pool (bench/results/latest.md)
        per_key = (steady - idle) * 1024 * 1024 / count
        rows.append(("start-up to ready, after a restart", f"{ready:.2f} s", "≤ 5 s"))
        rows.append(("RSS after the restart; per key (beyond 20 MiB idle)",
                     f"{steady:,.0f} MiB; {per_key:,.0f} B", "≤ 200 B per key"))

        first_p50, first_p95, first = timed(gateway, f"/api/keys?group_id={group}&page=1&page_size={PAGE_SIZE}")
        total = first["data"]["pagination"]["total_items"]
        if total != count:
            raise SystemExit(f"the keys page counts {total:,} keys, not {count:,}")
        pages = (count + PAGE_SIZE - 1) // PAGE_SIZE
        deep = max(1, pages - 20)
        deep_p50, deep_p95, _ = timed(gateway, f"/api/keys?group_id={group}&page={deep}&page_size={PAGE_SIZE}")
        probe = keys[count // 2]
        exact_p50, exact_p95, found = timed(gateway, f"/api/keys?group_id={group}&key_value={probe}")
        if [item["key_value"] for item in found["data"]["items"]] != [probe]:
            raise SystemExit("the exact search did not find its key")
        rows.append((f"keys page: first page ({PAGE_SIZE} keys), p50 / p95",
                     f"{first_p50:.0f} / {first_p95:.0f} ms", "≤ 50 ms"))
        rows.append((f"keys page: page {deep:,} of {pages:,}, p50 / p95",
                     f"{deep_p50:.0f} / {deep_p95:.0f} ms", "≤ 300 ms"))
        rows.append(("keys page: exact key search, p50 / p95",
                     f"{exact_p50:.0f} / {exact_p95:.0f} ms", "≤ 50 ms"))
    finally:
        gateway.stop()
        if os.environ.get("SCALE_KEEP") == "1":
            print(f"data directory kept: {work} (AUTH_KEY {gateway.admin_key})", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"| figure ({count:,} keys, SQLite, release build) | measured | target |")
    print("|---|---|---|")
    for figure, value, target in rows:
        print(f"| {figure} | {value} | {target} |")


if __name__ == "__main__":
    main()
