-- Hourly usage rollups (docs/USAGE.md), ours: one row per UTC hour, serving group, key (0 when
-- none was used), requested model and access key (0 for proxy keys), added to by the log writer.
-- `requests` and `failures` count attempts; the tokens are those the replies reported.
-- The unique key inside CREATE TABLE: one statement, so the table comes with it or not at all;
-- IF NOT EXISTS, so a run stopped before its migration was recorded finishes on the next start.
CREATE TABLE IF NOT EXISTS usage_hourly (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    `time` DATETIME(6) NOT NULL,
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
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY idx_usage_hourly_row (`time`, group_id, key_id, model, access_key_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
