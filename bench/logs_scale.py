#!/usr/bin/env python3
"""The admin pages over a large request log: `bench/logs_scale.py BINARY [ROWS] [POSTGRES_URL]`.

Creates a fresh database (a SQLite file, or, given POSTGRES_URL such as
`postgres://postgres@127.0.0.1:5432/postgres`, a new PostgreSQL database next to it), lets the
release binary migrate it, stops it, fills `request_logs` with ROWS rows (default 10,000,000)
spread over 30 days, 8 groups, 6 models and 2,000 keys, 4 % failures and 5 % retries, derives
the hourly tables from them as the log writer would have, starts the gateway again and times, over
SCALE_REPEAT requests each (p50 and p95, in milliseconds), the requests the console makes: the
logs page unfiltered and with each filter, the dashboard's cards and its chart.

Rows are generated inside the database (`WITH RECURSIVE` on SQLite, `generate_series` on
PostgreSQL); needs the `sqlite3` or `psql` client. Prints one Markdown table. Loopback only;
stops everything it started and drops what it created. Knobs: SCALE_REPEAT (10).
"""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from scale import Gateway, timed  # noqa: E402

REPEAT = int(os.environ.get("SCALE_REPEAT", "10"))
DAYS = 30
GROUPS = 8
MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "o3-mini", "claude-sonnet-4", "gemini-2.5-flash"]
KEYS = 2_000

# One row per `i`; `i` also picks its second in the last DAYS days (newest first), its group,
# model, key and outcome. Written once for both databases: `{timestamp}` is the SQL for the
# row's time, `{hexkey}` the key's hash from its number.
ROW = """
  '{prefix}' || {i},
  {timestamp},
  1 + {i} % {groups}, 'group-' || (1 + {i} % {groups}), 0, '',
  'sk-scale-' || ({i} % {keys}), {hexkey}, {model},
  CASE WHEN {i} % 25 = 0 THEN {false} ELSE {true} END,
  '10.0.' || ({i} % 200) || '.' || ({i} % 250),
  CASE WHEN {i} % 25 = 0 THEN 429 ELSE 200 END,
  '/proxy/group-' || (1 + {i} % {groups}) || '/v1/chat/completions',
  100 + {i} % 900,
  CASE WHEN {i} % 25 = 0 THEN 'Rate limit reached for requests' ELSE '' END,
  'openai-python/1.59.0',
  CASE WHEN {i} % 20 = 1 THEN 'retry' ELSE 'final' END,
  'http://127.0.0.1:9', CASE WHEN {i} % 2 = 0 THEN {true} ELSE {false} END, '',
  1 + {i} % {keys}, 1, 80, 'req-' || {i},
  120, 40, 0, 0, 160, NULL
"""
COLUMNS = """id, timestamp, group_id, group_name, parent_group_id, parent_group_name, key_value,
  key_hash, model, is_success, source_ip, status_code, request_path, duration, error_message,
  user_agent, request_type, upstream_addr, is_stream, request_body, key_id, attempt, ttfb_ms,
  request_id, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens,
  access_key_id"""


def model_case(i):
    return "CASE " + " ".join(f"WHEN {i} % {len(MODELS)} = {n} THEN '{m}'" for n, m in enumerate(MODELS)) + " END"


def sqlite_script(rows):
    i = "i"
    seconds_ago = f"({i} * {DAYS * 86400}) / {rows}"
    row = ROW.format(prefix="log-", i=i, groups=GROUPS, keys=KEYS, model=model_case(i),
                     timestamp=f"datetime(unixepoch('now') - {seconds_ago}, 'unixepoch')",
                     hexkey=f"printf('%064x', {i} % {KEYS})", true="1", false="0")
    return f"""
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
PRAGMA cache_size = -262144;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rows - 1})
INSERT INTO request_logs ({COLUMNS}) SELECT {row} FROM n;
{hourly_sql("strftime('%Y-%m-%d %H:00:00', timestamp)", "datetime('now')")}
COMMIT;
"""


def postgres_script(rows):
    i = "i"
    seconds_ago = f"({i}::bigint * {DAYS * 86400}) / {rows}"
    row = ROW.format(prefix="log-", i=i, groups=GROUPS, keys=KEYS, model=model_case(i),
                     timestamp=f"now() AT TIME ZONE 'UTC' - make_interval(secs => {seconds_ago})",
                     hexkey=f"lpad(to_hex({i} % {KEYS}), 64, '0')", true="true", false="false")
    return f"""
SET synchronous_commit = off;
BEGIN;
INSERT INTO request_logs ({COLUMNS}) SELECT {row} FROM generate_series(0, {rows - 1}) AS n(i);
{hourly_sql("date_trunc('hour', timestamp)", "now() AT TIME ZONE 'UTC'")}
COMMIT;
ANALYZE;
"""


