#!/usr/bin/env bash
# A gpt-load-style admin session with curl only: log in, create a group, add keys, list them,
# proxy a request through the group, read the logs and the dashboard, export the keys and fetch
# the OpenAPI document. Run it against a gateway started with `make run` (or any gateway and
# upstream):
#
#   AUTH_KEY=$(cat data/auth_key) scripts/admin-smoke.sh
#
# BASE (default http://127.0.0.1:3001) and UPSTREAM (default http://127.0.0.1:8080, the mock)
# can be overridden. Exits non-zero at the first unexpected answer.
set -euo pipefail

BASE="${BASE:-http://127.0.0.1:3001}"
UPSTREAM="${UPSTREAM:-http://127.0.0.1:8080}"
: "${AUTH_KEY:?set AUTH_KEY to the gateway admin key}"
GROUP="smoke-$$"
auth=(-H "Authorization: Bearer $AUTH_KEY" -H 'Content-Type: application/json')

expect() { # expect <what> <needle> <haystack>
  if [[ "$3" != *"$2"* ]]; then echo "FAIL $1: expected '$2' in: $3" >&2; exit 1; fi
  echo "ok   $1"
}

out=$(curl -s -X POST "$BASE/api/auth/login" -H 'Content-Type: application/json' -d "{\"auth_key\":\"$AUTH_KEY\"}")
expect "login" '"success":true' "$out"

out=$(curl -s -X POST "$BASE/api/groups" "${auth[@]}" -d "{
  \"name\":\"$GROUP\",\"channel_type\":\"openai\",\"test_model\":\"gpt-4o-mini\",
  \"upstreams\":[{\"url\":\"$UPSTREAM\",\"weight\":1}],\"proxy_keys\":\"sk-smoke-proxy-key\"}")
expect "create group" '"code":0' "$out"
group_id=$(printf '%s' "$out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["id"])')

out=$(curl -s -X POST "$BASE/api/keys/add-multiple" "${auth[@]}" \
  -d "{\"group_id\":$group_id,\"keys_text\":\"sk-smoke-upstream-0001\\nsk-smoke-upstream-0002\"}")
expect "add keys" '"added_count":2' "$out"

out=$(curl -s "$BASE/api/keys?group_id=$group_id&page=1&page_size=10" "${auth[@]}")
expect "list keys" '"total_items":2' "$out"

out=$(curl -s "$BASE/proxy/$GROUP/v1/chat/completions" -H 'Authorization: Bearer sk-smoke-proxy-key' \
  -H 'Content-Type: application/json' -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}')
expect "proxy a request" '"choices"' "$out"

for _ in $(seq 30); do
  out=$(curl -s "$BASE/api/logs?group_name=$GROUP" "${auth[@]}")
  [[ "$out" == *'"total_items":0'* ]] || break
  sleep 0.2
done
expect "read logs" "\"group_name\":\"$GROUP\"" "$out"

out=$(curl -s "$BASE/api/dashboard/stats" "${auth[@]}")
expect "dashboard" '"key_count"' "$out"

out=$(curl -s "$BASE/api/keys/export?group_id=$group_id&key=$AUTH_KEY")
expect "export keys" "sk-" "$out"

out=$(curl -s "$BASE/api/openapi.json")
expect "openapi document" '"openapi":"3.1' "$out"

out=$(curl -s -X DELETE "$BASE/api/groups/$group_id" "${auth[@]}")
expect "delete group" '"code":0' "$out"
echo "admin smoke passed"
