-- The key lifecycle (docs/KEYS.md), ours and additive: gpt-load ignores these columns and its
-- `status` stays authoritative for active / invalid / disabled. `state` is the live state the
-- pool last wrote (active, degraded, cooling, invalid, disabled); `failure_count` keeps counting
-- the consecutive failures.
ALTER TABLE api_keys ADD COLUMN state VARCHAR(20) NOT NULL DEFAULT 'active';
ALTER TABLE api_keys ADD COLUMN cooling_until TIMESTAMP NULL;
ALTER TABLE api_keys ADD COLUMN backoff_level INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN last_error_message VARCHAR(2048) NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN last_failure_at TIMESTAMP NULL;
ALTER TABLE api_keys ADD COLUMN last_success_at TIMESTAMP NULL;
ALTER TABLE api_keys ADD COLUMN last_validated_at TIMESTAMP NULL;
