-- A key's own rate limits (docs/LIMITS.md, "A key's own limits"), ours and additive: gpt-load
-- ignores the column. A JSON object of `rpm`, `rpd`, `tpm`, `max_concurrency`, each replacing the
-- group's value; NULL = the group's limits.
ALTER TABLE api_keys ADD COLUMN key_limits TEXT NULL;
