-- The policy engine (docs/KEYS.md, "Policies"): named rule sets, attached to groups in priority
-- order. The fork's tables and columns; `config` holds `{"rules": [...]}` as JSON text.
CREATE TABLE policies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(100) NOT NULL,
    description VARCHAR(500) NOT NULL DEFAULT '',
    type VARCHAR(50) NOT NULL DEFAULT 'retry',
    config TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX idx_policies_name ON policies (name);

CREATE TABLE group_policies (
    group_id BIGINT NOT NULL,
    policy_id BIGINT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (group_id, policy_id),
    FOREIGN KEY (group_id) REFERENCES groups (id) ON DELETE CASCADE,
    FOREIGN KEY (policy_id) REFERENCES policies (id) ON DELETE CASCADE
);
CREATE INDEX idx_group_policies_policy_id ON group_policies (policy_id);
