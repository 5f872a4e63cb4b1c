-- gpt-load 1.4's tables and columns (so its data can be imported), plus our additive columns
-- (marked). JSON columns are TEXT on every backend so one query works everywhere.
CREATE TABLE system_settings (
    id BIGSERIAL PRIMARY KEY,
    setting_key VARCHAR(255) NOT NULL,
    setting_value TEXT NOT NULL,
    description VARCHAR(512) NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX idx_system_settings_setting_key ON system_settings (setting_key);

CREATE TABLE groups (
    id BIGSERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    display_name VARCHAR(255) NOT NULL DEFAULT '',
    proxy_keys TEXT NOT NULL DEFAULT '',
    description VARCHAR(512) NOT NULL DEFAULT '',
    group_type VARCHAR(50) NOT NULL DEFAULT 'standard',
    upstreams TEXT NOT NULL DEFAULT '[]',
    validation_endpoint VARCHAR(255) NOT NULL DEFAULT '',
    channel_type VARCHAR(50) NOT NULL,
    sort INTEGER NOT NULL DEFAULT 0,
    test_model VARCHAR(255) NOT NULL,
    param_overrides TEXT NOT NULL DEFAULT '{}',
    config TEXT NOT NULL DEFAULT '{}',
    header_rules TEXT NOT NULL DEFAULT '[]',
    model_redirect_rules TEXT NOT NULL DEFAULT '{}',
    model_redirect_strict BOOLEAN NOT NULL DEFAULT FALSE,
    last_validated_at TIMESTAMP NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX idx_groups_name ON groups (name);

CREATE TABLE group_sub_groups (
    id BIGSERIAL PRIMARY KEY,
    group_id BIGINT NOT NULL,
    sub_group_id BIGINT NOT NULL,
    weight INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (group_id) REFERENCES groups (id) ON DELETE CASCADE,
    FOREIGN KEY (sub_group_id) REFERENCES groups (id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX idx_group_sub ON group_sub_groups (group_id, sub_group_id);
CREATE INDEX idx_group_sub_groups_sub_group_id ON group_sub_groups (sub_group_id);

CREATE TABLE api_keys (
    id BIGSERIAL PRIMARY KEY,
    key_value TEXT NOT NULL,
    key_hash VARCHAR(128) NOT NULL DEFAULT '',
    group_id BIGINT NOT NULL,
    status VARCHAR(50) NOT NULL DEFAULT 'active',
    notes VARCHAR(255) NOT NULL DEFAULT '',
    request_count BIGINT NOT NULL DEFAULT 0,
    failure_count BIGINT NOT NULL DEFAULT 0,
    last_used_at TIMESTAMP NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (group_id) REFERENCES groups (id) ON DELETE CASCADE
);
CREATE INDEX idx_api_keys_key_hash ON api_keys (key_hash);
CREATE INDEX idx_api_keys_group_id ON api_keys (group_id);
CREATE INDEX idx_api_keys_status ON api_keys (status);
CREATE INDEX idx_api_keys_group_last_used_id ON api_keys (group_id, last_used_at, id);

CREATE TABLE request_logs (
    id VARCHAR(36) PRIMARY KEY NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    group_id BIGINT NOT NULL,
    group_name VARCHAR(255) NOT NULL DEFAULT '',
    parent_group_id BIGINT NOT NULL DEFAULT 0,
    parent_group_name VARCHAR(255) NOT NULL DEFAULT '',
    key_value TEXT NOT NULL DEFAULT '',
    key_hash VARCHAR(128) NOT NULL DEFAULT '',
    model VARCHAR(255) NOT NULL DEFAULT '',
    is_success BOOLEAN NOT NULL,
    source_ip VARCHAR(64) NOT NULL DEFAULT '',
    status_code INTEGER NOT NULL,
    request_path VARCHAR(500) NOT NULL DEFAULT '',
    duration BIGINT NOT NULL,
    error_message TEXT NOT NULL DEFAULT '',
    user_agent VARCHAR(512) NOT NULL DEFAULT '',
    request_type VARCHAR(20) NOT NULL DEFAULT 'final',
    upstream_addr VARCHAR(500) NOT NULL DEFAULT '',
    is_stream BOOLEAN NOT NULL DEFAULT FALSE,
    request_body TEXT NOT NULL DEFAULT '',
    -- ours
    key_id BIGINT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    ttfb_ms BIGINT NULL,
    request_id VARCHAR(64) NOT NULL DEFAULT ''
);
CREATE INDEX idx_request_logs_timestamp ON request_logs (timestamp);
CREATE INDEX idx_request_logs_group_id ON request_logs (group_id);
CREATE INDEX idx_request_logs_group_name ON request_logs (group_name);
CREATE INDEX idx_request_logs_parent_group_id ON request_logs (parent_group_id);
CREATE INDEX idx_request_logs_parent_group_name ON request_logs (parent_group_name);
CREATE INDEX idx_request_logs_key_hash ON request_logs (key_hash);
CREATE INDEX idx_request_logs_model ON request_logs (model);
CREATE INDEX idx_request_logs_request_type ON request_logs (request_type);

CREATE TABLE group_hourly_stats (
    id BIGSERIAL PRIMARY KEY,
    time TIMESTAMP NOT NULL,
    group_id BIGINT NOT NULL,
    success_count BIGINT NOT NULL DEFAULT 0,
    failure_count BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX idx_group_time ON group_hourly_stats (time, group_id);