def hourly_sql(hour, now):
    """The hourly tables as the log writer keeps them: finals per group and hour; every attempt
    and its tokens per group, key, model, access key and hour."""
    return f"""
INSERT INTO group_hourly_stats (time, group_id, success_count, failure_count, created_at, updated_at)
SELECT {hour}, group_id,
       SUM(CASE WHEN is_success THEN 1 ELSE 0 END), SUM(CASE WHEN is_success THEN 0 ELSE 1 END),
       {now}, {now}
FROM request_logs WHERE request_type = 'final' GROUP BY 1, 2;
INSERT INTO usage_hourly (time, group_id, key_id, model, access_key_id, requests, failures,
  prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens, updated_at)
SELECT {hour}, group_id, key_id, model, 0, COUNT(*), SUM(CASE WHEN is_success THEN 0 ELSE 1 END),
       SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(reasoning_tokens),
       SUM(total_tokens), {now}
FROM request_logs GROUP BY 1, 2, 3, 4;
"""


def main():
    if len(sys.argv) not in (2, 3, 4):
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    rows = int(sys.argv[2]) if len(sys.argv) >= 3 else 10_000_000
    server = sys.argv[3] if len(sys.argv) == 4 else None
    work = tempfile.mkdtemp(prefix="gpt-load-logs-scale-")
    gateway = Gateway(binary, work, "logs-" + secrets.token_hex(16))
    database = None
    try:
        if server:
            database = "logs_scale_" + secrets.token_hex(4)
            subprocess.run(["psql", server, "-qc", f"CREATE DATABASE {database}"], check=True)
            parsed = urllib.parse.urlsplit(server)
            dsn = urllib.parse.urlunsplit(parsed._replace(path="/" + database))
            gateway.env = {"DATABASE_DSN": dsn}
            backend = "PostgreSQL"
        else:
            dsn = None
            backend = "SQLite"
        gateway.start()
        for n in range(1, GROUPS + 1):
            gateway.api("POST", "/api/groups", {
                "name": f"group-{n}", "channel_type": "openai", "test_model": "gpt-4o-mini",
                "upstreams": [{"url": "http://127.0.0.1:9", "weight": 1}],
            })
        gateway.stop()
        began = time.monotonic()
        if server:
            subprocess.run(["psql", dsn, "-q", "-v", "ON_ERROR_STOP=1"], input=postgres_script(rows),
                           text=True, check=True)
        else:
            subprocess.run(["sqlite3", os.path.join(work, "gpt-load.db")], input=sqlite_script(rows),
                           text=True, check=True, stdout=subprocess.DEVNULL)
        filled = time.monotonic() - began
        gateway.start()

        figures = [
            ("logs page, no filter", "/api/logs?page=1&page_size=15"),
            ("logs page 200", "/api/logs?page=200&page_size=15"),
            ("logs page, one group", "/api/logs?page=1&page_size=15&group_name=group-3"),
            ("logs page, one model", "/api/logs?page=1&page_size=15&model=o3-mini"),
            ("logs page, failures", "/api/logs?page=1&page_size=15&is_success=false"),
            ("logs page, last 24 hours", "/api/logs?page=1&page_size=15&start_time="
             + urllib.parse.quote(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400)))),
            ("dashboard cards", "/api/dashboard/stats"),
            ("dashboard chart", "/api/dashboard/chart"),
        ]
        results = []
        for name, path in figures:
            p50, p95, answer = timed(gateway, path, REPEAT)
            if answer.get("code", 0) != 0:
                raise SystemExit(f"{path} answered {answer}")
            results.append((name, p50, p95))
    finally:
        gateway.stop()
        shutil.rmtree(work, ignore_errors=True)
        if database:
            subprocess.run(["psql", server, "-qc", f"DROP DATABASE IF EXISTS {database}"], check=False)

    print(f"| {backend}, {rows:,} request-log rows (filled in {filled:.0f} s) | p50 | p95 | target | result |")
    print("|---|---|---|---|---|")
    for name, p50, p95 in results:
        verdict = "**pass**" if p95 <= 300 else "**miss**"
        print(f"| {name} | {p50:,.0f} ms | {p95:,.0f} ms | p95 ≤ 300 ms | {verdict} |")


if __name__ == "__main__":
    main()
