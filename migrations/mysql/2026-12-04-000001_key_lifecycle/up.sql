-- The key lifecycle (docs/KEYS.md), ours and additive: gpt-load ignores these columns and its
-- `status` stays authoritative for active / invalid / disabled. `state` is the live state the
-- pool last wrote (active, degraded, cooling, invalid, disabled); `failure_count` keeps counting
-- the consecutive failures. One statement: MySQL commits DDL statement by statement, and a single
-- ALTER TABLE either adds every column or none.
ALTER TABLE api_keys
    ADD COLUMN state VARCHAR(20) NOT NULL DEFAULT 'active',
    ADD COLUMN cooling_until DATETIME(6) NULL,
    ADD COLUMN backoff_level INT NOT NULL DEFAULT 0,
    ADD COLUMN last_error_message VARCHAR(2048) NOT NULL DEFAULT '',
    ADD COLUMN last_failure_at DATETIME(6) NULL,
    ADD COLUMN last_success_at DATETIME(6) NULL,
    ADD COLUMN last_validated_at DATETIME(6) NULL;
