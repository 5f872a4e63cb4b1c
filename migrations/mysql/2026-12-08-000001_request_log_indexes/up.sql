-- Every request-log row is written to the table and to each of its indexes, so each index is a
-- cost on the busiest write path (docs/STORAGE.md, "Request-log indexes"). Only `timestamp`
-- (listing order, time ranges, retention, dashboard) and `key_hash` (exact key filter) serve a
-- query of ours; the logs page matches group and model names by substring, which no index
-- serves, and `request_type` and the group ids are too coarse to help. gpt-load's own start
-- (GORM AutoMigrate) creates the dropped ones again, which costs it nothing but write speed.
-- One statement, so MySQL drops all of them or none.
ALTER TABLE request_logs
    DROP INDEX idx_request_logs_group_id,
    DROP INDEX idx_request_logs_group_name,
    DROP INDEX idx_request_logs_parent_group_id,
    DROP INDEX idx_request_logs_parent_group_name,
    DROP INDEX idx_request_logs_model,
    DROP INDEX idx_request_logs_request_type;
