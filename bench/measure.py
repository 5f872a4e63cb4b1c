#!/usr/bin/env python3
"""Measurement rounds of `make bench`; started by bench/run.sh, which sets BENCH_* variables.

Every round runs each measurement against direct, nginx and the gateway in turn (and, for
latency and requests/s, against two gateway nodes behind nginx when BENCH_CLUSTER_URL is set, and
against a proxy of hyper alone when BENCH_HYPER_URL is set);
the figures are medians over rounds. Prints the markdown tables and writes them to
bench/results/.
"""

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = os.environ
QUICK = ENV.get("BENCH_QUICK", "0") not in ("", "0", "false", "no")
TARGETS = ("direct", "nginx", "gateway")
# Two gateway nodes (cluster mode, PostgreSQL + Redis) behind nginx round robin: latency and
# requests/s only.
CLUSTER = bool(ENV.get("BENCH_CLUSTER_URL"))
# A proxy of hyper's server and client with nothing else, where the gateway runs: latency and
# requests/s only.
HYPER = bool(ENV.get("BENCH_HYPER_URL"))
LOADED = TARGETS + (("cluster",) if CLUSTER else ()) + (("hyper",) if HYPER else ())

# Durations and sizes: full run, or the BENCH_QUICK smoke run.
if QUICK:
    ROUNDS = int(ENV.get("BENCH_ROUNDS", "1"))
    WARMUP_S, LATENCY_S, THROUGHPUT_S = 1, 3, 3
    LADDER_S = 3
    TTFF_REQUESTS, TTFF_WARMUP = 100, 10
    STREAM_TARGET = int(ENV.get("BENCH_STREAMS", "1000"))
    STREAM_FRAMES, STREAM_PACE_MS = 4, 500
    SETTLE_S = 2
else:
    ROUNDS = int(ENV.get("BENCH_ROUNDS", "3"))
    WARMUP_S, LATENCY_S, THROUGHPUT_S = 2, 10, 10
    LADDER_S = 10
    TTFF_REQUESTS, TTFF_WARMUP = 400, 40
    STREAM_TARGET = int(ENV.get("BENCH_STREAMS", "10000"))
    STREAM_FRAMES, STREAM_PACE_MS = 12, 1000
    SETTLE_S = 5
STREAM_FRAMES = int(ENV.get("BENCH_STREAM_FRAMES", STREAM_FRAMES))
STREAM_PACE_MS = int(ENV.get("BENCH_STREAM_PACE_MS", STREAM_PACE_MS))
# SSE time to first frame: 2 text frames 10 ms apart, so a buffering proxy would show ~10 ms.
TTFF_FRAMES, TTFF_PACE_MS = 2, 10
# `data:` frames of an OpenAI chat stream: the text frames, the finish chunk and [DONE].
DATA_FRAMES_EXTRA = 2
CONCURRENCIES = (32, 64)
# The fixed-rate ladder: requests/s offered open-loop (oha -q, latency corrected for coordinated
# omission) over enough connections that the rate, not the connection count, paces the load.
LADDER_RATES = tuple(int(r) for r in ENV.get("BENCH_LADDER", "1000,3000,5000").split(",") if r)
LADDER_CONNECTIONS = 64
FD_RESERVE = 200

BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]},
    separators=(",", ":"),
)
STREAM_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    },
    separators=(",", ":"),
)


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def targets():
    group, proxy_key, upstream_key = ENV["BENCH_GROUP"], ENV["BENCH_PROXY_KEY"], ENV["BENCH_UPSTREAM_KEY"]
    return {
        "direct": {
            "url": ENV["BENCH_MOCK_URL"] + "/v1/chat/completions",
            "auth": f"Bearer {upstream_key}",
        },
        # nginx replaces the Authorization header with the upstream key.
        "nginx": {"url": ENV["BENCH_NGINX_URL"] + "/v1/chat/completions", "auth": f"Bearer {proxy_key}"},
        "gateway": {
            "url": ENV["BENCH_GATEWAY_URL"] + f"/proxy/{group}/v1/chat/completions",
            "auth": f"Bearer {proxy_key}",
        },
        "cluster": {
            "url": ENV.get("BENCH_CLUSTER_URL", "") + f"/proxy/{group}/v1/chat/completions",
            "auth": f"Bearer {proxy_key}",
        },
        # bare-proxy sets the upstream key itself.
        "hyper": {"url": ENV.get("BENCH_HYPER_URL", "") + "/v1/chat/completions", "auth": f"Bearer {proxy_key}"},
    }


