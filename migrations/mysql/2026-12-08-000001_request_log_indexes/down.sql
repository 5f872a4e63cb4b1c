ALTER TABLE request_logs
    ADD INDEX idx_request_logs_group_id (group_id),
    ADD INDEX idx_request_logs_group_name (group_name),
    ADD INDEX idx_request_logs_parent_group_id (parent_group_id),
    ADD INDEX idx_request_logs_parent_group_name (parent_group_name),
    ADD INDEX idx_request_logs_model (model),
    ADD INDEX idx_request_logs_request_type (request_type);
