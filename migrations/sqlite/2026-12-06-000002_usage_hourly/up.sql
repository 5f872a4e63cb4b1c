-- Hourly usage rollups (docs/USAGE.md), ours: one row per UTC hour, serving group, key (0 when
-- none was used), requested model and access key (0 for proxy keys), added to by the log writer.
-- `requests` and `failures` count attempts; the tokens are those the replies reported.
CREATE TABLE usage_hourly (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TIMESTAMP NOT NULL,
    group_id BIGINT NOT NULL,
    key_id BIGINT NOT NULL DEFAULT 0,
    model VARCHAR(255) NOT NULL DEFAULT '',
    access_key_id BIGINT NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX idx_usage_hourly_row ON usage_hourly (time, group_id, key_id, model, access_key_id);
