-- Access keys (docs/LIMITS.md, "Access keys"): proxy keys as records of their own. Only the
-- SHA-256 of a key is kept, with a hint to recognise it; `allowed_groups` is a JSON array of group
-- ids and `allowed_models` one of model patterns (both `[]` = every one). A new table only.
CREATE TABLE access_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(100) NOT NULL,
    key_hash VARCHAR(64) NOT NULL,
    key_hint VARCHAR(32) NOT NULL,
    allowed_groups TEXT NOT NULL,
    allowed_models TEXT NOT NULL,
    rpm BIGINT NOT NULL DEFAULT 0,
    tpm BIGINT NOT NULL DEFAULT 0,
    daily_token_quota BIGINT NOT NULL DEFAULT 0,
    monthly_token_quota BIGINT NOT NULL DEFAULT 0,
    expires_at TIMESTAMP NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    notes TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX idx_access_keys_key_hash ON access_keys (key_hash);
CREATE UNIQUE INDEX idx_access_keys_name ON access_keys (name);
