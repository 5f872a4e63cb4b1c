-- The keys page lists a group's keys most recently used first, never-used keys last, then
-- newest (`last_used_at DESC NULLS LAST, id DESC`). PostgreSQL sorts NULL above every time, so
-- `idx_api_keys_group_last_used_id` (gpt-load's, kept for it) read backwards gives never-used
-- keys first and a page had to sort the whole group; this index is that order.
CREATE INDEX idx_api_keys_group_recent ON api_keys (group_id, last_used_at DESC NULLS LAST, id DESC);
