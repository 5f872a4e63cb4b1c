DROP INDEX idx_api_keys_group_recent;
