-- The access key a request was made with (docs/LIMITS.md, "Access keys"), ours and additive:
-- gpt-load ignores the column. NULL for requests made with a proxy key.
ALTER TABLE request_logs ADD COLUMN access_key_id BIGINT NULL;
