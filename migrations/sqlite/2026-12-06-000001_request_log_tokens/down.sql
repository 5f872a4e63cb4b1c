ALTER TABLE request_logs DROP COLUMN total_tokens;
ALTER TABLE request_logs DROP COLUMN reasoning_tokens;
ALTER TABLE request_logs DROP COLUMN cached_tokens;
ALTER TABLE request_logs DROP COLUMN completion_tokens;
ALTER TABLE request_logs DROP COLUMN prompt_tokens;