# --- process memory ------------------------------------------------------------------------


def children(pid):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rss_kib(pid, with_children=False):
    """VmRSS of pid (and of its direct children, for nginx's master and workers), in KiB."""
    total = 0
    for p in [pid] + (children(pid) if with_children else []):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def proxy_rss():
    rss = {
        "gateway": rss_kib(int(ENV["BENCH_GATEWAY_PID"])),
        "nginx": rss_kib(int(ENV["BENCH_NGINX_PID"]), with_children=True),
    }
    if HYPER:
        rss["hyper"] = rss_kib(int(ENV["BENCH_HYPER_PID"]))
    return rss


class RssPeak:
    """Samples the proxies' RSS every 100 ms while the block runs; keeps the maximum."""

    def __enter__(self):
        self.peak = dict.fromkeys(proxy_rss(), 0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def run(self):
        while not self.stop.is_set():
            for name, value in proxy_rss().items():
                self.peak[name] = max(self.peak[name], value)
            self.stop.wait(0.1)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        for name, value in proxy_rss().items():
            self.peak[name] = max(self.peak[name], value)
        return False


def alive():
    for name in ("BENCH_MOCK_PID", "BENCH_NGINX_PID", "BENCH_GATEWAY_PID"):
        if not Path(f"/proc/{ENV[name]}").exists():
            raise SystemExit(f"{name.removeprefix('BENCH_').removesuffix('_PID').lower()} is gone")
    for pid in filter(None, ENV.get("BENCH_CLUSTER_PIDS", "").split(",")):
        if not Path(f"/proc/{pid}").exists():
            raise SystemExit(f"cluster node {pid} is gone")
    if HYPER and not Path(f"/proc/{ENV['BENCH_HYPER_PID']}").exists():
        raise SystemExit("bare-proxy is gone")


# --- load generators -----------------------------------------------------------------------


def run(cmd, timeout):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def oha(target, seconds, concurrency=1, rate=None):
    paced = ["-q", str(rate), "--latency-correction"] if rate else []
    out = run(
        [
            ENV["BENCH_OHA"], "-z", f"{seconds}s", "-c", str(concurrency), *paced, "--no-tui",
            "--output-format", "json", "-m", "POST", "-T", "application/json", "-d", BODY,
            "-H", f"Authorization: {target['auth']}", target["url"],
        ],
        timeout=seconds + 60,
    )
    data = json.loads(out)
    codes = data.get("statusCodeDistribution", {})
    total = sum(codes.values())
    ok = codes.get("200", 0)
    if total == 0 or ok != total:
        raise RuntimeError(f"oha against {target['url']}: status codes {codes}, errors {data.get('errorDistribution')}")
    pct = data["latencyPercentiles"]
    return {"p50_us": pct["p50"] * 1e6, "p99_us": pct["p99"] * 1e6, "rps": data["summary"]["requestsPerSec"]}


def wrk_script(name, target):
    path = Path(ENV["BENCH_WORK"]) / f"wrk-{name}.lua"
    path.write_text(
        f"""wrk.method = "POST"
wrk.body = [[{BODY}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "{target['auth']}"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nBENCH {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}}\\n', summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""
    )
    return str(path)


def wrk(name, target, concurrency, seconds, threads):
    out = run(
        [ENV["BENCH_WRK"], f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "-s", wrk_script(name, target), target["url"]],
        timeout=seconds + 60,
    )
    line = next(l for l in out.splitlines() if l.startswith("BENCH "))
    data = json.loads(line.removeprefix("BENCH "))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    if errors:
        raise RuntimeError(f"wrk -c{concurrency} against {target['url']}: {data}")
    return {"rps": data["requests"] / (data["duration_us"] / 1e6), "p50_us": data["p50_us"], "p99_us": data["p99_us"]}


def client(args, timeout):
    return json.loads(run([ENV["BENCH_CLIENT"], *args], timeout=timeout))


def ttff(target):
    data = client(
        [
            "ttff", "--url", target["url"], "-H", f"Authorization: {target['auth']}",
            "-H", f"x-mock-frames: {TTFF_FRAMES}", "-H", f"x-mock-pace-ms: {TTFF_PACE_MS}",
            "--body", STREAM_BODY, "--requests", str(TTFF_REQUESTS), "--warmup", str(TTFF_WARMUP),
        ],
        timeout=600,
    )
    if data["errors"] or data["frames_per_response"] != TTFF_FRAMES + DATA_FRAMES_EXTRA:
        raise RuntimeError(f"ttff against {target['url']}: {data}")
    return {
        "p50_us": data["first_frame_us"]["p50"],
        "p99_us": data["first_frame_us"]["p99"],
        "total_p50_us": data["total_us"]["p50"],
    }


def stream_count():
    """The stream target, capped so that a proxy (two descriptors per stream) fits in RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return min(STREAM_TARGET, (soft - FD_RESERVE) // 2), soft


def streams(target, count):
    expect = STREAM_FRAMES + DATA_FRAMES_EXTRA
    with RssPeak() as peak:
        data = client(
            [
                "streams", "--url", target["url"], "-H", f"Authorization: {target['auth']}",
                "-H", f"x-mock-frames: {STREAM_FRAMES}", "-H", f"x-mock-pace-ms: {STREAM_PACE_MS}",
                "--body", STREAM_BODY, "--streams", str(count), "--expect-frames", str(expect),
                "--timeout-secs", "180",
            ],
            timeout=240,
        )
    data["rss_peak_kib"] = peak.peak
    if data["failed"]:
        log(f"  {data['failed']} streams failed: {data['errors']}")
    return data


# --- rounds ---------------------------------------------------------------------------------


def measure():
    t = targets()
    threads = 1 if ENV["BENCH_PINNING"].startswith("yes") else 2
    count, nofile = stream_count()
    results = {
        name: {"latency": [], "rps32": [], "rps64": [], "ttff": [], "streams": [], "ladder": {r: [] for r in LADDER_RATES}}
        for name in LOADED
    }
    load_peaks = []

    alive()
    time.sleep(SETTLE_S)
    idle = proxy_rss()
    log(f"idle RSS: gateway {idle['gateway'] / 1024:.1f} MiB, nginx {idle['nginx'] / 1024:.1f} MiB")

    for round_no in range(1, ROUNDS + 1):
        log(f"round {round_no}/{ROUNDS}")
        for name in LOADED:
            alive()
            oha(t[name], WARMUP_S)
            r = oha(t[name], LATENCY_S)
            results[name]["latency"].append(r)
            log(f"  {name:8} c=1   p50 {r['p50_us']:8.1f} µs  p99 {r['p99_us']:8.1f} µs  ({r['rps']:,.0f} req/s)")
        with RssPeak() as peak:
            for concurrency in CONCURRENCIES:
                for name in LOADED:
                    alive()
                    r = wrk(name, t[name], concurrency, THROUGHPUT_S, threads)
                    results[name][f"rps{concurrency}"].append(r)
                    log(f"  {name:8} c={concurrency:<3} {r['rps']:9,.0f} req/s  p50 {r['p50_us']} µs  p99 {r['p99_us']} µs")
            for rate in LADDER_RATES:
                for name in TARGETS:
                    alive()
                    r = oha(t[name], LADDER_S, LADDER_CONNECTIONS, rate)
                    results[name]["ladder"][rate].append(r)
                    log(f"  {name:8} {rate:>5}/s p50 {r['p50_us']:8.1f} µs  p99 {r['p99_us']:8.1f} µs  ({r['rps']:,.0f} req/s)")
        load_peaks.append(peak.peak)
        log(f"  RSS peak under load: gateway {peak.peak['gateway'] / 1024:.1f} MiB, nginx {peak.peak['nginx'] / 1024:.1f} MiB")
        for name in TARGETS:
            alive()
            r = ttff(t[name])
            results[name]["ttff"].append(r)
            log(f"  {name:8} SSE first frame p50 {r['p50_us']:8.1f} µs  p99 {r['p99_us']:8.1f} µs  (whole stream {r['total_p50_us'] / 1e3:.1f} ms)")

    # After load: once the request/response and SSE rounds are over, before the stream rounds
    # (whose 10,000 connections would dominate every later reading).
    time.sleep(SETTLE_S)
    after = proxy_rss()
    log(f"after-load RSS: gateway {after['gateway'] / 1024:.1f} MiB, nginx {after['nginx'] / 1024:.1f} MiB")

    for round_no in range(1, ROUNDS + 1):
        log(f"stream round {round_no}/{ROUNDS}: {count:,} concurrent streams per target")
        # hyper alone holds streams in the first round only, so that the later rounds load the
        # loopback's ephemeral ports (60 s in TIME_WAIT) no more than they did before it took part.
        for name in TARGETS + (("hyper",) if HYPER and round_no == 1 else ()):
            alive()
            r = streams(t[name], count)
            results[name]["streams"].append(r)
            rss = r["rss_peak_kib"].get(name)
            log(
                f"  {name:8} streams: peak open {r['peak_open']}/{count}, complete {r['complete']}, "
                f"frames lost {r['frames_lost']}, last head at {r['last_head_ms']:.0f} ms, first end at "
                f"{r['first_end_ms'] or 0:.0f} ms" + (f", RSS peak {rss / 1024:.1f} MiB" if rss else "")
            )
            time.sleep(2)  # let closed connections drain before the next target

    time.sleep(SETTLE_S)
    after_streams = proxy_rss()
    log(f"RSS after the stream rounds: gateway {after_streams['gateway'] / 1024:.1f} MiB, nginx {after_streams['nginx'] / 1024:.1f} MiB")
    return {
        "results": results,
        "idle": idle,
        "load_peaks": load_peaks,
        "after": after,
        "after_streams": after_streams,
        "stream_count": count,
        "nofile": nofile,
    }


# --- report ---------------------------------------------------------------------------------


def med(values):
    return statistics.median(values)


def us(value):
    return f"{value:,.0f} µs" if abs(value) >= 10 else f"{value:.1f} µs"


def signed_us(value):
    return ("+" if value >= 0 else "−") + us(abs(value))


def mib(kib):
    return f"{kib / 1024:.1f} MB"


def ratio(a, b):
    return f"{a / b:.2f}×" if b > 0 else "–"


def verdict(ok):
    """`ok` is a bool, or (bool, note) when the figure was measured under a stated limit."""
    ok, note = ok if isinstance(ok, tuple) else (ok, "")
    return ("**pass**" if ok else "**miss**") + (f" {note}" if note else "")


def report(data):
    res, count = data["results"], data["stream_count"]

    # Added latency: per round, through-X minus direct of the same round; then the median.
    def added(name, key):
        return med([x[key] - d[key] for x, d in zip(res[name]["latency"], res["direct"]["latency"])])

    base50 = med([r["p50_us"] for r in res["direct"]["latency"]])
    base99 = med([r["p99_us"] for r in res["direct"]["latency"]])
    add = {name: (added(name, "p50_us"), added(name, "p99_us")) for name in ("nginx", "gateway")}
    rps = {name: {c: med([r["rps"] for r in res[name][f"rps{c}"]]) for c in CONCURRENCIES} for name in TARGETS}
    tt = {name: (med([r["p50_us"] for r in res[name]["ttff"]]), med([r["p99_us"] for r in res[name]["ttff"]])) for name in TARGETS}
    tt_total = {name: med([r["total_p50_us"] for r in res[name]["ttff"]]) for name in TARGETS}

    def stream_fig(name, key):
        return med([r[key] for r in res[name]["streams"]])

    held = {name: stream_fig(name, "peak_open") for name in TARGETS}
    lost = {name: stream_fig(name, "frames_lost") for name in TARGETS}
    failed = {name: stream_fig(name, "failed") for name in TARGETS}
    stream_rss = {
        name: med([r["rss_peak_kib"][name] for r in res[name]["streams"]]) for name in ("nginx", "gateway")
    }
    idle, after = data["idle"], data["after"]
    load = {name: med([p[name] for p in data["load_peaks"]]) for name in ("nginx", "gateway")}

    def held_cell(name):
        cell = f"{held[name]:,.0f} held, {lost[name]:,.0f} lost"
        if failed[name]:
            cell += f", {failed[name]:,.0f} failed"
        if name in stream_rss:
            cell += f"; RSS {mib(stream_rss[name])}"
        return cell

    rows = [
        (
            "added latency p50 / p99 at concurrency 1",
            f"0 / 0 (base {us(base50)} / {us(base99)})",
            f"{signed_us(add['nginx'][0])} / {signed_us(add['nginx'][1])}",
            f"{signed_us(add['gateway'][0])} / {signed_us(add['gateway'][1])}",
            f"{ratio(add['gateway'][0], add['nginx'][0])} / {ratio(add['gateway'][1], add['nginx'][1])}",
        ),
        (
            "requests/s at concurrency 32 and 64",
            *[f"{rps[n][32]:,.0f} / {rps[n][64]:,.0f}" for n in TARGETS],
            f"{100 * rps['gateway'][32] / rps['nginx'][32]:.0f} % / {100 * rps['gateway'][64] / rps['nginx'][64]:.0f} %",
        ),
        (
            "SSE time to first frame, c=1",
            f"{us(tt['direct'][0])} / {us(tt['direct'][1])}",
            f"{us(tt['nginx'][0])} / {us(tt['nginx'][1])} ({signed_us(tt['nginx'][0] - tt['direct'][0])})",
            f"{us(tt['gateway'][0])} / {us(tt['gateway'][1])} ({signed_us(tt['gateway'][0] - tt['direct'][0])})",
            f"{ratio(tt['gateway'][0], tt['nginx'][0])} / {ratio(tt['gateway'][1], tt['nginx'][1])}",
        ),
        (
            f"concurrent SSE streams held ({STREAM_TARGET:,} target), frames lost",
            held_cell("direct"),
            held_cell("nginx"),
            held_cell("gateway"),
            f"RSS {ratio(stream_rss['gateway'], stream_rss['nginx'])}",
        ),
        (
            "RSS idle / under load / after load",
            "–",
            f"{mib(idle['nginx'])} / {mib(load['nginx'])} / {mib(after['nginx'])}",
            f"{mib(idle['gateway'])} / {mib(load['gateway'])} / {mib(after['gateway'])}",
            f"{ratio(idle['gateway'], idle['nginx'])} / {ratio(load['gateway'], load['nginx'])} / {ratio(after['gateway'], after['nginx'])}",
        ),
    ]

    # The fixed-rate ladder: added latency per round against direct of the same round.
    def ladder_added(name, rate, key):
        return med([x[key] - d[key] for x, d in zip(res[name]["ladder"][rate], res["direct"]["ladder"][rate])])

    ladder_rows = []
    for rate in LADDER_RATES:
        direct = [med([r[k] for r in res["direct"]["ladder"][rate]]) for k in ("p50_us", "p99_us")]
        cells = [f"{us(direct[0])} / {us(direct[1])}"]
        for name in ("nginx", "gateway"):
            cells.append(f"{signed_us(ladder_added(name, rate, 'p50_us'))} / {signed_us(ladder_added(name, rate, 'p99_us'))}")
        achieved = med([r["rps"] for r in res["gateway"]["ladder"][rate]])
        ladder_rows.append((f"{rate:,}", *cells, f"{achieved:,.0f}"))
    ladder_goal = [r for r in LADDER_RATES if r <= 3000]
    ladder_p99 = {r: ladder_added("gateway", r, "p99_us") for r in ladder_goal}
    per_stream_kib = (stream_rss["gateway"] - after["gateway"]) / max(count, 1)

    streams_ok = held["gateway"] >= count and lost["gateway"] == 0 and not failed["gateway"]
    capped = count < STREAM_TARGET
    targets_rows = [
        (
            "added latency",
            f"p50 ≤ 2× nginx's added p50; p99 ≤ 1 ms added",
            f"{ratio(add['gateway'][0], add['nginx'][0])} nginx's p50; p99 {signed_us(add['gateway'][1])}",
            add["gateway"][0] <= 2 * add["nginx"][0] and add["gateway"][1] <= 1000,
        ),
        (
            "throughput",
            "≥ 50 % of nginx's at c=32 and c=64",
            f"{100 * rps['gateway'][32] / rps['nginx'][32]:.0f} % / {100 * rps['gateway'][64] / rps['nginx'][64]:.0f} %",
            all(rps["gateway"][c] >= 0.5 * rps["nginx"][c] for c in CONCURRENCIES),
        ),
        (
            "latency at fixed load",
            "added p99 ≤ 1 ms at " + " and ".join(f"{r:,}" for r in ladder_goal) + " requests/s",
            " / ".join(f"{signed_us(ladder_p99[r])} at {r:,}" for r in ladder_goal),
            bool(ladder_goal) and all(v <= 1000 for v in ladder_p99.values()),
        ),
        (
            "SSE first frame",
            "p50 within 250 µs of direct",
            f"{signed_us(tt['gateway'][0] - tt['direct'][0])} (whole stream {tt_total['gateway'] / 1e3:.1f} ms vs {tt_total['direct'] / 1e3:.1f} ms direct)",
            tt["gateway"][0] - tt["direct"][0] <= 250,
        ),
        (
            "concurrent streams",
            f"{STREAM_TARGET:,} streams < 300 MB (≤ 25 KB a stream), no frame lost",
            f"{held['gateway']:,.0f} held, {lost['gateway']:,.0f} lost, {mib(stream_rss['gateway'])} "
            f"({per_stream_kib * 1.024:,.1f} KB a stream over the after-load RSS)",
            (
                streams_ok and stream_rss["gateway"] < 300 * 1024 and per_stream_kib * 1024 <= 25_000,
                f"at {count:,} streams (cap)" if capped else "",
            ),
        ),
        (
            "memory",
            "idle < 30 MB, < 100 MB under load",
            f"{mib(idle['gateway'])} idle, {mib(load['gateway'])} under load",
            idle["gateway"] < 30 * 1024 and load["gateway"] < 100 * 1024,
        ),
    ]
    return rows, targets_rows, ladder_rows


def cluster_rows(data):
    """One gateway (SQLite) against two nodes in cluster mode behind nginx, same rounds."""
    res = data["results"]
    if "cluster" not in res:
        return []

    def added(name, key):
        return med([x[key] - d[key] for x, d in zip(res[name]["latency"], res["direct"]["latency"])])

    add = {name: (added(name, "p50_us"), added(name, "p99_us")) for name in ("nginx", "gateway", "cluster")}
    rps = {name: {c: med([r["rps"] for r in res[name][f"rps{c}"]]) for c in CONCURRENCIES} for name in LOADED}
    return [
        (
            "added latency p50 / p99 at concurrency 1",
            f"{signed_us(add['gateway'][0])} / {signed_us(add['gateway'][1])}",
            f"{signed_us(add['cluster'][0])} / {signed_us(add['cluster'][1])}",
            f"{signed_us(add['cluster'][0] - add['gateway'][0] - add['nginx'][0])} / "
            f"{signed_us(add['cluster'][1] - add['gateway'][1] - add['nginx'][1])}",
        ),
        (
            "requests/s at concurrency 32 and 64",
            f"{rps['gateway'][32]:,.0f} / {rps['gateway'][64]:,.0f}",
            f"{rps['cluster'][32]:,.0f} / {rps['cluster'][64]:,.0f}",
            f"{100 * rps['cluster'][32] / rps['gateway'][32]:.0f} % / {100 * rps['cluster'][64] / rps['gateway'][64]:.0f} %"
            " of one gateway",
        ),
    ]


def hyper_rows(data):
    """nginx, hyper alone and the gateway, same rounds: how much of the gap is the HTTP stack."""
    res = data["results"]
    if "hyper" not in res:
        return []
    names = ("nginx", "hyper", "gateway")

    def added(name, key):
        return med([x[key] - d[key] for x, d in zip(res[name]["latency"], res["direct"]["latency"])])

    add = {name: (added(name, "p50_us"), added(name, "p99_us")) for name in names}
    rps = {name: {c: med([r["rps"] for r in res[name][f"rps{c}"]]) for c in CONCURRENCIES} for name in names}
    count, after = data["stream_count"], data["after"]
    # KB a held stream: the peak over the stream rounds above the RSS after the load rounds (runs
    # recorded before hyper alone held streams have no such figure).
    per_stream = None
    if res["hyper"]["streams"] and "hyper" in after:
        per_stream = {
            name: (med([r["rss_peak_kib"][name] for r in res[name]["streams"]]) - after[name]) * 1024 / 1000 / max(count, 1)
            for name in names
        }
    rows = [
        (
            "added latency p50 / p99 at concurrency 1",
            *[f"{signed_us(add[n][0])} / {signed_us(add[n][1])}" for n in names],
        ),
        (
            "requests/s at concurrency 32 and 64",
            *[f"{rps[n][32]:,.0f} / {rps[n][64]:,.0f}" for n in names],
        ),
        (
            "gateway as a share of each",
            f"{100 * rps['gateway'][32] / rps['nginx'][32]:.0f} % / {100 * rps['gateway'][64] / rps['nginx'][64]:.0f} %",
            f"{100 * rps['gateway'][32] / rps['hyper'][32]:.0f} % / {100 * rps['gateway'][64] / rps['hyper'][64]:.0f} %",
            "–",
        ),
    ]
    if per_stream:
        rows.append((f"RSS a held SSE stream ({count:,} at once)", *[f"{per_stream[n]:.1f} KB" for n in names]))
    return rows


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def version(cmd, timeout=10):
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        return (result.stdout + result.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def render(data, rows, targets_rows, ladder_rows, started, finished):
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    count = data["stream_count"]
    lines = [
        f"# Loopback benchmark: gateway vs nginx vs direct{' (quick smoke run)' if QUICK else ''}",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC (run took {(finished - started).seconds // 60} min {(finished - started).seconds % 60} s)",
        f"- git commit: {commit}" + (" (with uncommitted changes in the tree)" if dirty else ""),
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; pinned: {ENV['BENCH_PINNING']}",
        f"- nginx workers: {ENV['BENCH_NGINX_WORKERS']}; gateway: release build, SQLite, 1 group with 100 keys, "
        "request logging and metrics on"
        + (f"; group settings {ENV['BENCH_GROUP_CONFIG']}" if ENV.get("BENCH_GROUP_CONFIG") else ""),
        f"- tools: {version([ENV['BENCH_OHA'], '--version'])}; {version([ENV['BENCH_WRK'], '-v'])}; "
        f"{version([ENV['BENCH_NGINX_BIN'], '-v']).replace('nginx version: ', '')}",
        f"- method: {ROUNDS} interleaved round(s), medians over rounds; c=1 latency with oha "
        f"({LATENCY_S} s after {WARMUP_S} s warm-up), requests/s with wrk ({THROUGHPUT_S} s each), SSE first "
        f"frame with bench-client ({TTFF_REQUESTS} streams, {TTFF_FRAMES} frames {TTFF_PACE_MS} ms apart), "
        f"{count:,} concurrent streams of {STREAM_FRAMES} frames {STREAM_PACE_MS} ms apart, "
        f"fixed-rate ladder at {', '.join(f'{r:,}' for r in LADDER_RATES)} requests/s with oha -q",
    ]
    lines.append(
        f"- RSS after the stream rounds: gateway {mib(data['after_streams']['gateway'])}, "
        f"nginx {mib(data['after_streams']['nginx'])}"
    )
    if count < STREAM_TARGET:
        lines.append(
            f"- streams capped at {count:,} of {STREAM_TARGET:,}: RLIMIT_NOFILE is {data['nofile']:,} here and "
            "a proxy needs two descriptors per stream"
        )
    lines += [
        "",
        "| figure | direct | nginx | gateway | gateway / nginx |",
        "|---|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in rows],
        "",
        "Latency cells are p50 / p99; SSE cells are p50 / p99 of the time from sending the request to the first "
        "`data:` frame (difference to direct in brackets); RSS is VmRSS (nginx: master and workers).",
        "",
        "| target | goal | gateway | result |",
        "|---|---|---|---|",
        *[f"| {name} | {goal} | {value} | {verdict(ok)} |" for name, goal, value, ok in targets_rows],
        "",
    ]
    if ladder_rows:
        lines += [
            "## Latency at fixed load",
            "",
            f"Open loop: oha offers a fixed rate over {LADDER_CONNECTIONS} connections for {LADDER_S} s "
            "(`-q`, `--latency-correction`, so a stall counts for every request it delays), one target at a "
            "time, in each round after the requests/s runs; added latency is through-the-proxy minus direct "
            "of the same round, then the median over rounds.",
            "",
            "| offered requests/s | direct p50 / p99 | nginx added p50 / p99 | gateway added p50 / p99 | gateway achieved requests/s |",
            "|---|---|---|---|---|",
            *[f"| {' | '.join(row)} |" for row in ladder_rows],
            "",
        ]
    # The latest profile's reading, kept by hand beside the results (bench/README.md).
    reading = ROOT / "bench" / "results" / "where-the-time-goes.md"
    if reading.exists():
        lines += [reading.read_text().rstrip(), ""]
    stack = hyper_rows(data)
    if stack:
        lines += [
            "## The HTTP stack alone",
            "",
            "`bare-proxy` (bench/client/src/bin/bare-proxy.rs) is a reverse proxy of hyper's HTTP/1 server and "
            "hyper-util's pooled client on tokio's single-threaded runtime, the crates and runtime the gateway is "
            "built on, with nothing else: it sets the upstream key and streams the answer back. Pinned where the "
            "gateway is, measured in the same rounds. What separates the gateway from it is the gateway's own "
            "work (authentication, key selection, retries, the request log, metrics, usage), not the HTTP stack.",
            "",
            "| figure | nginx | hyper alone | gateway |",
            "|---|---|---|---|",
            *[f"| {' | '.join(row)} |" for row in stack],
            "",
        ]
    two_nodes = cluster_rows(data)
    if two_nodes:
        lines += [
            "## Two nodes",
            "",
            "Two gateway nodes in cluster mode (PostgreSQL, a redis-server of the run, request logging on) "
            "behind a second nginx that balances them round robin, pinned where the gateway is; measured in "
            "the same rounds as the table above. The cost column subtracts the single gateway's and nginx's "
            "added latency: what cluster mode and the shared database add beyond the extra hop. On two cores "
            "the nodes share the gateway's one core, so this row shows the cost of cluster mode, not scaling.",
            "",
            "| figure | one gateway (SQLite) | two nodes behind nginx | beyond one gateway + one nginx hop |",
            "|---|---|---|---|",
            *[f"| {' | '.join(row)} |" for row in two_nodes],
            "",
        ]
    return "\n".join(lines)


def main():
    started = datetime.datetime.now(datetime.timezone.utc)
    data = measure()
    finished = datetime.datetime.now(datetime.timezone.utc)
    rows, targets_rows, ladder_rows = report(data)
    text = render(data, rows, targets_rows, ladder_rows, started, finished)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "raw").mkdir(exist_ok=True)
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if QUICK:
        paths = [results / "quick.md"]
        raw = results / "raw" / "quick.json"
    else:
        paths = [results / "latest.md", results / f"{started:%Y-%m-%d}-{commit}.md"]
        raw = results / "raw" / f"{started:%Y-%m-%d}-{commit}.json"
    for path in paths:
        path.write_text(text)
    raw.write_text(json.dumps(data, indent=1) + "\n")
    print(text)
    log("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in [*paths, raw]))


if __name__ == "__main__":
    main()
