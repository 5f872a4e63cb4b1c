#!/usr/bin/env bash
# Times an import of 100,000 keys through the admin API (`POST /api/keys/add-async`, from the call
# until `GET /api/tasks/status` reports the task finished) on a release build, on SQLite and, when
# reachable, PostgreSQL and MariaDB (databases created and dropped here). Not part of `make test`:
# it measures, it does not assert.
#
#   scripts/measure-import.sh            # 100,000 keys
#   KEYS=20000 scripts/measure-import.sh
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS="${KEYS:-100000}"
PG_URL="${TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
MYSQL_URL="${TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
AUTH_KEY="sk-measure-admin-Zq7Lx2Vc9Nb4Tm6P"

cargo build -q --release -p gpt-load-gateway --bin gpt-load-gateway
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/gpt-load-gateway"
work=$(mktemp -d)
gateway=""
cleanup() {
  [ -n "$gateway" ] && kill "$gateway" 2>/dev/null && wait "$gateway" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

python3 - "$KEYS" >"$work/keys.txt" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f"sk-import-{i:07d}-abcdefghijklmnopqrstuvwxyz0123456789")
PY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

# measure <label> <DATABASE_DSN or empty for SQLite>
measure() {
  local label=$1 dsn=$2 port dir
  port=$(free_port)
  dir="$work/$label"
  mkdir -p "$dir"
  (cd "$dir" && exec env HOST=127.0.0.1 PORT="$port" AUTH_KEY="$AUTH_KEY" ${dsn:+DATABASE_DSN="$dsn"} \
    "$bin" >"$dir/gateway.log" 2>&1) &
  gateway=$!
  for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.05; done
  local auth=(-H "Authorization: Bearer $AUTH_KEY")
  local group_id
  group_id=$(curl -sf "${auth[@]}" -H 'Content-Type: application/json' -X POST "http://127.0.0.1:$port/api/groups" \
    -d '{"name":"import","channel_type":"openai","test_model":"m","upstreams":[{"url":"http://127.0.0.1:9","weight":1}]}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
  local started ended status
  started=$(date +%s.%N)
  curl -sf "${auth[@]}" -X POST "http://127.0.0.1:$port/api/keys/add-async" \
    -F "group_id=$group_id" -F "file=@$work/keys.txt;type=text/plain" >/dev/null
  while :; do
    status=$(curl -sf "${auth[@]}" "http://127.0.0.1:$port/api/tasks/status")
    python3 -c 'import json,sys; sys.exit(0 if not json.loads(sys.argv[1])["data"]["is_running"] else 1)' "$status" && break
    sleep 0.02
  done
  ended=$(date +%s.%N)
  python3 - "$label" "$started" "$ended" "$status" <<'PY'
import json, sys
label, started, ended, status = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])["data"]
result = status.get("result") or {}
print(f"| {label} | {ended - started:.2f} s | {result.get('added_count')} added | {status.get('error') or 'ok'} |")
PY
  kill "$gateway" && wait "$gateway" 2>/dev/null || true
  gateway=""
}

db="gptload_measure_$$"
echo "| backend | add-async of $KEYS keys, call to finished | result | error |"
echo "|---|---|---|---|"
measure sqlite ""
if command -v psql >/dev/null && psql "$PG_URL" -qc "CREATE DATABASE $db" 2>/dev/null; then
  measure postgresql "${PG_URL%/*}/$db"
  psql "$PG_URL" -qc "DROP DATABASE $db" >/dev/null
else
  echo "| postgresql | skipped: $PG_URL unreachable | | |"
fi
if command -v mariadb >/dev/null && mariadb -h 127.0.0.1 -u root -e "CREATE DATABASE $db" 2>/dev/null; then
  measure mariadb "${MYSQL_URL%/*}/$db"
  mariadb -h 127.0.0.1 -u root -e "DROP DATABASE $db"
else
  echo "| mariadb | skipped: $MYSQL_URL unreachable | | |"
fi
