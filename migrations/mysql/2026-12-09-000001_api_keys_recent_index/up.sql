-- Nothing to change here: this backend sorts NULL below every time, so the keys page's order
-- (`last_used_at DESC, id DESC`, never-used keys last) is `idx_api_keys_group_last_used_id` read
-- backwards. PostgreSQL gets an index of its own under this name.
SELECT 1;
