-- The policy engine (docs/KEYS.md, "Policies"): named rule sets, attached to groups in priority
-- order. The fork's tables and columns; `config` holds `{"rules": [...]}` as JSON text. New tables
-- only, and MySQL commits each statement: `IF NOT EXISTS` lets a run that stopped between them
-- finish on the next start.
CREATE TABLE IF NOT EXISTS policies (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    description VARCHAR(500) NOT NULL DEFAULT '',
    type VARCHAR(50) NOT NULL DEFAULT 'retry',
    config TEXT NOT NULL,
    priority INT NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE INDEX idx_policies_name (name)
);

CREATE TABLE IF NOT EXISTS group_policies (
    group_id BIGINT NOT NULL,
    policy_id BIGINT NOT NULL,
    priority INT NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (group_id, policy_id),
    INDEX idx_group_policies_policy_id (policy_id),
    FOREIGN KEY (group_id) REFERENCES `groups` (id) ON DELETE CASCADE,
    FOREIGN KEY (policy_id) REFERENCES policies (id) ON DELETE CASCADE
);
